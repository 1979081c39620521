"""The store documents the dashboard reads, as DataFrames: their fields, and the checks and slicing on the way.

Pure: documents in, frames out. :class:`~dashboards.data.DashboardData` fetches the documents and
uses these to shape them; the pages slice the frames they get back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dashboards.state import shown
from evaluation.predictions import STATUS_OK
from monitor.core.dates import is_iso_day
from monitor.core.errors import DataError

METRIC_FIELDS: tuple[str, ...] = ("date", "label", "n", "correct", "failed", "accuracy", "ci_low", "ci_high")
HEALTH_FIELDS: tuple[str, ...] = (
    "date",
    "label",
    "verdict",
    "target",
    "window_days",
    "window_start",
    "pooled_n",
    "pooled_correct",
    "pooled_accuracy",
    "ci_low",
    "ci_high",
    "prob_below_target",
    "cusum",
    "cusum_threshold",
    "collapse",
    "collapse_threshold",
    "recovery",
    "recovery_threshold",
    "followup",
    "evaluated_n",
    "evaluated_correct",
    "evaluated_ci_low",
    "evaluated_ci_high",
    "unseen_left",
    "method",
    "reason",
)
ALERT_FIELDS: tuple[str, ...] = (
    "label",
    "date",
    "kind",
    "message",
    "delivered",
    "delivered_at",
    "attempts",
    "last_error",
)
#: The columns of the predictions table the pages use (the rest, e.g. the top-k lists, are dropped on reading).
PREDICTION_FIELDS: tuple[str, ...] = ("image_path", "label", "pred", "confidence", "status", "error", "model_id")
UNUSABLE_FIELDS: tuple[str, ...] = ("path", "status", "reason")


@dataclass(frozen=True)
class ModelInfo:
    """One evaluated model, from the ``models`` collection (or, for stores without it, from ``class_metrics``)."""

    model_id: str
    name: str
    labels: tuple[str, ...]
    first_date: str | None
    last_date: str | None


#: Fields of class metrics and class health that hold numbers (a column of them stays numeric even with gaps).
_NUMERIC = {
    "n",
    "correct",
    "failed",
    "accuracy",
    "ci_low",
    "ci_high",
    "target",
    "window_days",
    "pooled_n",
    "pooled_correct",
    "pooled_accuracy",
    "prob_below_target",
    "cusum",
    "cusum_threshold",
    "collapse",
    "collapse_threshold",
    "recovery",
    "recovery_threshold",
    "followup",
    "evaluated_n",
    "evaluated_correct",
    "evaluated_ci_low",
    "evaluated_ci_high",
    "unseen_left",
}


def frame(docs: Sequence[dict[str, Any]], fields: Sequence[str]) -> pd.DataFrame:
    """The documents as a frame with exactly ``fields`` as columns (also when there are none)."""
    return pd.DataFrame.from_records(list(docs), columns=list(fields))


def records_frame(docs: Sequence[dict[str, Any]], fields: Sequence[str]) -> pd.DataFrame:
    """Like :func:`frame`, with the numeric fields as numbers (a missing value or a stray string becomes NaN)."""
    result = frame(docs, fields)
    for name in fields:
        if name in _NUMERIC and result[name].dtype == object:
            result[name] = pd.to_numeric(result[name], errors="coerce")
    return result


def counts(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """``frame`` with the count columns ``names`` as integers (a missing count is 0)."""
    for name in names:
        if frame[name].isna().any() or frame[name].dtype == object:
            frame = frame.assign(**{name: pd.to_numeric(frame[name], errors="coerce").fillna(0).astype(int)})
    return frame


def confusion_pairs(confusions: Any) -> list[dict[str, Any]]:
    """The (``pred``, ``count``) pairs of a ``confusions`` field (anything else: none)."""
    return [pair for pair in confusions if isinstance(pair, dict)] if isinstance(confusions, list) else []


def iso_date(text: str) -> str:
    """``text`` if it is a YYYY-MM-DD date, else :class:`DataError` (dates reach queries and file names)."""
    if not isinstance(text, str) or not is_iso_day(text):
        raise DataError(f"date {shown(text)} is not a valid YYYY-MM-DD date")
    return text


def in_range(
    frame: pd.DataFrame,
    start: str | None,
    end: str | None,
    labels: Sequence[str] | None = None,
    *,
    dates: np.ndarray | None = None,
) -> pd.DataFrame:
    """The rows of ``frame`` with ``start <= date <= end`` (inclusive ISO dates) and, optionally, a label of ``labels``.

    ``dates``: the frame's date column when it is sorted (:func:`sorted_dates`); the range is then found by
    bisection instead of comparing every row (a year of 1,000 classes is 365,000 of them).
    """
    if dates is not None:
        low = int(np.searchsorted(dates, start, side="left")) if start else 0
        high = int(np.searchsorted(dates, end, side="right")) if end else len(dates)
        part = frame if (low, high) == (0, len(frame)) else frame.iloc[low:high]
        if not labels:
            return part
        chosen = part["label"].isin(list(labels))
        return part if bool(chosen.all()) else part[chosen]
    mask = pd.Series(True, index=frame.index)
    if start:
        mask &= frame["date"] >= start
    if end:
        mask &= frame["date"] <= end
    if labels:
        mask &= frame["label"].isin(list(labels))
    return frame if bool(mask.all()) else frame[mask]


def sorted_dates(frame: pd.DataFrame) -> np.ndarray | None:
    """The ``date`` column as an array when it holds text in ascending order (as the store returns rows), else None."""
    dates = frame["date"].to_numpy(dtype=object)
    if pd.api.types.infer_dtype(dates, skipna=False) != "string" or not frame["date"].is_monotonic_increasing:
        return None
    return dates


def misclassified(predictions: pd.DataFrame, label: str, model_id: str | None = None) -> pd.DataFrame:
    """The rows of ``label`` predicted wrongly (of ``model_id``, when the rows name models), most confident mistakes first."""
    rows = predictions[
        (predictions["label"] == label)
        & (predictions["status"] == STATUS_OK)
        & (predictions["pred"] != predictions["label"])
    ]
    if model_id is not None and rows["model_id"].notna().any():
        rows = rows[rows["model_id"] == model_id]
    return rows.sort_values(["confidence", "image_path"], ascending=[False, True], na_position="last")


def failed(predictions: pd.DataFrame) -> pd.DataFrame:
    """The rows whose prediction failed (image unreadable, not decodable...), with their error, by path."""
    return predictions[predictions["status"] != STATUS_OK].sort_values("image_path")


def model_infos(docs: Iterable[dict[str, Any]]) -> list[ModelInfo]:
    """The ``models`` documents as :class:`ModelInfo`, the most recently evaluated first."""
    infos = [
        ModelInfo(
            model_id=str(doc["model_id"]),
            name=str(doc.get("name") or str(doc["model_id"]).split("@")[0]),
            labels=tuple(sorted(str(label) for label in doc.get("labels") or ())),
            first_date=doc.get("first_date"),
            last_date=doc.get("last_date"),
        )
        for doc in docs
    ]
    return sorted(infos, key=lambda m: (m.last_date or "", m.model_id), reverse=True)


def confusions_frame(docs: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Class metrics documents (``date``, ``label``, ``confusions``) as one row per wrong prediction pair: ``date``, ``label``, ``pred``, ``count``."""
    rows = [
        {
            "date": doc["date"],
            "label": doc["label"],
            "pred": str(pair.get("pred")),
            "count": int(pair.get("count") or 0),
        }
        for doc in docs
        for pair in confusion_pairs(doc.get("confusions"))
    ]
    return pd.DataFrame.from_records(rows, columns=["date", "label", "pred", "count"])


def alerts_frame(docs: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Alert documents (:data:`ALERT_FIELDS`), the newest day first and classes alphabetically within a day."""
    result = frame(docs, ALERT_FIELDS)
    if result.empty:
        return result
    # The store's order within a day is by creation.
    result = result.sort_values("label", kind="stable").sort_values("date", ascending=False, kind="stable")
    return result.reset_index(drop=True)
