"""`monitor demo` works only in a folder it created or an empty one, and never deletes what it did not build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.core.errors import DataError
from monitor.core.settings import Settings
from monitor.orchestration.cli import app
from monitor.orchestration.demo import DEMO_FOLDERS, MARKER, MODELS_FOLDER, _reset
from tests.fixtures.demo import DEMO_END


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder): what must survive a refused demo unchanged."""
    return {
        str(path.relative_to(root)): (None if path.is_dir() else path.read_bytes()) for path in sorted(root.rglob("*"))
    }


def _demo(data_dir: Path | str, *args: str) -> object:
    env = {
        "MONITOR_DATA_DIR": str(data_dir),
        "MONITOR_CONFIG": None,
        "MONITOR_SOURCE_URI": None,
        "MONITOR_MONGO_URI": None,
    }
    return CliRunner(env=env).invoke(app, ["demo", "--days", "3", *args])


@pytest.mark.parametrize(
    "layout",
    [
        {"models/mine.safetensors": b"user weights"},  # the folder name the demo's old reset deleted
        {"notes.txt": b"a user's file"},
        {"cache/health-designs.json": b"{}"},
        {"photos/cat.jpg": b"\xff\xd8", "store": None},  # a folder the demo would build, among the user's own
    ],
    ids=["models", "a-file", "cache", "store-and-photos"],
)
def test_demo_refuses_a_non_empty_folder_it_did_not_create_and_leaves_every_file(
    tmp_path: Path, layout: dict[str, bytes | None]
) -> None:
    data_dir = tmp_path / "mine"
    for name, body in layout.items():
        path = data_dir / name
        if body is None:
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
    before = _tree(data_dir)

    result = _demo(data_dir)

    assert result.exit_code == DataError.exit_code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert str(data_dir) in lines[0] and "did not create" in lines[0] and "MONITOR_DATA_DIR" in lines[0]
    assert _tree(data_dir) == before  # not one file added, changed or removed


def test_demo_refuses_the_root_of_the_file_system_and_writes_nothing_there() -> None:
    before = sorted(os.listdir("/"))
    result = _demo("/")
    assert result.exit_code == DataError.exit_code
    assert result.stderr.strip().startswith("error: / is not empty and monitor demo did not create it")
    assert "new or empty folder" in result.stderr
    assert sorted(os.listdir("/")) == before


def test_demo_refuses_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_text("not a folder")
    result = _demo(target)
    assert result.exit_code == DataError.exit_code and "is not a folder" in result.stderr
    assert target.read_text() == "not a folder"


def test_a_demo_candidate_refuses_a_models_folder_its_marker_does_not_record(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / MODELS_FOLDER).mkdir(parents=True)
    (data_dir / MODELS_FOLDER / "mine.bin").write_bytes(b"keep")
    (data_dir / MARKER).write_text("created by `monitor demo`\n")  # a demo folder, but models/ is the user's
    before = _tree(data_dir)

    result = _demo(data_dir, "--candidate")

    assert result.exit_code == DataError.exit_code
    assert f"{data_dir / MODELS_FOLDER} was not created by monitor demo" in result.stderr
    assert _tree(data_dir) == before


def test_the_reset_deletes_the_demo_folders_and_a_models_folder_only_when_the_marker_records_it(tmp_path: Path) -> None:
    recorded, unrecorded = tmp_path / "recorded", tmp_path / "unrecorded"
    for data_dir, marker in (
        (recorded, f"created by `monitor demo`\nowns {MODELS_FOLDER}\nowns ..\nowns notes.txt\n"),
        (unrecorded, "created by `monitor demo`\n"),
    ):
        for name in (*DEMO_FOLDERS, MODELS_FOLDER):
            (data_dir / name).mkdir(parents=True)
            (data_dir / name / "x.bin").write_bytes(b"x")
        (data_dir / "notes.txt").write_text("mine")
        (data_dir / MARKER).write_text(marker)
        _reset(Settings(data_dir=data_dir))
        assert not any((data_dir / name).exists() for name in DEMO_FOLDERS)
        assert (data_dir / "notes.txt").read_text() == "mine"  # an "owns" line naming anything else is not honoured
    assert not (recorded / MODELS_FOLDER).exists()
    assert (unrecorded / MODELS_FOLDER / "x.bin").read_bytes() == b"x"
    assert f"owns {MODELS_FOLDER}" in (recorded / MARKER).read_text()  # still the demo's for the next run


def test_the_reset_removes_a_link_but_not_what_it_points_to(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / MARKER).write_text("created by `monitor demo`\n")
    (data_dir / "source").symlink_to(outside, target_is_directory=True)
    _reset(Settings(data_dir=data_dir))
    assert not (data_dir / "source").exists()
    assert (outside / "precious.txt").read_text() == "keep"


def test_a_link_or_folder_named_like_the_marker_does_not_make_a_folder_the_demos(tmp_path: Path) -> None:
    elsewhere = tmp_path / "marker-elsewhere"
    elsewhere.write_text("created by `monitor demo`\n")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("mine")
    (data_dir / MARKER).symlink_to(elsewhere)
    result = _demo(data_dir)
    assert result.exit_code == DataError.exit_code and "did not create" in result.stderr
    assert (data_dir / "notes.txt").read_text() == "mine"


@pytest.mark.slow
@pytest.mark.spark
def test_a_demo_in_its_own_folder_starts_over_without_touching_a_users_files(tmp_path: Path, spark: object) -> None:
    from monitor.orchestration.demo import run_demo

    data_dir = tmp_path / "data"
    (data_dir / MODELS_FOLDER).mkdir(parents=True)
    (data_dir / MODELS_FOLDER / "mine.safetensors").write_bytes(b"user weights")
    (data_dir / "notes.txt").write_text("mine")
    (data_dir / "store" / "stale").mkdir(parents=True)  # a previous demo's store: the demo's to delete
    (data_dir / MARKER).write_text(
        "created by `monitor demo`; the demo may delete this folder's data\n"
    )  # an older marker

    result = run_demo(Settings(data_dir=data_dir, spark_master="local[2]"), days=3, end=DEMO_END)

    assert result["last_date"] == DEMO_END.isoformat() and len(result["daily"]) == 3
    assert (data_dir / MODELS_FOLDER / "mine.safetensors").read_bytes() == b"user weights"
    assert (data_dir / "notes.txt").read_text() == "mine"
    assert not (data_dir / "store" / "stale").exists()
    assert {name for name in DEMO_FOLDERS if (data_dir / name).is_dir()} == set(DEMO_FOLDERS)


@pytest.mark.slow
@pytest.mark.spark
def test_the_candidate_demo_records_the_models_folder_it_created(demo_candidate_run: tuple[Settings, dict]) -> None:
    settings, result = demo_candidate_run
    assert result["candidate"]
    assert (settings.data_dir / MODELS_FOLDER / "digits-candidate" / "config.json").is_file()
    assert f"owns {MODELS_FOLDER}" in (settings.data_dir / MARKER).read_text().splitlines()
