"""Bring your own predictions: a team's predictions of the day's sample take the predict stage's place.

The contract out is the day's sample (``samples/D.csv``: ``image_path``, ``label``...); the contract in is a
predictions file (CSV or Parquet) with one row per sampled path: ``image_path`` (or ``path``), ``pred`` (or
``predicted_label``) and, optionally, ``score`` (or ``confidence``, in [0, 1]). :func:`import_predictions`
checks it against the sample (every sampled path once, no other path, a predicted label on every row, scores in
range; the first bad row named otherwise), writes it as the day's predictions file, and goes on with metrics,
health and alerts exactly as after the service's own predict stage. No model is loaded: a model served
elsewhere (TorchScript, ONNX, a batch job) is monitored all the same, under ``--model-id``.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from monitor.core.errors import ConfigError, DataError
from monitor.core.files import FileRefused, read_bounded
from monitor.core.settings import Settings
from monitor.orchestration.context import RunContext
from monitor.orchestration.results import HealthResult, ImportResult, MetricsResult, ModelPredictions
from monitor.store import open_store

#: The largest predictions file read.
MAX_IMPORT_BYTES = 1 << 30
_PATH, _PRED, _SCORE = ("image_path", "path"), ("pred", "predicted_label"), ("score", "confidence")
_MODEL_ID = re.compile(r"[\w.@+-]{1,200}")


def _column(columns: list[str], names: tuple[str, ...], file: Path | str, required: bool = True) -> str | None:
    found = [name for name in names if name in columns]
    if not found and required:
        raise DataError(f"the predictions file {file} has no column {' or '.join(names)} (it has {', '.join(columns)})")
    return found[0] if found else None


def read_external(file: Path | str, data: bytes | None = None) -> list[tuple[str, str, float | None]]:
    """``(path, predicted label, score)`` rows of a team's CSV or Parquet file (``data``: its bytes, already read
    from the artifact store); DataError naming the first bad row."""
    if data is None:
        try:
            data = read_bounded(Path(file), max_bytes=MAX_IMPORT_BYTES)
        except FileNotFoundError:
            raise DataError(f"the predictions file {file} does not exist") from None
        except FileRefused as exc:
            raise DataError(f"cannot read the predictions file {file}: it {exc}") from None
        except OSError as exc:
            raise DataError(f"cannot read the predictions file {file}: {exc.strerror or exc}") from None
    if data[:4] == b"PAR1":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataError(f"the predictions file {file} is not a readable Parquet file ({exc})") from None
        columns = table.column_names
        records = [dict(zip(columns, values)) for values in zip(*(table.column(c).to_pylist() for c in columns))]
        first_row = 1
    else:
        try:
            text = data.decode("utf-8-sig")
            reader = csv.DictReader(io.StringIO(text, newline=""))
            columns = list(reader.fieldnames or [])
            records = list(reader)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"the predictions file {file} is not a readable CSV file ({exc})") from None
        first_row = 2  # line 1 is the header
    path_col, pred_col = _column(columns, _PATH, file), _column(columns, _PRED, file)
    score_col = _column(columns, _SCORE, file, required=False)
    rows: list[tuple[str, str, float | None]] = []
    for number, record in enumerate(records, start=first_row):
        where = f"the predictions file {file} {'line' if first_row == 2 else 'row'} {number}"
        path, pred = record.get(path_col), record.get(pred_col)
        if not isinstance(path, str) or not path.strip():
            raise DataError(f"{where}: no image path")
        if not isinstance(pred, str) or not pred.strip():
            raise DataError(f"{where}: no predicted label for {path!r}")
        score: float | None = None
        raw = record.get(score_col) if score_col else None
        if raw not in (None, ""):
            try:
                score = float(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise DataError(f"{where}: score {str(raw)[:40]!r} is not a number") from None
            if not 0.0 <= score <= 1.0:
                raise DataError(f"{where}: score {score} is outside [0, 1]")
        rows.append((path.strip(), pred.strip(), score))
    return rows


def incoming_keys(date: str) -> tuple[str, str]:
    """Where an external predictor leaves its predictions of ``date`` in the artifact store (the DAG's external mode)."""
    return f"incoming/{date}.csv", f"incoming/{date}.parquet"


def incoming(settings: Settings, date: str) -> str | None:
    """The key of the external predictor's file of ``date`` in the artifact store, once it is there (else None)."""
    from monitor.core.artifacts import artifacts_for

    store = artifacts_for(settings)
    return next((key for key in incoming_keys(date) if store.exists(key)), None)


def import_incoming(settings: Settings, date: str, *, model_id: str | None = None) -> ImportResult:
    """:func:`import_predictions` of the file an external predictor left in the artifact store, without evaluating."""
    from monitor.core.artifacts import artifacts_for

    key = incoming(settings, date)
    if key is None:
        raise DataError(f"no predictions of {date} under incoming/ in {settings.artifacts_uri}")
    artifacts = artifacts_for(settings)
    data = artifacts.read(key, what="predictions file", max_bytes=MAX_IMPORT_BYTES)
    return import_predictions(settings, date, artifacts.location(key), model_id=model_id, data=data, evaluate=False)


def import_predictions(
    settings: Settings,
    date: str,
    file: Path | str,
    *,
    model_id: str | None = None,
    data: bytes | None = None,
    evaluate: bool = True,
) -> ImportResult:
    """Take ``file`` as the predictions of ``date``'s sample, then compute the day's metrics, health and alerts
    (``evaluate``; without it the predictions are stored and the DAG's metrics and health tasks go on from them)."""
    from evaluation.predictions import DRAW_BASE, STATUS_OK, PredictionFiles, predictions_frame
    from monitor.orchestration.health_stage import health_with
    from monitor.orchestration.metrics_stage import metrics_with
    from monitor.orchestration.runs import production_model_id, record_stage
    from monitor.orchestration.sample_stage import read_sample

    ctx = RunContext.for_date(settings, date)
    if model_id is not None and not _MODEL_ID.fullmatch(model_id):
        raise ConfigError(f"--model-id {model_id[:80]!r} is not a model id (letters, digits and . @ + - _)")
    rows = read_external(file, data)
    with open_store(settings) as store:
        recorded = store.sample(ctx.source_uri, ctx.day, items=True)
        if recorded is None:
            raise DataError(
                f"no sample for {ctx.day}: run `monitor sample --date {ctx.day}` and predict its images first"
            )
        sample = read_sample(ctx, recorded)
        items = {item.image_path: item for item in sample.items}
        seen: dict[str, int] = {}
        for number, (path, _, _) in enumerate(rows, start=1):
            if path not in items:
                raise DataError(f"the predictions file {file} row {number}: {path!r} is not in the sample of {ctx.day}")
            if path in seen:
                raise DataError(f"the predictions file {file} rows {seen[path]} and {number} both predict {path!r}")
            seen[path] = number
        missing = [path for path in items if path not in seen]
        if missing:
            raise DataError(
                f"the predictions file {file} lacks {len(missing)} of the {len(items)} sampled paths of {ctx.day} "
                f"(first: {missing[0]!r}); predict every row of samples/{ctx.day}.csv"
            )
        model = model_id or production_model_id(settings)
        by_path = {path: (pred, score) for path, pred, score in rows}
        frame = predictions_frame(
            [
                {
                    "date": ctx.day,
                    "image_path": item.image_path,
                    "label": item.label,
                    "pred": by_path[item.image_path][0],
                    "confidence": by_path[item.image_path][1] if by_path[item.image_path][1] is not None else 1.0,
                    "topk_labels": [by_path[item.image_path][0]],
                    "topk_scores": [by_path[item.image_path][1] if by_path[item.image_path][1] is not None else 1.0],
                    "model_id": model,
                    "status": STATUS_OK,
                    "error": None,
                    "draw": item.draw or DRAW_BASE,
                }
                for item in sample.items
            ]
        )
        files = PredictionFiles(ctx.artifacts)
        key = files.production(ctx.day)
        where, digest = files.write(frame, key)
        store.update_run(
            ctx.source_uri, ctx.day, {"predictions": {"model_id": model, "rows": len(frame), "sha256": digest}}
        )
        name, _, checksum = model.partition("@")
        labels = sorted({item.label for item in sample.items} | {pred for _, pred, _ in rows})
        store.register_model(model, name=name, checksum=checksum, labels=labels, date=ctx.day)
        predicted: ModelPredictions = {
            "predictions": where,
            "model_id": model,
            "ok": len(frame),
            "failed": {},
            "reused": False,
        }
        record_stage(store, ctx, "predict", {**predicted, "imported": str(file)})
        store.update_run(ctx.source_uri, ctx.day, {"model_id": model, "failed": {}})
        done: ImportResult = {
            "date": ctx.day,
            "model_id": model,
            "predictions": where,
            "rows": len(frame),
            "classes": [],
            "flagged": [],
            "new_alerts": 0,
            "pending_alerts": 0,
        }
        if not evaluate:  # the DAG's metrics and health tasks go on from the stored predictions
            return done
        metrics: MetricsResult = metrics_with(ctx, store)
        health: HealthResult = health_with(ctx, store, model_id=model)
    return {
        **done,
        "classes": metrics["classes"],
        "flagged": health["flagged"],
        "new_alerts": health["new_alerts"],
        "pending_alerts": health["pending"],
    }
