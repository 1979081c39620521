"""``monitor evaluate --from D1 --to D2``: every date in order, a line per date, resumable after a failure, and a store
equal to one ``monitor evaluate --date D`` per date."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from monitor.core.errors import DataError
from monitor.core.settings import Settings
from monitor.orchestration import pipeline
from monitor.orchestration.cli import app
from monitor.store import open_store
from tests.fixtures.sources import build_one_broken_class
from tests.fixtures.store import find

DATES = ["2026-11-18", "2026-11-19", "2026-11-20"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_one_broken_class(tmp_path_factory.mktemp("backfill") / "val", 12)


def _env(data: Path, source: Path) -> dict[str, str | None]:
    return {
        "MONITOR_CONFIG": None,
        "MONITOR_DATA_DIR": str(data),
        "MONITOR_SOURCE_URI": str(source),
        "MONITOR_SAMPLES_PER_CLASS": "4",
        "MONITOR_FIRST_DRAW": "0",  # 4 new images a class a day: three days of fresh images
        "MONITOR_SPARK_MASTER": "local[2]",
    }


def _stored(data: Path) -> dict[str, Any]:
    with open_store(Settings(data_dir=data), read_only=True) as store:
        return {
            "metrics": sorted((d["date"], d["label"], d["n"], d["correct"]) for d in find(store, "class_metrics")),
            "health": sorted(
                (d["date"], d["label"], d["verdict"], round(d["cusum"], 9)) for d in find(store, "class_health")
            ),
            "evaluations": sorted((d["date"], d["label"], d["image"]) for d in find(store, "evaluations")),
        }


def test_a_range_is_evaluated_in_order_resumes_after_a_failure_and_stores_what_single_dates_store(
    source: Path, tmp_path: Path, spark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tmp_path / "one-by-one"
    for date in DATES:
        single = CliRunner(env=_env(reference, source)).invoke(app, ["evaluate", "--date", date, "--json"])
        assert single.exit_code == 0, single.stderr

    data = tmp_path / "range"
    real = pipeline.evaluate_with
    failing = {"2026-11-19"}

    def flaky(ctx: Any, store: Any, **kwargs: Any) -> Any:
        if ctx.day in failing:
            failing.clear()
            raise DataError("the bucket hiccuped")
        return real(ctx, store, **kwargs)

    monkeypatch.setattr(pipeline, "evaluate_with", flaky)
    runner = CliRunner(env=_env(data, source))
    stopped = runner.invoke(app, ["evaluate", "--from", DATES[0], "--to", DATES[-1]])
    assert stopped.exit_code == 6
    assert (
        "2026-11-19: the bucket hiccuped (the dates before it are done: "
        "`monitor evaluate --from 2026-11-19 --to 2026-11-20` goes on)" in " ".join(stopped.stderr.split())
    )
    assert stopped.stderr.splitlines()[0].startswith("2026-11-18: evaluated 12 images")

    resumed = runner.invoke(app, ["evaluate", "--from", DATES[0], "--to", DATES[-1], "--json"])
    assert resumed.exit_code == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert [(d["date"], d["status"]) for d in result["dates"]] == [
        ("2026-11-18", "skipped"),
        ("2026-11-19", "evaluated"),
        ("2026-11-20", "evaluated"),
    ]
    assert [line.split(":")[0] for line in resumed.stderr.splitlines()] == DATES  # one line per date
    assert _stored(data) == _stored(reference) and _stored(data)["metrics"]

    again = runner.invoke(app, ["evaluate", "--from", DATES[0], "--to", DATES[-1], "--json"])
    assert [d["status"] for d in json.loads(again.stdout)["dates"]] == ["skipped"] * 3

    import jsonschema

    from monitor.orchestration.schemas import schema_path

    schema = json.loads(schema_path("evaluate-range").read_text())
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(result))


@pytest.mark.parametrize(
    "args",
    [
        ["--date", "2026-11-20", "--from", "2026-11-18"],
        ["--to", "2026-11-20"],
        [],
        ["--from", "2026-11-20", "--to", "2026-11-18"],
        ["--from", "2026-02-30"],
    ],
)
def test_a_range_that_is_not_one_is_refused_in_one_line(args: list[str], tmp_path: Path) -> None:
    result = CliRunner(env={"MONITOR_CONFIG": None, "MONITOR_DATA_DIR": str(tmp_path)}).invoke(app, ["evaluate", *args])
    assert result.exit_code == 2 and result.stderr.startswith("error:") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "store").exists()  # nothing written
