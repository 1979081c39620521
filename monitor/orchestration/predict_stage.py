"""The predict stage: the production model and every candidate run on the date's sample, one predictions file each.

Where the files go is :class:`evaluation.predictions.PredictionFiles`'s; the digest of the production file is noted
in the day's run so that the metrics stage reads back exactly what was written.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from monitor.core.errors import ModelError
from monitor.core.progress import ProgressFactory, no_progress
from monitor.core.settings import Settings
from monitor.orchestration.candidates import candidate_dirs
from monitor.orchestration.context import RunContext
from monitor.orchestration.results import ModelPredictions, PredictResult
from monitor.orchestration.runs import production_model_id, record_stage
from monitor.orchestration.sample_stage import read_sample
from monitor.store import Store, open_store

if TYPE_CHECKING:
    from evaluation.predictions import PredictionFiles

log = logging.getLogger(__name__)


def register_model(store: Store, loaded: Any, date: str) -> None:
    """Keep one ``models`` document per model id with the first and last date it was evaluated on."""
    store.register_model(
        loaded.model_id, name=loaded.name, checksum=loaded.checksum, labels=list(loaded.labels), date=date
    )


def reusable(
    files: PredictionFiles, key: str, model_id: str, wanted: list[str], written: dict[str, Any] | None = None
) -> Any:
    """The predictions file ``key`` when it holds ``model_id``'s predictions of exactly the ``wanted`` paths (and, when
    the store recorded what the predict step ``written``, still that file), else None: predicted again."""
    if not files.exists(key):
        return None
    previous, digest = files.read_with_digest(key)
    if written and written.get("model_id") == model_id and written.get("sha256") and written["sha256"] != digest:
        log.warning("%s changed since the predict step wrote it: predicting again", files.location(key))
        return None
    if set(previous["model_id"].unique()) == {model_id} and list(previous["image_path"]) == wanted:
        return previous
    return None


def predict_with(
    ctx: RunContext, store: Store, *, force: bool = False, progress: ProgressFactory = no_progress, spark: Any = None
) -> PredictResult:
    """Run the model, and every candidate, on the date's sample: ``predictions/<date>.parquet`` and one file per candidate.

    The candidates (:func:`candidate_dirs`) predict the same images in the same order, from the same
    fetch and decode (:func:`evaluation.predict.predict_images_multi`), into
    ``predictions/candidates/<model id>/<date>.parquet``. Existing predictions of the same model for the
    same sample are kept unless ``force``; only the models still missing for the date run.
    """
    import pandas as pd

    from evaluation.model import check_labels, load_model
    from evaluation.predict import predict_images_multi
    from evaluation.predictions import PredictionFiles

    settings, date = ctx.settings, ctx.day
    recorded = store.sample(ctx.source_uri, date, items=True) or {}
    sample = read_sample(ctx, recorded)
    files = PredictionFiles(ctx.artifacts)
    out = files.production(date)
    if not sample.items:  # every class evaluated whole already: nothing to predict, and the day says so
        from evaluation.model import model_identity
        from evaluation.predictions import predictions_frame

        if force or not files.exists(out):
            _, digest = files.write(predictions_frame([]), out)
            store.update_run(ctx.source_uri, date, {"predictions": {"model_id": None, "rows": 0, "sha256": digest}})
        for folder in candidate_dirs(
            settings, store
        ):  # every model has its (empty) file of the day, as on any other day
            path = files.candidate(date, model_identity(folder))
            if force or not files.exists(path):
                files.write(predictions_frame([]), path)
        model_id = str(recorded.get("model_id") or production_model_id(settings))
        return {
            "date": date,
            **model_predictions(files.location(out), predictions_frame([]), model_id, reused=False),
            "candidates": [],
        }
    loaded = load_model(settings.model_dir, settings.device)
    candidates = [load_model(path, settings.device) for path in candidate_dirs(settings, store)]
    candidates = [c for c in candidates if c.model_id != loaded.model_id]
    source = ctx.source
    # Every label the source holds must be known to each model, checked before any inference.
    labels = set(store.usable_labels(source.uri)) | {item.label for item in sample.items}
    for model in [loaded, *candidates]:
        try:
            check_labels(model, labels)
        except ModelError as exc:
            from monitor.core.labels import nearest, unmapped_hint
            from monitor.orchestration.index_stage import label_map_of

            mapping = label_map_of(settings)
            unknown = sorted(labels - set(model.labels))
            mapped = sorted(set(unknown) & set((mapping or {}).values()))
            close = "; ".join(
                f"{label!r}: nearest {', '.join(nearest(label, model.labels)) or 'none'}" for label in mapped[:3]
            )
            hint = (
                f"MONITOR_LABEL_MAP maps folders to {', '.join(map(repr, mapped[:3]))}, which the model does not know "
                f"({close}): fix the map, then run `monitor evaluate --date {date} --force`"
                if mapped
                else unmapped_hint(unknown, model.labels, mapping).replace("--date D", f"--date {date}")
            )
            who = "" if model is loaded else f"candidate {model.model_id}: "
            raise ModelError(f"{who}{exc}; {hint}") from exc

    wanted = [item.image_path for item in sample.items]
    targets = [(loaded, out)] + [(c, files.candidate(date, c.model_id)) for c in candidates]
    frames: dict[str, Any] = {}
    if not force:
        written = next(
            (run.get("predictions") for run in store.runs_on(date) if run.get("source") == ctx.source_uri), None
        )
        for model, path in targets:
            previous = reusable(
                files, path, model.model_id, wanted, written if model is loaded and isinstance(written, dict) else None
            )
            if previous is not None:
                frames[model.model_id] = previous
    reused = {model_id for model_id in frames}
    to_run = [model for model, _ in targets if model.model_id not in frames]

    items = [(item.image_path, item.label) for item in sample.items]
    local = to_run
    if to_run and to_run[0] is loaded and settings.engine == "spark":
        from evaluation.spark import spark_for
        from evaluation.spark_engine import predict_with_spark

        # The Spark engine predicts production on the executors; candidates then run here, which fetches the images again.
        with progress(f"predict {date} (spark)", len(items)) as advance:
            frames[loaded.model_id] = predict_with_spark(
                spark or spark_for(settings),
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
        _, digest = files.write(frame, path)
        if model is loaded:  # what the metrics step checks it reads back
            store.update_run(
                ctx.source_uri,
                date,
                {"predictions": {"model_id": model.model_id, "rows": len(frame), "sha256": digest}},
            )
    register_model(store, loaded, date)
    summary: PredictResult = {
        "date": date,
        **model_predictions(
            files.location(out), frames[loaded.model_id], loaded.model_id, reused=loaded.model_id in reused
        ),
        "candidates": [
            model_predictions(files.location(path), frames[c.model_id], c.model_id, reused=c.model_id in reused)
            for c, path in targets[1:]
        ],
    }
    if to_run:
        record_stage(store, ctx, "predict", summary)
    return summary


def model_predictions(path: str, frame: Any, model_id: str, *, reused: bool) -> ModelPredictions:
    failed = frame[frame["status"] != "ok"]
    return {
        "predictions": path,
        "model_id": model_id,
        "ok": int((frame["status"] == "ok").sum()),
        "failed": dict(Counter(str(e) for e in failed["error"])),
        "reused": reused,
    }


def run_predict(
    settings: Settings, date: str, *, force: bool = False, progress: ProgressFactory = no_progress
) -> PredictResult:
    ctx = RunContext.for_date(settings, date)
    with open_store(settings) as store:
        return predict_with(ctx, store, force=force, progress=progress)
