"""The predictions table (``predictions/D.parquet``): its columns and types, its rows, its files' layout, and its one writer and reader.

Both predict engines (the single-process run loop, the Spark predict job) build the table through
:func:`predictions_frame`/:func:`ok_row`/:func:`failed_row`; the service writes and reads the files through
:class:`PredictionFiles` (where each model's file of a date lives in the artifact store, local or ``gs://``;
bytes made by :func:`predictions_bytes` and read by :func:`parse_predictions`), or for a local file with
:func:`write_predictions` / :func:`read_predictions`, or, for Spark SQL over local files, :func:`read_predictions_spark`.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
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

    from monitor.core.artifacts import Artifacts

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


class PredictionFiles:
    """The layout of the prediction files in the artifact store (:mod:`monitor.core.artifacts`), and their reading and writing.

    Production's predictions of date D are ``predictions/D.parquet``; candidate C's are
    ``predictions/candidates/<C as one path segment>/D.parquet`` (the same table: the same paths in the same order).
    Only names that are dates count as a date's file (a writer's temporary file never does).
    """

    def __init__(self, artifacts: Artifacts) -> None:
        self.artifacts = artifacts

    @property
    def candidates_dir(self) -> str:
        """Where the candidates' files are, as a user would name it."""
        return self.artifacts.location(_CANDIDATES)

    def production(self, date: str | dt.date) -> str:
        """The key of production's predictions file of ``date``."""
        return f"{_ROOT}/{date}.parquet"

    def candidate(self, date: str | dt.date, model_id: str) -> str:
        """The key of candidate ``model_id``'s predictions file of ``date``."""
        return f"{_CANDIDATES}/{safe_name(model_id)}/{date}.parquet"

    def location(self, key: str) -> str:
        return self.artifacts.location(key)

    def exists(self, key: str) -> bool:
        return self.artifacts.exists(key)

    def dates(self, candidate: str | None = None) -> list[str]:
        """The dates with a predictions file of production (``candidate`` None) or of that candidate, oldest first."""
        folder = _ROOT if candidate is None else f"{_CANDIDATES}/{safe_name(candidate)}"
        return _days(self.artifacts.names(folder, ".parquet"))

    def candidates(self) -> list[str]:
        """The model ids of the candidates with predictions, by folder: each read from its newest file (the folder's name when empty)."""
        ids = []
        for folder in self.artifacts.folders(_CANDIDATES):
            days = _days(self.artifacts.names(f"{_CANDIDATES}/{folder}", ".parquet"))
            if days:
                frame = self.read(f"{_CANDIDATES}/{folder}/{days[-1]}.parquet")
                ids.append(str(frame["model_id"].iloc[0]) if len(frame) else folder)
        return ids

    def read_with_digest(self, key: str) -> tuple[pd.DataFrame, str]:
        """The predictions file ``key`` (:func:`parse_predictions`) and the SHA-256 of the bytes it was read from."""
        from monitor.core.artifacts import ArtifactMissing

        where = self.location(key)
        try:
            data = self.artifacts.read(key, what="predictions file")
        except ArtifactMissing:
            raise DataError(f"no predictions file at {where}") from None
        return parse_predictions(data, where, day=_day_of(key)), hashlib.sha256(data).hexdigest()

    def read(self, key: str) -> pd.DataFrame:
        """The predictions file ``key``; DataError when it is missing or not a predictions table."""
        return self.read_with_digest(key)[0]

    def write(self, frame: pd.DataFrame, key: str) -> tuple[str, str]:
        """Publish ``frame`` as ``key`` whole; returns its location and the SHA-256 of what was written."""
        data = predictions_bytes(frame, self.location(key))
        return self.artifacts.write(key, data, what="predictions file"), hashlib.sha256(data).hexdigest()


_ROOT = "predictions"
_CANDIDATES = f"{_ROOT}/candidates"


def _day_of(name: str) -> str | None:
    stem = PurePosixPath(name).stem
    return stem if _DATE.fullmatch(stem) else None


def _days(names: Sequence[str]) -> list[str]:
    return sorted(stem for name in names if is_iso_day(stem := PurePosixPath(name).stem) and name.endswith(".parquet"))


# --- the file ---------------------------------------------------------------------------------


def predictions_bytes(frame: pd.DataFrame, name: str = "predictions") -> bytes:
    """The predictions table as Parquet bytes (exactly :data:`COLUMNS`, :data:`PREDICTIONS_SCHEMA`)."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"predictions for {name} lack columns {missing}")
    table = pa.Table.from_pandas(frame[list(COLUMNS)], schema=PREDICTIONS_SCHEMA, preserve_index=False)
    out = pa.BufferOutputStream()
    pq.write_table(table, out)
    return bytes(out.getvalue().to_pybytes())


def write_predictions(frame: pd.DataFrame, path: Path) -> None:
    """Write the predictions table as the Parquet file ``path``, atomically (a temporary file renamed over it)."""
    data = predictions_bytes(frame, str(path))
    atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data), what="predictions file")


def read_predictions(path: Path) -> pd.DataFrame:
    """Read the predictions file ``path`` (a regular file, opened without blocking); see :func:`parse_predictions`."""
    path = Path(path)
    day = _day_of(path.name)
    try:
        handle = _open_regular(path)
    except FileNotFoundError:
        raise DataError(f"no predictions file at {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read the predictions file {path}: {exc.strerror or exc}; {_redo_hint(day)}") from exc
    with handle:
        data = handle.read()
    return parse_predictions(data, str(path), day=day)


def parse_predictions(data: bytes, name: str, *, day: str | None = None) -> pd.DataFrame:
    """A predictions Parquet file's bytes as a DataFrame (lists as Python lists); DataError if they are not one.

    ``name`` says where they were read (for messages), ``day`` the date the file is of (its ``date`` column must
    hold only that). The table must have the columns of :data:`PREDICTIONS_SCHEMA` with their types
    (or a type that widens to it losslessly: large strings, dictionary-encoded strings, float32, all-null),
    no missing value where the table has none, a known ``status``, and for every predicted row a label
    and a confidence in [0, 1]. Anything else is one :class:`DataError` naming the file, the column and the
    way to predict the date again (``monitor evaluate --date D --force``).
    """
    path = name
    remedy = _redo_hint(day)
    try:
        table = pq.read_table(pa.BufferReader(data))
        # Still the file's own text: a damaged footer can name columns in bytes that are not UTF-8.
        if "draw" not in table.column_names:
            table = table.append_column("draw", pa.array([DRAW_BASE] * table.num_rows, pa.string()))
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise DataError(f"{path} is not a predictions file: it lacks columns {missing}; {remedy}")
        table = _checked(table.select(list(COLUMNS)), path, remedy, day)
        frame = table.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:  # truncated, not Parquet, or a footer that lies
        raise DataError(
            f"the predictions file {path} is not a readable Parquet file ({first_line(exc, 200)}); {remedy}"
        ) from exc
    for column in ("topk_labels", "topk_scores"):
        frame[column] = [list(v) if v is not None else [] for v in frame[column]]
    return frame


def _redo_hint(day: str | None) -> str:
    return f"run `monitor evaluate --date {day or 'D'} --force` to predict the date again"


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


def _checked(table: pa.Table, path: str, remedy: str, day: str | None) -> pa.Table:
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
    if day is not None:
        dates = pc.unique(table.column("date")).to_pylist()
        if dates and dates != [day]:
            raise refuse(f"column 'date' holds {', '.join(repr(d)[:40] for d in dates[:3] if d != day)}, not {day}")
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
