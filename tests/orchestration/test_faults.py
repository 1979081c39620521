"""Fault injection against the real ``monitor`` command: kills at the worst moments, unwritable folders, broken
model and store files, malformed URIs, and secrets in every output channel. Every case ends in one line and the
documented exit code, and a re-run after a crash repairs everything without sending an alert twice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from monitor.core.settings import SHIPPED_MODEL_DIR
from tests.fixtures.faults import DATE, DROP_PRIVILEGES, _health_file, monitor, store_files

pytestmark = [pytest.mark.slow, pytest.mark.spark]


@pytest.fixture
def source(fault_source: Path) -> Path:
    return fault_source


@pytest.mark.parametrize(
    ("folder", "code", "message"),
    [
        ("samples", 2, "cannot write the sample file"),
        ("predictions", 2, "cannot write the predictions file"),
        ("store", 4, "embedded store"),
    ],
)
def test_an_unwritable_folder_is_one_line_with_its_exit_code_and_loses_nothing(
    folder: str, code: int, message: str, source: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    assert monitor(data_dir, source, "index").returncode == 0
    before = store_files(data_dir)
    locked = data_dir / folder / ("class_health" if folder == "store" else "")
    locked.mkdir(parents=True, exist_ok=True)
    locked.chmod(0o555)
    try:
        done = monitor(data_dir, source, "evaluate", "--date", DATE, prefix=DROP_PRIVILEGES)
    finally:
        locked.chmod(0o755)
    assert done.returncode == code, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in done.stderr
    if folder == "store":
        assert store_files(data_dir) == before


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_weight_file_is_a_model_error_of_one_line(damage: str, source: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL_DIR, model)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": b"\x00\xffnot weights" * 50, "empty": b""}[damage]
    )
    done = monitor(tmp_path / "data", source, "evaluate", "--date", DATE, env={"MONITOR_MODEL_DIR": str(model)})
    assert done.returncode == 5, done.stderr
    assert done.stderr.count("\n") == 1 and "does not load" in done.stderr or "weight" in done.stderr


@pytest.mark.parametrize(
    ("uri", "secret"),
    [
        ("mongodb://monitor:s3cr/et@127.0.0.1:27x17/", "s3cr/et"),
        ("mongodb://:HookPw4@127.0.0.1/", "HookPw4"),
        ("mongodb://u:pw99@", "pw99"),
    ],
)
def test_a_malformed_mongodb_uri_is_a_settings_error_without_its_password(
    uri: str, secret: str, source: Path, tmp_path: Path
) -> None:
    done = monitor(tmp_path / "data", source, "evaluate", "--date", DATE, env={"MONITOR_MONGO_URI": uri})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "MONITOR_MONGO_URI" in done.stderr and secret not in done.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("date", ["2026-13-01", "tomorrow", "2999-01-01"])
def test_a_malformed_or_future_date_writes_nothing(date: str, source: Path, tmp_path: Path) -> None:
    done = monitor(tmp_path / "data", source, "evaluate", "--date", date)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert not (tmp_path / "data").exists()


def test_health_on_an_empty_store_is_missing_data(source: Path, tmp_path: Path) -> None:
    done = monitor(tmp_path / "data", source, "health")
    assert done.returncode == 6 and "no verdicts yet" in done.stderr
    assert not (tmp_path / "data" / "store").exists() or not any((tmp_path / "data" / "store").rglob("*.bson"))


SECRETS = ("HookTokA1", "HookTokB2", "HookTokC3", "HookPw4", "hunter22", "ApiKey55", "qtoken66")


@pytest.mark.parametrize(
    "args",
    [
        ["settings"],
        ["settings", "--json"],
        ["-v", "evaluate", "--date", DATE],
        ["--debug", "evaluate", "--date", DATE],
        ["evaluate", "--date", DATE, "--json"],
    ],
)
def test_no_secret_is_shown_in_any_output_channel(args: list[str], source: Path, tmp_path: Path) -> None:
    env = {
        "MONITOR_ALERT_URLS": json.dumps(
            [
                "slack://HookTokA1/HookTokB2/HookTokC3/#x",
                "json://ops:hunter22@127.0.0.1:9/hook?+X-Api-Key=ApiKey55",
                "jsons://127.0.0.1:9/?token=qtoken66",
            ]
        ),
        "MONITOR_MONGO_URI": "mongodb://u:HookPw4@127.0.0.1:9/",
        "MONITOR_MONGO_TIMEOUT_MS": "300",
    }
    done = monitor(tmp_path / "data", source, *args, env=env)
    shown = done.stdout + done.stderr
    assert [s for s in SECRETS if s in shown] == []
    if args[0] == "settings":
        assert done.returncode == 0 and "slack://…" in shown
    else:
        assert done.returncode == 4  # the store is unreachable: the error, the logs and the traceback are all masked


def test_symlinks_in_the_source_are_counted_as_skipped_and_never_followed(source: Path, tmp_path: Path) -> None:
    linked = tmp_path / "val"
    shutil.copytree(source, linked)
    (tmp_path / "outside.jpg").write_bytes((source / "zero").iterdir().__next__().read_bytes())
    (linked / "zero" / "escape.jpg").symlink_to(tmp_path / "outside.jpg")
    (linked / "one" / "inside.jpg").symlink_to(next((linked / "one").iterdir()))
    done = monitor(tmp_path / "data", linked, "index", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["unusable"] == {"symlink": 2}


def test_files_get_the_usual_permissions_and_stale_temporary_files_are_removed(source: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "predictions").mkdir(parents=True)
    stale = data_dir / "predictions" / f".{DATE}.parquet.abc.tmp"
    stale.write_bytes(b"half a file")
    assert monitor(data_dir, source, "evaluate", "--date", DATE).returncode == 0
    assert not stale.exists()
    store_dir = data_dir / "store" / "class_health"
    for path in (
        data_dir / "samples" / f"{DATE}.csv",
        data_dir / "predictions" / f"{DATE}.parquet",
        store_dir / "manifest.json",
        _health_file(data_dir),
    ):
        assert path.stat().st_mode & 0o777 == 0o644  # 0666 less the usual umask 022, not a temporary file's 0600
