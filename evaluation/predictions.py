"""The predictions table (``predictions/D.parquet``): its columns and types, its rows, and its one writer and reader.

Both predict engines (the single-process run loop, the Spark predict job) build the table through
:func:`predictions_frame`/:func:`ok_row`/:func:`failed_row`; the service writes the file only with
:func:`write_predictions` and reads it only with :func:`read_predictions` (pandas: the pipeline, the
dashboard) or, for Spark SQL over the file itself, :func:`read_predictions_spark`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from monitor.errors import DataError
from monitor.files import atomic_write

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession

#: The predictions table, in this column order (docs/ARCHITECTURE.md, ``predictions/D.parquet``).
COLUMNS: tuple[str, ...] = (
    "date",
    "image_path",
    "label",
    "pred",
    "confidence",
    "topk_labels",
    "topk_scores",
    "model_id",
    "status",
    "error",
    "draw",
)
#: ``draw`` of a row: a base image of the day's sample, or a follow-up image (monitor.sampling); files
#: written before follow-up sampling lack the column and read back as ``base``.
DRAW_BASE = "base"
PREDICTIONS_SCHEMA = pa.schema(
    [
        pa.field("date", pa.string(), nullable=False),
        pa.field("image_path", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("pred", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("topk_labels", pa.list_(pa.string())),
        pa.field("topk_scores", pa.list_(pa.float64())),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("draw", pa.string(), nullable=False),
    ]
)
#: ``status`` of a row: predicted, or not (then ``error`` says why and there is no prediction).
STATUS_OK = "ok"
STATUS_FAILED = "failed"
#: ``error`` of a row whose bytes could not be read from the source (decode failures carry
#: :data:`evaluation.imaging.DECODE_REASONS`).
FETCH_FAILED = "fetch_failed"


# --- rows -------------------------------------------------------------------------------------


def ok_row(date: str, image_path: str, label: str, probs: np.ndarray, labels: Sequence[str], model_id: str, top_k: int) -> dict[str, Any]:
    """One ``status == "ok"`` row: ``pred``/``confidence`` are the top entry of the top-k lists."""
    k = min(top_k, len(labels))
    order = np.argsort(-probs, kind="stable")[:k]
    top_labels = [labels[i] for i in order]
    top_scores = [float(probs[i]) for i in order]
    return {
        "date": date,
        "image_path": image_path,
        "label": label,
        "pred": top_labels[0],
        "confidence": top_scores[0],
        "topk_labels": top_labels,
        "topk_scores": top_scores,
        "model_id": model_id,
        "status": STATUS_OK,
        "error": None,
    }


def failed_row(date: str, image_path: str, label: str, model_id: str, reason: str) -> dict[str, Any]:
    """One ``status == "failed"`` row: no prediction, empty top-k lists, ``error`` = the reason code."""
    return {
        "date": date,
        "image_path": image_path,
        "label": label,
        "pred": None,
        "confidence": None,
        "topk_labels": [],
        "topk_scores": [],
        "model_id": model_id,
        "status": STATUS_FAILED,
        "error": reason,
    }


def predictions_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> the predictions DataFrame with exactly :data:`COLUMNS` (also when empty); ``draw`` defaults to base."""
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    frame["confidence"] = frame["confidence"].astype("float64")
    frame["draw"] = frame["draw"].where(frame["draw"].notna(), DRAW_BASE).astype(object)
    return frame


# --- the file ---------------------------------------------------------------------------------


def write_predictions(frame: pd.DataFrame, path: Path) -> None:
    """Write the predictions table as Parquet, atomically (a temporary file renamed over ``path``)."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"predictions for {path} lack columns {missing}")
    table = pa.Table.from_pandas(frame[list(COLUMNS)], schema=PREDICTIONS_SCHEMA, preserve_index=False)
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp), what="predictions file")


def read_predictions(path: Path) -> pd.DataFrame:
    """Read a predictions Parquet file back (lists as Python lists); DataError if it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no predictions file at {path}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file: {exc}") from exc
    if "draw" not in table.column_names:
        table = table.append_column("draw", pa.array([DRAW_BASE] * table.num_rows, pa.string()))
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path} is not a predictions file: it lacks columns {missing}")
    frame = table.select(list(COLUMNS)).to_pandas()
    for column in ("topk_labels", "topk_scores"):
        frame[column] = [list(v) if v is not None else [] for v in frame[column]]
    return frame


def read_predictions_spark(spark: "SparkSession", path: Path | str, columns: Sequence[str], *, required: Sequence[str]) -> "SparkDataFrame":
    """Predictions Parquet file(s) at ``path`` as a Spark DataFrame of ``columns``, cast to strings, read by Spark itself.

    For Spark SQL over data past one machine: nothing goes through the driver. Only ``required``
    columns must be present; any other of ``columns`` that the file lacks reads as null. Raises
    :class:`DataError` when Spark cannot read ``path`` or a required column is missing.
    """
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    path = Path(path)
    try:
        frame = spark.read.parquet(str(path))
    except AnalysisException as exc:
        raise DataError(f"cannot read predictions from {path}: {str(exc).splitlines()[0][:300]}") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"predictions {path} lack the column(s) {', '.join(missing)}")
    return frame.select(*[(F.col(c) if c in frame.columns else F.lit(None)).cast("string").alias(c) for c in columns])
