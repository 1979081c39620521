"""A damaged embedded store is one line naming the file, the backup and the restore command; readers answer during a write."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import bson
import pytest
from filelock import FileLock

from tests.fixtures.faults import BROKEN, DATE, _health_file, monitor, snapshot, store_files

pytestmark = [pytest.mark.slow, pytest.mark.spark]


@pytest.fixture
def source(fault_source: Path) -> Path:
    return fault_source


DAMAGE: dict[str, Callable[[Path], None]] = {
    "manifest not JSON": lambda d: (d / "store/class_health/manifest.json").write_text("{not json"),
    "manifest a list": lambda d: (d / "store/class_health/manifest.json").write_text("[]"),
    "manifest of another format": lambda d: (d / "store/class_health/manifest.json").write_text(
        '{"format": 99, "parts": []}'
    ),
    "manifest entry not a partition": lambda d: (d / "store/class_health/manifest.json").write_text(
        '{"format": 1, "parts": [{"kind": "images", "key": [1], "file": "x"}]}'
    ),
    "partition garbage": lambda d: _health_file(d).write_bytes(b"\x00\xffnot bson" * 20),
    "partition truncated": lambda d: _health_file(d).write_bytes(_health_file(d).read_bytes()[:-7]),
    "partition cut at a document": lambda d: _health_file(d).write_bytes(b""),
    "partition of another day": lambda d: _health_file(d).write_bytes(
        bson.encode({"model_id": "m", "date": "1999-01-01", "label": "x"})
    ),
}


#: The damages after which the re-run of the date is also checked to leave what the undamaged copy held: one in
#: the manifest and one in a partition (once restored, the store is a whole earlier commit whatever the damage was,
#: so the re-run repairs the same way; the others stop at the restore, which is where they differ).
REPAIRED = ("manifest not JSON", "partition truncated")


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_store_file_is_one_line_naming_it_the_backup_and_the_restore_command(
    damage: str, evaluated: Path, source: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(evaluated, data_dir)
    # What the undamaged copy holds: the reference a repaired store must equal. (The session's ``uninterrupted``
    # run would be one more full evaluate in this process for the same figures, its alert delivered to a webhook.)
    reference = snapshot(data_dir)
    assert reference["alerts"] and reference["health"]  # a day whose repair has something to get wrong
    DAMAGE[damage](data_dir)
    damaged = store_files(data_dir)
    done = monitor(data_dir, source, "health")
    assert done.returncode == 4, done.stderr
    assert (
        done.stderr.count("\n") == 1 and "monitor store restore" in done.stderr and "manifest.json.1" in done.stderr
    ), done.stderr
    assert store_files(data_dir) == damaged  # left for the user to inspect
    restored = monitor(data_dir, source, "store", "restore", "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["restored_from"].startswith("manifest.json.")
    assert monitor(data_dir, source, "store", "info", "--json").returncode == 0  # the restored store opens
    if damage not in REPAIRED:
        return
    # Back to a whole earlier commit: the re-run of the date repairs what the dropped commits had done.
    again = monitor(data_dir, source, "evaluate", "--date", DATE)
    assert again.returncode == 0, again.stderr
    assert snapshot(data_dir) == reference


def test_read_commands_answer_during_a_write_and_change_no_store_file(
    evaluated: Path, source: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(evaluated, data_dir)
    before = {
        **store_files(data_dir),
        **{str(p): p.stat().st_mtime_ns for p in (data_dir / "store").rglob("*") if p.is_file()},
    }  # type: ignore[dict-item]
    with FileLock(str(data_dir / "store" / "class_health" / ".lock")):  # a writer holds the store
        for args in (["health"], ["health", "--json"], ["alerts"], ["alerts", "--json"], ["store", "info", "--json"]):
            done = monitor(data_dir, source, *args)
            assert done.returncode == 0, (args, done.stderr)
    after = {
        **store_files(data_dir),
        **{str(p): p.stat().st_mtime_ns for p in (data_dir / "store").rglob("*") if p.is_file()},
    }  # type: ignore[dict-item]
    assert after == before
    rows = json.loads(monitor(data_dir, source, "health", "--json").stdout)["classes"]
    assert {row["label"] for row in rows} == {"zero", "one", BROKEN}
