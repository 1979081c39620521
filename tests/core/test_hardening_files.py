"""Files read back from disk cannot hang, exhaust or crash the service: the bounded reader and the one JSON reader
(monitor.core.files), the predictions reader (its types and values, naming the column and the `--force` remedy), and the
local listing of odd trees (names that are not UTF-8, 1,100 nested folders, FIFOs, sockets), counted with a reason."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evaluation.predictions import COLUMNS, PREDICTIONS_SCHEMA, read_predictions, write_predictions
from monitor.core.errors import ConfigError, DataError, MonitorError, SourceError
from monitor.core.files import FileRefused, parse_json_bounded, read_bounded, read_json_file
from monitor.core.sources import MAX_LOCAL_DEPTH, LocalSource
from monitor.domain.indexing import REASON_NOT_A_FILE, REASON_NOT_UTF8, REASON_WRONG_DEPTH, classify, index_source
from monitor.store import Store
from tests.fixtures.store import find

DATE = "2026-11-20"
REDO = f"monitor evaluate --date {DATE} --force"


def _in_thread(call: Callable[[], Any]) -> Any:
    """``call()``'s result or exception, from a thread the test does not wait on forever (a FIFO must not hang it)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 (handed to the test, which asserts on it)
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=120)  # a guard against a hang, not a timing
    assert not worker.is_alive(), "the read hangs"
    return outcome[0]


def _bind_socket(path: Path) -> None:
    server, here = socket.socket(socket.AF_UNIX), os.getcwd()
    os.chdir(path.parent)  # a relative name: a full temporary path may be longer than a socket address allows
    try:
        server.bind(path.name)
    finally:
        os.chdir(here)
        server.close()


# --- read_bounded, read_json_file ------------------------------------------------------------------------------


def test_a_bounded_read_returns_a_regular_file_whole(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 100)
    assert read_bounded(tmp_path / "f", max_bytes=100, inside=tmp_path) == b"x" * 100
    assert read_bounded(tmp_path / "f", max_bytes=1000, size=100) == b"x" * 100


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: os.mkfifo(p), "FIFO"),
        (_bind_socket, "socket"),
        (lambda p: p.mkdir(), "folder"),
        (lambda p: p.symlink_to("/dev/zero"), "symbolic link"),
        (lambda p: p.symlink_to(p.parent / "real"), "symbolic link"),  # even to a file beside it
        (lambda p: (p.write_bytes(b"x"), os.truncate(p, 1 << 40)), "more than the 1000"),  # sparse: 1 TiB never read
        (lambda p: p.write_bytes(b"x" * 1001), "more than the 1000"),
    ],
    ids=["fifo", "socket", "folder", "link to a device", "link beside", "sparse 1 TiB", "one byte over"],
)
def test_a_bounded_read_refuses_anything_but_a_regular_file_within_its_bound_without_blocking(
    make: Callable[[Path], Any], reason: str, tmp_path: Path
) -> None:
    (tmp_path / "real").write_bytes(b"{}")
    make(tmp_path / "f")
    refused = _in_thread(lambda: read_bounded(tmp_path / "f", max_bytes=1000))
    assert isinstance(refused, FileRefused) and reason in str(refused), refused


def test_a_bounded_read_refuses_a_device_and_a_file_larger_than_recorded(tmp_path: Path) -> None:
    with pytest.raises(FileRefused, match="character device"):
        read_bounded(Path("/dev/zero"), max_bytes=10)
    (tmp_path / "f").write_bytes(b"x" * 11)
    with pytest.raises(FileRefused, match="is 11 bytes where 10 were recorded"):
        read_bounded(tmp_path / "f", max_bytes=1000, size=10)


def test_a_bounded_read_refuses_a_file_whose_folder_leads_outside(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_bytes(b"secret")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "kind").symlink_to(tmp_path / "outside")
    with pytest.raises(FileRefused, match="lies outside"):
        read_bounded(tmp_path / "store" / "kind" / "f", max_bytes=100, inside=tmp_path / "store")
    with pytest.raises(FileNotFoundError):
        read_bounded(tmp_path / "store" / "gone", max_bytes=100, inside=tmp_path / "store")


def test_bounded_json_keeps_finite_numbers_and_64_bit_integers() -> None:
    text = json.dumps({"a": [1, -(2**63), 2**63 - 1, 1.5e308, -0.0, "NaN", None, True], "b": {"c": {}}})
    assert parse_json_bounded(text, max_depth=3) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1e999", "1e999, out of range"),
        ("[-1e999]", "out of range"),
        ('{"x": NaN}', "NaN"),
        ("[Infinity]", "Infinity"),
        ("[-Infinity]", "-Infinity"),
        (str(2**63), "out of range"),
        (str(-(2**63) - 1), "out of range"),
        ("1" * 5000, "out of range"),
        ("[" * 5 + "]" * 5, "nests deeper than the 4 levels"),
        ("[" * 100_000 + "]" * 100_000, "nests deeper"),
        ('{"a": ' * 3000 + "1" + "}" * 3000, "nests deeper"),
        ("", "not JSON"),
        ("{", "not JSON"),
        (b'["\xff"]', "not UTF-8"),
    ],
    ids=lambda v: str(v)[:24],
)
def test_bounded_json_refuses_non_finite_numbers_huge_integers_deep_nesting_and_non_json(
    text: str | bytes, reason: str
) -> None:
    with pytest.raises(FileRefused, match=reason.replace("[", r"\[").replace("(", r"\(")) as refused:
        parse_json_bounded(text, max_depth=4)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("error", [DataError, ConfigError])
def test_a_json_state_file_that_is_refused_is_one_error_naming_it_and_the_remedy(
    error: type[MonitorError], tmp_path: Path
) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"x": 1e999}')
    with pytest.raises(
        error, match=r"^the thing file .*state\.json is unreadable: it holds the number 1e999, out of range; do this$"
    ):
        read_json_file(path, what="thing file", max_bytes=100, error=error, remedy="do this")
    os.truncate(path, 101)
    with pytest.raises(error, match=r"is 101 bytes, more than the 100"):
        read_json_file(path, what="thing file", max_bytes=100, error=error)
    path.unlink()
    assert read_json_file(path, what="thing file", max_bytes=100, missing_ok=True) is None
    with pytest.raises(error, match=r"the thing file .*state\.json does not exist; do this"):
        read_json_file(path, what="thing file", max_bytes=100, error=error, remedy="do this")
    path.write_text('{"x": [1, 2.5]}')
    assert read_json_file(path, what="thing file", max_bytes=100) == {"x": [1, 2.5]}


# --- predictions ------------------------------------------------------------------------------------------


def _frame(**columns: list[Any]) -> pd.DataFrame:
    rows = [
        [DATE, "seven/a.jpg", "seven", "seven", 0.9, ["seven", "one"], [0.9, 0.05], "m@1", "ok", None, "base"],
        [DATE, "three/b.jpg", "three", None, None, [], [], "m@1", "failed", "truncated", "followup"],
    ]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for name, values in columns.items():
        frame[name] = values
    return frame


def _write_raw(frame: pd.DataFrame, path: Path, schema: pa.Schema | None = None) -> Path:
    """Write a predictions file as a user's tool would: any types, no checks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), path)
    return path


def _write_nan_confidence(path: Path) -> None:
    """A NaN stored as NaN (pandas would store it as a missing value)."""
    table = pa.Table.from_pandas(_frame(), schema=PREDICTIONS_SCHEMA, preserve_index=False)
    at = table.schema.get_field_index("confidence")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        table.set_column(at, PREDICTIONS_SCHEMA.field(at), pa.array([float("nan"), None], from_pandas=False)), path
    )


DAMAGED: dict[str, tuple[Callable[[Path], Any], str]] = {
    "confidence as text": (
        lambda p: _write_raw(_frame(confidence=["0.9", None]), p),
        "column 'confidence' holds string, not double",
    ),
    "label as integers": (lambda p: _write_raw(_frame(label=[7, 3]), p), "column 'label' holds int64, not string"),
    "topk_scores of texts": (
        lambda p: _write_raw(_frame(topk_scores=[["0.9"], []]), p),
        "column 'topk_scores' holds list<",
    ),
    "topk_labels a text": (
        lambda p: _write_raw(_frame(topk_labels=["seven", ""]), p),
        "column 'topk_labels' holds string",
    ),
    "status a boolean": (lambda p: _write_raw(_frame(status=[True, False]), p), "column 'status' holds bool"),
    "a label missing": (lambda p: _write_raw(_frame(label=["seven", None]), p), "column 'label' has 1 empty value"),
    "a status unknown": (lambda p: _write_raw(_frame(status=["ok", "maybe"]), p), "column 'status' holds 'maybe'"),
    "a prediction without a label": (lambda p: _write_raw(_frame(pred=[None, None]), p), "status 'ok' has no 'pred'"),
    "a confidence above 1": (lambda p: _write_raw(_frame(confidence=[1.5, None]), p), "outside [0, 1]"),
    "a confidence NaN": (lambda p: _write_nan_confidence(p), "outside [0, 1]"),
    "another date's rows": (
        lambda p: _write_raw(_frame(date=["2026-11-19", "2026-11-19"]), p),
        "column 'date' holds '2026-11-19'",
    ),
    "truncated": (
        lambda p: (write_predictions(_frame(), p), p.write_bytes(p.read_bytes()[:-30])),
        "is not a readable Parquet file",
    ),
    "cut in half": (
        lambda p: (write_predictions(_frame(), p), p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
        "is not a readable Parquet file",
    ),
    "empty": (
        lambda p: (p.parent.mkdir(parents=True, exist_ok=True), p.write_bytes(b"")),
        "is not a readable Parquet file",
    ),
    "not Parquet": (
        lambda p: (p.parent.mkdir(parents=True, exist_ok=True), p.write_text("path,label\n")),
        "is not a readable Parquet file",
    ),
    "a FIFO": (lambda p: (p.parent.mkdir(parents=True, exist_ok=True), os.mkfifo(p)), "not a regular file"),
    "a folder": (lambda p: p.mkdir(parents=True), "not a regular file"),
    "a column missing": (lambda p: _write_raw(_frame().drop(columns=["pred"]), p), "lacks columns ['pred']"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_a_damaged_predictions_file_is_one_data_error_naming_the_file_what_is_wrong_and_the_force_remedy(
    damage: str, tmp_path: Path
) -> None:
    path = tmp_path / "predictions" / f"{DATE}.parquet"
    make, what = DAMAGED[damage]
    make(path)
    refused = _in_thread(lambda: read_predictions(path))
    assert isinstance(refused, DataError), refused
    text = str(refused)
    assert "\n" not in text and str(path) in text and what in text and REDO in text, text


def test_a_predictions_file_of_wider_but_lossless_types_reads_back_as_the_schema(tmp_path: Path) -> None:
    frame = _frame()
    frame.loc[1, "error"] = None
    schema = pa.schema(
        [
            pa.field(
                f.name,
                pa.large_string() if f.type == pa.string() else pa.float32() if f.name == "confidence" else f.type,
            )
            for f in PREDICTIONS_SCHEMA
        ]
    )
    path = _write_raw(frame.assign(confidence=[0.5, None]), tmp_path / f"{DATE}.parquet", schema)
    back = read_predictions(path)
    assert back.loc[0, "confidence"] == 0.5 and back.loc[0, "label"] == "seven" and back["error"].isna().all()
    table = pa.Table.from_pandas(_frame(), schema=PREDICTIONS_SCHEMA, preserve_index=False)
    encoded = table.set_column(
        table.schema.get_field_index("label"), "label", table.column("label").dictionary_encode()
    )
    pq.write_table(encoded, tmp_path / "dict.parquet")
    assert list(read_predictions(tmp_path / "dict.parquet")["label"]) == ["seven", "three"]


def test_a_predictions_file_not_named_by_date_names_the_date_placeholder_in_its_remedy(tmp_path: Path) -> None:
    path = _write_raw(_frame(confidence=["x", None]), tmp_path / "export.parquet")
    with pytest.raises(DataError, match=r"monitor evaluate --date D --force"):
        read_predictions(path)


# --- local listings of odd trees --------------------------------------------------------------------------


def _tree(root: Path) -> Path:
    """A label folder with a good image, a FIFO, a socket, a file and a folder whose names are not UTF-8."""
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "ok.png").write_bytes(b"png")
    os.mkfifo(root / "cat" / "pipe.png")
    _bind_socket(root / "cat" / "sock.png")
    with open(os.path.join(os.fsencode(root / "cat"), b"bad\xff.png"), "wb") as handle:
        handle.write(b"png")
    os.mkdir(os.path.join(os.fsencode(root), b"dog\xfe"))
    with open(os.path.join(os.fsencode(root), b"dog\xfe", b"a.png"), "wb") as handle:
        handle.write(b"png")
    return root


def test_a_local_listing_shows_fifos_sockets_and_names_not_utf8_as_skipped_with_their_reason(tmp_path: Path) -> None:
    listed = {(b.path, b.skip, b.size) for b in LocalSource(_tree(tmp_path / "src")).list()}
    assert listed == {
        ("cat/bad\\xff.png", REASON_NOT_UTF8, 3),
        ("cat/ok.png", None, 3),
        ("cat/pipe.png", REASON_NOT_A_FILE, 0),
        ("cat/sock.png", REASON_NOT_A_FILE, 0),
        ("dog\\xfe/a.png", REASON_NOT_UTF8, 3),
    }
    assert classify("cat/pipe.png", 0, skip=REASON_NOT_A_FILE) == ("cat", "unusable", REASON_NOT_A_FILE)


def test_indexing_an_odd_tree_records_each_odd_object_as_unusable_with_its_reason(tmp_path: Path, store: Store) -> None:
    source = LocalSource(_tree(tmp_path / "src"))
    report = _in_thread(lambda: index_source(source, store))
    assert not isinstance(report, BaseException), report
    assert report.labels == {"cat": 1} and report.unusable == {REASON_NOT_A_FILE: 2, REASON_NOT_UTF8: 2}
    docs = {doc["path"]: doc for doc in find(store, "images", {"source": source.uri})}
    assert {p: (d["label"], d["status"], d["reason"]) for p, d in docs.items()} == {
        "cat/ok.png": ("cat", "ok", None),
        "cat/pipe.png": ("cat", "unusable", REASON_NOT_A_FILE),
        "cat/sock.png": ("cat", "unusable", REASON_NOT_A_FILE),
        "cat/bad\\xff.png": ("cat", "unusable", REASON_NOT_UTF8),
        "dog\\xfe/a.png": ("dog\\xfe", "unusable", REASON_NOT_UTF8),
    }
    again = index_source(source, store)
    assert again.wrote_nothing and again.unchanged == 5  # the escaped paths are stable identities


def test_a_source_that_hands_over_os_names_as_they_came_is_indexed_under_escaped_paths(store: Store) -> None:
    from monitor.core.sources import BlobInfo

    when = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

    class Listed:
        uri = "file:///odd"

        def list(self):  # noqa: ANN202
            yield BlobInfo(path="cat/" + os.fsdecode(b"x\xff.png"), size=3, checksum="c", created=when, updated=when)
            yield BlobInfo(path="cat/\ud800.png", size=3, checksum="c", created=when, updated=when)  # a lone surrogate
            yield BlobInfo(path="cat/ok.png", size=3, checksum="c", created=when, updated=when)

    report = index_source(Listed(), store)  # type: ignore[arg-type]
    assert report.unusable == {REASON_NOT_UTF8: 2} and report.labels == {"cat": 1}
    assert sorted(doc["path"] for doc in find(store, "images", {"source": "file:///odd"})) == sorted(
        ["cat/ok.png", "cat/x\\xff.png", "cat/\\ud800.png"]
    )


def _remove_deep(top: Path) -> None:
    """Remove a folder tree of any depth a level at a time: shutil.rmtree (and so pytest's clean-up of old
    temporary folders, in every later session) recurses once per level and fails on this tree."""
    here, depth = os.getcwd(), 0
    os.chdir(top)
    try:
        while True:
            folders = [e.name for e in os.scandir(".") if e.is_dir(follow_symlinks=False)]
            if folders:
                os.chdir(folders[0])
                depth += 1
                continue
            for entry in os.scandir("."):
                os.unlink(entry.name)
            if depth == 0:
                break
            name = os.path.basename(os.getcwd())
            os.chdir("..")
            depth -= 1
            os.rmdir(name)
    finally:
        os.chdir(here)


@pytest.fixture
def deep_tree(tmp_path: Path) -> Iterator[Path]:
    """``src/cat/a.png`` and ``src/deep/d/d/.../d/x.png``, 1,100 folders deep; removed afterwards."""
    root = tmp_path / "src"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.png").write_bytes(b"png")
    here = os.getcwd()
    try:
        os.mkdir(root / "deep")
        os.chdir(root / "deep")  # one short step at a time: the whole path passes PATH_MAX long before 1,100 folders
        try:
            for _ in range(1100):
                os.mkdir(b"d")
                os.chdir(b"d")
            with open(b"x.png", "wb") as handle:
                handle.write(b"png")
        finally:
            os.chdir(here)
        yield root
    finally:
        _remove_deep(root)


def test_a_tree_of_1100_nested_folders_is_listed_without_recursion_and_its_deep_folder_is_wrong_depth(
    deep_tree: Path, store: Store
) -> None:
    root = deep_tree
    listed = [(b.path, b.skip) for b in LocalSource(root).list()]
    deepest = "deep/" + "/".join(["d"] * (MAX_LOCAL_DEPTH - 1))
    assert listed == [("cat/a.png", None), (deepest, REASON_WRONG_DEPTH)]
    report = index_source(LocalSource(root), store)
    assert report.labels == {"cat": 1} and report.unusable == {REASON_WRONG_DEPTH: 1}


@pytest.mark.parametrize(
    "make", [lambda p: os.mkfifo(p), _bind_socket, lambda p: p.mkdir()], ids=["fifo", "socket", "folder"]
)
def test_reading_a_fifo_socket_or_folder_from_a_local_source_is_a_source_error_that_does_not_block(
    make: Callable[[Path], Any], tmp_path: Path
) -> None:
    (tmp_path / "cat").mkdir()
    make(tmp_path / "cat" / "x.png")
    refused = _in_thread(lambda: LocalSource(tmp_path).read("cat/x.png"))
    assert isinstance(refused, SourceError) and "cat/x.png" in str(refused), refused


# --- the commands ---------------------------------------------------------------------------------------


def _cli(data_dir: Path, source: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env |= {"MONITOR_DATA_DIR": str(data_dir), "MONITOR_SOURCE_URI": str(source), "MONITOR_SAMPLES_PER_CLASS": "2"}
    return subprocess.run(
        [sys.executable, "-m", "monitor.orchestration.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_monitor_index_on_an_odd_tree_counts_what_it_skipped_and_why(tmp_path: Path) -> None:
    done = _cli(tmp_path / "data", _tree(tmp_path / "src"), "index", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["unusable"] == {REASON_NOT_A_FILE: 2, REASON_NOT_UTF8: 2}


@pytest.mark.slow
def test_evaluate_over_damaged_predictions_is_one_line_with_exit_6_and_the_force_remedy(tmp_path: Path) -> None:
    from tests.fixtures.sources import build_one_broken_class

    source = build_one_broken_class(tmp_path / "val", 2)
    data_dir = tmp_path / "data"
    assert _cli(data_dir, source, "index").returncode == 0
    assert _cli(data_dir, source, "sample", "--date", DATE).returncode == 0
    _write_raw(_frame(confidence=["0.9", None]), data_dir / "predictions" / f"{DATE}.parquet")
    done = _cli(data_dir, source, "evaluate", "--date", DATE)
    assert done.returncode == 6, done.stderr
    assert done.stderr.count("\n") == 1 and "column 'confidence'" in done.stderr and REDO in done.stderr, done.stderr
