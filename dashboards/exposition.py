"""The dashboard server's ``/metrics``: class health, stage runs and pending alerts for Prometheus (prometheus_client).

Every scrape reads what the store holds now, through :class:`dashboards.data.DashboardData` (cached per store
version, like the pages): for each model with verdicts, the rows of its latest judged date, one sample per class;
for the latest judged dates, each stage's last finish time and duration; the alerts not yet delivered. Nothing is
computed here that the store does not hold: a figure here is the figure of the ``class_health`` row.

Families (``model`` and ``class`` labels; see docs/METRICS.md for the Prometheus alert rules that use them):

- ``class_health_pooled_accuracy``, ``class_health_ci_low``, ``class_health_ci_high``, ``class_health_target``,
  ``class_health_prob_below_target``, ``class_health_pooled_images``: the window's evidence;
- ``class_health_verdict{verdict=...}``: 1 for the class's verdict, 0 for the others (a state set);
  ``class_health_flagged``: 1 while the class is flagged for retraining;
- ``class_health_statistic`` / ``class_health_threshold`` with ``test`` = ``cusum`` | ``collapse`` | ``recovery``:
  the sequential tests' statistics and the thresholds they are judged against;
- ``class_health_judged_date_seconds{model}``: the latest date judged (its midnight, UTC, as a Unix time);
- ``class_health_stage_last_success_seconds{stage}`` and ``class_health_stage_duration_seconds{stage}``;
- ``class_health_pending_alerts``: alerts stored but not yet delivered.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from monitor.core.verdicts import Verdict

if TYPE_CHECKING:
    from dashboards.data import DashboardData

#: (family, field of the class_health row, help)
_EVIDENCE: tuple[tuple[str, str, str], ...] = (
    ("pooled_accuracy", "pooled_accuracy", "Accuracy pooled over the class's window (unbiased for follow-up draws)."),
    ("ci_low", "ci_low", "Lower bound of the pooled accuracy's interval (MONITOR_CONFIDENCE_LEVEL)."),
    ("ci_high", "ci_high", "Upper bound of the pooled accuracy's interval."),
    ("target", "target", "The accuracy the class should reach."),
    ("prob_below_target", "prob_below_target", "Posterior probability that the class's accuracy is below target."),
    ("pooled_images", "pooled_n", "Images pooled in the class's window."),
)
_TESTS: tuple[tuple[str, str, str], ...] = (
    ("cusum", "cusum", "cusum_threshold"),
    ("collapse", "collapse", "collapse_threshold"),
    ("recovery", "recovery", "recovery_threshold"),
)
PREFIX = "class_health"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def _midnight(day: str) -> float:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), dt.UTC).timestamp()


def _seconds(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()
    return None


def families(data: DashboardData) -> list[Metric]:
    """The metric families of the store as it is now (see the module docstring)."""
    evidence = {
        name: GaugeMetricFamily(f"{PREFIX}_{name}", text, labels=["model", "class"]) for name, _, text in _EVIDENCE
    }
    verdict = GaugeMetricFamily(
        f"{PREFIX}_verdict",
        "1 for the class's current verdict, 0 for the others.",
        labels=["model", "class", "verdict"],
    )
    flagged = GaugeMetricFamily(
        f"{PREFIX}_flagged", "1 while the class is flagged for retraining.", labels=["model", "class"]
    )
    statistic = GaugeMetricFamily(
        f"{PREFIX}_statistic", "A sequential test's statistic for the class.", labels=["model", "class", "test"]
    )
    threshold = GaugeMetricFamily(
        f"{PREFIX}_threshold", "The threshold the statistic is judged against.", labels=["model", "class", "test"]
    )
    judged = GaugeMetricFamily(
        f"{PREFIX}_judged_date_seconds", "The latest date judged (midnight UTC, Unix time).", labels=["model"]
    )
    last_days: list[str] = []
    for info in data.models():
        rows = data.latest_health(info.model_id)
        if not rows:
            continue
        day = str(rows[0]["date"])
        last_days.append(day)
        judged.add_metric([info.model_id], _midnight(day))
        for row in rows:
            labels = [info.model_id, str(row["label"])]
            for name, field, _ in _EVIDENCE:
                if (value := _number(row.get(field))) is not None:
                    evidence[name].add_metric(labels, value)
            for state in Verdict:
                verdict.add_metric([*labels, state.value], 1.0 if row.get("verdict") == state.value else 0.0)
            flagged.add_metric(labels, 1.0 if row.get("flagged") else 0.0)
            for test, stat_field, threshold_field in _TESTS:
                if (value := _number(row.get(stat_field))) is not None:
                    statistic.add_metric([*labels, test], value)
                if (value := _number(row.get(threshold_field))) is not None:
                    threshold.add_metric([*labels, test], value)
    last_success = GaugeMetricFamily(
        f"{PREFIX}_stage_last_success_seconds",
        "When the stage last finished, over the latest judged dates (Unix time).",
        labels=["stage"],
    )
    duration = GaugeMetricFamily(
        f"{PREFIX}_stage_duration_seconds", "How long the stage's last finished run took.", labels=["stage"]
    )
    for stage, (finished, seconds) in sorted(_latest_stages(data, sorted(set(last_days))).items()):
        last_success.add_metric([stage], finished)
        if seconds is not None:
            duration.add_metric([stage], seconds)
    pending = GaugeMetricFamily(f"{PREFIX}_pending_alerts", "Alerts stored but not delivered yet.")
    pending.add_metric([], float(len(data.pending_alerts())))
    return [*evidence.values(), verdict, flagged, statistic, threshold, judged, last_success, duration, pending]


def _latest_stages(data: DashboardData, days: Iterable[str]) -> dict[str, tuple[float, float | None]]:
    """Per stage, the latest finish time (and that run's seconds) among the runs of ``days``."""
    latest: dict[str, tuple[float, float | None]] = {}
    for day in days:
        for run in data.runs(day):
            for stage, note in (run.get("stages") or {}).items():
                if not isinstance(note, dict) or (finished := _seconds(note.get("finished_at"))) is None:
                    continue
                if stage not in latest or finished > latest[stage][0]:
                    latest[stage] = (finished, _number(note.get("seconds")))
    return latest


class _StoreCollector(Collector):
    def __init__(self, data: DashboardData) -> None:
        self._data = data

    def collect(self) -> Iterator[Metric]:
        yield from families(self._data)


def registry_for(data: DashboardData) -> CollectorRegistry:
    """A registry of its own (not the process-global one) that reads ``data`` at every scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StoreCollector(data))
    return registry
