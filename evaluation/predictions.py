"""The predictions table (``predictions/D.parquet``): its columns and types, its rows, its files' layout, and its one writer and reader.

Both predict engines (the single-process run loop, the Spark predict job) build the table through
:func:`predictions_frame`/:func:`ok_row`/:func:`failed_row`; the service writes the file only with
:func:`write_predictions` and reads it only with :func:`read_predictions` (pandas: the pipeline, the
dashboard) or, for Spark SQL over the file itself, :func:`read_predictions_spark`. Where each model's file
of a date lives is :class:`PredictionFiles`' alone.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from monitor.core.dates import is_iso_day
from monitor.core.errors import DataError, first_line
from monitor.core.files import atomic_write
from monitor.core.settings import safe_name

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
#: ``draw`` of a row: a base image of the day's sample, or a follow-up image (monitor.domain.sampling); files
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


def ok_row(
    date: str, image_path: str, label: str, probs: np.ndarray, labels: Sequence[str], model_id: str, top_k: int
) -> dict[str, Any]:
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


# --- where the files live ----------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionFiles:
    """The layout of the prediction files under ``root`` (``Settings.predictions_dir``).

    Production's predictions of date D are ``root/D.parquet``; candidate C's are
    ``root/candidates/<C as one path segment>/D.parquet`` (the same table: the same paths in the same order).
    Only names that are dates count as a date's file (a writer's temporary file never does).
    """

    root: Path

    @property
    def candidates_dir(self) -> Path:
        return self.root / "candidates"

    def production(self, date: str | dt.date) -> Path:
        """Production's predictions file of ``date``."""
        return self.root / f"{date}.parquet"

    def candidate(self, date: str | dt.date, model_id: str) -> Path:
        """Candidate ``model_id``'s predictions file of ``date``."""
        return self.candidates_dir / safe_name(model_id) / f"{date}.parquet"

    def dates(self, candidate: str | None = None) -> list[str]:
        """The dates with a predictions file of production (``candidate`` None) or of that candidate, oldest first."""
        return _days(self.root if candidate is None else self.candidates_dir / safe_name(candidate))

    def candidates(self) -> list[str]:
        """The model ids of the candidates with predictions, by folder: each read from its newest file (the folder's name when empty)."""
        if not self.candidates_dir.is_dir():
            return []
        ids = []
        for folder in sorted(self.candidates_dir.iterdir()):
            days = _days(folder)
            if days:
                frame = read_predictions(folder / f"{days[-1]}.parquet")
                ids.append(str(frame["model_id"].iloc[0]) if len(frame) else folder.name)
        return ids


def _days(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(path.stem for path in folder.glob("*.parquet") if is_iso_day(path.stem))


# --- the file ---------------------------------------------------------------------------------


def write_predictions(frame: pd.DataFrame, path: Path) -> None:
    """Write the predictions table as Parquet, atomically (a temporary file renamed over ``path``)."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"predictions for {path} lack columns {missing}")
    table = pa.Table.from_pandas(frame[list(COLUMNS)], schema=PREDICTIONS_SCHEMA, preserve_index=False)
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp), what="predictions file")


def read_predictions(path: Path) -> pd.DataFrame:
    """Read a predictions Parquet file back (lists as Python lists); DataError if it is missing or not one.

    The file must be a regular file (opened without blocking: a FIFO or a device in its place is refused,
    never read) holding a readable Parquet table whose columns have the types of :data:`PREDICTIONS_SCHEMA`
    (or a type that widens to it losslessly: large strings, dictionary-encoded strings, float32, all-null),
    no missing value where the table has none, a known ``status``, and for every predicted row a label
    and a confidence in [0, 1]. Anything else is one :class:`DataError` naming the file, the column and the
    way to predict the date again (``monitor evaluate --date D --force``).
    """
    path = Path(path)
    remedy = _redo_hint(path)
    try:
        handle = _open_regular(path)
    except FileNotFoundError:
        raise DataError(f"no predictions file at {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read the predictions file {path}: {exc.strerror or exc}; {remedy}") from exc
    try:
        with handle:
            table = pq.read_table(handle)
        # Still the file's own text: a damaged footer can name columns in bytes that are not UTF-8.
        if "draw" not in table.column_names:
            table = table.append_column("draw", pa.array([DRAW_BASE] * table.num_rows, pa.string()))
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise DataError(f"{path} is not a predictions file: it lacks columns {missing}; {remedy}")
        table = _checked(table.select(list(COLUMNS)), path, remedy)
        frame = table.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:  # truncated, not Parquet, or a footer that lies
        raise DataError(
            f"the predictions file {path} is not a readable Parquet file ({first_line(exc, 200)}); {remedy}"
        ) from exc
    for column in ("topk_labels", "topk_scores"):
        frame[column] = [list(v) if v is not None else [] for v in frame[column]]
    return frame


def _redo_hint(path: Path) -> str:
    day = path.stem if _DATE.fullmatch(path.stem) else "D"
    return f"run `monitor evaluate --date {day} --force` to predict the date again"


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _open_regular(path: Path) -> Any:
    """``path`` opened for reading if it is a regular file; a FIFO, device or socket is refused without blocking."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file (a folder, FIFO, socket or device)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _is_text(t: pa.DataType) -> bool:
    return (
        pa.types.is_string(t) or pa.types.is_large_string(t) or (pa.types.is_dictionary(t) and _is_text(t.value_type))
    )


def _is_list_of(t: pa.DataType, item: Any) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and (item(t.value_type) or pa.types.is_null(t.value_type))


#: What each column may be stored as: its own type, or one that converts to it without loss.
_ACCEPTED: dict[str, Any] = {
    **{name: _is_text for name in ("date", "image_path", "label", "pred", "model_id", "status", "error", "draw")},
    "confidence": pa.types.is_floating,
    "topk_labels": lambda t: _is_list_of(t, _is_text),
    "topk_scores": lambda t: _is_list_of(t, pa.types.is_floating),
}


def _checked(table: pa.Table, path: Path, remedy: str) -> pa.Table:
    """``table`` cast to :data:`PREDICTIONS_SCHEMA` after checking its types and values (see :func:`read_predictions`)."""
    import pyarrow.compute as pc

    def refuse(what: str) -> DataError:
        return DataError(f"the predictions file {path} is damaged: {what}; {remedy}")

    columns = []
    for field in PREDICTIONS_SCHEMA:
        column = table.column(field.name)
        if not (pa.types.is_null(column.type) or _ACCEPTED[field.name](column.type)):
            raise refuse(f"column {field.name!r} holds {column.type}, not {field.type}")
        try:
            column = column.cast(field.type)
        except pa.ArrowException as exc:
            raise refuse(f"column {field.name!r} does not convert to {field.type} ({first_line(exc, 200)})") from exc
        if field.name == "draw":
            column = pc.fill_null(column, DRAW_BASE)
        elif not field.nullable and column.null_count:
            raise refuse(f"column {field.name!r} has {column.null_count} empty value(s)")
        columns.append(column)
    table = pa.Table.from_arrays(columns, schema=PREDICTIONS_SCHEMA)
    status = table.column("status")
    odd = pc.unique(pc.filter(status, pc.invert(pc.is_in(status, pa.array([STATUS_OK, STATUS_FAILED]))))).to_pylist()
    if odd:
        raise refuse(
            f"column 'status' holds {', '.join(repr(v)[:40] for v in odd[:3])}, not {STATUS_OK!r} or {STATUS_FAILED!r}"
        )
    ok = table.filter(pc.equal(status, STATUS_OK))
    if ok.column("pred").null_count or ok.column("confidence").null_count:
        raise refuse("a row of status 'ok' has no 'pred' or no 'confidence'")
    confidence = ok.column("confidence")
    if (
        len(confidence)
        and not pc.all(pc.and_(pc.greater_equal(confidence, 0.0), pc.less_equal(confidence, 1.0))).as_py()
    ):
        raise refuse("column 'confidence' holds a value outside [0, 1]")
    if _DATE.fullmatch(path.stem):
        dates = pc.unique(table.column("date")).to_pylist()
        if dates and dates != [path.stem]:
            raise refuse(
                f"column 'date' holds {', '.join(repr(d)[:40] for d in dates[:3] if d != path.stem)}, not {path.stem}"
            )
    return table


def read_predictions_spark(
    spark: SparkSession, path: Path | str, columns: Sequence[str], *, required: Sequence[str]
) -> SparkDataFrame:
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
        raise DataError(f"cannot read predictions from {path}: {first_line(exc)}") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"predictions {path} lack the column(s) {', '.join(missing)}")
    return frame.select(*[(F.col(c) if c in frame.columns else F.lit(None)).cast("string").alias(c) for c in columns])
