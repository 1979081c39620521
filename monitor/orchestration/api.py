"""The service from Python (a notebook, a team's own job): evaluate a date, read the verdicts and alerts, compare a candidate.

Each function does what the CLI command of the same name does, with the same settings (the ``MONITOR_``
environment, ``MONITOR_CONFIG`` / ``./monitor.toml``, or a :class:`~monitor.core.settings.Settings` passed in)
and the same errors (:class:`~monitor.core.errors.MonitorError` subclasses, one line each), and returns the
typed values the CLI prints under ``--json`` (``schemas/``), without ``schema_version``::

    from monitor.orchestration import api

    day = api.evaluate("2026-11-20")          # index, sample, predict, metrics, health: the whole day
    report = api.health()                      # the latest verdicts, one row per class
    report.frame()[["label", "verdict", "pooled_accuracy", "prob_below_target"]]
    api.alerts(pending=True)                   # alerts not delivered yet
    api.compare("digits-candidate")["verdict"]  # promote, reject or insufficient_data

Readers open the store read-only (no lock, no write): they may run beside the daily job.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from monitor.core.dates import parse_run_date, today_utc
from monitor.core.errors import ConfigError, DataError
from monitor.core.settings import Settings, load_settings

if TYPE_CHECKING:
    import pandas as pd

    from monitor.domain.compare import ComparisonRecord
    from monitor.domain.health.judge import HealthRow
    from monitor.orchestration.results import AlertRow, EvaluateResult

__all__ = ["HealthReport", "alerts", "compare", "evaluate", "health", "history", "settings"]


def settings(**overrides: Any) -> Settings:
    """The effective settings (environment, config file, defaults), with ``overrides`` (field names) on top."""
    return load_settings(**overrides)


def evaluate(date: str | dt.date, *, force: bool = False, config: Settings | None = None) -> EvaluateResult:
    """Run whatever ``date`` still needs (``monitor evaluate --date``); ``force`` redoes every stage of it."""
    from monitor.orchestration.pipeline import evaluate as run

    chosen = config or settings()
    return run(chosen, parse_run_date(date).isoformat(), force=force)


@dataclass(frozen=True)
class HealthReport:
    """One model's verdicts of one date: the stored ``class_health`` rows, one per class, by class."""

    model_id: str
    date: str
    classes: list[HealthRow]

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (one row per class), for a notebook."""
        import pandas as pd

        return pd.DataFrame(self.classes)

    def flagged(self) -> list[str]:
        """The classes flagged for retraining on the date."""
        return [str(row["label"]) for row in self.classes if row.get("flagged")]


def health(
    date: str | dt.date | None = None, *, model: str | None = None, config: Settings | None = None
) -> HealthReport:
    """The verdicts of ``date`` (default: the latest judged) of ``model`` (default: production's latest model)."""
    from monitor.store import open_store

    with open_store(config or settings(), read_only=True) as store:
        model_id = model or _latest_model(store)
        days = store.dates("class_health", model_id)
        if not days:
            raise DataError(f"model {model_id} has no verdicts yet: run `monitor evaluate --date YYYY-MM-DD` first")
        day = parse_run_date(date).isoformat() if date is not None else days[-1]
        rows = store.rows("class_health", model_id, start=day, end=day)
    if not rows:
        raise DataError(f"model {model_id} has no verdicts on {day}; judged dates run from {days[0]} to {days[-1]}")
    return HealthReport(model_id=model_id, date=day, classes=rows)  # type: ignore[arg-type]


def history(
    label: str,
    *,
    model: str | None = None,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    config: Settings | None = None,
) -> pd.DataFrame:
    """One class's daily counts joined with its daily verdicts over ``start..end``, one row per date."""
    import pandas as pd

    from monitor.store import open_store

    first = parse_run_date(start).isoformat() if start is not None else None
    last = parse_run_date(end).isoformat() if end is not None else None
    if first and last and first > last:
        raise ConfigError(f"start {first} is after end {last}")
    with open_store(config or settings(), read_only=True) as store:
        model_id = model or _latest_model(store)
        metrics = store.rows("class_metrics", model_id, start=first, end=last, labels=[label])
        verdicts = store.rows("class_health", model_id, start=first, end=last, labels=[label])
    if not metrics:
        raise DataError(
            f"class {label!r} of model {model_id} has no results between {first or 'the start'} and {last or 'the end'}"
        )
    counts = pd.DataFrame(metrics)[["date", "n", "correct", "failed", "accuracy", "ci_low", "ci_high"]]
    judged = pd.DataFrame(verdicts)
    if judged.empty:
        return counts
    judged = judged[["date", "verdict", "pooled_accuracy", "prob_below_target", "flagged"]].rename(
        columns={"pooled_accuracy": "pooled", "prob_below_target": "p_below"}
    )
    return counts.merge(judged, on="date", how="left")


def alerts(*, pending: bool = False, model: str | None = None, config: Settings | None = None) -> list[AlertRow]:
    """Stored alerts, newest first (``pending``: only those not delivered yet)."""
    from monitor.domain.alerts import list_alerts
    from monitor.store import open_store

    with open_store(config or settings(), read_only=True) as store:
        return list_alerts(store, model, pending_only=pending)  # type: ignore[return-value]


def compare(
    candidate: str,
    *,
    since: str | dt.date | None = None,
    until: str | dt.date | None = None,
    config: Settings | None = None,
) -> ComparisonRecord:
    """``candidate`` beside production, class by class (``monitor compare``); stored for the dashboard, as the CLI does."""
    from monitor.orchestration.compare_stage import compare_and_save

    first = parse_run_date(since) if since is not None else None
    last = parse_run_date(until) if until is not None else today_utc()
    if first and first > last:
        raise ConfigError(f"since {first} is after until {last}")
    return compare_and_save(config or settings(), candidate, since=first, until=last).to_dict()


def _latest_model(store: Any) -> str:
    models = sorted(store.models(), key=lambda m: (str(m.get("last_date") or ""), str(m["model_id"])))
    if not models:
        raise DataError(f"the store holds no results yet ({store.description}): run `monitor evaluate` first")
    return str(models[-1]["model_id"])
