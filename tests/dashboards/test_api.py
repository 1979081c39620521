"""``/api/v1`` on the dashboard server: each response validates against its schema in schemas/, holds exactly what the
store holds (the ``history`` fixture's documents), and a request that cannot be answered is one JSON error."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from monitor.orchestration.schemas import SCHEMA_VERSION, schema_path
from tests.fixtures.dashboard import MODEL, day, production_client


def _get(client: Any, path: str, schema: str, status: int = 200) -> dict[str, Any]:
    response = client.get(path)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.get_data(as_text=True))
    validator = jsonschema.Draft202012Validator(json.loads(schema_path(schema).read_text()))
    errors = [f"{list(e.path)}: {e.message[:160]}" for e in validator.iter_errors(body)]
    assert not errors, errors
    assert body["schema_version"] == SCHEMA_VERSION
    return body


def test_models_health_and_history_are_the_stored_rows(history, settings) -> None:
    client = production_client(settings)
    models = _get(client, "/api/v1/models", "api-models")["models"]
    assert [m["model_id"] for m in models] == [MODEL] and models[0]["last_date"] == day(0)

    latest = _get(client, "/api/v1/health", "api-health")
    assert latest["date"] == day(0) and latest["model_id"] == MODEL
    expected = history["health"][history["health"]["date"] == day(0)].sort_values("label")
    assert [(r["label"], r["verdict"], r["prob_below_target"]) for r in latest["classes"]] == list(
        zip(expected["label"], expected["verdict"], expected["prob_below_target"], strict=True)
    )
    earlier = _get(client, f"/api/v1/health?model={MODEL}&date={day(5)}", "api-health")
    assert {r["label"]: r["verdict"] for r in earlier["classes"]} == {
        "ant": "healthy",
        "bee": "healthy",
        "cat": "watch",
    }

    cat = _get(client, f"/api/v1/history?class=cat&start={day(9)}&end={day(0)}", "api-history")
    metrics = history["metrics"]
    wanted = metrics[(metrics["label"] == "cat") & (metrics["date"] >= day(9))].sort_values("date")
    assert [(m["date"], m["n"], m["correct"]) for m in cat["metrics"]] == list(
        zip(wanted["date"], wanted["n"], wanted["correct"], strict=True)
    )
    assert [h["verdict"] for h in cat["health"]][-3:] == ["needs_retraining"] * 3 and len(cat["health"]) == 10


def test_alerts_runs_and_errors(history, settings) -> None:
    client = production_client(settings)
    alerts = _get(client, "/api/v1/alerts", "api-alerts")["alerts"]
    assert [(a["label"], a["kind"], a["delivered"]) for a in alerts] == [("cat", "needs_retraining", True)]
    assert _get(client, "/api/v1/alerts?pending=1", "api-alerts")["alerts"] == []
    runs = _get(client, f"/api/v1/runs?date={day(0)}", "api-runs")["runs"]
    assert runs[0]["skipped"] == {"zero_bytes": 2} and "index" in runs[0]["stages"]

    for path, status, words in (
        ("/api/v1/health?date=2024-02-30", 400, "not a valid YYYY-MM-DD date"),
        ("/api/v1/health?model=nope@1", 404, "model 'nope@1' has no results"),
        ("/api/v1/health?date=2023-01-01", 404, "no verdicts on 2023-01-01"),
        ("/api/v1/history", 400, "'class' is required"),
        ("/api/v1/history?class=cat&start=2024-03-10&end=2024-03-01", 400, "is after end"),
        ("/api/v1/history?class=zebra", 404, "class 'zebra'"),
        ("/api/v1/runs?date=2020-01-01", 404, "no run is recorded for 2020-01-01"),
        ("/api/v1/comparisons?candidate=cand@1", 404, "run `monitor compare`"),
        ("/api/v1/nothing/here", 404, "no API resource /api/v1/nothing/here"),
    ):
        error = _get(client, path, "api-error", status)["error"]
        assert error["status"] == status and words in error["message"], (path, error)


def test_an_empty_store_answers_not_found_and_an_unreachable_one_service_unavailable(settings) -> None:
    error = _get(production_client(settings), "/api/v1/health", "api-error", 404)["error"]
    assert "no results yet" in error["message"]
    password = "Ap1Mongo9Pw"
    unreachable = settings.model_copy(
        update={
            "mongo_uri": f"mongodb://ops:{password}@127.0.0.1:1/?serverSelectionTimeoutMS=200",
            "mongo_timeout_ms": 200,
        }
    )
    response = production_client(unreachable).get("/api/v1/models")
    body = response.get_data(as_text=True)
    assert response.status_code == 503 and password not in body
    assert json.loads(body)["error"]["type"] == "StoreError"


@pytest.mark.parametrize("path", ["/api/v1/health?model=" + "m" * 5000, "/api/v1/history?class=a%00b"])
def test_odd_parameters_are_refused_in_one_line(history, settings, path: str) -> None:
    error = _get(production_client(settings), path, "api-error", 400)["error"]
    assert "\n" not in error["message"] and len(error["message"]) < 300


def test_a_stored_comparison_is_served_as_stored(history, settings, store) -> None:
    record = {
        "verdict": "reject",
        "reason": "worse on bee",
        "production": MODEL,
        "candidate": "cand@2",
        "start": day(3),
        "end": day(1),
        "days": 3,
        "alpha": 0.05,
        "margin": 0.02,
        "multiplicity": "holm",
        "flagged": ["cat"],
        "improved": [],
        "worse": ["bee"],
        "pending": {"cat": 4},
        "days_more": None,
        "unpaired": {"production": 0, "candidate": 0},
    }
    store.save_comparison({"date": day(1), **record})
    store.commit()
    client = production_client(settings)
    served = _get(client, f"/api/v1/comparisons?candidate=cand@2&end={day(0)}", "api-comparison")
    assert {k: v for k, v in served.items() if k != "schema_version"} == record
    assert _get(client, f"/api/v1/comparisons?candidate=cand@2&end={day(2)}", "api-error", 404)
