"""Pooling daily class metrics into longer periods: accuracy from summed counts, with its Wilson interval.

Pure functions of DataFrames, no I/O. Accuracy over any period is pooled from counts (sum of
``correct`` over sum of ``n``), never an average of daily ratios; its interval is a Wilson interval
from :func:`monitor.core.stats.wilson_intervals`, the function the metrics stage stores its daily
intervals with, so a pooled day and a stored day agree.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from monitor.core.dates import day_span, iso_day
from monitor.core.errors import DataError
from monitor.core.stats import wilson_intervals

Grain = Literal["day", "week", "month"]
GRAINS: tuple[str, ...] = ("day", "week", "month")


def wilson(correct: Any, n: Any, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson interval bounds for arrays of counts at ``level`` (NaN where ``n == 0``)."""
    return wilson_intervals(np.asarray(correct, dtype=float), np.asarray(n, dtype=float), level)


def auto_grain(start: str, end: str) -> Grain:
    """Days up to about a quarter, weeks up to two years, months beyond: a heatmap stays under ~105 columns."""
    days = day_span(iso_day(start), iso_day(end))
    if days <= 92:
        return "day"
    if days <= 731:
        return "week"
    return "month"


def period_start(dates: pd.Series, grain: Grain) -> pd.Series:
    """The first day (ISO string) of the day, ISO week (Monday) or month that each date falls in."""
    if grain == "day":
        return dates.astype(str)
    stamps = pd.to_datetime(dates)
    if grain == "week":
        starts = stamps - pd.to_timedelta(stamps.dt.weekday, unit="D")
    elif grain == "month":
        starts = stamps - pd.to_timedelta(stamps.dt.day - 1, unit="D")
    else:
        raise DataError(f"unknown grain {grain!r}; choose one of {', '.join(GRAINS)}")
    return starts.dt.strftime("%Y-%m-%d")


def range_periods(start: str, end: str, grain: Grain) -> list[str]:
    """Every period (first day) from ``start`` to ``end``, so days without data still get their column."""
    days = pd.Series(pd.date_range(start, end, freq="D").strftime("%Y-%m-%d"))
    return sorted(period_start(days, grain).unique())


def pool_by_period(metrics: pd.DataFrame, grain: Grain, level: float) -> pd.DataFrame:
    """Pool daily class metrics into periods: sum ``n``, ``correct`` and ``failed``, then accuracy and Wilson interval.

    Returns one row per (label, period) with ``period``, ``label``, ``n``, ``correct``, ``failed``,
    ``days`` (days with data), ``accuracy`` (NaN when ``n`` is 0), ``ci_low``, ``ci_high``.
    """
    columns = ["label", "period", "n", "correct", "failed", "days", "accuracy", "ci_low", "ci_high"]
    if metrics.empty:
        return pd.DataFrame(columns=columns)
    pooled = _pooled_counts(metrics, grain)
    if pooled is None:  # not plain text keys and whole counts: pandas' groupby
        frame = metrics.assign(period=period_start(metrics["date"], grain))
        pooled = (
            frame.groupby(["label", "period"], sort=True)
            .agg(n=("n", "sum"), correct=("correct", "sum"), failed=("failed", "sum"), days=("date", "nunique"))
            .reset_index()
        )
    n = pooled["n"].to_numpy(dtype=float)
    correct = pooled["correct"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled["accuracy"] = np.where(n > 0, correct / np.where(n > 0, n, 1.0), np.nan)
    pooled["ci_low"], pooled["ci_high"] = wilson(correct, n, level)
    return pooled[columns]


def _plain(metrics: pd.DataFrame, keys: tuple[str, ...], counts: tuple[str, ...]) -> bool:
    """Whether ``keys`` are text without gaps and ``counts`` integers: what the array paths below assume."""
    return all(pd.api.types.infer_dtype(metrics[name], skipna=False) == "string" for name in keys) and all(
        metrics[name].dtype.kind in "iu" for name in counts
    )


def _pooled_counts(metrics: pd.DataFrame, grain: Grain) -> pd.DataFrame | None:
    """The sums and day counts of :func:`pool_by_period` per (label, period), sorted, from integer codes (a year of
    1,000 classes in milliseconds, where a groupby on text takes a second); None when the frame is not plain."""
    if not _plain(metrics, ("label", "date"), ("n", "correct", "failed")):
        return None
    label_code, labels = pd.factorize(metrics["label"], sort=True)
    date_code, dates = pd.factorize(metrics["date"], sort=True)
    # The period of each distinct date (a year has 365 of them), then of each row.
    period_of_date, periods = pd.factorize(period_start(pd.Series(dates, dtype=object), grain), sort=True)
    period_code = period_of_date[date_code]
    key = label_code.astype(np.int64) * len(periods) + period_code
    groups, group_of_row = _groups(key)
    sums = {
        name: np.bincount(group_of_row, weights=metrics[name].to_numpy(dtype=float), minlength=len(groups)).astype(
            np.int64
        )
        for name in ("n", "correct", "failed")
    }
    # Days with data: the distinct (label, date) pairs of each group.
    pairs = _groups(label_code.astype(np.int64) * len(dates) + date_code)[0]
    pair_groups = (pairs // len(dates)) * len(periods) + period_of_date[pairs % len(dates)]
    days = np.bincount(np.searchsorted(groups, pair_groups), minlength=len(groups))
    return pd.DataFrame(
        {
            "label": np.asarray(labels, dtype=object)[groups // len(periods)],
            "period": np.asarray(periods, dtype=object)[groups % len(periods)],
            **sums,
            "days": days.astype(np.int64),
        }
    )


def _groups(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``key`` (non-negative integers), sorted, and each element's place among them."""
    if len(key) and key.max() < max(4 * len(key), 1 << 20):  # a dense key space: counting beats sorting
        present = np.bincount(key) > 0
        groups = np.flatnonzero(present)
        place = np.cumsum(present) - 1
        return groups, place[key]
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]] if len(ordered) else np.zeros(0, dtype=bool)
    place = np.empty(len(key), dtype=np.int64)
    place[order] = np.cumsum(first) - 1
    return ordered[first], place


def range_pooled_accuracy(metrics: pd.DataFrame) -> pd.Series:
    """Each class's accuracy over the whole frame, pooled from counts (NaN for a class without images)."""
    if not metrics.empty and _plain(metrics, ("label",), ("n", "correct")):
        code, labels = pd.factorize(metrics["label"], sort=True)
        n = np.bincount(code, weights=metrics["n"].to_numpy(dtype=float), minlength=len(labels))
        correct = np.bincount(code, weights=metrics["correct"].to_numpy(dtype=float), minlength=len(labels))
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = np.where(n > 0, correct / np.where(n > 0, n, 1.0), np.nan)
        return pd.Series(accuracy, index=pd.Index(np.asarray(labels, dtype=object), name="label"), dtype=float)
    totals = metrics.groupby("label")[["n", "correct"]].sum()
    return (totals["correct"] / totals["n"].where(totals["n"] > 0)).astype(float)
