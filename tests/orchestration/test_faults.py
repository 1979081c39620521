"""Fault injection against the real ``monitor`` command: kills at the worst moments, unwritable folders, broken
model and store files, malformed URIs, and secrets in every output channel. Every case ends in one line and the
documented exit code, and a re-run after a crash repairs everything without sending an alert twice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bson
import pandas as pd
import pytest
from filelock import FileLock

from monitor.core.faults import VARIABLE as KILL_AT
from monitor.core.settings import SHIPPED_MODEL_DIR, Settings
from monitor.store import COLLECTIONS, open_store
from tests.fixtures.sources import build_one_broken_class
from tests.fixtures.store import find
from tests.fixtures.webhook import Endpoint

pytestmark = [pytest.mark.slow, pytest.mark.spark]

DATE = "2026-11-20"
PER_CLASS = 8
BROKEN = "three"  # its folder holds eights: every image wrong, flagged on the first day (one alert)
DROP_PRIVILEGES = [
    "setpriv",
    "--bounding-set",
    "-dac_override,-dac_read_search,-fowner",
    "--inh-caps",
    "-dac_override,-dac_read_search,-fowner",
]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of held-out digits, PER_CLASS each; ``three/`` holds eights."""
    return build_one_broken_class(tmp_path_factory.mktemp("fault_bucket") / "val", PER_CLASS, BROKEN)


def monitor(
    data_dir: Path, source: Path, *args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess with the embedded store in ``data_dir``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    base.update(
        MONITOR_DATA_DIR=str(data_dir),
        MONITOR_SOURCE_URI=str(source),
        MONITOR_SAMPLES_PER_CLASS=str(PER_CLASS),
        MONITOR_SPARK_MASTER="local[1]",
        PYTHONUNBUFFERED="1",
        **(env or {}),
    )
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "monitor.orchestration.cli", *args],
        env=base,
        capture_output=True,
        text=True,
        timeout=600,
    )


def store_docs(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every document of the embedded store in ``data_dir``, read as a reader does (no lock, no write)."""
    with open_store(Settings(data_dir=data_dir), read_only=True) as store:
        return {kind: find(store, kind) for kind in COLLECTIONS}


def store_files(data_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(data_dir)): p.read_bytes() for p in sorted((data_dir / "store").rglob("*")) if p.is_file()
    }


def snapshot(data_dir: Path) -> dict[str, Any]:
    """What a run leaves that a user relies on, without times and ids that differ between runs."""
    store = store_docs(data_dir)
    predictions = pd.read_parquet(data_dir / "predictions" / f"{DATE}.parquet")
    return {
        "sample_csv": (data_dir / "samples" / f"{DATE}.csv").read_text(),
        "predictions": predictions[["image_path", "label", "pred", "status", "draw"]].to_dict("records"),
        "metrics": sorted((d["label"], d["n"], d["correct"]) for d in store.get("class_metrics", [])),
        "health": sorted(
            (d["label"], d["verdict"], round(d["cusum"], 9), d["flagged"]) for d in store.get("class_health", [])
        ),
        "alerts": sorted((d["label"], d["kind"], d["alert_id"], d["delivered"]) for d in store.get("alerts", [])),
        "images": len(store.get("images", [])),
        "samples": [(d["date"], len(d["items"])) for d in store.get("samples", [])],
    }


def leftovers(data_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*.tmp"))


@pytest.fixture(scope="module")
def uninterrupted(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run without faults, with a webhook: the reference every repaired run must equal."""
    server = Endpoint()
    try:
        data_dir = tmp_path_factory.mktemp("reference") / "data"
        done = monitor(
            data_dir, source, "evaluate", "--date", DATE, env={"MONITOR_ALERT_URLS": json.dumps([server.url])}
        )
        assert done.returncode == 0, done.stderr
        return {"snapshot": snapshot(data_dir), "posts": len(server.bodies), "bodies": server.bodies}
    finally:
        server.server.shutdown()
        server.server.server_close()


def test_the_reference_run_flags_the_broken_class_and_sends_its_alert_once_with_a_stable_id(uninterrupted) -> None:
    reference = uninterrupted["snapshot"]
    assert [(label, verdict) for label, verdict, _, _ in reference["health"] if verdict == "needs_retraining"] == [
        (BROKEN, "needs_retraining")
    ]
    ((label, kind, ident, delivered),) = reference["alerts"]
    assert (label, kind, delivered) == (BROKEN, "needs_retraining", True)
    assert uninterrupted["posts"] == 1 and f"alert id {ident}" in uninterrupted["bodies"][0]["json"]["message"]


@pytest.mark.parametrize(
    "point",
    [
        "after_stage:index",
        "after_stage:sample",
        "write:csv",
        "after_stage:predict",
        "write:parquet",
        "after_stage:metrics",
        "after_alert_send",
        "after_stage:health",
        "write:bson",
        "store:before_manifest",
        "write:json",
    ],
)
def test_a_run_killed_at_any_point_is_repaired_by_a_rerun_with_no_alert_sent_twice(
    point: str, source: Path, tmp_path: Path, webhook: Endpoint, uninterrupted: dict[str, Any]
) -> None:
    data_dir = tmp_path / "data"
    urls = {"MONITOR_ALERT_URLS": json.dumps([webhook.url])}
    killed = monitor(data_dir, source, "evaluate", "--date", DATE, env={**urls, KILL_AT: point})
    assert killed.returncode == -9, f"{point} was never reached: {killed.stderr[-2000:]}"
    again = monitor(data_dir, source, "evaluate", "--date", DATE, env=urls)
    assert again.returncode == 0, again.stderr[-2000:]
    assert snapshot(data_dir) == uninterrupted["snapshot"]
    assert len(webhook.bodies) == 1  # sent once, whether the kill came before the send or right after it
    assert leftovers(data_dir) == []


def test_an_alert_whose_send_was_cut_short_is_not_resent_and_is_marked_uncertain(
    source: Path, tmp_path: Path, webhook: Endpoint
) -> None:
    data_dir = tmp_path / "data"
    urls = {"MONITOR_ALERT_URLS": json.dumps([webhook.url])}
    assert (
        monitor(data_dir, source, "evaluate", "--date", DATE, env={**urls, KILL_AT: "after_alert_send"}).returncode
        == -9
    )
    assert monitor(data_dir, source, "evaluate", "--date", DATE, env=urls).returncode == 0
    shown = monitor(data_dir, source, "alerts", "--json")
    (alert,) = json.loads(shown.stdout)["alerts"]
    assert alert["delivered"] and "may or may not have received alert id" in alert["last_error"]
    assert len(webhook.bodies) == 1


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


@pytest.fixture(scope="module")
def evaluated(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir after one evaluated day (its store has backups of earlier commits)."""
    data_dir = tmp_path_factory.mktemp("evaluated") / "data"
    done = monitor(data_dir, source, "evaluate", "--date", DATE)
    assert done.returncode == 0, done.stderr
    return data_dir


def _manifest(data_dir: Path) -> dict[str, Any]:
    return json.loads((data_dir / "store" / "class_health" / "manifest.json").read_text())


def _health_file(data_dir: Path) -> Path:
    (entry,) = [e for e in _manifest(data_dir)["parts"] if e["kind"] == "class_health"]
    return data_dir / "store" / "class_health" / entry["file"]


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


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_store_file_is_one_line_naming_it_the_backup_and_the_restore_command(
    damage: str, evaluated: Path, source: Path, tmp_path: Path, uninterrupted: dict[str, Any]
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(evaluated, data_dir)
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
    # Back to a whole earlier commit: the re-run of the date repairs what the dropped commits had done.
    again = monitor(data_dir, source, "evaluate", "--date", DATE)
    assert again.returncode == 0, again.stderr
    reference = uninterrupted["snapshot"]  # the same, but its alert was delivered: these runs have no notifier
    assert snapshot(data_dir) == {
        **reference,
        "alerts": [(label, kind, ident, False) for label, kind, ident, _ in reference["alerts"]],
    }


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
