"""`monitor demo`: a simulated drop in one class is flagged, within days, and no other class is."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.core.errors import DataError
from monitor.core.settings import Settings
from monitor.orchestration.cli import app
from monitor.orchestration.demo import DEMO_LAST_DAY
from tests.fixtures.demo import DEMO_END

pytestmark = [pytest.mark.slow, pytest.mark.spark]


def test_demo_flags_the_degraded_class_and_no_other(demo_run: tuple[Settings, dict]) -> None:
    _, result = demo_run
    assert result["drop_date"] == "2026-11-14"
    assert result["flagged"] == ["eight"]
    # Nothing flagged before the drop, and never any other class on any day.
    assert set(result["first_flagged"]) == {"eight"}
    assert result["first_flagged"]["eight"] >= result["drop_date"]
    # The collapse test and follow-up images catch the dramatic drop (about half right) in 1 to 3 days (3 to 4 before them).
    assert 1 <= result["days_to_flag"]["eight"] <= 3
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
    from monitor.orchestration.demo import run_demo

    (tmp_path / "store").mkdir()
    with pytest.raises(DataError, match="did not create"):
        run_demo(Settings(data_dir=tmp_path), days=3)


def test_setup_source_serves_index_and_sample_for_a_recent_date(tmp_path: Path) -> None:
    import pandas as pd

    from monitor.domain.digits import LABELS, split_indices
    from monitor.orchestration.demo import MARKER, SETUP_SOURCE_TIME, build_setup_source
    from monitor.orchestration.index_stage import run_index
    from monitor.orchestration.sample_stage import run_sample

    settings = Settings(data_dir=tmp_path / "data")
    built = build_setup_source(settings)
    files = [p for p in (tmp_path / "data" / "source").rglob("*") if p.is_file()]
    assert built["images"] == len(files) == len(split_indices()[1])  # every held-out digit, none it trained on
    assert {p.parent.name for p in files} == set(LABELS)
    assert {p.stat().st_mtime for p in files} == {SETUP_SOURCE_TIME.timestamp()}
    assert (tmp_path / "data" / MARKER).is_file()
    assert build_setup_source(settings)["written"] == 0  # a second set-up leaves it alone

    run_index(settings)
    # The model's first day: each class draws up to MONITOR_FIRST_DRAW (200) of its images, here all of them.
    sample = pd.read_csv(run_sample(settings, "2026-11-20")["samples_csv"])
    per_label = {label: sum(1 for p in files if p.parent.name == label) for label in LABELS}
    assert sample.groupby("label").size().to_dict() == per_label
    base_only = settings.model_copy(update={"first_draw": 0})
    sample = pd.read_csv(run_sample(base_only, "2026-11-20", force=True)["samples_csv"])
    assert sample.groupby("label").size().to_dict() == {label: 10 for label in LABELS}


def test_a_moderate_drop_goes_on_watch_draws_followup_images_and_is_flagged(tmp_path: Path, spark: object) -> None:
    import pandas as pd

    from evaluation.predictions import read_predictions
    from monitor.orchestration.demo import run_demo

    settings = Settings(data_dir=tmp_path / "data", spark_master="local[2]")
    # `monitor demo --drop-to 0.8 --drop-day 6` as the README runs it: the default, fixed dates, in a data folder of
    # its own (the draws hash the image's path inside the source, not where the folder lives).
    result = run_demo(settings, days=21, drop_day=6, degrade="eight", drop_to=0.8)
    assert result["last_date"] == DEMO_LAST_DAY.isoformat()
    severity = result["severity"]
    assert 0.0 < severity["share"] < 1.0 and severity["damaged_accuracy"] < 0.8 < severity["clean_accuracy"]
    after = [day for day in result["daily"] if day["date"] >= result["drop_date"]]
    pooled = sum(day["accuracy"]["eight"] for day in after) / len(after)
    assert 0.65 < pooled < 0.9  # moderate: not the dramatic drop of the default demo
    # On watch first, then follow-up images, then flagged; nothing else flagged. The policy, day by day: "eight" draws
    # follow-up images exactly on the days after it was on watch or flagged (the evidence may fall back below the first
    # tier after a day of follow-up, so the days need not be consecutive until it is flagged).
    first_watch = next(day["date"] for day in after if day["verdicts"]["eight"] == "watch")
    followed = [day["date"] for day in result["daily"] if "eight" in day["followup"]]
    assert followed and first_watch < followed[0] <= result["first_flagged"]["eight"]
    daily = result["daily"]
    asked = [
        today["date"]
        for yesterday, today in zip(daily, daily[1:])
        if yesterday["verdicts"]["eight"] in ("watch", "needs_retraining")
    ]
    assert followed == asked
    assert all(day["date"] in followed for day in daily if day["date"] > result["first_flagged"]["eight"])
    assert set(result["first_flagged"]) == {"eight"} and result["flagged"] == ["eight"]
    # The follow-up images are marked in the day's sample CSV and predictions, and counted in its metrics.
    day = followed[0]
    sample = pd.read_csv(settings.sample_csv(day))
    extra = sample[sample["draw"] == "followup"]
    assert (
        set(extra["label"]) == {"eight"}
        and len(extra) == result["daily"][[d["date"] for d in result["daily"]].index(day)]["followup"]["eight"]
    )
    predictions = read_predictions(settings.predictions_file(day))
    assert sorted(predictions.loc[predictions["draw"] == "followup", "image_path"]) == sorted(extra["image_path"])
    assert len(sample[sample["label"] == "eight"]) == 10 + len(extra)
    # The README's figures for this run are what it gives, to the day.
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    drop = dt.date.fromisoformat(result["drop_date"])

    def day_of_drop(day: str) -> int:
        return (dt.date.fromisoformat(day) - drop).days + 1

    flagged_on = result["first_flagged"]["eight"]
    assert f"the drop from {result['drop_date']}" in readme
    assert f"draws {len(extra)} follow-up images of it" in readme
    assert result["days_to_flag"]["eight"] == day_of_drop(flagged_on)
    for said, ran in (("goes on \\*watch\\* on", first_watch), ("flagged on", flagged_on)):
        found = re.search(said + r" (\d{4}-\d{2}-\d{2}), day (\d+) of the drop", readme)
        assert found is not None, said
        assert (found[1], int(found[2])) == (ran, day_of_drop(ran)), said
    on_watch = {label for day in result["daily"] for label, verdict in day["verdicts"].items() if verdict != "healthy"}
    assert on_watch == {"eight"}  # "No other class is ever on watch or flagged"


def test_demo_json_validates_against_its_schema(demo_run: tuple[Settings, dict]) -> None:
    import json

    import jsonschema

    from monitor.orchestration.schemas import schema_path, versioned

    _, result = demo_run
    printed = json.loads(json.dumps(versioned(result), default=str))  # what `monitor demo --json` prints
    validator = jsonschema.Draft202012Validator(json.loads(schema_path("demo").read_text()))
    assert not [e.message for e in validator.iter_errors(printed)]
    printed["days_to_flag"] = {"eight": "three"}
    assert list(validator.iter_errors(printed))


def test_the_demo_help_names_its_fixed_last_day_and_a_bad_end_fails_in_one_line(tmp_path: Path) -> None:
    shown = CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    assert f"default {DEMO_LAST_DAY.isoformat()}" in " ".join(shown.stdout.replace("│", " ").split())
    for bad in ("2026-13-01", "2999-01-01"):
        refused = CliRunner(env={"MONITOR_DATA_DIR": str(tmp_path / "data")}).invoke(app, ["demo", "--end", bad])
        assert refused.exit_code != 0 and bad in refused.output and "Traceback" not in refused.output
        assert not (tmp_path / "data").exists()  # refused before anything was built
