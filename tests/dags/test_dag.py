"""The class_health_daily DAG: its shape as the DAG processor parses it, and whole runs with dag.test() on SQLite.

The runs use the real stages on a tiny local source (held-out digits; the folder ``three`` holds
eights, so that class fails and must be flagged), the embedded store and the shared local Spark.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.store import find

pytestmark = pytest.mark.airflow

DAG_ID = "class_health_daily"
STAGES = ["index", "sample", "predict", "metrics", "health"]
PUBLISH = "publish_retraining"
COMPARE = "compare_candidates"
DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "class_health_daily.py"


@pytest.fixture(scope="module")
def daily(dagbag):
    return dagbag.dags[DAG_ID]


def _parse(airflow_env):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(airflow_env.dags_folder))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


# --- shape ------------------------------------------------------------------------------------------


def test_dag_folder_parses_without_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert DAG_ID in dagbag.dags
    assert "example_retrain_on_flag" in dagbag.dags


def test_stages_run_in_pipeline_order_and_publish_and_compare_follow_health(daily):
    assert sorted(daily.task_ids) == sorted([*STAGES, PUBLISH, COMPARE])
    for upstream, downstream in zip(STAGES, STAGES[1:]):
        assert daily.get_task(upstream).downstream_task_ids == {downstream}
    assert daily.get_task("index").upstream_task_ids == set()
    # The comparison needs the date's flagged classes: after metrics, through health.
    assert daily.get_task("health").downstream_task_ids == {PUBLISH, COMPARE}
    assert daily.get_task(PUBLISH).downstream_task_ids == set()
    assert daily.get_task(COMPARE).downstream_task_ids == set()
    assert [a.name for a in daily.get_task(COMPARE).outlets] == ["candidate_ready_for_promotion"]


@pytest.mark.parametrize("task_id", STAGES)
def test_every_stage_retries_with_exponential_backoff(daily, task_id):
    task = daily.get_task(task_id)
    assert task.retries >= 2
    assert task.retry_exponential_backoff >= 2.0
    assert task.retry_delay >= dt.timedelta(minutes=1)
    assert task.max_retry_delay is not None and task.max_retry_delay >= task.retry_delay
    assert task.retry_policy is not None


@pytest.mark.parametrize(
    ("error", "action"),
    [
        ("ConfigError", "fail"),
        ("ModelError", "fail"),
        ("DataError", "fail"),
        ("SourceError", "retry"),
        ("StoreError", "retry"),
    ],
)
def test_retry_policy_fails_fast_only_on_errors_a_retry_cannot_fix(daily, error, action):
    import monitor.core.errors

    exc = getattr(monitor.core.errors, error)("boom")
    decision = daily.get_task("sample").retry_policy.evaluate(exception=exc, try_number=1, max_tries=4)
    assert decision.action.value == action


def test_retry_policy_leaves_unexpected_errors_to_the_normal_retries(daily):
    decision = daily.get_task("predict").retry_policy.evaluate(
        exception=RuntimeError("CUDA error"), try_number=1, max_tries=4
    )
    assert decision.action.value == "default"


def test_each_run_covers_the_utc_day_that_has_just_ended(daily):
    from airflow.sdk import timezone
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    timetable = coerce_to_core_timetable(daily.timetable)
    day = timezone.datetime(2026, 11, 19)
    after = timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(day, day + dt.timedelta(days=1)),
        restriction=TimeRestriction(earliest=daily.start_date, latest=None, catchup=True),
    )
    assert after is not None
    assert after.data_interval == DataInterval(timezone.datetime(2026, 11, 20), timezone.datetime(2026, 11, 21))
    # The run for 2026-11-20 ({{ ds }}) starts at midnight after that day, never before it is over.
    assert after.logical_date == timezone.datetime(2026, 11, 20)
    assert after.run_after == timezone.datetime(2026, 11, 21)


def test_runs_one_date_at_a_time_without_catchup_by_default(daily):
    assert daily.max_active_runs == 1
    assert daily.catchup is False
    assert daily.start_date.tzinfo is not None
    # A stuck day is failed (and notified) within a day, so that it does not hold back the next ones.
    assert dt.timedelta(hours=6) <= daily.dagrun_timeout < dt.timedelta(days=1)
    assert daily.on_failure_callback is not None
    assert all(task.on_failure_callback for task in daily.tasks)


def test_deployment_config_turns_on_catchup_and_routes_predict_to_a_gpu_queue(airflow_env, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CLASS_HEALTH__CATCHUP", "True")
    monkeypatch.setenv("AIRFLOW__CLASS_HEALTH__PREDICT_QUEUE", "gpu")
    monkeypatch.setenv("AIRFLOW__CLASS_HEALTH__PREDICT_POOL", "gpu_slots")
    dag = _parse(airflow_env)
    assert dag.catchup is True
    assert (dag.get_task("predict").queue, dag.get_task("predict").pool) == ("gpu", "gpu_slots")
    others = {dag.get_task(t).queue for t in STAGES if t != "predict"}
    assert others == {"default"}


def test_retraining_is_published_as_an_asset_that_the_example_consumer_is_scheduled_on(dagbag, daily):
    (asset,) = daily.get_task(PUBLISH).outlets
    assert asset.name == "class_health_needs_retraining"
    consumer = dagbag.dags["example_retrain_on_flag"]
    assert [a.name for a in consumer.timetable.asset_condition.objects] == [asset.name]
    assert consumer.is_paused_upon_creation is True


def test_parsing_the_dag_file_imports_neither_the_pipeline_nor_heavy_libraries(airflow_env):
    probe = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('probe_dag', {str(DAG_FILE)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "heavy = ['torch', 'transformers', 'pyspark', 'pymongo', 'mongomock', 'pandas', 'monitor.core.settings', 'monitor.store']\n"
        "loaded = [m for m in sys.modules if m in heavy or m.startswith('monitor.orchestration.')]\n"
        "print(json.dumps({'dag': module.DAG_ID, 'loaded': loaded}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"dag": DAG_ID, "loaded": []}


# --- helpers of the DAG file ------------------------------------------------------------------------


# --- whole runs with dag.test() ----------------------------------------------------------------------

DATE = dt.date(2026, 11, 20)
PER_CLASS = 8  # images per class in the source, and sampled per class: the whole source is evaluated
BROKEN = "three"  # its folder holds eights: the model is wrong on every one of them
#: File times well before DATE: the sample only takes images created on or before the run's date.
PAST = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC).timestamp()
ASSET = "class_health_needs_retraining"
CONSUMER = "example_retrain_on_flag"


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<Label>/<file>`` folders of held-out digits, PER_CLASS each; ``three/`` holds eights."""
    from monitor.domain.digits import (
        LABELS,
        build_demo_source,
        digit_file_name,
        encode_digit,
        load_digits_images,
        split_indices,
    )

    root = tmp_path_factory.mktemp("dag_bucket") / "val"
    images, targets = load_digits_images()
    heldout = split_indices()[1]
    chosen = [
        int(i)
        for digit, label in enumerate(LABELS)
        if label != BROKEN
        for i in heldout[targets[heldout] == digit][:PER_CLASS]
    ]
    assert build_demo_source(root, indices=chosen) == PER_CLASS * (len(LABELS) - 1)
    (root / BROKEN).mkdir()
    for index in heldout[targets[heldout] == LABELS.index("eight")][PER_CLASS : 2 * PER_CLASS]:
        (root / BROKEN / digit_file_name(int(index))).write_bytes(encode_digit(images[index]))
    for path in root.rglob("*"):
        os.utime(path, (PAST, PAST))
    return root


class _MonitorEnv:
    """``MONITOR_*`` variables for the tasks (they build their settings from the environment), undone on exit."""

    def __init__(self, **values: Any) -> None:
        self._values = {f"MONITOR_{name.upper()}": str(value) for name, value in values.items()}
        self._patch = pytest.MonkeyPatch()

    def __enter__(self):
        from monitor.core.settings import load_settings

        for name, value in self._values.items():
            self._patch.setenv(name, value)
        return load_settings()

    def __exit__(self, *exc: object) -> None:
        self._patch.undo()


def _snapshot(settings) -> dict[str, Any]:
    """Everything the stages wrote, by natural key (times that a re-run refreshes, e.g. last_seen, left out)."""
    from monitor.store import open_store

    with open_store(settings, read_only=True) as store:
        return {
            "counts": store.counts(),
            "images": sorted((d["path"], d["label"], d["status"], d["checksum"]) for d in find(store, "images")),
            "samples": sorted(
                (d["date"], tuple(sorted(i["path"] for i in d["items"]))) for d in find(store, "samples")
            ),
            "class_metrics": sorted(
                (d["model_id"], d["date"], d["label"], d["n"], d["correct"], d["failed"])
                for d in find(store, "class_metrics")
            ),
            "class_health": sorted(
                (d["model_id"], d["date"], d["label"], d["verdict"]) for d in find(store, "class_health")
            ),
            "alerts": sorted((d["model_id"], d["label"], d["date"], d["kind"]) for d in find(store, "alerts")),
            "models": sorted(d["model_id"] for d in find(store, "models")),
            "runs": sorted((d["source"], d["date"], tuple(sorted(d.get("stages", {})))) for d in find(store, "runs")),
            # What the health stage of the latest run of DATE noted (a re-run notes that it raised no new alert).
            "health_note": [d["stages"].get("health") for d in find(store, "runs", {"date": DATE.isoformat()})],
        }


def _state_of(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in snapshot.items() if key != "health_note"}


def _retraining_events() -> list[dict[str, Any]]:
    """The NEEDS_RETRAINING events in Airflow's metadata DB, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.extra, AssetEvent.source_dag_id, AssetEvent.source_task_id, AssetEvent.source_run_id)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == ASSET)
            .order_by(AssetEvent.id)
        ).all()
    return [
        {"extra": dict(r.extra), "dag": r.source_dag_id, "task": r.source_task_id, "run": r.source_run_id} for r in rows
    ]


def _dags_scheduled_on_the_asset() -> set[str]:
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        asset = session.scalars(select(AssetModel).where(AssetModel.name == ASSET)).one()
        return {ref.dag_id for ref in asset.scheduled_dags}


@dataclass
class TwoRuns:
    settings: Any
    first: Any
    second: Any
    after_first: dict[str, Any]
    after_second: dict[str, Any]
    events_after_first: list[dict[str, Any]]
    events_after_second: list[dict[str, Any]]


@pytest.fixture(scope="module")
def two_runs(daily, dag_runner, spark, tiny_source, tmp_path_factory) -> Iterator[TwoRuns]:
    """class_health_daily run twice for DATE on the tiny source, with what each run left behind."""
    data_dir = tmp_path_factory.mktemp("dag_data")
    with _MonitorEnv(data_dir=data_dir, source_uri=tiny_source, samples_per_class=PER_CLASS) as settings:
        first = dag_runner(daily, DATE)
        after_first, events_after_first = _snapshot(settings), _retraining_events()
        second = dag_runner(daily, DATE)
        yield TwoRuns(
            settings, first, second, after_first, _snapshot(settings), events_after_first, _retraining_events()
        )


def test_a_run_takes_every_stage_to_success_at_the_first_try(two_runs):
    assert two_runs.first.state == "success"
    assert two_runs.first.tasks == {
        **{stage: ("success", 1) for stage in STAGES},
        PUBLISH: ("success", 1),
        COMPARE: ("skipped", 1),
    }


def test_the_run_stores_the_class_metrics_of_its_date_counted_from_its_predictions(two_runs):
    import pandas as pd

    from monitor.domain.digits import LABELS

    settings = two_runs.settings
    predictions = pd.read_parquet(settings.predictions_file(DATE.isoformat()))
    assert len(predictions) == PER_CLASS * len(LABELS)
    assert set(predictions["date"]) == {DATE.isoformat()}
    ok = predictions[predictions["status"] == "ok"]
    expected = {label: (len(group), int((group["pred"] == label).sum())) for label, group in ok.groupby("label")}
    (model_id,) = predictions["model_id"].unique()
    stored = {(m, d, label): (n, correct) for m, d, label, n, correct, _ in two_runs.after_first["class_metrics"]}
    assert stored == {(model_id, DATE.isoformat(), label): counts for label, counts in expected.items()}
    assert sorted(expected) == sorted(LABELS)
    assert expected[BROKEN] == (PER_CLASS, 0)
    # The shipped model reads the other classes' held-out digits well (~98% on the whole held-out half).
    assert sum(c for label, (_, c) in expected.items() if label != BROKEN) >= 0.9 * PER_CLASS * (len(LABELS) - 1)


def test_the_failing_class_is_flagged_alerted_once_and_published_for_retraining(two_runs, dagbag):
    snapshot = two_runs.after_first
    verdicts = {label: verdict for _, _, label, verdict in snapshot["class_health"]}
    assert verdicts[BROKEN] == "needs_retraining"
    assert [label for label, verdict in verdicts.items() if verdict == "needs_retraining"] == [BROKEN]
    (model_id,) = snapshot["models"]
    assert snapshot["alerts"] == [(model_id, BROKEN, DATE.isoformat(), "needs_retraining")]
    assert snapshot["health_note"][0]["flagged"] == [BROKEN]

    (event,) = two_runs.events_after_first
    assert (event["dag"], event["task"], event["run"]) == (DAG_ID, PUBLISH, two_runs.first.run_id)
    assert event["extra"]["flagged"] == [BROKEN]
    assert event["extra"]["date"] == DATE.isoformat()
    assert event["extra"]["model_id"] == model_id
    assert event["extra"]["verdicts"] == verdicts
    # The example retraining DAG is what the scheduler would queue on that event.
    assert _dags_scheduled_on_the_asset() == {CONSUMER}


def test_a_second_run_of_the_same_date_leaves_the_same_state_and_publishes_nothing_new(two_runs):
    assert two_runs.second.state == "success"
    assert two_runs.second.run_id != two_runs.first.run_id
    assert two_runs.second.states() == {
        **{stage: "success" for stage in STAGES},
        PUBLISH: "skipped",
        COMPARE: "skipped",
    }
    assert _state_of(two_runs.after_second) == _state_of(two_runs.after_first)
    (first_note,), (second_note,) = two_runs.after_first["health_note"], two_runs.after_second["health_note"]
    assert (first_note["flagged"], first_note["new_alerts"]) == ([BROKEN], 1)
    assert (second_note["flagged"], second_note["new_alerts"]) == ([BROKEN], 0)
    from monitor.domain.digits import LABELS

    assert two_runs.after_second["counts"]["class_metrics"] == len(LABELS)
    assert two_runs.after_second["counts"]["images"] == PER_CLASS * len(LABELS)
    assert two_runs.after_second["counts"]["samples"] == 1
    assert two_runs.events_after_second == two_runs.events_after_first


# --- a candidate that fixes the flagged class: compare_candidates publishes it ------------------------


def _candidate_events() -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.extra, AssetEvent.source_task_id)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == "candidate_ready_for_promotion")
            .order_by(AssetEvent.id)
        ).all()
    return [{"extra": dict(r.extra), "task": r.source_task_id} for r in rows]


def test_a_candidate_that_fixes_the_flagged_class_is_published_ready_for_promotion(
    airflow_env, dag_runner, spark, tmp_path
):
    """Three arrives damaged (the shipped model reads ~1 in 8); the candidate, its three bias raised, reads them, the rest as before."""
    import numpy as np

    from monitor.core.settings import SHIPPED_MODEL_DIR
    from monitor.domain.digits import LABELS, build_demo_source, digit_to_pil, load_digits_images, split_indices
    from monitor.orchestration.demo import build_candidate_model, degrade_image

    root = tmp_path / "val"
    images, targets = load_digits_images()
    heldout = split_indices()[1]
    build_demo_source(
        root,
        indices=[
            int(i)
            for d, label in enumerate(LABELS)
            if label != BROKEN
            for i in heldout[targets[heldout] == d][:PER_CLASS]
        ],
    )
    (root / BROKEN).mkdir()
    rng = np.random.default_rng(0)
    for n, index in enumerate(heldout[targets[heldout] == LABELS.index(BROKEN)][:PER_CLASS]):
        degrade_image(digit_to_pil(images[index]), rng).save(root / BROKEN / f"damaged_{n}.png")
    for path in root.rglob("*"):
        os.utime(path, (PAST, PAST))
    candidate = build_candidate_model(SHIPPED_MODEL_DIR, tmp_path / "models" / "digits-three-fixed", {BROKEN: 6.0})
    date = DATE + dt.timedelta(days=4)
    with _MonitorEnv(
        data_dir=tmp_path / "data",
        source_uri=root,
        samples_per_class=PER_CLASS,
        min_samples=PER_CLASS,
        candidate_model_dirs=json.dumps([str(candidate)]),
    ):
        result = dag_runner(_parse(airflow_env), date)
    assert result.tasks[COMPARE] == ("success", 1), result.tasks
    (event,) = [e for e in _candidate_events() if e["extra"]["date"] == date.isoformat()]
    assert event["task"] == COMPARE
    (ready,) = event["extra"]["ready"]
    assert ready.startswith("digits-three-fixed@")
    (comparison,) = event["extra"]["comparisons"]
    assert (
        comparison["verdict"] == "promote"
        and comparison["improved"] == [BROKEN] == comparison["flagged"]
        and comparison["worse"] == []
    )


def _fresh_dag(airflow_env, *, retries: int):
    """A newly parsed DAG whose retries wait no time, so a test sees them happen without sleeping minutes."""
    dag = _parse(airflow_env)
    for task in dag.tasks:
        task.retries = retries
        task.retry_delay = dt.timedelta(0)
        task.retry_exponential_backoff = 0
        task.max_retry_delay = None
    return dag


def _task_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR lines the DAG's tasks logged (in a deployment they land in the task's log)."""
    return [r.getMessage() for r in caplog.records if r.name == DAG_ID and r.levelname == "ERROR"]


def test_an_unreachable_source_fails_index_with_a_readable_error_and_nothing_downstream_runs(
    airflow_env, dag_runner, tmp_path, caplog
):
    gone = tmp_path / "bucket-that-is-gone"
    date = DATE + dt.timedelta(days=1)
    with _MonitorEnv(data_dir=tmp_path / "data", source_uri=gone) as settings:
        result = dag_runner(_fresh_dag(airflow_env, retries=1), date)
    assert result.state == "failed"
    # A SourceError may be transient: the retry policy retries it (here once), then the task fails.
    assert result.tasks["index"] == ("failed", 2)
    assert {task: state for task, state in result.states().items() if task != "index"} == {
        task: "upstream_failed" for task in [*STAGES[1:], PUBLISH, COMPARE]
    }
    # One readable line per try, naming the stage, the error class and the missing folder.
    assert (
        _task_errors(caplog)
        == [f"class health index failed: SourceError: local source folder {gone} does not exist"] * 2
    )
    assert not settings.sample_csv(date.isoformat()).exists()
    assert not settings.predictions_file(date.isoformat()).exists()


def test_a_bad_model_fails_the_first_task_that_needs_it_at_once_though_retries_are_left(
    airflow_env, dag_runner, tiny_source, tmp_path, caplog, webhook
):
    missing = tmp_path / "no-model-here"
    date = DATE + dt.timedelta(days=2)
    # The hook's path is a secret of the URL: the failure notice carries none of it, nor the rest of the URL.
    with _MonitorEnv(
        data_dir=tmp_path / "data",
        source_uri=tiny_source,
        model_dir=missing,
        samples_per_class=2,
        alert_urls=json.dumps([webhook.url]),
    ) as settings:
        result = dag_runner(_fresh_dag(airflow_env, retries=3), date)
    assert result.state == "failed"
    assert result.tasks["index"] == ("success", 1)
    # The sample needs the model (it draws the images this model has not evaluated). ModelError: the retry policy
    # fails the task at the first try; a retry could not read the model either.
    assert result.tasks["sample"] == ("failed", 1)
    later = ["predict", "metrics", "health", PUBLISH, COMPARE]
    assert {task: result.tasks[task][0] for task in later} == dict.fromkeys(later, "upstream_failed")
    (error,) = _task_errors(caplog)
    assert error.startswith(f"class health sample failed: ModelError: model directory {missing} does not exist")
    assert "\n" not in error
    # The failure reaches the alert URLs once the task has failed for good: the task, the date and the reason.
    notices = [b["json"] for b in webhook.bodies if "task sample" in b["json"]["message"]]
    assert len(notices) == 1, webhook.bodies
    assert notices[0]["title"] == f"[class health] {DAG_ID} failed for {date.isoformat()}"
    assert f"model directory {missing} does not exist" in notices[0]["message"]
    assert not settings.sample_csv(date.isoformat()).exists()
    assert not settings.predictions_file(date.isoformat()).exists()


def test_external_predictor_mode_waits_for_the_teams_file_imports_it_and_judges_as_the_built_in_run(
    airflow_env, dag_runner, spark, tiny_source, two_runs, tmp_path_factory, monkeypatch
):
    """predictor = external: no model runs; the DAG waits for incoming/<ds>.csv in the artifact store, imports it and
    goes on. Fed the built-in run's own predictions, it stores the same counts and verdicts."""
    import pandas as pd

    monkeypatch.setenv("AIRFLOW__CLASS_HEALTH__PREDICTOR", "external")
    external = _parse(airflow_env)
    assert "predict" not in external.task_dict
    assert external.task_dict["wait_for_predictions"].mode == "reschedule"
    assert [t.task_id for t in external.task_dict["import_predictions"].upstream_list] == ["wait_for_predictions"]

    day = DATE - dt.timedelta(days=1)  # another date than two_runs': the same whole-source sample
    built_in = pd.read_parquet(two_runs.settings.predictions_file(DATE.isoformat()))
    model_id = str(built_in["model_id"].iloc[0])
    monkeypatch.setenv("AIRFLOW__CLASS_HEALTH__EXTERNAL_MODEL_ID", model_id)
    data_dir = tmp_path_factory.mktemp("dag_external")
    incoming = data_dir / "incoming" / f"{day.isoformat()}.csv"
    incoming.parent.mkdir(parents=True)
    built_in.rename(columns={"confidence": "score"})[["image_path", "pred", "score"]].to_csv(incoming, index=False)
    with _MonitorEnv(data_dir=data_dir, source_uri=tiny_source, samples_per_class=PER_CLASS) as settings:
        run = dag_runner(external, day)
        after = _snapshot(settings)
    assert run.state == "success", run.tasks
    assert run.tasks["wait_for_predictions"][0] == "success" and run.tasks["import_predictions"][0] == "success"
    counts = {(label, n, correct) for _, _, label, n, correct, _ in after["class_metrics"]}
    assert counts == {(label, n, correct) for _, _, label, n, correct, _ in two_runs.after_first["class_metrics"]}
    verdicts = {(label, verdict) for _, _, label, verdict in after["class_health"]}
    assert verdicts == {(label, verdict) for _, _, label, verdict in two_runs.after_first["class_health"]}
    assert {m for m, *_ in after["class_metrics"]} == {model_id}


# Keep last among the dag.test() runs: a connections file stays in the process's cached secrets backends.
def test_the_mongo_default_connection_is_the_store_the_tasks_use(
    airflow_env, dag_runner, tiny_source, tmp_path, caplog
):
    # Nothing listens on port 1: the index task must fail reaching *that* MongoDB, not write the embedded store.
    conn_file = tmp_path / "connections.json"
    conn_file.write_text(
        json.dumps({"mongo_default": {"conn_type": "mongo", "host": "127.0.0.1", "port": 1, "schema": "from_conn"}})
    )
    date = DATE + dt.timedelta(days=3)
    with _MonitorEnv(data_dir=tmp_path / "data", source_uri=tiny_source, mongo_timeout_ms=300) as settings:
        result = dag_runner(_fresh_dag(airflow_env, retries=0), date, conn_file=conn_file)
    assert result.state == "failed"
    assert result.tasks["index"] == ("failed", 1)
    (error,) = _task_errors(caplog)
    assert error.startswith("class health index failed: StoreError: MongoDB at mongodb://127.0.0.1:1/ is unreachable")
    assert not settings.store_dir.exists()
