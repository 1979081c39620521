"""The daily stages for one date, each idempotent for that date; ``evaluate`` runs what a date still needs.

Each ``run_*`` function builds the date's :class:`~monitor.orchestration.context.RunContext` (the date checked,
the source's canonical URI) before anything is opened, opens its own store (an Airflow task is its
own process), replaces only its own output for the date, and returns a small JSON-serialisable
summary (Airflow XCom, ``--json``). The ``*_with`` functions take that context and an open store, so
one process can run several stages (``evaluate``, the demo). Errors are :class:`MonitorError`
subclasses with one readable line.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from monitor.core import faults
from monitor.orchestration.context import RunContext
from monitor.core.errors import ConfigError, DataError, ModelError, SourceError
from monitor.core.progress import ProgressFactory, no_progress
from monitor.core.settings import Settings
from monitor.store import Store, open_store
from monitor.core.verdicts import Verdict

log = logging.getLogger(__name__)

STAGES = ("index", "sample", "predict", "metrics", "health")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _record_stage(store: Store, ctx: RunContext, stage: str, summary: dict[str, Any]) -> None:
    """Note in ``runs`` that ``stage`` finished for (source, date), replacing its previous note, and commit."""
    store.record_stage(ctx.source_uri, ctx.day, stage, _jsonable(summary), finished_at=_now())


def _jsonable(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in summary.items()}


# --- index ----------------------------------------------------------------------------------


def index_with(settings: Settings, store: Store, *, progress: ProgressFactory = no_progress) -> dict[str, Any]:
    """Index the configured source into ``store`` (incremental: only new or changed blobs are written)."""
    from monitor.domain.indexing import index_source
    from monitor.core.sources import open_source

    source = open_source(settings.source_uri)
    source.check()
    with progress("index", None) as advance:
        report = index_source(source, store, progress=advance)
    summary = {
        "source": source.uri,
        "listed": report.listed,
        "new": report.new,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "missing": report.missing,
        "reappeared": report.reappeared,
        "unusable": dict(report.unusable),
        "labels": dict(report.labels),
        "wrote_nothing": report.wrote_nothing,
    }
    log.info("indexed %s: %s", source.uri, summary)
    return summary


def run_index(settings: Settings, *, progress: ProgressFactory = no_progress) -> dict[str, Any]:
    with open_store(settings) as store:
        return index_with(settings, store, progress=progress)


# --- sample ---------------------------------------------------------------------------------


def _check_sample_settings(recorded: dict[str, Any], settings: Settings, date: str) -> None:
    """Refuse to reuse a date's sample that was drawn with other sampling settings (silently evaluating the old one would mislead)."""
    wanted = {"samples_per_class": settings.samples_per_class, "seed": settings.seed, "fresh_days": settings.fresh_days}
    stored = {"samples_per_class": recorded.get("n_per_class"), "seed": recorded.get("seed"), "fresh_days": recorded.get("fresh_days")}
    changed = [f"MONITOR_{name.upper()} {stored[name]} -> {wanted[name]}" for name in wanted if stored[name] != wanted[name]]
    if changed:
        raise ConfigError(
            f"the sample of {date} was drawn with other settings ({', '.join(changed)}); "
            f"re-run with --force to draw it again with the current ones, or restore them"
        )


def sample_with(ctx: RunContext, store: Store, *, force: bool = False) -> dict[str, Any]:
    """Draw (or reuse) the stratified sample for ``date`` and write ``samples/<date>.csv``.

    Classes that the latest verdicts before ``date`` put on watch (or flagged) get follow-up images
    beyond the base N (``followup_samples``, within ``followup_daily_cap``). An existing sample for
    the date is reused unless ``force``: a re-run evaluates the same images.
    """
    from monitor.domain.health import followup_requests, grant_unit
    from monitor.domain.sampling import draw_sample, read_sample_csv, record_sample, write_sample_csv

    settings, date, source_uri = ctx.settings, ctx.day, ctx.source_uri
    csv_path = settings.sample_csv(date)
    recorded = store.sample(source_uri, date, items=True)
    if not force and recorded is not None and csv_path.is_file():
        _check_sample_settings(recorded, settings, date)
        sample = read_sample_csv(csv_path, **_empty_ok(recorded))
        _check_sample_file(sample, recorded, csv_path, date)
        reused = True
    else:
        if store.count_images(source_uri) == 0:
            raise DataError(f"nothing is indexed for {source_uri}: run `monitor index` first")
        unit = grant_unit(settings.followup_samples)
        requests = followup_requests(store, date, settings.followup_daily_cap, unit) if settings.followup_samples else {}
        # Images the production model evaluated on other dates are never drawn again: each counts once per model.
        model_id = production_model_id(settings)
        sample = draw_sample(
            store, source_uri, date, settings.samples_per_class, settings.seed,
            fresh_days=settings.fresh_days, followup=requests, followup_unit=unit,
            seen=store.evaluated(model_id, other_than=date), first_draw=settings.first_draw, model_id=model_id,
        )  # fmt: skip
        if not sample.items and not sample.unseen_left and not sample.unseen:
            window = f" within {settings.fresh_days} days" if settings.fresh_days else ""
            raise DataError(f"no usable image of {source_uri} was created on or before {date}{window}")
        write_sample_csv(sample, csv_path)
        record_sample(store, sample, csv_path)
        reused = False
    summary = {
        "date": date,
        "samples_csv": str(csv_path),
        "images": len(sample.items),
        "classes": dict(sample.classes),
        "short_classes": dict(sample.short_classes),
        "followup": dict(sample.followup),
        "exhausted": sorted(label for label, left in sample.unseen_left.items() if left == 0 and not sample.classes.get(label)),
        "reused": reused,
    }
    _record_stage(store, ctx, "sample", summary)
    return summary


def _check_sample_file(sample: Any, recorded: dict[str, Any], csv_path: Path, date: str) -> None:
    """Refuse a sample CSV that no longer holds what the store recorded drawing (a hand edit would silently change the day)."""
    items = recorded.get("items")
    if items is None:
        return
    drawn = sorted((str(i.get("path")), str(i.get("label")), str(i.get("draw") or "base")) for i in items)
    found = sorted((item.image_path, item.label, item.draw) for item in sample.items)
    if drawn != found:
        missing, extra = len(set(drawn) - set(found)), len(set(found) - set(drawn))
        raise DataError(
            f"{csv_path} is not the sample drawn for {date} ({len(found)} rows, {len(drawn)} drawn; {missing} drawn rows missing, "
            f"{extra} not drawn): re-run with --force to draw the sample of {date} again"
        )


def _file_digest(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _empty_ok(recorded: dict[str, Any]) -> dict[str, Any]:
    """``read_sample_csv`` arguments that accept a header-only file when the store recorded an empty sample (nothing new)."""
    if recorded and not any((recorded.get("classes") or {}).values()):
        return {"date": recorded.get("date"), "source": recorded.get("source")}
    return {}


def production_model_id(settings: Settings) -> str:
    """The id of the production model (``MONITOR_MODEL_DIR``) from its weight files, without loading it."""
    from evaluation.model import model_identity

    if not Path(settings.model_dir).is_dir():
        raise ModelError(f"model directory {settings.model_dir} does not exist (set MONITOR_MODEL_DIR to a Hugging Face model directory)")
    try:
        return model_identity(settings.model_dir)
    except OSError as exc:
        raise ModelError(f"cannot read the model at {settings.model_dir}: {exc.strerror or exc}") from exc


def run_sample(settings: Settings, date: str, *, force: bool = False) -> dict[str, Any]:
    ctx = RunContext.for_date(settings, date)  # before the store is opened: a bad date writes nothing
    with open_store(settings) as store:
        return sample_with(ctx, store, force=force)


# --- predict --------------------------------------------------------------------------------


def _register_model(store: Store, loaded: Any, date: str) -> None:
    """Keep one ``models`` document per model id with the first and last date it was evaluated on."""
    store.register_model(loaded.model_id, name=loaded.name, checksum=loaded.checksum, labels=list(loaded.labels), date=date)


def candidate_dirs(settings: Settings, store: Store) -> list[Path]:
    """The candidate model directories: ``MONITOR_CANDIDATE_MODEL_DIRS`` and those ``monitor candidate add`` registered, once each."""
    registered = [Path(str(doc["model_dir"])) for doc in store.candidates()]
    dirs = dict.fromkeys([*settings.candidate_model_dirs, *registered])
    return [d for d in dirs if d != settings.model_dir]


def _reusable(path: Path, model_id: str, wanted: list[str], written: dict[str, Any] | None = None) -> Any:
    """The predictions at ``path`` when they are ``model_id``'s of exactly the ``wanted`` paths (and, when the store
    recorded what the predict step ``written``, still that file), else None: predicted again."""
    from evaluation.predictions import read_predictions

    if not path.is_file():
        return None
    if written and written.get("model_id") == model_id and written.get("sha256") and written["sha256"] != _file_digest(path):
        log.warning("%s changed since the predict step wrote it: predicting again", path)
        return None
    previous = read_predictions(path)
    if set(previous["model_id"].unique()) == {model_id} and list(previous["image_path"]) == wanted:
        return previous
    return None


def predict_with(ctx: RunContext, store: Store, *, force: bool = False, progress: ProgressFactory = no_progress, spark: Any = None) -> dict[str, Any]:
    """Run the model, and every candidate, on the date's sample: ``predictions/<date>.parquet`` and one file per candidate.

    The candidates (:func:`candidate_dirs`) predict the same images in the same order, from the same
    fetch and decode (:func:`evaluation.predict.predict_images_multi`), into
    ``predictions/candidates/<model id>/<date>.parquet``. Existing predictions of the same model for the
    same sample are kept unless ``force``; only the models still missing for the date run.
    """
    import pandas as pd

    from evaluation.model import check_labels, load_model
    from evaluation.predict import predict_images_multi
    from evaluation.predictions import write_predictions
    from monitor.domain.sampling import read_sample_csv
    from monitor.core.sources import open_source

    settings, date = ctx.settings, ctx.day
    csv_path = settings.sample_csv(date)
    if not csv_path.is_file():
        raise DataError(f"no sample for {date} ({csv_path} is missing): run `monitor sample --date {date}` first")
    recorded = store.sample(ctx.source_uri, date, items=True) or {}
    sample = read_sample_csv(csv_path, **_empty_ok(recorded))
    _check_sample_file(sample, recorded, csv_path, date)
    out = settings.predictions_file(date)
    if not sample.items:  # every class evaluated whole already: nothing to predict, and the day says so
        from evaluation.predictions import predictions_frame

        from evaluation.model import model_identity

        if force or not out.is_file():
            write_predictions(predictions_frame([]), out)
            store.update_run(ctx.source_uri, date, {"predictions": {"model_id": None, "rows": 0, "sha256": _file_digest(out)}})
        for folder in candidate_dirs(settings, store):  # every model has its (empty) file of the day, as on any other day
            path = settings.candidate_predictions_file(date, model_identity(folder))
            if force or not path.is_file():
                write_predictions(predictions_frame([]), path)
        model_id = str(recorded.get("model_id") or production_model_id(settings))
        return {**_predict_summary(date, out, predictions_frame([]), model_id, reused=False), "candidates": []}
    loaded = load_model(settings.model_dir, settings.device)
    candidates = [load_model(path, settings.device) for path in candidate_dirs(settings, store)]
    candidates = [c for c in candidates if c.model_id != loaded.model_id]
    source = open_source(settings.source_uri)
    # Every label the source holds must be known to each model, checked before any inference.
    labels = set(store.usable_labels(source.uri)) | {item.label for item in sample.items}
    try:
        check_labels(loaded, labels)
    except ModelError as exc:
        raise ModelError(
            f"{exc}; if that folder was removed or renamed since, run `monitor evaluate --date {date} --force` "
            f"to re-index the source and draw the sample of {date} again"
        ) from exc
    for candidate in candidates:
        try:
            check_labels(candidate, labels)
        except ModelError as exc:
            raise ModelError(f"candidate {candidate.model_id}: {exc}") from exc

    wanted = [item.image_path for item in sample.items]
    targets = [(loaded, out)] + [(c, settings.candidate_predictions_file(date, c.model_id)) for c in candidates]
    frames: dict[str, Any] = {}
    if not force:
        written = next((run.get("predictions") for run in store.runs_on(date) if run.get("source") == ctx.source_uri), None)
        for model, path in targets:
            previous = _reusable(path, model.model_id, wanted, written if model is loaded and isinstance(written, dict) else None)
            if previous is not None:
                frames[model.model_id] = previous
    reused = {model_id for model_id in frames}
    to_run = [model for model, _ in targets if model.model_id not in frames]

    items = [(item.image_path, item.label) for item in sample.items]
    local = to_run
    if to_run and to_run[0] is loaded and settings.engine == "spark":
        from evaluation.spark import get_spark
        from evaluation.spark_engine import predict_with_spark

        # The Spark engine predicts production on the executors; candidates then run here, which fetches the images again.
        with progress(f"predict {date} (spark)", len(items)) as advance:
            frames[loaded.model_id] = predict_with_spark(
                spark or get_spark(settings.spark_master, settings.spark_conf),
                pd.DataFrame(items, columns=["image_path", "label"]),
                source_uri=source.uri,
                model_dir=settings.model_dir,
                device=settings.device,
                date=date,
                batch_size=settings.batch_size,
                top_k=settings.top_k,
                max_pixels=settings.max_image_pixels,
                fetch_workers=settings.fetch_workers,
                compile_model=settings.compile_model,
                progress=advance,
            )
        local = to_run[1:]
    if local:
        names = ", ".join(m.model_id for m in local) if len(local) > 1 else ""
        with progress(f"predict {date}" + (f" ({names})" if names else ""), len(items)) as advance:
            predicted = predict_images_multi(
                items,
                source.read,
                local,
                date=date,
                batch_size=settings.batch_size,
                fetch_workers=settings.fetch_workers,
                top_k=settings.top_k,
                max_pixels=settings.max_image_pixels,
                progress=advance,
                compile_model=settings.compile_model,
            )
        frames.update({model.model_id: frame for model, frame in zip(local, predicted)})
    draws = {item.image_path: item.draw for item in sample.items}
    for model, path in targets:
        if model.model_id in reused:
            continue
        frame = frames[model.model_id]
        frame["draw"] = [draws.get(p, "base") for p in frame["image_path"]]
        write_predictions(frame, path)
        if model is loaded:  # what the metrics step checks it reads back
            store.update_run(ctx.source_uri, date, {"predictions": {"model_id": model.model_id, "rows": len(frame), "sha256": _file_digest(path)}})
    _register_model(store, loaded, date)
    summary = _predict_summary(date, out, frames[loaded.model_id], loaded.model_id, reused=loaded.model_id in reused)
    summary["candidates"] = [
        {k: v for k, v in _predict_summary(date, path, frames[c.model_id], c.model_id, reused=c.model_id in reused).items() if k != "date"}
        for c, path in targets[1:]
    ]
    if to_run:
        _record_stage(store, ctx, "predict", summary)
    return summary


def _predict_summary(date: str, path: Path, frame: Any, model_id: str, *, reused: bool) -> dict[str, Any]:
    failed = frame[frame["status"] != "ok"]
    return {
        "date": date,
        "predictions": str(path),
        "model_id": model_id,
        "ok": int((frame["status"] == "ok").sum()),
        "failed": dict(Counter(str(e) for e in failed["error"])),
        "reused": reused,
    }


def run_predict(settings: Settings, date: str, *, force: bool = False, progress: ProgressFactory = no_progress) -> dict[str, Any]:
    ctx = RunContext.for_date(settings, date)
    with open_store(settings) as store:
        return predict_with(ctx, store, force=force, progress=progress)


# --- metrics --------------------------------------------------------------------------------


def metrics_with(ctx: RunContext, store: Store, *, spark: Any = None) -> dict[str, Any]:
    """Per-class counts with Spark SQL over the date's predictions; replaces the (model, date) rows."""
    from evaluation.metrics import class_metrics_pandas, class_metrics_spark
    from evaluation.predictions import read_predictions
    from evaluation.spark import get_spark

    settings, date = ctx.settings, ctx.day
    path = settings.predictions_file(date)
    if not path.is_file():
        raise DataError(f"no predictions for {date} ({path} is missing): run the predict step first")
    written = next((run.get("predictions") for run in store.runs_on(date) if run.get("source") == ctx.source_uri), None)
    if isinstance(written, dict) and written.get("sha256") and written["sha256"] != _file_digest(path):
        raise DataError(
            f"{path} changed since the predict step wrote it ({written.get('rows')} rows then): "
            f"re-run with `monitor evaluate --date {date} --force` to predict {date} again"
        )
    frame = read_predictions(path)
    recorded = store.sample(ctx.source_uri, date, items=True) or {}
    model_ids = sorted(frame["model_id"].unique()) if len(frame) else [str(recorded.get("model_id") or production_model_id(settings))]
    if len(model_ids) != 1:
        raise DataError(f"{path} mixes models {model_ids}; re-run predict for {date}")
    model_id = model_ids[0]
    # The classes of the date's sample, including those it could not fill (n = 0: an empty class is news);
    # not today's classes, so that a backfilled date keeps the class list it had.
    labels = sorted(set(recorded.get("classes") or {}) | set(frame["label"]))
    frame, evaluations, recounted = _once_per_image(store, model_id, date, frame, recorded)
    if len(frame):
        session = spark or get_spark(settings.spark_master, settings.spark_conf)
        rows = class_metrics_spark(session, frame, labels=labels, confidence=settings.confidence_level)
    else:  # nothing new was evaluated: every class reports n = 0 (no Spark session for that)
        rows = class_metrics_pandas(frame, labels=labels, confidence=settings.confidence_level) if labels else []
    left = recorded.get("unseen_left") or {}
    for row in rows:
        row["model_id"], row["date"] = model_id, date
        row["unseen_left"] = left.get(row["label"])
    store.replace_day("class_metrics", model_id, date, rows)
    store.replace_evaluations(model_id, date, evaluations)
    summary = {
        "date": date,
        "model_id": model_id,
        "classes": [
            {k: row[k] for k in ("label", "n", "correct", "failed", "accuracy", "ci_low", "ci_high")} for row in rows
        ],
        "recounted": recounted,
    }
    _record_stage(store, ctx, "metrics", {"model_id": model_id, "classes": len(rows)})
    return summary


def _once_per_image(store: Store, model_id: str, date: str, frame: Any, recorded: dict[str, Any]) -> tuple[Any, list[dict[str, Any]], int]:
    """The predictions that count for ``date``: each image once per model. Returns them, the day's ``evaluations``
    rows, and how many predictions were left out (an image evaluated on another date, or twice today).

    The sampler already leaves out what the model evaluated; this catches the rest (a sample drawn before a
    backfilled date evaluated some of its images, copies of one image under two paths).
    """
    from evaluation.predictions import FETCH_FAILED
    from monitor.domain.sampling import image_identity

    identity = {str(item["path"]): item.get("image") or image_identity(None, str(item["path"])) for item in recorded.get("items") or []}
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
        rows.append({
            "label": str(label), "image": image, "path": str(frame["image_path"].iloc[i]), "status": str(status),
            "correct": bool(frame["pred"].iloc[i] == label) if status == "ok" else None,
            "draw": str(frame["draw"].iloc[i]) if "draw" in frame else "base",
        })  # fmt: skip
    dropped = len(keep) - sum(keep)
    if dropped:
        log.info("%d predictions of %s on %s are of images it evaluated already: counted once", dropped, model_id, date)
    return frame.loc[frame.index[keep]].reset_index(drop=True), rows, dropped


def run_metrics(settings: Settings, date: str) -> dict[str, Any]:
    ctx = RunContext.for_date(settings, date)
    with open_store(settings) as store:
        return metrics_with(ctx, store)


# --- health and alerts --------------------------------------------------------------------


def _model_for_date(store: Store, date: str, model_id: str | None) -> str:
    """The model to judge: the one asked for, else the one measured on the latest date <= ``date``.

    When several models were measured that day (a model swap and a re-run), the one the day's run
    last evaluated (``runs.model_id``) wins; failing that, the choice is refused rather than guessed.
    """
    if model_id:
        return model_id
    days = store.dates("class_metrics", before=(dt.date.fromisoformat(date) + dt.timedelta(days=1)).isoformat())
    if not days:
        raise DataError(f"no class metrics on or before {date}: run `monitor evaluate --date {date}` first")
    day = days[-1]
    candidates = store.models_on("class_metrics", day)
    if len(candidates) == 1:
        return candidates[0]
    ran = {str(doc.get("model_id")) for doc in store.runs_on(day)} & set(candidates)
    if len(ran) == 1:
        return ran.pop()
    raise DataError(f"models {', '.join(candidates)} were all measured on {day}; name the one to judge")


def health_with(ctx: RunContext, store: Store, *, model_id: str | None = None) -> dict[str, Any]:
    """Verdicts per class for ``date`` from the stored history, alerts on transitions, delivery of pending alerts."""
    from monitor.domain.alerts import deliver_pending, raise_alerts
    from monitor.domain.health import compute_health

    from monitor.core.settings import check_target_overrides

    settings, date = ctx.settings, ctx.day
    model = _model_for_date(store, date, model_id)
    if settings.target_overrides:  # a misspelt class would silently keep the default target
        check_target_overrides(settings, {str(row["label"]) for row in store.rows("class_metrics", model, start=date, end=date, fields=["label"])})
    rows = compute_health(store, model, date, settings)
    new_alerts = raise_alerts(store, model, date, rows)
    # Each day continues from the state stored the day before: when a date arrives late (a backfill, a
    # hand re-run), the days already stored after it are recomputed in order, each under its own settings.
    later = store.dates("class_health", model, after=date)
    for day in later:
        new_alerts += raise_alerts(store, model, day, compute_health(store, model, day, settings, as_stored=True))
    delivery = deliver_pending(store, settings.alert_urls)
    summary = {
        "date": date,
        "model_id": model,
        "verdicts": {row["label"]: row["verdict"] for row in rows},
        "flagged": sorted(row["label"] for row in rows if row["verdict"] == Verdict.NEEDS_RETRAINING),
        "new_alerts": len(new_alerts),
        "delivered": delivery.delivered,
        "pending": delivery.pending,
    }
    _record_stage(store, ctx, "health", {k: v for k, v in summary.items() if k != "verdicts"})
    summary["classes"] = rows
    return summary


def run_health(settings: Settings, date: str, *, model_id: str | None = None) -> dict[str, Any]:
    ctx = RunContext.for_date(settings, date)
    with open_store(settings) as store:
        summary = health_with(ctx, store, model_id=model_id)
    summary.pop("classes")
    return summary


# --- candidates ---------------------------------------------------------------------------


def add_candidate(settings: Settings, model_dir: Path) -> dict[str, Any]:
    """Register ``model_dir`` as a candidate: it loads (checked now, not at the next run), and each day predicts it beside production."""
    from evaluation.model import load_model

    path = Path(model_dir).expanduser().resolve()
    loaded = load_model(path, "cpu")
    if path == settings.model_dir:
        raise ConfigError(f"{path} is the production model (MONITOR_MODEL_DIR), not a candidate")
    with open_store(settings) as store:
        added = store.add_candidate(str(path), model_id=loaded.model_id, added_at=_now())
        store.commit()
    return {"model_dir": str(path), "model_id": loaded.model_id, "added": added}


def remove_candidate(settings: Settings, model_dir: Path) -> dict[str, Any]:
    """Stop predicting a registered candidate (its stored predictions stay)."""
    path = Path(model_dir).expanduser().resolve()
    with open_store(settings) as store:
        removed = store.remove_candidate(str(path))
        store.commit()
    if not removed:
        raise ConfigError(f"{path} is not a registered candidate (MONITOR_CANDIDATE_MODEL_DIRS entries are removed from the setting)")
    return {"model_dir": str(path), "removed": True}


def list_candidates(settings: Settings) -> list[dict[str, Any]]:
    """Every candidate directory (setting and store), with where it comes from and its model id when registered."""
    with open_store(settings, read_only=True) as store:
        registered = {str(doc["model_dir"]): doc for doc in store.candidates()}
        dirs = candidate_dirs(settings, store)
    return [
        {"model_dir": str(d), "model_id": registered.get(str(d), {}).get("model_id"), "from": "store" if str(d) in registered else "MONITOR_CANDIDATE_MODEL_DIRS"}
        for d in dirs
    ]


def compare_with(
    settings: Settings,
    store: Store,
    candidate: str,
    *,
    since: str | None = None,
    until: str,
    engine: str = "spark",
    spark: Any = None,
    flagged: list[str] | None = None,
    gallery: int = 0,
) -> dict[str, Any]:
    """The candidate beside production over ``since..until``: :func:`monitor.domain.compare.compare_candidate` with Spark SQL counts by default."""
    from monitor.domain.compare import compare_candidate

    counter = None
    if engine == "spark":
        from evaluation.metrics import paired_counts_spark
        from evaluation.spark import get_spark

        session = spark or get_spark(settings.spark_master, settings.spark_conf)
        counter = lambda production, candidate, labels: paired_counts_spark(session, production, candidate, labels=labels)  # noqa: E731
    return compare_candidate(settings, store, candidate, since=since, until=until, counter=counter, flagged=flagged, gallery=gallery)


def run_compare(settings: Settings, date: str, *, candidate: str | None = None, since: str | None = None, engine: str = "spark") -> dict[str, Any]:
    """Compare ``candidate`` (default: every candidate with predictions on ``date``) beside production up to ``date``.

    ``since`` defaults to the candidate's first day of predictions. Returns ``{"date", "comparisons": [...], "ready": [ids]}``:
    each comparison is the verdict without its per-class rows; ``ready`` lists the candidates whose verdict is ``promote``.
    """
    from monitor.domain.compare import PROMOTE, candidate_ids

    ctx = RunContext.for_date(settings, date)
    names = [candidate] if candidate else [m for m in candidate_ids(settings) if settings.candidate_predictions_file(ctx.day, m).is_file()]
    comparisons = []
    with open_store(settings, read_only=True) as store:
        for name in names:
            verdict = compare_with(settings, store, name, since=since, until=ctx.day, engine=engine)
            verdict.pop("classes")
            comparisons.append(verdict)
    return {"date": ctx.day, "comparisons": comparisons, "ready": [c["candidate"] for c in comparisons if c["verdict"] == PROMOTE]}


# --- the whole day ------------------------------------------------------------------------


def evaluate_with(
    ctx: RunContext, store: Store, *, force: bool = False, progress: ProgressFactory = no_progress, spark: Any = None
) -> dict[str, Any]:
    """Everything the date still needs, end to end, on an open store (the demo reuses one store and Spark)."""
    settings, date, source_uri = ctx.settings, ctx.day, ctx.source_uri
    has_sample = store.sample(source_uri, date) is not None
    index_summary = None
    if force or not has_sample or not settings.sample_csv(date).is_file():
        index_summary = index_with(settings, store, progress=progress)
        if index_summary["listed"] == 0:
            raise SourceError(f"source {source_uri} is empty")
        _record_stage(store, ctx, "index", {k: v for k, v in index_summary.items() if k not in ("source", "labels")})
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
    result = {
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
    store.update_run(source_uri, date, {"model_id": predicted["model_id"], "skipped": skipped, "failed": predicted["failed"]})
    return result


def evaluate(settings: Settings, date: str, *, force: bool = False, progress: ProgressFactory = no_progress) -> dict[str, Any]:
    """Run, for ``date``, whatever it still needs: index and sample (unless a sample exists), predict, metrics, health."""
    ctx = RunContext.for_date(settings, date)  # before the store is opened: a malformed or future date writes nothing
    with open_store(settings) as store:
        return evaluate_with(ctx, store, force=force, progress=progress)
