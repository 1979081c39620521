"""Candidates in the daily run and `monitor compare` end to end: same images, per-model files, the verdict on a known change."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from evaluation.predictions import read_predictions
from monitor.orchestration.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.spark]

DATES = ("2026-11-18", "2026-11-19", "2026-11-20")
PAST = 1767268800.0  # 2026-01-01 12:00 UTC: every image exists before the dates


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A source of held-out digits (40 per class) and a candidate that misses "five" (its bias lowered)."""
    from monitor.core.settings import SHIPPED_MODEL_DIR
    from monitor.domain.digits import build_demo_source, load_digits_images, split_indices
    from monitor.orchestration.demo import build_candidate_model

    root = tmp_path_factory.mktemp("compare")
    _, targets = load_digits_images()
    heldout = split_indices()[1]
    chosen = [int(i) for d in range(10) for i in heldout[targets[heldout] == d][:40]]
    build_demo_source(root / "source", indices=chosen)
    for path in (root / "source").rglob("*"):
        os.utime(path, (PAST, PAST))
    candidate = build_candidate_model(SHIPPED_MODEL_DIR, root / "models" / "digits-five-off", {"five": -10.0})
    return {"root": root, "source": root / "source", "candidate": candidate}


def _invoke(env: dict[str, str], *args: str) -> dict | list:
    result = CliRunner(env=env).invoke(app, list(args))
    assert result.exit_code == 0, (
        f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    )
    return json.loads(result.stdout)


def test_candidates_predict_the_same_images_and_compare_names_the_class_that_got_worse(world, tmp_path: Path) -> None:
    env = {
        "MONITOR_DATA_DIR": str(tmp_path / "data"),
        "MONITOR_SOURCE_URI": str(world["source"]),
        "MONITOR_SPARK_MASTER": "local[2]",
        "MONITOR_SAMPLES_PER_CLASS": "12",
        "MONITOR_FIRST_DRAW": "0",  # 12 unseen images a class a day, 36 of 40 over the three days
    }
    added = _invoke(env, "candidate", "add", str(world["candidate"]), "--json")
    assert added["added"] and added["model_id"].startswith("digits-five-off@")
    assert _invoke(env, "candidate", "list", "--json")["candidates"] == [
        {"model_dir": str(world["candidate"]), "model_id": added["model_id"], "from": "store"}
    ]
    for date in DATES:
        _invoke(env, "evaluate", "--date", date, "--json")
    data = tmp_path / "data"
    for date in DATES:
        production = read_predictions(data / "predictions" / f"{date}.parquet")
        candidate = read_predictions(data / "predictions" / "candidates" / added["model_id"] / f"{date}.parquet")
        sample = pd.read_csv(data / "samples" / f"{date}.csv")
        # Exactly the sampled images, in the sample's order, for both models, each under its own model id.
        assert production["image_path"].tolist() == candidate["image_path"].tolist() == sample["image_path"].tolist()
        assert set(candidate["model_id"]) == {added["model_id"]} and set(production["model_id"]) == {
            "digits-resnet@" + production["model_id"][0].split("@")[1]
        }
    # A re-run reuses every model's predictions.
    again = _invoke(env, "evaluate", "--date", DATES[-1], "--json")
    assert again["model"] == production["model_id"][0]

    verdict = _invoke(
        env, "compare", "--candidate", "digits-five-off", "--since", DATES[0], "--until", DATES[-1], "--json"
    )
    assert verdict["verdict"] == "reject" and verdict["worse"] == ["five"]
    assert verdict["days"] == 3 and verdict["start"] == DATES[0] and verdict["end"] == DATES[-1]
    five = next(row for row in verdict["classes"] if row["label"] == "five")
    assert five["n"] == 36 and five["only_production"] > 20 and five["only_candidate"] == 0
    assert "five (" in verdict["reason"]
    # The table form: one row per class, the verdict line last.
    shown = CliRunner(env=env).invoke(
        app, ["compare", "--candidate", added["model_id"], "--since", DATES[0], "--until", DATES[-1]]
    )
    assert (
        shown.exit_code == 0
        and "worse" in shown.stdout
        and "\nreject: 1 class(es) got significantly worse" in shown.stdout
    )
    # Each run stored what it printed, with the dashboard's gallery, as the one comparison of its last date.
    from monitor.core.settings import Settings
    from monitor.store import open_store

    with open_store(Settings(data_dir=data), read_only=True) as store:
        (stored,) = store.comparisons(added["model_id"])
    printed = {k: v for k, v in verdict.items() if k != "schema_version"}  # the output's version, not the record's
    assert verdict["schema_version"] == 1
    assert stored == {"date": DATES[-1], **printed, "discordant": stored["discordant"]}
    assert {row["label"] for row in stored["discordant"]} >= {"five"} and all(
        row["right"] == "production" for row in stored["discordant"] if row["label"] == "five"
    )
    # The counts Spark produced for the CLI equal the pandas reference over the same files.
    from evaluation.metrics import paired_counts_pandas

    frames = [
        (
            read_predictions(data / "predictions" / f"{d}.parquet"),
            read_predictions(data / "predictions" / "candidates" / added["model_id"] / f"{d}.parquet"),
        )
        for d in DATES
    ]
    reference = paired_counts_pandas(pd.concat([p for p, _ in frames]), pd.concat([c for _, c in frames]))
    assert [
        {k: row[k] for k in ("label", "both_right", "only_production", "only_candidate", "both_wrong")}
        for row in verdict["classes"]
    ] == [
        {k: row[k] for k in ("label", "both_right", "only_production", "only_candidate", "both_wrong")}
        for row in reference
    ]


def test_compare_with_no_candidate_or_an_unknown_one_is_one_line(world, tmp_path: Path) -> None:
    env = {"MONITOR_DATA_DIR": str(tmp_path / "data"), "MONITOR_SOURCE_URI": str(world["source"])}
    result = CliRunner(env=env).invoke(
        app, ["compare", "--candidate", "nope", "--since", DATES[0], "--until", DATES[-1]]
    )
    assert result.exit_code == 6 and "no candidate has predictions" in result.stderr
    result = CliRunner(env=env).invoke(
        app, ["compare", "--candidate", "nope", "--since", DATES[-1], "--until", DATES[0]]
    )
    assert result.exit_code == 2 and "is after --until" in result.stderr
    result = CliRunner(env=env).invoke(app, ["candidate", "add", str(tmp_path / "missing")])
    assert result.exit_code == 5 and "missing" in result.stderr
