"""Pooling daily class metrics into longer periods: accuracy from summed counts, with its Wilson interval.

Pure functions of DataFrames, no I/O. Accuracy over any period is pooled from counts (sum of
``correct`` over sum of ``n``), never an average of daily ratios; its interval is a Wilson interval
from :func:`monitor.stats.wilson_intervals`, the function the metrics stage stores its daily
intervals with, so a pooled day and a stored day agree.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import numpy as np
import pandas as pd

from monitor.errors import DataError
from monitor.stats import wilson_intervals

Grain = Literal["day", "week", "month"]
GRAINS: tuple[str, ...] = ("day", "week", "month")


def wilson(correct: Any, n: Any, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson interval bounds for arrays of counts at ``level`` (NaN where ``n == 0``)."""
    return wilson_intervals(np.asarray(correct, dtype=float), np.asarray(n, dtype=float), level)


def auto_grain(start: str, end: str) -> Grain:
    """Days up to about a quarter, weeks up to two years, months beyond: a heatmap stays under ~105 columns."""
    days = (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days + 1
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


def range_pooled_accuracy(metrics: pd.DataFrame) -> pd.Series:
    """Each class's accuracy over the whole frame, pooled from counts (NaN for a class without images)."""
    totals = metrics.groupby("label")[["n", "correct"]].sum()
    return (totals["correct"] / totals["n"].where(totals["n"] > 0)).astype(float)
