"""Interval and posterior statistics of a proportion ``correct / n``: Wilson intervals (statsmodels), P(p < target) (scipy).

Pure functions over counts, shared by the metrics (per-class intervals), class health (the pooled
window's evidence) and the dashboard.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from monitor.core.errors import ConfigError, DataError


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``correct / n`` (statsmodels ``proportion_confint``).

    ``n == 0`` gives ``(nan, nan)``: with no observation there is no interval, and a made-up
    ``(0, 1)`` would read as evidence. Callers that store rows turn NaN into ``None``.
    """
    low, high = wilson_intervals(np.asarray([correct]), np.asarray([n]), confidence)
    return float(low[0]), float(high[0])


def wilson_intervals(correct: Any, n: Any, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`wilson_interval`: arrays of lower and upper bounds, NaN where ``n == 0``."""
    from statsmodels.stats.proportion import proportion_confint

    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence level {confidence} is not between 0 and 1")
    successes = np.asarray(correct, dtype=float)
    trials = np.asarray(n, dtype=float)
    if successes.shape != trials.shape:
        raise DataError(f"correct {successes.shape} and n {trials.shape} have different shapes")
    bad = (
        (trials < 0)
        | (successes < 0)
        | (successes > trials)
        | (successes != np.floor(successes))
        | (trials != np.floor(trials))
    )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"cannot take an interval of {successes.flat[i]:g} correct out of {trials.flat[i]:g}")
    low = np.full(trials.shape, np.nan)
    high = np.full(trials.shape, np.nan)
    seen = trials > 0
    if seen.any():
        lo, hi = proportion_confint(successes[seen], trials[seen], alpha=1.0 - confidence, method="wilson")
        # The closed form can land a rounding error outside [0, 1] or just inside the point at 0/n
        # and n/n (1 - 1e-16 for 10/10); the interval must contain its own estimate.
        share = successes[seen] / trials[seen]
        low[seen] = np.clip(np.minimum(lo, share), 0.0, 1.0)
        high[seen] = np.clip(np.maximum(hi, share), 0.0, 1.0)
    return low, high


def prob_below(correct: ArrayLike, n: ArrayLike, target: float) -> NDArray[np.float64]:
    """P(accuracy < target) under the Beta(1 + correct, 1 + wrong) posterior of a uniform prior."""
    c, total = np.asarray(correct, dtype=float), np.asarray(n, dtype=float)
    return np.asarray(stats.beta.cdf(target, 1.0 + c, 1.0 + total - c), dtype=float)


def weighted_accuracy(
    n: ArrayLike, correct: ArrayLike, weight: ArrayLike, confidence: float = 0.95
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """An unbiased accuracy over days whose sample sizes depended on earlier days' results (follow-up sampling).

    Days run along the last axis. Each day's share ``correct / n`` is unbiased for that day whatever decided
    ``n``; weighting the shares by ``weight`` (the day's base draw: fixed in advance, never by an outcome) keeps
    the mean unbiased, where the pooled ``sum(correct) / sum(n)`` is not (more images follow bad days and dilute
    them). Returns the estimate, its effective sample size ``(sum w)^2 / sum(w^2 / n)`` (the pooled ``n`` when no
    day drew follow-up), and the Wilson interval at that size (:func:`wilson_effective`); NaN where no day has images.
    """
    total, right = np.asarray(n, dtype=float), np.asarray(correct, dtype=float)
    w = np.where(total > 0, np.asarray(weight, dtype=float), 0.0)
    share = np.divide(right, total, out=np.zeros_like(total), where=total > 0)
    estimate, effective = weighted_sums(
        w.sum(axis=-1),
        (w * share).sum(axis=-1),
        np.divide(w * w, total, out=np.zeros_like(total), where=total > 0).sum(axis=-1),
    )
    low, high = wilson_effective(estimate, effective, confidence)
    return estimate, effective, low, high


def weighted_sums(
    weights: ArrayLike, weighted_shares: ArrayLike, spread: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The estimate and effective size of :func:`weighted_accuracy` from its sums: ``sum w``, ``sum w * share``, ``sum w^2 / n``."""
    w, ws, sp = (np.asarray(x, dtype=float) for x in (weights, weighted_shares, spread))
    estimate = np.divide(ws, w, out=np.full(w.shape, np.nan), where=w > 0)
    effective = np.divide(w * w, sp, out=np.zeros(w.shape), where=sp > 0)
    return estimate, effective


def wilson_effective(
    estimate: ArrayLike, effective: ArrayLike, confidence: float = 0.95
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The Wilson interval of an estimate with an effective (not necessarily whole) sample size; NaN where that is 0."""
    from statsmodels.stats.proportion import proportion_confint

    est, size = np.asarray(estimate, dtype=float), np.asarray(effective, dtype=float)
    low, high = np.full(est.shape, np.nan), np.full(est.shape, np.nan)
    seen = size > 0
    if seen.any():
        lo, hi = proportion_confint(est[seen] * size[seen], size[seen], alpha=1.0 - confidence, method="wilson")
        low[seen] = np.clip(np.minimum(lo, est[seen]), 0.0, 1.0)
        high[seen] = np.clip(np.maximum(hi, est[seen]), 0.0, 1.0)
    return low, high
