"""Bring your own predictions: a day evaluated from a team's predictions file stores what the built-in predictor stores
from the same predictions, and a file that does not match the day's sample is refused at its first bad row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from monitor.core.settings import Settings
from monitor.orchestration.cli import app
from monitor.store import open_store
from tests.fixtures.sources import build_one_broken_class
from tests.fixtures.store import find

DATE = "2026-11-20"


def _invoke(data: Path, source: Path, *args: str, **more: str) -> Any:
    env: dict[str, str | None] = {
        **{f"MONITOR_{k.upper()}": v for k, v in more.items()},
        "MONITOR_CONFIG": None,
        "MONITOR_DATA_DIR": str(data),
        "MONITOR_SOURCE_URI": str(source),
        "MONITOR_SAMPLES_PER_CLASS": "8",
        "MONITOR_SPARK_MASTER": "local[2]",
    }
    return CliRunner(env=env).invoke(app, list(args))  # (the keyword arguments: more MONITOR_ settings)


def _stored(data: Path) -> dict[str, Any]:
    with open_store(Settings(data_dir=data), read_only=True) as store:
        return {
            "metrics": sorted((d["label"], d["n"], d["correct"], d["failed"]) for d in find(store, "class_metrics")),
            "health": sorted(
                (d["label"], d["verdict"], round(d["cusum"], 9), d["flagged"]) for d in find(store, "class_health")
            ),
            "alerts": sorted((d["label"], d["kind"], d["alert_id"]) for d in find(store, "alerts")),
            "evaluations": sorted((d["label"], d["image"], d["correct"]) for d in find(store, "evaluations")),
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> dict[str, Any]:
    """A day evaluated by the built-in predictor, and its predictions as a team would hand them over (CSV)."""
    root = tmp_path_factory.mktemp("byo")
    source = build_one_broken_class(root / "val", 8)
    done = _invoke(root / "reference", source, "evaluate", "--date", DATE, "--json")
    assert done.exit_code == 0, done.stderr
    model = json.loads(done.stdout)["model"]
    frame = pd.read_parquet(root / "reference" / "predictions" / f"{DATE}.parquet")
    team = root / "team.csv"
    frame.rename(columns={"confidence": "score"})[["image_path", "pred", "score"]].to_csv(team, index=False)
    return {"root": root, "source": source, "model": model, "team": team, "frame": frame}


def _sampled(world: dict[str, Any], name: str, **more: str) -> Path:
    data = world["root"] / name
    for args in (("index",), ("sample", "--date", DATE)):
        result = _invoke(data, world["source"], *args, **more)
        assert result.exit_code == 0, result.stderr
    return data


def test_a_day_from_a_teams_predictions_stores_what_the_built_in_predictor_stores(world: dict[str, Any]) -> None:
    data = _sampled(world, "imported")
    done = _invoke(
        data,
        world["source"],
        "predictions",
        "import",
        str(world["team"]),
        "--date",
        DATE,
        "--model-id",
        world["model"],
        "--json",
    )
    assert done.exit_code == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["rows"] == len(world["frame"]) and result["flagged"] == ["three"] and result["new_alerts"] == 1
    assert _stored(data) == _stored(world["root"] / "reference")
    # Then the day reads as any other: health, alerts, the dashboard's API.
    health = json.loads(_invoke(data, world["source"], "health", "--json").stdout)
    assert {row["label"]: row["verdict"] for row in health["classes"]}["three"] == "needs_retraining"

    import jsonschema

    from monitor.orchestration.schemas import schema_path

    schema = json.loads(schema_path("predictions-import").read_text())
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(result))


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda f: pd.concat([f, f.head(1)]), "rows 1 and 25 both predict"),
        (lambda f: f.iloc[1:], "lacks 1 of the 24 sampled paths"),
        (
            lambda f: f.assign(image_path=f["image_path"].where(f.index != 3, "zero/elsewhere.jpg")),
            "row 4: 'zero/elsewhere.jpg' is not in the sample",
        ),
        (lambda f: f.assign(score=f["score"].where(f.index != 2, 1.5)), "line 4: score 1.5 is outside [0, 1]"),
        (lambda f: f.assign(pred=f["pred"].where(f.index != 0, "")), "line 2: no predicted label"),
        (lambda f: f.drop(columns=["pred"]), "has no column pred or predicted_label"),
    ],
)
def test_a_file_that_does_not_match_the_sample_is_refused_at_its_first_bad_row_and_writes_nothing(
    world: dict[str, Any], edit: Any, words: str, tmp_path: Path
) -> None:
    data = world["root"] / "refused"
    if not (data / "samples").exists():
        _sampled(world, "refused")
    team = pd.read_csv(world["team"]).reset_index(drop=True)
    bad = tmp_path / "bad.csv"
    edit(team).to_csv(bad, index=False)
    done = _invoke(
        data, world["source"], "predictions", "import", str(bad), "--date", DATE, "--model-id", world["model"]
    )
    assert done.exit_code == 6 and words in " ".join(done.stderr.split()), done.stderr
    assert not (data / "predictions" / f"{DATE}.parquet").exists()


def test_no_sample_no_import(world: dict[str, Any], tmp_path: Path) -> None:
    done = _invoke(tmp_path / "empty", world["source"], "predictions", "import", str(world["team"]), "--date", DATE)
    assert done.exit_code == 6 and f"run `monitor sample --date {DATE}`" in done.stderr


def test_the_example_external_job_feeds_an_import_that_judges_the_day(world: dict[str, Any]) -> None:
    """examples/external_predictor.py plays a team's job (plain transformers, no monitor code) on the day's sample."""
    import subprocess
    import sys

    data = _sampled(world, "example")
    ran = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve().parents[2] / "examples" / "external_predictor.py"),
            "--date",
            DATE,
            "--data-dir",
            str(data),
            "--source",
            str(world["source"]),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    done = _invoke(
        data, world["source"], "predictions", "import", str(data / "incoming" / f"{DATE}.csv"), "--date", DATE, "--json"
    )
    assert done.exit_code == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["flagged"] == ["three"]
    counts = {row["label"]: (row["n"], row["correct"]) for row in result["classes"]}
    # Its own preprocessing may differ from the service's in a pixel; the verdict and the broken class do not.
    assert counts["three"] == (8, 0) and counts["zero"][0] == 8


def test_with_no_model_in_the_service_the_day_is_sampled_and_judged_under_monitor_model_id(
    world: dict[str, Any],
) -> None:
    elsewhere = {"model_dir": str(world["root"] / "no-model-here"), "model_id": world["model"]}
    data = _sampled(world, "no-model", **elsewhere)
    done = _invoke(data, world["source"], "predictions", "import", str(world["team"]), "--date", DATE, **elsewhere)
    assert done.exit_code == 0, done.stderr
    assert _stored(data) == _stored(world["root"] / "reference")
    refused = _invoke(data, world["source"], "evaluate", "--date", "2026-11-21", model_dir=elsewhere["model_dir"])
    assert refused.exit_code == 5 and "MONITOR_MODEL_ID" in refused.stderr
