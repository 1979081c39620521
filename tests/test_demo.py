"""`monitor demo`: a simulated drop in one class is flagged, within days, and no other class is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.errors import DataError
from monitor.settings import Settings
from tests.fixtures.demo import DEMO_END

pytestmark = [pytest.mark.slow, pytest.mark.spark]



def test_demo_flags_the_degraded_class_and_no_other(demo_run: tuple[Settings, dict]) -> None:
    _, result = demo_run
    assert result["drop_date"] == "2026-11-14"
    assert result["flagged"] == ["eight"]
    # Nothing flagged before the drop, and never any other class on any day.
    assert set(result["first_flagged"]) == {"eight"}
    assert result["first_flagged"]["eight"] >= result["drop_date"]
    assert 1 <= result["days_to_flag"]["eight"] <= 7
    for day in result["daily"]:
        assert set(day["flagged"]) <= {"eight"}
    verdicts = {row["label"]: row["verdict"] for row in result["health"]}
    assert verdicts["eight"] == "needs_retraining"
    assert all(verdict != "needs_retraining" for label, verdict in verdicts.items() if label != "eight")


def test_demo_degradation_shows_in_the_daily_accuracy(demo_run: tuple[Settings, dict]) -> None:
    _, result = demo_run
    before = [day["accuracy"]["eight"] for day in result["daily"] if day["date"] < result["drop_date"]]
    after = [day["accuracy"]["eight"] for day in result["daily"] if day["date"] >= result["drop_date"]]
    assert sum(before) / len(before) > sum(after) / len(after) + 0.2


def test_demo_leaves_one_alert_and_a_store_the_cli_reads(demo_run: tuple[Settings, dict]) -> None:
    settings, _ = demo_run
    runner = CliRunner(env={"MONITOR_DATA_DIR": str(settings.data_dir)})
    alerts = runner.invoke(app, ["alerts", "--json"])
    assert alerts.exit_code == 0, alerts.stdout
    rows = json.loads(alerts.stdout)["alerts"]
    assert [(row["label"], row["kind"]) for row in rows] == [("eight", "needs_retraining")]
    health = runner.invoke(app, ["health", "--json"])
    assert health.exit_code == 0, health.stdout
    body = json.loads(health.stdout)
    assert body["date"] == DEMO_END.isoformat()
    assert {row["label"] for row in body["classes"] if row["verdict"] == "needs_retraining"} == {"eight"}


def test_demo_refuses_a_data_dir_it_did_not_create(tmp_path: Path) -> None:
    from monitor.demo import run_demo

    (tmp_path / "store").mkdir()
    with pytest.raises(DataError, match="did not create"):
        run_demo(Settings(data_dir=tmp_path), days=3)


def test_setup_source_serves_index_and_sample_for_a_recent_date(tmp_path: Path) -> None:
    import pandas as pd

    from monitor.demo import MARKER, SETUP_SOURCE_TIME, build_setup_source
    from monitor.digits import LABELS, split_indices
    from monitor.pipeline import run_index, run_sample

    settings = Settings(data_dir=tmp_path / "data")
    built = build_setup_source(settings)
    files = [p for p in (tmp_path / "data" / "source").rglob("*") if p.is_file()]
    assert built["images"] == len(files) == len(split_indices()[1])  # every held-out digit, none it trained on
    assert {p.parent.name for p in files} == set(LABELS)
    assert {p.stat().st_mtime for p in files} == {SETUP_SOURCE_TIME.timestamp()}
    assert (tmp_path / "data" / MARKER).is_file()
    assert build_setup_source(settings)["written"] == 0  # a second set-up leaves it alone

    run_index(settings)
    sample = pd.read_csv(run_sample(settings, "2026-11-20")["samples_csv"])
    assert sample.groupby("label").size().to_dict() == {label: 10 for label in LABELS}
