"""The whole day: ``evaluate`` runs, for one date, whatever the date still needs, stage after stage.

Each stage lives in its own module (:mod:`.index_stage`, :mod:`.sample_stage`, :mod:`.predict_stage`,
:mod:`.metrics_stage`, :mod:`.health_stage`) and is idempotent for its date. Each ``run_*`` function builds the
date's :class:`~monitor.orchestration.context.RunContext` (the date checked, the source opened) before anything
is opened, opens its own store (an Airflow task is its own process), replaces only its own output for the date,
and returns a typed summary (:mod:`monitor.orchestration.results`; Airflow XCom, ``--json``). The ``*_with``
functions take that context and an open store, so one process can run several stages (``evaluate``, the demo).
Errors are :class:`~monitor.core.errors.MonitorError` subclasses with one readable line.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from monitor.core import faults
from monitor.core.errors import ConfigError, MonitorError, SourceError
from monitor.core.progress import ProgressFactory, no_progress
from monitor.core.settings import Settings
from monitor.orchestration.context import RunContext
from monitor.orchestration.health_stage import health_with
from monitor.orchestration.index_stage import index_with
from monitor.orchestration.metrics_stage import metrics_with
from monitor.orchestration.predict_stage import predict_with
from monitor.orchestration.results import EvaluateResult, RangeDay, RangeResult
from monitor.orchestration.runs import record_stage
from monitor.orchestration.sample_stage import sample_key, sample_with
from monitor.store import Store, open_store

STAGES = ("index", "sample", "predict", "metrics", "health")


def evaluate_with(
    ctx: RunContext, store: Store, *, force: bool = False, progress: ProgressFactory = no_progress, spark: Any = None
) -> EvaluateResult:
    """Everything the date still needs, end to end, on an open store (the demo reuses one store and Spark)."""
    settings, date, source_uri = ctx.settings, ctx.day, ctx.source_uri
    has_sample = store.sample(source_uri, date) is not None
    index_summary = None
    if force or not has_sample or not ctx.artifacts.exists(sample_key(date)):
        index_summary = index_with(settings, store, progress=progress, source=ctx.source)
        if index_summary["listed"] == 0:
            raise SourceError(f"source {source_uri} is empty")
        record_stage(store, ctx, "index", {k: v for k, v in index_summary.items() if k not in ("source", "labels")})
    faults.point("after_stage:index")
    sample = sample_with(ctx, store, force=force)
    faults.point("after_stage:sample")
    predicted = predict_with(ctx, store, force=force, progress=progress, spark=spark)
    faults.point("after_stage:predict")
    metrics = metrics_with(ctx, store, spark=spark)
    faults.point("after_stage:metrics")
    health = health_with(ctx, store, model_id=predicted["model_id"])
    faults.point("after_stage:health")
    verdicts = health["verdicts"]
    skipped: dict[str, int] = {}
    if index_summary is not None:
        skipped = dict(index_summary["unusable"])
    else:
        skipped = store.unusable_counts(source_uri)
    result: EvaluateResult = {
        "date": date,
        "model": predicted["model_id"],
        "source": source_uri,
        "samples_csv": sample["samples_csv"],
        "predictions": predicted["predictions"],
        "sampled": sample["images"],
        "short_classes": sample["short_classes"],
        "followup": sample["followup"],
        "classes": [{**row, "verdict": verdicts.get(row["label"])} for row in metrics["classes"]],
        "skipped": skipped,
        "failed": predicted["failed"],
        "flagged": health["flagged"],
        "new_alerts": health["new_alerts"],
        "pending_alerts": health["pending"],
        "health": health["classes"],
    }
    store.update_run(
        source_uri, date, {"model_id": predicted["model_id"], "skipped": skipped, "failed": predicted["failed"]}
    )
    return result


def evaluate(
    settings: Settings, date: str, *, force: bool = False, progress: ProgressFactory = no_progress
) -> EvaluateResult:
    """Run, for ``date``, whatever it still needs: index and sample (unless a sample exists), predict, metrics, health."""
    ctx = RunContext.for_date(settings, date)  # before the store is opened: a malformed or future date writes nothing
    with open_store(settings) as store:
        return evaluate_with(ctx, store, force=force, progress=progress)


def evaluate_range(
    settings: Settings,
    start: str | dt.date,
    end: str | dt.date,
    *,
    force: bool = False,
    progress: ProgressFactory = no_progress,
    report: Callable[[str], None] = lambda line: None,
) -> RangeResult:
    """Evaluate every date from ``start`` to ``end`` in order (a backfill), as one ``evaluate`` per date would.

    A date whose run already finished its health stage with the production model is skipped (unless ``force``), so a
    backfill stopped by a failure resumes where it stopped when run again. ``report`` gets one line per date. A date
    that fails stops the range with its error, naming the date and the command that resumes from it.
    """
    from monitor.core.dates import parse_run_date
    from monitor.orchestration.runs import production_model_id

    first, last = parse_run_date(start), parse_run_date(end)
    if first > last:
        raise ConfigError(f"--from {first} is after --to {last}")
    days = [first + dt.timedelta(days=k) for k in range((last - first).days + 1)]
    model_id = production_model_id(settings)
    done: list[RangeDay] = []
    with open_store(settings) as store:
        for day in days:
            ctx = RunContext.for_date(settings, day)
            run = next((r for r in store.runs_on(ctx.day) if r.get("source") == ctx.source_uri), None)
            if not force and run and "health" in (run.get("stages") or {}) and run.get("model_id") == model_id:
                done.append({"date": ctx.day, "status": "skipped", "sampled": None, "flagged": []})
                report(f"{ctx.day}: evaluated before, skipped ({len(done)}/{len(days)})")
                continue
            try:
                result = evaluate_with(ctx, store, force=force, progress=progress)
            except MonitorError as exc:
                resume = f"monitor evaluate --from {ctx.day} --to {last.isoformat()}"
                raise type(exc)(f"{ctx.day}: {exc} (the dates before it are done: `{resume}` goes on)") from exc
            done.append(
                {"date": ctx.day, "status": "evaluated", "sampled": result["sampled"], "flagged": result["flagged"]}
            )
            flagged = ", ".join(result["flagged"]) or "none"
            report(f"{ctx.day}: evaluated {result['sampled']} images, flagged: {flagged} ({len(done)}/{len(days)})")
    return {"start": first.isoformat(), "end": last.isoformat(), "dates": done}
