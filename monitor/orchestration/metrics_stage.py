"""The metrics stage: per-class counts and intervals with Spark SQL over the date's predictions, each image counted once per model."""

from __future__ import annotations

import logging
from typing import Any

from monitor.core.errors import DataError
from monitor.core.settings import Settings
from monitor.orchestration.context import RunContext
from monitor.orchestration.results import ClassCounts, MetricsResult
from monitor.orchestration.runs import production_model_id, record_stage
from monitor.store import Store, open_store

log = logging.getLogger(__name__)


def metrics_with(ctx: RunContext, store: Store, *, spark: Any = None) -> MetricsResult:
    """Per-class counts with Spark SQL over the date's predictions; replaces the (model, date) rows."""
    from evaluation.metrics import class_metrics_pandas, class_metrics_spark
    from evaluation.predictions import PredictionFiles
    from evaluation.spark import spark_for

    settings, date = ctx.settings, ctx.day
    files = PredictionFiles(ctx.artifacts)
    key = files.production(date)
    path = files.location(key)
    if not files.exists(key):
        raise DataError(f"no predictions for {date} ({path} is missing): run the predict step first")
    written = next((run.get("predictions") for run in store.runs_on(date) if run.get("source") == ctx.source_uri), None)
    # Read once: the digest checked is that of the bytes the metrics are computed from.
    frame, digest = files.read_with_digest(key)
    if isinstance(written, dict) and written.get("sha256") and written["sha256"] != digest:
        raise DataError(
            f"{path} changed since the predict step wrote it ({written.get('rows')} rows then): "
            f"re-run with `monitor evaluate --date {date} --force` to predict {date} again"
        )
    recorded = store.sample(ctx.source_uri, date, items=True) or {}
    model_ids = (
        sorted(frame["model_id"].unique())
        if len(frame)
        else [str(recorded.get("model_id") or production_model_id(settings))]
    )
    if len(model_ids) != 1:
        raise DataError(f"{path} mixes models {model_ids}; re-run predict for {date}")
    model_id = model_ids[0]
    # The classes of the date's sample, including those it could not fill (n = 0: an empty class is news);
    # not today's classes, so that a backfilled date keeps the class list it had.
    labels = sorted(set(recorded.get("classes") or {}) | set(frame["label"]))
    frame, evaluations, recounted = once_per_image(store, model_id, date, frame, recorded)
    if len(frame):
        session = spark or spark_for(settings)
        rows = class_metrics_spark(session, frame, labels=labels, confidence=settings.confidence_level)
    else:  # nothing new was evaluated: every class reports n = 0 (no Spark session for that)
        rows = class_metrics_pandas(frame, labels=labels, confidence=settings.confidence_level) if labels else []
    left = recorded.get("unseen_left") or {}
    for row in rows:
        row["model_id"], row["date"] = model_id, date
        row["unseen_left"] = left.get(row["label"])
    store.replace_day("class_metrics", model_id, date, rows)
    store.replace_evaluations(model_id, date, evaluations)
    summary: MetricsResult = {
        "date": date,
        "model_id": model_id,
        "classes": [
            ClassCounts(
                label=row["label"],
                n=row["n"],
                correct=row["correct"],
                failed=row["failed"],
                accuracy=row["accuracy"],
                ci_low=row["ci_low"],
                ci_high=row["ci_high"],
            )
            for row in rows
        ],
        "recounted": recounted,
    }
    record_stage(store, ctx, "metrics", {"model_id": model_id, "classes": len(rows)})
    return summary


def once_per_image(
    store: Store, model_id: str, date: str, frame: Any, recorded: dict[str, Any]
) -> tuple[Any, list[dict[str, Any]], int]:
    """The predictions that count for ``date``: each image once per model. Returns them, the day's ``evaluations``
    rows, and how many predictions were left out (an image evaluated on another date, or twice today).

    The sampler already leaves out what the model evaluated; this catches the rest (a sample drawn before a
    backfilled date evaluated some of its images, copies of one image under two paths).
    """
    from evaluation.predictions import FETCH_FAILED
    from monitor.domain.sampling import image_identity

    identity = {
        str(item["path"]): item.get("image") or image_identity(None, str(item["path"]))
        for item in recorded.get("items") or []
    }
    images = [identity.get(str(path)) or image_identity(None, str(path)) for path in frame["image_path"]]
    earlier = store.evaluated(model_id, labels=set(frame["label"]), other_than=date)
    errors = frame["error"] if "error" in frame else [None] * len(frame)
    keep, taken, rows = [], set(), []
    for i, (label, image, status, error) in enumerate(zip(frame["label"], images, frame["status"], errors)):
        key = (str(label), image)
        repeat = image in earlier.get(str(label), ()) or key in taken
        keep.append(not (repeat and status == "ok"))
        # A read that failed may work tomorrow (drawn again); an image that does not decode is recorded, not redrawn.
        if repeat or (status != "ok" and (status != "failed" or error == FETCH_FAILED)):
            continue
        taken.add(key)
        rows.append(
            {
                "label": str(label),
                "image": image,
                "path": str(frame["image_path"].iloc[i]),
                "status": str(status),
                "correct": bool(frame["pred"].iloc[i] == label) if status == "ok" else None,
                "draw": str(frame["draw"].iloc[i]) if "draw" in frame else "base",
            }
        )
    dropped = len(keep) - sum(keep)
    if dropped:
        log.info("%d predictions of %s on %s are of images it evaluated already: counted once", dropped, model_id, date)
    return frame.loc[frame.index[keep]].reset_index(drop=True), rows, dropped


def run_metrics(settings: Settings, date: str) -> MetricsResult:
    ctx = RunContext.for_date(settings, date)
    with open_store(settings) as store:
        return metrics_with(ctx, store)
