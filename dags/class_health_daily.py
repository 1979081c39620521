"""Airflow DAG ``class_health_daily``: index -> sample -> predict -> metrics -> health -> publish the classes that need retraining,
and compare the candidate models with production (publishing those ready for promotion).

Wiring only: every task builds the settings and calls one stage (a ``monitor.orchestration.*_stage`` module) for the
run's date (``{{ ds }}``). Each stage is idempotent for its date, so retries, re-runs and backfills
replace a date's output instead of adding to it. Nothing heavy runs or is imported when the
scheduler parses this file.

Deployment knobs are Airflow configuration, section ``[class_health]`` (or the environment
variables ``AIRFLOW__CLASS_HEALTH__<KEY>``), read when the file is parsed:

- ``predict_queue``: queue of the predict task (default: ``[operators] default_queue``). With the
  CeleryExecutor, set it to ``gpu`` and start a worker on a GPU host with ``airflow celery worker -q gpu``.
- ``predict_pool``: pool of the predict task (default ``default_pool``); a pool with one slot per GPU
  keeps two predictions off the same card.
- ``predict_pod_template_file``: with the KubernetesExecutor, the pod template the predict task runs in (a GPU
  pod: ``nvidia.com/gpu`` limit, node selector, tolerations; docs/KUBERNETES.md); the other tasks keep the
  executor's default pod. Unset (the default): no executor_config.
- ``catchup``: let the scheduler run every missed day since ``start_date`` (default ``False``;
  ``airflow backfill create`` fills chosen dates either way).
- ``start_date``: first date the schedule knows about (default ``2026-11-01``).
- ``mongo_conn_id``: Airflow connection whose MongoDB URI replaces ``MONITOR_MONGO_URI`` when it
  exists (default ``mongo_default``).

Everything else is the service's own settings (``MONITOR_*``, see ``monitor/core/settings.py``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import pendulum
from airflow.sdk import (
    Asset,
    CronDataIntervalTimetable,
    ExceptionRetryPolicy,
    RetryAction,
    RetryRule,
    chain,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.configuration import conf

if TYPE_CHECKING:
    from monitor.core.settings import Settings

DAG_ID = "class_health_daily"
CONFIG_SECTION = "class_health"
#: Every key this file reads from ``[class_health]`` (docker/compose.yaml sets some of them).
CONFIG_KEYS = (
    "predict_queue",
    "predict_pool",
    "predict_pod_template_file",
    "catchup",
    "start_date",
    "mongo_conn_id",
    "predictor",
    "external_model_id",
    "external_wait_hours",
)

# A fixed name: the DAG processor imports this file under a mangled module name.
log = logging.getLogger(DAG_ID)

#: Published when, on a date, at least one class needs retraining; a retraining DAG schedules on it.
#: Event extra: ``{"date", "model_id", "flagged": [labels], "verdicts": {label: verdict}, "new_alerts"}``.
NEEDS_RETRAINING = Asset(name="class_health_needs_retraining", group="class_health")
#: Published when a candidate model's comparison with production says ``promote`` (every flagged class
#: significantly better, none worse); a deployment DAG schedules on it.
#: Event extra: ``{"date", "production", "ready": [candidate ids], "comparisons": [{candidate, verdict, reason, improved, worse, start, end, days}]}``.
CANDIDATE_READY = Asset(name="candidate_ready_for_promotion", group="class_health")

# Errors that a retry cannot fix fail the task at once; an unreachable bucket or MongoDB is retried
# with back-off. Dotted paths keep the monitor package out of the parse.
RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=[
                "monitor.core.errors.ConfigError",
                "monitor.core.errors.ModelError",
                "monitor.core.errors.DataError",
            ],
            action=RetryAction.FAIL,
            reason="bad settings, model or input: a retry would fail the same way",
        ),
        RetryRule(
            exception=["monitor.core.errors.SourceError", "monitor.core.errors.StoreError"],
            action=RetryAction.RETRY,
            reason="image source or store unreachable: retrying with back-off",
        ),
    ]
)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "ml-monitoring",
    "depends_on_past": False,
    # Every stage reaches the bucket and/or MongoDB (health also the notifiers): all retry with back-off.
    "retries": 3,
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=30),
    "retry_policy": RETRY_POLICY,
    "execution_timeout": dt.timedelta(hours=3),
}
#: A run still going after this is failed (and notified), so that a stuck day does not hold back the next
#: ones (one run at a time); every task's own execution_timeout is 3 hours.
DAGRUN_TIMEOUT = dt.timedelta(hours=20)


# --- settings, connection and date: resolved inside the task, never at parse time -----------------


def mongo_overrides(conn: Any) -> dict[str, str]:
    """Settings overrides (``mongo_uri``, ``mongo_db``) from an Airflow connection of type ``mongo``.

    The MongoDB provider's layout: ``host``/``port``/``login``/``password``; extra ``{"srv": true}``
    gives ``mongodb+srv://``; every other extra (``replicaSet``, ``authSource``, ``tls``...) becomes a
    URI option. ``schema`` names the database (``mongo_db``); it is not put in the URI path, where
    MongoDB would take it as the authentication database.
    """
    from monitor.core.errors import ConfigError

    if conn.conn_type != "mongo":
        raise ConfigError(
            f"Airflow connection {conn.conn_id!r} has type {conn.conn_type!r}; a MongoDB connection has type 'mongo'"
        )
    if not conn.host:
        raise ConfigError(f"Airflow connection {conn.conn_id!r} has no host")
    extra = dict(conn.extra_dejson)
    # Extras parsed from an AIRFLOW_CONN_* URI are strings: "false" must stay false.
    srv = str(extra.pop("srv", False)).strip().lower() in {"true", "1", "yes"}
    extra.pop("allow_insecure", None)  # the provider hook's own flag, not a MongoDB URI option
    credentials = ""
    if conn.login:
        credentials = quote(conn.login, safe="")
        if conn.password:
            credentials += ":" + quote(conn.password, safe="")
        credentials += "@"
    port = f":{conn.port}" if conn.port and not srv else ""
    options = {
        key: (str(value).lower() if isinstance(value, bool) else str(value)) for key, value in sorted(extra.items())
    }
    query = f"?{urlencode(options)}" if options else ""
    overrides = {"mongo_uri": f"{'mongodb+srv' if srv else 'mongodb'}://{credentials}{conn.host}{port}/{query}"}
    if conn.schema:
        overrides["mongo_db"] = conn.schema
    return overrides


def _connection_overrides() -> dict[str, str]:
    """Overrides from the MongoDB connection (``[class_health] mongo_conn_id``), or none when it is not defined."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    conn_id = conf.get(CONFIG_SECTION, "mongo_conn_id", fallback="mongo_default")
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return {}
    return mongo_overrides(conn)


def task_settings() -> Settings:
    """The service settings for this task: ``MONITOR_*`` / ``monitor.toml``, with the MongoDB connection on top."""
    from monitor.core.secrets import register_with_airflow
    from monitor.core.settings import load_settings

    try:
        return load_settings(**_connection_overrides())
    finally:  # the secrets load registered (a URI's user-info...) are hidden by Airflow's masker too, even if loading failed
        register_with_airflow()


def run_date(context: Mapping[str, Any]) -> dt.date:
    """The date a run evaluates: its logical date (``ds``); a run triggered without one takes the last full day.

    Read here, at the DAG's edge, once per task; the stages take the date as it is.
    """
    from monitor.core.dates import days_before, parse_run_date

    if context.get("ds"):
        return parse_run_date(context["ds"])
    run_after = context["dag_run"].run_after
    return parse_run_date(days_before(run_after.date(), 1))


def _run_stage(stage: str, call: Callable[[Settings], dict[str, Any]]) -> dict[str, Any]:
    """Run one stage; a MonitorError is logged as its one readable line before Airflow records the failure."""
    from monitor.core.errors import MonitorError, redact

    try:
        summary = call(task_settings())
    except MonitorError as exc:
        log.error("class health %s failed: %s: %s", stage, type(exc).__name__, redact(str(exc)))
        raise
    log.info("class health %s: %s", stage, summary)
    return summary


def notify_task_failure(context: Mapping[str, Any]) -> None:
    """Failure callback of every task, once its retries are spent: one message through ``MONITOR_ALERT_URLS``."""
    from monitor.core.errors import first_line

    ti = context["ti"]
    reason = context.get("exception")
    _notify(
        context.get("ds") or "?",
        f"task {ti.task_id} (try {ti.try_number})",
        first_line(reason) if isinstance(reason, BaseException) else str(reason or "no reason given"),
    )


def notify_run_failure(context: Mapping[str, Any]) -> None:
    """Failure callback of the DAG run: a run past ``dagrun_timeout`` (or failed otherwise) is notified; a task's
    failure is not notified twice (the task's own callback did)."""
    reason = str(context.get("reason") or "no reason given")
    if reason == "task_failure":
        return
    run = context.get("dag_run")
    _notify(context.get("ds") or "?", f"run {getattr(run, 'run_id', '?')}", reason)


def _notify(day: str, what: str, reason: str) -> None:
    """One message, masked, to every alert URL. Never raises: a notifier that fails is logged, and the failure
    itself stays in Airflow's record."""
    from monitor.core.errors import MonitorError, redact

    title = f"[class health] {DAG_ID} failed for {day}"
    body = f"{what} of {DAG_ID} for {day} failed: {reason}"
    try:
        urls = task_settings().alert_urls
        if not urls:
            log.warning("%s (no MONITOR_ALERT_URLS: nobody notified)", redact(body))
            return
        from monitor.domain.alerts import notify_operations

        missed = notify_operations(urls, title, body)
    except MonitorError as exc:
        log.error("could not notify the failure of %s: %s", DAG_ID, redact(str(exc)))
        return
    if missed:
        log.error("could not notify the failure of %s to %s", DAG_ID, ", ".join(missed))


def predict_executor_config() -> dict[str, Any]:
    """The predict task's ``executor_config``: the KubernetesExecutor's ``pod_template_file`` named by
    ``[class_health] predict_pod_template_file``, or nothing. A path, not a pod object: the file is read by the
    executor when it starts the pod, so parsing this DAG needs neither the Kubernetes client nor the file."""
    template = conf.get(CONFIG_SECTION, "predict_pod_template_file", fallback="").strip()
    return {"pod_template_file": template} if template else {}


def already_published(events: Iterable[Any], extra: Mapping[str, Any]) -> bool:
    """Whether an earlier event already announced the same flagged classes for the same date and model."""
    key = (extra["date"], extra["model_id"], sorted(extra["flagged"]))
    return any(
        (event.extra.get("date"), event.extra.get("model_id"), sorted(event.extra.get("flagged") or [])) == key
        for event in events
    )


def already_announced(events: Iterable[Any], extra: Mapping[str, Any]) -> bool:
    """Whether an earlier event already announced the same ready candidates for the same date."""
    key = (extra["date"], sorted(extra["ready"]))
    return any((event.extra.get("date"), sorted(event.extra.get("ready") or [])) == key for event in events)


# --- the DAG --------------------------------------------------------------------------------------------


@dag(
    dag_id=DAG_ID,
    description="Daily per-class accuracy of the image classifier, with verdicts, alerts and a retraining hand-off.",
    # A data-interval schedule: the run started at midnight after day D has logical date D, so {{ ds }}
    # is the full day just ended, and a backfill of D evaluates D.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.parse(conf.get(CONFIG_SECTION, "start_date", fallback="2026-11-01"), tz="UTC"),
    catchup=conf.getboolean(CONFIG_SECTION, "catchup", fallback=False),
    # One date at a time, oldest first: health pools the previous days, and the embedded store
    # takes one writer at a time.
    max_active_runs=1,
    dagrun_timeout=DAGRUN_TIMEOUT,
    on_failure_callback=notify_run_failure,
    # Each task, once its retries are spent, notifies: the run's own callback may come much later.
    default_args={**DEFAULT_ARGS, "on_failure_callback": notify_task_failure},
    tags=["class-health", "monitoring"],
    doc_md=__doc__,
)
def class_health_daily() -> None:
    @task(task_id="index")
    def index() -> dict[str, Any]:
        """List the bucket and upsert one document per image (incremental)."""
        from monitor.orchestration.index_stage import run_index

        return _run_stage("index", run_index)

    @task(task_id="sample")
    def sample() -> dict[str, Any]:
        """Draw the date's reproducible per-class sample and write samples/<ds>.csv."""
        from monitor.orchestration.sample_stage import run_sample

        date = run_date(get_current_context())
        return _run_stage("sample", lambda settings: run_sample(settings, date))

    @task(
        task_id="predict",
        queue=conf.get(
            CONFIG_SECTION, "predict_queue", fallback=conf.get("operators", "default_queue", fallback="default")
        ),
        pool=conf.get(CONFIG_SECTION, "predict_pool", fallback="default_pool"),
        executor_config=predict_executor_config(),
    )
    def predict() -> dict[str, Any]:
        """Run the model on the date's sample and write predictions/<ds>.parquet."""
        from monitor.orchestration.predict_stage import run_predict

        date = run_date(get_current_context())
        return _run_stage("predict", lambda settings: run_predict(settings, date))

    @task.sensor(
        task_id="wait_for_predictions",
        poke_interval=300,
        timeout=3600 * conf.getfloat(CONFIG_SECTION, "external_wait_hours", fallback=12.0),
        mode="reschedule",  # the worker slot is free between pokes
    )
    def wait_for_predictions() -> Any:
        """External predictor mode: wait for the team's predictions of the sample at incoming/<ds>.csv (or .parquet)
        in the artifact store (MONITOR_ARTIFACTS_URI, a folder or gs://)."""
        from airflow.sdk.bases.sensor import PokeReturnValue

        from monitor.orchestration.import_stage import incoming

        date = run_date(get_current_context())
        key = incoming(task_settings(), date)
        return PokeReturnValue(is_done=key is not None, xcom_value=key)

    @task(task_id="import_predictions")
    def import_predictions() -> dict[str, Any]:
        """External predictor mode: check the team's file against the sample and store it as the date's predictions."""
        from monitor.orchestration.import_stage import import_incoming

        date = run_date(get_current_context())
        model_id = conf.get(CONFIG_SECTION, "external_model_id", fallback="") or None
        return _run_stage("import_predictions", lambda settings: import_incoming(settings, date, model_id=model_id))

    @task(task_id="metrics")
    def metrics() -> dict[str, Any]:
        """Per-class counts and intervals with Spark SQL into class_metrics."""
        from monitor.orchestration.metrics_stage import run_metrics

        date = run_date(get_current_context())
        return _run_stage("metrics", lambda settings: run_metrics(settings, date))

    @task(task_id="health")
    def health(measured: dict[str, Any]) -> dict[str, Any]:
        """Verdict per class from the pooled history, alerts on transitions, delivery of pending alerts.

        Judges the model that the metrics task measured (its XCom), not whichever model the store holds last.
        """
        from monitor.orchestration.health_stage import run_health

        date = run_date(get_current_context())
        return _run_stage("health", lambda settings: run_health(settings, date, model_id=measured["model_id"]))

    @task(task_id="publish_retraining", inlets=[NEEDS_RETRAINING], outlets=[NEEDS_RETRAINING])
    def publish_retraining(verdicts: dict[str, Any]) -> dict[str, Any]:
        """Emit a NEEDS_RETRAINING asset event carrying the flagged classes; skipped when none is flagged."""
        from airflow.sdk.exceptions import AirflowSkipException

        context = get_current_context()
        if not verdicts["flagged"]:
            raise AirflowSkipException(f"no class needs retraining on {verdicts['date']}")
        extra = {
            "date": verdicts["date"],
            "model_id": verdicts["model_id"],
            "flagged": list(verdicts["flagged"]),
            "verdicts": dict(verdicts["verdicts"]),
            "new_alerts": verdicts["new_alerts"],
        }
        # A retry or a re-run of the date must not trigger the retraining DAG a second time.
        if already_published(context["inlet_events"][NEEDS_RETRAINING], extra):
            raise AirflowSkipException(
                f"{extra['flagged']} on {extra['date']} for {extra['model_id']} was already published"
            )
        context["outlet_events"][NEEDS_RETRAINING].extra = extra
        log.info("published %s: %s need retraining on %s", NEEDS_RETRAINING.name, extra["flagged"], extra["date"])
        return extra

    @task(task_id="compare_candidates", inlets=[CANDIDATE_READY], outlets=[CANDIDATE_READY])
    def compare_candidates(verdicts: dict[str, Any]) -> dict[str, Any]:
        """Each candidate beside production up to the date (paired, per class); CANDIDATE_READY for those to promote.

        Runs after health, so that the classes a candidate must fix are the date's flagged ones.
        Skipped when no candidate predicted the date or none is ready.
        """
        from airflow.sdk.exceptions import AirflowSkipException

        from monitor.orchestration.compare_stage import run_compare

        context = get_current_context()
        date = run_date(context)
        result = _run_stage("compare_candidates", lambda settings: run_compare(settings, date))
        if not result["comparisons"]:
            raise AirflowSkipException(f"no candidate model predicted {date}")
        if not result["ready"]:
            raise AirflowSkipException(
                "no candidate is ready: "
                + "; ".join(f"{c['candidate']}: {c['verdict']} ({c['reason']})" for c in result["comparisons"])
            )
        keep = ("candidate", "verdict", "reason", "improved", "worse", "flagged", "start", "end", "days")
        extra = {
            "date": date,
            "production": verdicts["model_id"],
            "ready": list(result["ready"]),
            "comparisons": [{k: c[k] for k in keep} for c in result["comparisons"]],
        }
        if already_announced(context["inlet_events"][CANDIDATE_READY], extra):
            raise AirflowSkipException(f"{extra['ready']} on {date} were already announced")
        context["outlet_events"][CANDIDATE_READY].extra = extra
        log.info("published %s: %s ready for promotion on %s", CANDIDATE_READY.name, extra["ready"], date)
        return extra

    measured = metrics()
    verdicts = health(measured)
    if conf.get(CONFIG_SECTION, "predictor", fallback="builtin") == "external":
        # A model served elsewhere predicts the sample; the DAG waits for its file, imports it, and goes on.
        chain(index(), sample(), wait_for_predictions(), import_predictions(), measured)
    else:
        chain(index(), sample(), predict(), measured)
    publish_retraining(verdicts)
    compare_candidates(verdicts)


class_health_daily()
