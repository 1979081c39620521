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
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.core.artifacts import LocalArtifacts
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
    "commit a list": (_replace_number('"commit": 2', '"commit": [2]'), "its commit is not a number of commits"),
    "committed_at a number": (
        _replace_number('"committed_at": "', '"committed_at": 7, "was": "'),
        "its commit is not a number of commits, or its time not a text",
    ),
    "a list": (_with_manifest_text("[]"), "not a store manifest of format 1: expected an object with format and parts"),
    "of format 2": (_replace_number('"format": 1', '"format": 2'), "not a store manifest of format 1"),
    "parts an object": (_with_manifest_text('{"format": 1, "parts": {}}'), "not a store manifest of format 1"),
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

    damaged = os.lstat(root / "manifest.json")
    held = (root / "manifest.json").read_bytes() if stat.S_ISREG(damaged.st_mode) else None
    done = restore(root)
    assert done["restored_from"] == "manifest.json.1" and done["skipped"][0].startswith("manifest.json: ")
    # Kept for the user to look at, under a second name, never opened: the same kind of file, the same bytes.
    kept = os.lstat(root / "manifest.json.bad")
    assert stat.S_IFMT(kept.st_mode) == stat.S_IFMT(damaged.st_mode)
    assert held is None or (root / "manifest.json.bad").read_bytes() == held
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
        assert health._cached_design(LocalArtifacts(file.parent), file.name, ARGS) == CALIBRATED
    assert calls == [ARGS]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(file) in warning and "calibrating again" in warning and "\n" not in warning

    monkeypatch.setattr(health, "_KNOWN", {})  # the next process reads what this one wrote
    calls.clear()
    assert health._cached_design(LocalArtifacts(file.parent), file.name, ARGS) == CALIBRATED and calls == []


def test_a_sound_calibration_cache_entry_is_reused_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    file = tmp_path / "health-designs.json"
    file.write_text(_cache_text(_entry()))
    monkeypatch.setattr(health, "_KNOWN", {})
    monkeypatch.setattr(health, "design", lambda *args: pytest.fail("calibrated although the cache holds the entry"))
    with caplog.at_level(logging.WARNING, logger="monitor.domain.health"):
        assert health._cached_design(LocalArtifacts(file.parent), file.name, ARGS) == CALIBRATED
    assert not caplog.records


# --- the partition and manifest readers, file by file (closing mutants of scripts/mutation.sh) -------------


def _store_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _set_part(root: Path, **changes: Any) -> None:
    """Change the current commit's one partition entry (its docs, bytes ...) in manifest.json."""
    manifest = _manifest(root)
    manifest["parts"][0].update(changes)
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_a_partition_file_named_in_the_manifest_but_missing_is_one_line_and_restore_goes_back(
    two_commits: tuple[Settings, Path],
) -> None:
    settings, root = two_commits
    file = _current_file(root)
    file.unlink()
    expected = f"the embedded store file {file} is missing; run `monitor store restore` to go back"
    assert _assert_one_line_naming(_read_in_thread(settings), str(file)).startswith(expected)
    with open_store(settings) as writer, pytest.raises(StoreError) as err:
        writer.rows("class_health", "m@1")  # a writer never follows another commit: the same refusal
    assert str(err.value).startswith(expected)
    done = restore(root)
    assert done["restored_from"] == "manifest.json.1"
    assert done["skipped"][0].startswith(f"manifest.json: its file {file.relative_to(root)} ")
    assert _read_in_thread(settings) == ["v1"]


@pytest.mark.parametrize("cut", ["inside the second document", "after the first document"])
def test_a_truncated_partition_file_is_refused_with_its_cause_and_nothing_is_lost(cut: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    root = settings.store_dir / settings.mongo_db
    with open_store(settings) as store:
        for version in (1, 2):
            store.replace_day("class_health", "m@1", DAY, [{"label": x, "verdict": f"v{version}"} for x in "ab"])
            store.commit()
    file = _current_file(root)
    data = file.read_bytes()
    first = int.from_bytes(data[:4], "little")  # a BSON document starts with its length
    kept = data[: first + 10] if cut == "inside the second document" else data[:first]
    file.write_bytes(kept)
    _set_part(root, bytes=len(kept))  # the size agrees: what the contents say is what is refused
    reason = "not BSON (" if cut == "inside the second document" else "holds 1 documents where the manifest says 2"
    text = _assert_one_line_naming(_read_in_thread(settings), str(file), reason, f"(class_health m@1/{DAY})")
    assert f"is unreadable: {reason}" in text
    before = _store_files(root)
    assert (
        isinstance(_read_in_thread(settings), StoreError) and _store_files(root) == before
    )  # a reader changes nothing
    done = restore(root)
    assert done["restored_from"] == "manifest.json.1" and reason in done["skipped"][0]
    assert _read_in_thread(settings) == ["v1", "v1"]
    assert file.read_bytes() == kept  # the damaged file is left for the user to look at


def test_a_partition_file_holding_another_partitions_documents_names_that_partition_cut_to_one_short_line(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    root = settings.store_dir / settings.mongo_db
    model = "m@" + "x" * 250  # a long key: the quoted cause is cut at 200 characters
    with open_store(settings) as store:
        for day in ("2026-11-01", "2026-11-02"):
            store.replace_day("class_health", model, day, [{"label": "a", "verdict": "v"}])
    files = {tuple(e["key"]): root / e["file"] for e in _manifest(root)["parts"]}
    wrong = files[(model, "2026-11-02")].read_bytes()
    files[(model, "2026-11-01")].write_bytes(wrong)  # the same size and count: only its documents are wrong
    with open_store(settings, read_only=True) as reader, pytest.raises(StoreError) as err:
        reader.rows("class_health", model)
    cause = f"holds a document of another partition ({{'model_id': '{model}', 'date': '2026-11-02'}})"
    assert f"is unreadable: {cause[:200]}; run `monitor store restore`" in str(err.value)
    assert str(files[(model, "2026-11-01")]) in str(err.value)


def test_a_stored_time_out_of_range_is_refused_as_not_bson_with_the_decoders_cause_cut_short(
    two_commits: tuple[Settings, Path],
) -> None:
    import bson
    from bson.codec_options import CodecOptions
    from bson.datetime_ms import DatetimeMS

    settings, root = two_commits
    file = _current_file(root)
    data = bson.encode({"model_id": "m@1", "date": DAY, "label": "a", "at": DatetimeMS(2**62)})
    file.write_bytes(data)
    _set_part(root, bytes=len(data))
    try:
        bson.decode_all(data, CodecOptions(tz_aware=True))
    except bson.errors.InvalidBSON as exc:
        decoder_says = str(exc).splitlines()[0]
    assert len(decoder_says) > 120  # the decoder's message runs on (a link to its docs)
    text = _assert_one_line_naming(_read_in_thread(settings), str(file))
    assert f"is unreadable: not BSON ({decoder_says[:120]}); run" in text


def test_a_manifest_entry_that_is_not_a_partition_is_shown_short_and_as_written(
    two_commits: tuple[Settings, Path],
) -> None:
    settings, root = two_commits
    _set_part(root, kind="nope", note="z" * 500)
    text = _assert_one_line_naming(_read_in_thread(settings), "a manifest entry is not a partition: {kind: 'nope', ")
    assert "key: ['m@1', '2026-11-01'], " in text and "docs: 1, " in text
    assert "note: 'zzz" in text and "z" * 300 not in text  # each value cut short, the whole entry too


def test_a_manifest_that_cannot_be_read_is_one_line_naming_it_and_the_cause(
    two_commits: tuple[Settings, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, root = two_commits

    def denied(path: Path, root: Path) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(embedded_module, "read_manifest_file", denied)
    with pytest.raises(StoreError) as err:
        EmbeddedDB(root, writable=False)
    assert str(err.value) == f"cannot read the embedded store manifest {root / 'manifest.json'}: Permission denied"


def test_a_manifest_without_a_commit_number_reads_as_commit_0(two_commits: tuple[Settings, Path]) -> None:
    settings, root = two_commits
    manifest = _manifest(root)
    del manifest["commit"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    with open_store(settings, read_only=True) as reader:
        assert reader.version() == 0 and [r["verdict"] for r in reader.rows("class_health", "m@1")] == ["v2"]
    assert restore(root)["commit"] == 0


def test_restore_says_the_commit_and_time_it_went_back_to(two_commits: tuple[Settings, Path]) -> None:
    settings, root = two_commits
    backup = _manifest(root, "manifest.json.1")
    _current_file(root).write_bytes(b"garbage")
    done = restore(root)
    assert (done["store"], done["restored_from"]) == (str(root), "manifest.json.1")
    assert (done["commit"], done["committed_at"]) == (1, backup["committed_at"]) and backup["committed_at"]


def test_restore_goes_back_no_further_than_the_three_backups(two_commits: tuple[Settings, Path]) -> None:
    settings, root = two_commits
    (root / "manifest.json.4").write_bytes((root / "manifest.json.1").read_bytes())  # a sound, but no backup
    (root / "manifest.json").write_text("{damaged")
    (root / "manifest.json.1").write_text("{damaged")
    with pytest.raises(StoreError, match=r"reads \(manifest\.json: .*; manifest\.json\.1: [^;]*\); move ") as err:
        restore(root)
    assert "manifest.json.4" not in str(err.value)
    assert (root / "manifest.json").read_text() == "{damaged"


def test_restore_while_a_writer_holds_the_store_names_the_holder(
    two_commits: tuple[Settings, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, root = two_commits

    class QuickLock(embedded_module.FileLock):  # type: ignore[misc,name-defined]
        def acquire(self, *args: Any, **options: Any) -> Any:
            options["timeout"] = 0.2  # restore waits 30 s for a writer: not here
            return super().acquire(**options)

    monkeypatch.setattr(embedded_module, "FileLock", QuickLock)
    with open_store(settings):
        with pytest.raises(
            StoreError,
            match=rf"^the embedded store {root} is held by a writer \(pid {os.getpid()}, `[^`]+`, since \d{{4}}-\d\d-\d\dT[^)]*\); restore when it has finished$",
        ):
            restore(root)


@pytest.mark.parametrize(("size", "shown"), [(4096, "pid 4242, `monitor evaluate`"), (4097, "holder unknown")])
def test_a_second_writer_reads_a_holder_file_of_at_most_4_kib(
    size: int, shown: str, two_commits: tuple[Settings, Path]
) -> None:
    settings, root = two_commits
    text = json.dumps({"pid": 4242, "command": "monitor evaluate", "since": "2026-11-01T00:00:00+00:00"})
    with open_store(settings):
        (root / ".lock.holder").write_text(text + " " * (size - len(text)))
        with pytest.raises(StoreError, match=rf"held by another writer \({shown}"):
            EmbeddedDB(root, writable=True, lock_timeout_s=0.3, wait_message_after_s=0.1)


def _failing_replace(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """os.replace fails onto ``target`` as on a file system gone read-only (only there: the rest is written)."""
    replace = os.replace

    def failing(src: Any, dst: Any) -> None:
        if Path(dst) == target:
            raise OSError(30, "Read-only file system")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)


def test_a_commit_whose_manifest_cannot_be_written_is_one_line_and_the_last_commit_stays(
    two_commits: tuple[Settings, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, root = two_commits
    store = open_store(settings)
    try:
        store.replace_day("class_health", "m@1", DAY, [{"label": "a", "verdict": "v3"}])
        _failing_replace(monkeypatch, root / "manifest.json")
        with pytest.raises(StoreError) as err:
            store.commit()
        monkeypatch.undo()
    finally:
        embedded_module.EmbeddedDB.close(store._db, commit=False)  # type: ignore[attr-defined]
    assert str(err.value) == f"cannot write the embedded store manifest {root / 'manifest.json'}: Read-only file system"
    assert _read_in_thread(settings) == ["v2"]


def test_a_restore_whose_manifest_cannot_be_written_is_one_line(
    two_commits: tuple[Settings, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, root = two_commits
    _current_file(root).write_bytes(b"garbage")
    _failing_replace(monkeypatch, root / "manifest.json")
    with pytest.raises(StoreError) as err:
        restore(root)
    assert str(err.value) == f"cannot write the embedded store manifest {root / 'manifest.json'}: Read-only file system"


def test_a_restore_whose_manifest_cannot_be_written_leaves_the_store_as_it_was(
    two_commits: tuple[Settings, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, root = two_commits
    _current_file(root).write_bytes(b"garbage")
    before = (root / "manifest.json").read_bytes()
    _failing_replace(monkeypatch, root / "manifest.json")
    with pytest.raises(StoreError):
        restore(root)
    monkeypatch.undo()
    assert (root / "manifest.json").read_bytes() == before
