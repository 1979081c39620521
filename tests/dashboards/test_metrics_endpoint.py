"""``/metrics`` on the dashboard server: scraped and parsed with prometheus_client's own parsers, every figure equal
to the stored row it comes from (the ``history`` fixture's last day), and the Prometheus rules shipped in docker/
asking only for families the endpoint exports."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from monitor.core.verdicts import Verdict
from tests.fixtures.dashboard import END, MODEL, day, production_client

ROOT = Path(__file__).resolve().parents[2]


def _samples(text: str, parser: Any = parse_text) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for family in parser(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def _families(client: Any) -> set[str]:
    """The family names a scrape declares (with or without samples: a store with no stage times still names it)."""
    return {family.name for family in parse_text(client.get("/metrics").get_data(as_text=True))}


def _one(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    (match,) = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    return float(match)


def test_every_class_of_the_latest_judged_day_is_exported_with_its_stored_figures(history, settings) -> None:
    client = production_client(settings)
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    samples = _samples(response.get_data(as_text=True))

    last = history["health"][history["health"]["date"] == day(0)].set_index("label")
    assert sorted(last.index) == ["ant", "bee", "cat"]
    for label, row in last.iterrows():
        labels = {"model": MODEL, "class": str(label)}
        for family, field in (
            ("pooled_accuracy", "pooled_accuracy"),
            ("ci_low", "ci_low"),
            ("ci_high", "ci_high"),
            ("target", "target"),
            ("prob_below_target", "prob_below_target"),
            ("pooled_images", "pooled_n"),
        ):
            assert _one(samples, f"class_health_{family}", **labels) == pytest.approx(float(row[field]))
        states = {s.labels["verdict"]: s.value for s in samples["class_health_verdict"] if s.labels["class"] == label}
        assert states == {v.value: float(v.value == row["verdict"]) for v in Verdict}  # one state set, one state on
        for test in ("cusum", "collapse", "recovery"):
            assert _one(samples, "class_health_statistic", test=test, **labels) == row[test]
            assert _one(samples, "class_health_threshold", test=test, **labels) == row[f"{test}_threshold"]
        assert _one(samples, "class_health_flagged", **labels) == float(row["flagged"])
    assert {
        s.labels["class"] for s in samples["class_health_verdict"] if s.value == 1 and s.labels["verdict"] != "healthy"
    } == {"bee", "cat"}
    midnight = dt.datetime.combine(END, dt.time(), dt.UTC).timestamp()
    assert _one(samples, "class_health_judged_date_seconds", model=MODEL) == midnight
    assert _one(samples, "class_health_stage_last_success_seconds", stage="index") == midnight + 3600
    assert _one(samples, "class_health_pending_alerts") == 0


def test_a_new_pending_alert_and_a_new_day_show_at_the_next_scrape(history, settings, store) -> None:
    from tests.fixtures.dashboard import health_doc, write_history

    client = production_client(settings)
    before = _samples(client.get("/metrics").get_data(as_text=True))
    assert _one(before, "class_health_pending_alerts") == 0
    next_day = (END + dt.timedelta(days=1)).isoformat()
    write_history(store, "class_health", [health_doc("ant", next_day, "watch", prob=0.7)])
    store.add_alert({"model_id": MODEL, "label": "ant", "date": next_day, "kind": "watch", "delivered": False})
    store.commit()

    after = _samples(client.get("/metrics").get_data(as_text=True))
    assert _one(after, "class_health_pending_alerts") == 1
    assert _one(after, "class_health_prob_below_target", model=MODEL, **{"class": "ant"}) == 0.7
    # Only the classes judged on the latest day are exported: bee and cat were not judged on it.
    assert {s.labels["class"] for s in after["class_health_verdict"]} == {"ant"}
    assert _one(after, "class_health_verdict", verdict="watch", **{"class": "ant"}) == 1


def test_a_scraper_that_asks_for_openmetrics_gets_it(history, settings) -> None:
    response = production_client(settings).get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"}
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    text = response.get_data(as_text=True)
    assert text.rstrip().endswith("# EOF")
    samples = _samples(text, parse_openmetrics)
    assert _one(samples, "class_health_flagged", model=MODEL, **{"class": "cat"}) == 1  # flagged in the stored row


def test_an_empty_store_exports_no_class_and_no_error(settings) -> None:
    response = production_client(settings).get("/metrics")
    assert response.status_code == 200
    samples = _samples(response.get_data(as_text=True))
    assert "class_health_verdict" not in samples and _one(samples, "class_health_pending_alerts") == 0


def test_the_shipped_prometheus_rules_ask_only_for_exported_families(history, settings) -> None:
    exported = _families(production_client(settings))
    rules = yaml.safe_load((ROOT / "docker" / "prometheus" / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    asked = {name for expr in expressions for name in re.findall(r"\bclass_health_\w+", expr)}
    assert len(expressions) >= 3 and asked and asked <= exported, asked - exported
    scrape = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "class-health"]
    assert job.get("metrics_path", "/metrics") == "/metrics" and job["static_configs"][0]["targets"] == [
        "dashboard:8050"
    ]
    assert "alerts.yml" in " ".join(scrape["rule_files"])


def test_the_shipped_grafana_dashboard_queries_only_exported_families_through_the_provisioned_source(
    history, settings
) -> None:
    exported = _families(production_client(settings))
    grafana = ROOT / "docker" / "grafana"
    board = json.loads((grafana / "dashboards" / "class-health.json").read_text())
    (source,) = yaml.safe_load((grafana / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    provider = yaml.safe_load((grafana / "provisioning" / "dashboards" / "class-health.yml").read_text())["providers"][
        0
    ]
    assert source["url"] == "http://prometheus:9090" and provider["options"]["path"] == "/etc/grafana/dashboards"
    targets = [t for panel in board["panels"] for t in panel["targets"]]
    assert len(board["panels"]) >= 6 and {t["datasource"]["uid"] for t in targets} == {source["uid"]}
    asked = {name for t in targets for name in re.findall(r"\bclass_health_\w+", t["expr"])}
    assert asked <= exported, asked - exported
    # Every family about a class that a user would chart is on the board.
    assert {"class_health_verdict", "class_health_pooled_accuracy", "class_health_prob_below_target"} <= asked
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
