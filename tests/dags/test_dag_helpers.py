"""The DAG file's small helpers, without a scheduler or a metadata database: the MongoDB connection as the store's
settings, the duplicate rule of the published events, and the configuration keys the file reads (Airflow is
imported, under the throw-away home of ``airflow_env``; no DAG run, so these are in the fast lane)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from monitor.core.errors import ConfigError

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "class_health_daily.py"


@pytest.fixture(scope="module")
def dag_module(airflow_env) -> ModuleType:
    """The DAG file as a module, for its small helpers (the DagBag imports it under a mangled name)."""
    spec = importlib.util.spec_from_file_location("class_health_daily_under_test", DAG_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Event:
    def __init__(self, extra: dict[str, Any]) -> None:
        self.extra = extra


@pytest.mark.parametrize(
    ("uri", "expected_uri", "expected_db"),
    [
        (
            "mongo://mongodb:27017/class_health?replicaSet=rs0",
            "mongodb://mongodb:27017/?replicaSet=rs0",
            "class_health",
        ),
        (
            "mongo://svc%40corp:p%2Fss%3Aword@db.internal:27018/?authSource=admin&tls=true",
            "mongodb://svc%40corp:p%2Fss%3Aword@db.internal:27018/?authSource=admin&tls=true",
            None,
        ),
        (
            "mongo://user:pw@cluster0.example.net/metrics?srv=true",
            "mongodb+srv://user:pw@cluster0.example.net/",
            "metrics",
        ),
        ("mongo://localhost:27017/?srv=false", "mongodb://localhost:27017/", None),
    ],
)
def test_mongo_connection_becomes_the_store_uri_and_database(dag_module, uri, expected_uri, expected_db):
    import pymongo.uri_parser
    from airflow.sdk import Connection

    conn = Connection.from_uri(uri, conn_id="mongo_default")
    overrides = dag_module.mongo_overrides(conn)
    assert overrides["mongo_uri"] == expected_uri
    assert overrides.get("mongo_db") == expected_db
    if not expected_uri.startswith("mongodb+srv"):  # an SRV URI would need a DNS lookup to parse
        parsed = pymongo.uri_parser.parse_uri(overrides["mongo_uri"])
        assert parsed["nodelist"] == [(conn.host, conn.port)]
        assert (parsed["username"], parsed["password"]) == (conn.login, conn.password)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"conn_type": "postgres", "host": "db"}, r"has type 'postgres'; a MongoDB connection has type 'mongo'"),
        ({"conn_type": "mongo", "host": None}, r"'mongo_default' has no host"),
    ],
)
def test_unusable_mongo_connection_is_a_config_error(dag_module, fields, message):
    from airflow.sdk import Connection

    with pytest.raises(ConfigError, match=message):
        dag_module.mongo_overrides(Connection(conn_id="mongo_default", **fields))


@pytest.mark.parametrize(
    ("earlier", "published"),
    [
        ([], False),
        ([{"date": "2026-11-20", "model_id": "m@1", "flagged": ["eight", "three"]}], True),
        ([{"date": "2026-11-19", "model_id": "m@1", "flagged": ["three", "eight"]}], False),
        ([{"date": "2026-11-20", "model_id": "m@2", "flagged": ["three", "eight"]}], False),
        ([{"date": "2026-11-20", "model_id": "m@1", "flagged": ["three"]}], False),
        ([{"unrelated": True}], False),
    ],
)
def test_an_event_is_a_duplicate_only_for_the_same_date_model_and_classes(dag_module, earlier, published):
    extra = {"date": "2026-11-20", "model_id": "m@1", "flagged": ["three", "eight"]}
    assert dag_module.already_published([_Event(e) for e in earlier], extra) is published


def test_a_candidate_event_is_a_duplicate_only_for_the_same_date_and_candidates(dag_module):
    class Event:
        def __init__(self, extra):
            self.extra = extra

    earlier = [Event({"date": "2026-11-20", "ready": ["b@2", "a@1"]})]
    assert dag_module.already_announced(earlier, {"date": "2026-11-20", "ready": ["a@1", "b@2"]})
    assert not dag_module.already_announced(earlier, {"date": "2026-11-21", "ready": ["a@1", "b@2"]})
    assert not dag_module.already_announced(earlier, {"date": "2026-11-20", "ready": ["a@1"]})


def test_config_keys_lists_exactly_the_keys_the_dag_file_reads(dag_module):

    read = set(re.findall(r"conf\.get(?:boolean|float)?\(\s*CONFIG_SECTION,\s*\"(\w+)\"", DAG_FILE.read_text()))
    assert read == set(dag_module.CONFIG_KEYS)


def test_the_example_consumer_listens_to_the_asset_the_daily_dag_publishes(dag_module) -> None:
    spec = importlib.util.spec_from_file_location("example_under_test", DAG_FILE.parent / "example_retrain_on_flag.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    # An asset is identified by its name and URI: the two files must spell them alike.
    assert example.NEEDS_RETRAINING == dag_module.NEEDS_RETRAINING
    assert (example.NEEDS_RETRAINING.name, example.NEEDS_RETRAINING.group) == (
        "class_health_needs_retraining",
        "class_health",
    )


class _Run:
    run_id = "scheduled__2026-11-21T00:00:00+00:00"


def test_a_run_past_its_timeout_is_notified_once_masked_and_a_task_failure_not_twice(
    dag_module: ModuleType, webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONITOR_ALERT_URLS", f'["{webhook.url}"]')
    monkeypatch.setenv("MONITOR_MONGO_URI", "mongodb://ops:Hunter2pw@127.0.0.1:1/")
    context = {"ds": "2026-11-21", "dag_run": _Run(), "reason": "timed_out"}
    dag_module.notify_run_failure(context)
    (notice,) = [body["json"] for body in webhook.bodies]
    assert notice["title"] == "[class health] class_health_daily failed for 2026-11-21"
    assert notice["message"] == f"run {_Run.run_id} of class_health_daily for 2026-11-21 failed: timed_out"

    # A task's failure reaches the run's callback too, after the task's own callback has notified it.
    dag_module.notify_run_failure({**context, "reason": "task_failure"})
    assert len(webhook.bodies) == 1

    # A failure's text that quotes a secret is masked before it leaves.
    class _Ti:
        task_id, try_number = "index", 4

    dag_module.notify_task_failure(
        {"ds": "2026-11-21", "ti": _Ti(), "exception": RuntimeError("mongodb://ops:Hunter2pw@db unreachable")}
    )
    last = webhook.bodies[-1]["json"]["message"]
    assert last.startswith("task index (try 4) of class_health_daily for 2026-11-21 failed: mongodb://***@db")
    assert "Hunter2pw" not in json.dumps(webhook.bodies)


def test_a_stuck_run_times_out_within_a_day_so_the_next_day_can_run(dag_module: ModuleType) -> None:
    import datetime as dt

    assert dt.timedelta(hours=6) <= dag_module.DAGRUN_TIMEOUT < dt.timedelta(days=1)
    assert dag_module.DAGRUN_TIMEOUT > dag_module.DEFAULT_ARGS["execution_timeout"]  # a long task is not cut short
