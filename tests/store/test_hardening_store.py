"""A damaged embedded store can neither hang a reader nor make it grow: every file is a regular file inside the store,
no larger than the manifest records, the manifest is bounded JSON, and each refusal is one line naming the file, the
backup and `monitor store restore`; restore itself refuses what is no store, and a store it cannot write, in one line.
The calibration cache, damaged in any of the same ways, is calibrated again with a warning."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.core.errors import StoreError
from monitor.core.settings import Settings
from monitor.orchestration import health_stage as health
from monitor.store import embedded as embedded_module
from monitor.store import open_store
from monitor.store.embedded import MANIFEST_MAX_BYTES, PART_MAX_BYTES, EmbeddedDB, restore

DAY = "2026-11-01"
KEY = ["m@1", DAY]
DROP_PRIVILEGES = [
    "setpriv",
    "--bounding-set",
    "-dac_override,-dac_read_search,-fowner",
    "--inh-caps",
    "-dac_override,-dac_read_search,-fowner",
]


@pytest.fixture
def two_commits(tmp_path: Path) -> tuple[Settings, Path]:
    """A store whose one partition says v1 in commit 1 (kept as manifest.json.1) and v2 in commit 2."""
    settings = Settings(data_dir=tmp_path / "data")
    with open_store(settings) as store:
        for version in (1, 2):
            store.replace_day("class_health", "m@1", DAY, [{"label": "a", "verdict": f"v{version}"}])
            store.commit()
    return settings, settings.store_dir / settings.mongo_db


def _manifest(root: Path, name: str = "manifest.json") -> dict[str, Any]:
    return json.loads((root / name).read_text())


def _current_file(root: Path) -> Path:
    (part,) = _manifest(root)["parts"]
    return root / part["file"]


def _read_in_thread(settings: Settings) -> BaseException | list[str]:
    """What a reader gets (its verdicts, or the exception), from a thread the test does not wait on forever."""
    outcome: list[BaseException | list[str]] = []

    def read() -> None:
        try:
            with open_store(settings, read_only=True) as store:
                outcome.append([row["verdict"] for row in store.rows("class_health", "m@1")])
        except BaseException as exc:  # noqa: BLE001 (handed to the test, which asserts on it)
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=120)  # a guard against a hang, not a timing: a refusal is immediate
    assert not reader.is_alive(), "the reader hangs"
    return outcome[0]


def _assert_one_line_naming(exc: BaseException | list[str], *names: str) -> str:
    assert isinstance(exc, StoreError), exc
    text = str(exc)
    assert "\n" not in text and "monitor store restore" in text and "manifest.json.1" in text, text
    for name in names:
        assert name in text, (name, text)
    return text


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _socket(path: Path) -> None:
    path.unlink()
    server, here = socket.socket(socket.AF_UNIX), os.getcwd()
    os.chdir(path.parent)  # a relative name: the full path is longer than a socket address may be
    try:
        server.bind(path.name)  # the socket file stays in the folder once the socket is closed
    finally:
        os.chdir(here)
        server.close()


def _sparse(path: Path, size: int) -> None:
    os.truncate(path, size)  # holes: no disk used, but reading it would take the machine's memory


PART_DAMAGE: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "a FIFO": (lambda root, f: _fifo(f), "FIFO"),
    "a socket": (lambda root, f: _socket(f), "socket"),
    "a link to a file outside": (lambda root, f: (f.unlink(), f.symlink_to("/etc/passwd")), "symbolic link"),
    "a link to the previous commit's file": (
        lambda root, f: (f.unlink(), f.symlink_to(root / _manifest(root, "manifest.json.1")["parts"][0]["file"])),
        "symbolic link",
    ),
    "a folder": (lambda root, f: (f.unlink(), f.mkdir()), "folder"),
    "larger than recorded (sparse, 4x the largest partition)": (
        lambda root, f: _sparse(f, 4 * PART_MAX_BYTES),
        "were recorded",
    ),
    "one byte larger than recorded": (lambda root, f: f.write_bytes(f.read_bytes() + b"\x00"), "were recorded"),
}


@pytest.mark.parametrize("damage", sorted(PART_DAMAGE))
def test_a_partition_file_that_is_not_a_regular_file_of_its_recorded_size_is_refused_at_once_and_restore_skips_it(
    damage: str, two_commits: tuple[Settings, Path]
) -> None:
    settings, root = two_commits
    make, reason = PART_DAMAGE[damage]
    file = _current_file(root)
    make(root, file)
    _assert_one_line_naming(_read_in_thread(settings), str(file), reason)

    done = restore(root)
    assert done["restored_from"] == "manifest.json.1" and len(done["skipped"]) == 1
    assert (
        done["skipped"][0].startswith(f"manifest.json: its file {file.relative_to(root)} ")
        and reason in done["skipped"][0]
    )
    assert _read_in_thread(settings) == ["v1"]


def test_a_kind_folder_linked_outside_the_store_is_refused_and_no_commit_restores_from_it(
    two_commits: tuple[Settings, Path], tmp_path: Path
) -> None:
    settings, root = two_commits
    shutil.move(root / "class_health", tmp_path / "elsewhere")
    (root / "class_health").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    _assert_one_line_naming(_read_in_thread(settings), "lies outside")
    with pytest.raises(
        StoreError,
        match=r"no commit of the embedded store .* reads \(manifest\.json: its file .* lies outside .*; manifest\.json\.1: ",
    ):
        restore(root)


@pytest.mark.parametrize(
    "file",
    [
        "/dev/zero",
        "/etc/passwd",
        "class_health/../../../../etc/passwd",
        "class_health/./x.1.bson",
        "class_health/sub/x.1.bson",
        "images/x.1.bson",  # another kind's folder
        "class_health/.x.1.bson",
        "class_health\\x.1.bson",
        "class_health/x.1.json",
        "",
        "class_health/" + "x" * 300 + ".bson",
    ],
)
def test_a_manifest_entry_naming_any_file_but_a_partition_file_of_its_kind_is_refused(
    file: str, two_commits: tuple[Settings, Path]
) -> None:
    settings, root = two_commits
    manifest = _manifest(root)
    manifest["parts"][0]["file"] = file
    (root / "manifest.json").write_text(json.dumps(manifest))
    text = _assert_one_line_naming(_read_in_thread(settings), str(root / "manifest.json"), "is not a partition")
    assert (
        "/etc/passwd" not in text or file == "/etc/passwd" or "etc/passwd" in file
    )  # only the manifest's own text is shown
    assert restore(root)["restored_from"] == "manifest.json.1"


def _with_manifest_text(text: str | bytes) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        (root / "manifest.json").write_bytes(text.encode() if isinstance(text, str) else text)

    return write


def _replace_number(old: str, new: str) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        text = (root / "manifest.json").read_text()
        assert old in text
        (root / "manifest.json").write_text(text.replace(old, new, 1))

    return write


def _manifest_fifo(root: Path) -> None:
    _fifo(root / "manifest.json")


def _manifest_folder(root: Path) -> None:
    (root / "manifest.json").unlink()
    (root / "manifest.json").mkdir()


def _manifest_link(root: Path) -> None:
    outside = root.parent / "outside.json"
    shutil.copyfile(root / "manifest.json", outside)
    (root / "manifest.json").unlink()
    (root / "manifest.json").symlink_to(outside)


MANIFEST_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "docs 1e999": (_replace_number('"docs": 1', '"docs": 1e999'), "1e999"),
    "docs -1e999": (_replace_number('"docs": 1', '"docs": -1e999'), "-1e999"),
    "docs NaN": (_replace_number('"docs": 1', '"docs": NaN'), "NaN"),
    "docs Infinity": (_replace_number('"docs": 1', '"docs": Infinity'), "Infinity"),
    "docs 10**30": (_replace_number('"docs": 1', '"docs": 1' + "0" * 30), "out of range"),
    "commit of 5,000 digits": (_replace_number('"commit": 2', '"commit": 2' + "0" * 5000), "out of range"),
    "docs -1": (_replace_number('"docs": 1', '"docs": -1'), "is not a partition"),
    "docs a text": (_replace_number('"docs": 1', '"docs": "1"'), "is not a partition"),
    "docs a float": (_replace_number('"docs": 1', '"docs": 1.5'), "is not a partition"),
    "docs true": (_replace_number('"docs": 1', '"docs": true'), "is not a partition"),
    "bytes a list": (_replace_number('"bytes": ', '"bytes": [1], "was": '), "is not a partition"),
    "commit a list": (_replace_number('"commit": 2', '"commit": [2]'), "commit"),
    "nested 100,000 deep": (
        _with_manifest_text('{"format": 1, "parts": [], "x": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        "nests deeper",
    ),
    "nested 900 deep (under Python's own limit)": (
        _with_manifest_text('{"format": 1, "parts": [], "x": ' + "[" * 900 + "]" * 900 + "}"),
        "nests deeper",
    ),
    "an entry nested 6 deep": (_with_manifest_text('{"format": 1, "parts": [{"kind": [[[[1]]]]}]}'), "nests deeper"),
    "not UTF-8": (_with_manifest_text(b'{"format": 1, "parts": [], "x": "\xff\xfe"}'), "UTF-8"),
    "cut short": (
        lambda root: (root / "manifest.json").write_bytes((root / "manifest.json").read_bytes()[:40]),
        "not JSON",
    ),
    "empty": (_with_manifest_text(""), "not JSON"),
    "a FIFO": (_manifest_fifo, "FIFO"),
    "a folder": (_manifest_folder, "folder"),
    "a link to a manifest outside": (_manifest_link, "symbolic link"),
    "sparse, 4x the largest manifest": (
        lambda root: _sparse(root / "manifest.json", 4 * MANIFEST_MAX_BYTES),
        "more than",
    ),
}


@pytest.mark.parametrize("damage", sorted(MANIFEST_DAMAGE))
def test_a_manifest_that_is_not_bounded_json_of_its_shape_is_one_line_and_restore_goes_back_to_the_backup(
    damage: str, two_commits: tuple[Settings, Path]
) -> None:
    settings, root = two_commits
    make, reason = MANIFEST_DAMAGE[damage]
    make(root)
    _assert_one_line_naming(_read_in_thread(settings), str(root / "manifest.json"), reason)
    with pytest.raises(
        StoreError, match=reason.replace("(", r"\(")
    ):  # a writer refuses the same way, and writes nothing
        EmbeddedDB(root, writable=True, lock_timeout_s=5)

    done = restore(root)
    assert done["restored_from"] == "manifest.json.1" and done["skipped"][0].startswith("manifest.json: ")
    assert os.path.lexists(root / "manifest.json.bad")  # kept for the user to look at, moved aside without being opened
    assert _read_in_thread(settings) == ["v1"]


def test_each_partition_file_size_is_recorded_and_a_manifest_of_an_earlier_version_without_sizes_still_reads(
    two_commits: tuple[Settings, Path],
) -> None:
    settings, root = two_commits
    (part,) = _manifest(root)["parts"]
    assert part["bytes"] == (root / part["file"]).stat().st_size > 0
    manifest = _manifest(root)
    del manifest["parts"][0]["bytes"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert _read_in_thread(settings) == ["v2"]


def test_a_file_shorter_than_recorded_is_named_as_such(two_commits: tuple[Settings, Path]) -> None:
    settings, root = two_commits
    file = _current_file(root)
    manifest = _manifest(root)
    manifest["parts"][0]["bytes"] += 10  # the file is whole BSON, but not what the commit wrote
    (root / "manifest.json").write_text(json.dumps(manifest))
    _assert_one_line_naming(
        _read_in_thread(settings), str(file), f"bytes where the manifest says {manifest['parts'][0]['bytes']}"
    )


def test_a_writer_never_writes_a_manifest_readers_would_refuse(
    two_commits: tuple[Settings, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, root = two_commits
    before = (root / "manifest.json").read_bytes()
    monkeypatch.setattr(embedded_module, "MANIFEST_MAX_BYTES", len(before) + 10)
    store = open_store(settings)
    try:
        for day in range(2, 9):
            store.replace_day("class_health", "m@1", f"2026-11-0{day}", [{"label": "a", "verdict": "v"}])
        with pytest.raises(StoreError, match=r"has grown past .* MiB of manifest \(8 partitions\); use a MongoDB"):
            store.commit()
    finally:
        embedded_module.EmbeddedDB.close(store._db, commit=False)  # type: ignore[arg-type]
    assert (root / "manifest.json").read_bytes() == before


def test_a_second_writer_waiting_on_a_holder_file_that_is_a_fifo_does_not_hang(
    two_commits: tuple[Settings, Path],
) -> None:
    settings, root = two_commits
    with open_store(settings):
        (root / ".lock.holder").unlink()
        os.mkfifo(root / ".lock.holder")
        with pytest.raises(StoreError, match=r"held by another writer \(holder unknown; waited"):
            EmbeddedDB(root, writable=True, lock_timeout_s=0.3, wait_message_after_s=0.1)


# --- restore: what is no store, and a store that cannot be written ---------------------------------------


@pytest.mark.parametrize("where", ["an empty folder", "a folder that does not exist", "a folder of other files"])
def test_restore_refuses_a_folder_that_holds_no_store_and_writes_nothing_there(where: str, tmp_path: Path) -> None:
    root = tmp_path / "store" / "class_health"
    if where != "a folder that does not exist":
        root.mkdir(parents=True)
    if where == "a folder of other files":
        (root / "notes.txt").write_text("mine")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(
        StoreError,
        match=r"there is no embedded store at .*class_health \(no manifest\.json nor backups .*\): nothing to restore; check MONITOR_DATA_DIR",
    ):
        restore(root)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no lock file, no folder


def _cli(data_dir: Path, *args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")} | {"MONITOR_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "monitor.orchestration.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("lock", ["left by the last writer", "absent"])
def test_restore_on_a_read_only_data_dir_is_one_line_with_the_store_exit_code_and_changes_nothing(
    lock: str, two_commits: tuple[Settings, Path]
) -> None:
    settings, root = two_commits
    _current_file(root).write_bytes(b"garbage")  # restore must write: go back to manifest.json.1
    if lock == "absent":
        (root / ".lock").unlink()
    before = _files(settings.data_dir)
    # A lock file left writable: the restore takes the lock, and then cannot move the manifest aside.
    modes = {p: p.stat().st_mode for p in [settings.data_dir, *settings.data_dir.rglob("*")] if p.name != ".lock"}
    for path in modes:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        # Root ignores permissions: drop the capabilities that let it (docs: ENVIRONMENT.md, read-only directories as root).
        done = _cli(
            settings.data_dir,
            "store",
            "restore",
            prefix=DROP_PRIVILEGES if os.geteuid() == 0 and shutil.which("setpriv") else None,
        )
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert done.returncode == 4, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and "writable" in done.stderr, done.stderr
    assert str(root) in done.stderr
    assert _files(settings.data_dir) == before


def test_restore_on_an_empty_data_dir_is_one_line_from_the_command(tmp_path: Path) -> None:
    done = _cli(tmp_path, "store", "restore")
    assert done.returncode == 4 and done.stderr.count("\n") == 1 and "nothing to restore" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


# --- the calibration cache ----------------------------------------------------------------------------

ARGS = (0.9, 0.1, 10, 0, 5475.0, 36.5)
#: A stand-in calibration for ARGS (whatever fields a Design has: positive lattice steps, thresholds and units).
CALIBRATED = health.Design(
    **{f.name: 40 if f.type in ("int", int) else 0.25 for f in dataclasses.fields(health.Design)}  # type: ignore[arg-type]
    | dict(zip(("target", "drop", "n", "followup", "arl", "recovery_arl"), ARGS))
)


def _entry(**changes: Any) -> dict[str, Any]:
    return dataclasses.asdict(CALIBRATED) | changes


def _cache_text(entry: Any) -> str:
    return json.dumps({json.dumps([health._code_version(), *ARGS]): entry})


def _cache_file(text: str | bytes) -> Callable[[Path], None]:
    def write(file: Path) -> None:
        file.write_bytes(text.encode() if isinstance(text, str) else text)

    return write


def _cache_fifo(file: Path) -> None:
    os.mkfifo(file)


CACHE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "not JSON": _cache_file("{damaged"),
    "a number 1e999": _cache_file(_cache_text(_entry()).replace('"arl": 5475.0', '"arl": 1e999')),
    "NaN": _cache_file(_cache_text(_entry()).replace('"arl": 5475.0', '"arl": NaN')),
    "-Infinity": _cache_file(_cache_text(_entry()).replace('"arl": 5475.0', '"arl": -Infinity')),
    "an integer of 5,000 digits": _cache_file(_cache_text(_entry()).replace('"h": 40', '"h": 4' + "0" * 5000)),
    "nested 100,000 deep": _cache_file('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    "nested 900 deep": _cache_file('{"x": ' + "[" * 900 + "]" * 900 + "}"),
    "a list": _cache_file("[1, 2]"),
    "not UTF-8": _cache_file(b'{"\xff": 1}'),
    "a FIFO": _cache_fifo,
    "sparse, 1 GiB": lambda file: (file.write_text("{}"), os.truncate(file, 1 << 30)),
    "an entry of the wrong type": _cache_file(_cache_text([1, 2, 3])),
    "an entry lacking a field": _cache_file(_cache_text({k: v for k, v in _entry().items() if k != "h"})),
    "an entry with a field more": _cache_file(_cache_text(_entry(extra=1))),
    "an entry with a text for a number": _cache_file(_cache_text(_entry(h="40"))),
    "an entry with a float for an integer": _cache_file(_cache_text(_entry(h=40.5))),
    "an entry with a threshold of 0": _cache_file(_cache_text(_entry(h=0))),
    "an entry calibrated for another target": _cache_file(_cache_text(_entry(target=0.8))),
}


@pytest.mark.parametrize("damage", sorted(CACHE_DAMAGE))
def test_a_damaged_calibration_cache_is_calibrated_again_with_a_warning_and_replaced(
    damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    file = tmp_path / "cache" / "health-designs.json"
    file.parent.mkdir()
    CACHE_DAMAGE[damage](file)
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(health, "_KNOWN", {})
    monkeypatch.setattr(health, "design", lambda *args: calls.append(args) or CALIBRATED)

    with caplog.at_level(logging.WARNING, logger="monitor.domain.health"):
        assert health._cached_design(file, ARGS) == CALIBRATED
    assert calls == [ARGS]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(file) in warning and "calibrating again" in warning and "\n" not in warning

    monkeypatch.setattr(health, "_KNOWN", {})  # the next process reads what this one wrote
    calls.clear()
    assert health._cached_design(file, ARGS) == CALIBRATED and calls == []


def test_a_sound_calibration_cache_entry_is_reused_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    file = tmp_path / "health-designs.json"
    file.write_text(_cache_text(_entry()))
    monkeypatch.setattr(health, "_KNOWN", {})
    monkeypatch.setattr(health, "design", lambda *args: pytest.fail("calibrated although the cache holds the entry"))
    with caplog.at_level(logging.WARNING, logger="monitor.domain.health"):
        assert health._cached_design(file, ARGS) == CALIBRATED
    assert not caplog.records
