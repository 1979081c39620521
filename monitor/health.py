"""Class health: a verdict per model, class and date from the stored daily counts, with the evidence behind it.

Two kinds of evidence, both from counts (never averaged daily ratios):

- **Window** (shown as evidence, and behind ``watch``): the counts of the last ``window_days`` days are
  pooled (sum correct / sum n); the Wilson interval at ``confidence_level`` (statsmodels) and the
  posterior probability that accuracy is below its target under a uniform Beta(1, 1) prior (scipy).
- **Sequential test** (behind ``needs_retraining``): a one-sided Bernoulli CUSUM over the whole history of
  the model. Each image adds its log-likelihood ratio of accuracy ``p1 = target - drop_to_detect``
  against ``p0 = target``; a day adds the sum over its images, and the statistic is reflected at 0:
  ``S_t = max(0, S_{t-1} + LLR_t)``. The threshold ``h`` is calibrated so that a class sitting exactly at
  its target, with ``samples_per_class`` images a day, raises a false alarm no more often than once in
  ``classes * 365 / false_alarms_per_year`` days (its in-control average run length, computed with the
  Brook-Evans Markov-chain approximation): that bounds the false alarms of all classes together.

Verdict rule (first match wins):

1. ``needs_retraining``: the CUSUM reached ``h``; the class stays flagged until the CUSUM falls back
   to 0 (the evidence has swung back to the target), so a flag does not flicker day to day and each
   new flag starts the test afresh, as the run-length calibration assumes.
2. ``insufficient_data``: fewer than ``min_samples`` images in the window.
3. ``watch``: the CUSUM is at least ``h / 2``, or P(accuracy < target | window) >= ``confidence_level``.
4. ``healthy``: otherwise.

:func:`assess_history` is the pure function (no store); :func:`compute_health` reads a model's stored
``class_metrics``, writes ``class_health`` and returns the rows. The CUSUM recursion
(:func:`cusum_recursion`) and the verdict rule (:func:`verdict_codes`) take arrays so that the benchmark
(``benchmarks/bench_health.py``) runs exactly this code over many simulated years.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pymongo.errors import PyMongoError
from scipy import optimize, sparse, stats
from scipy.sparse import linalg as sparse_linalg

from monitor.errors import ConfigError, DataError, StoreError
from monitor.settings import Settings
from evaluation.metrics import wilson_interval

VERDICTS = ("healthy", "watch", "needs_retraining", "insufficient_data")
HEALTHY, WATCH, NEEDS_RETRAINING, INSUFFICIENT_DATA = range(4)
METHOD = "bernoulli-cusum + pooled-window wilson/beta"
#: Lattice steps per the smaller per-image LLR: snapping the weights to it changes them by < 1%.
LATTICE = 100
#: A CUSUM below this is 0 (float residue of lattice sums).
ZERO = 1e-9

DailyCounts = tuple[dt.date | str, int, int]


# --- the sequential test -------------------------------------------------------------------


def llr_weights(target: float, drop: float) -> tuple[float, float]:
    """Per-image log-likelihood ratios (if correct, if wrong) of accuracy ``target - drop`` against ``target``.

    Both are snapped to whole multiples of a step (:func:`llr_step`, a change of well under 1%), so the
    statistic only takes values ``k * step``: the run-length computation is then exact, not an approximation.
    """
    step, if_correct, if_wrong = _lattice(target, drop)
    return if_correct * step, if_wrong * step


def llr_step(target: float, drop: float) -> float:
    """The lattice step of the CUSUM statistic (see :func:`llr_weights`)."""
    return _lattice(target, drop)[0]


@lru_cache(maxsize=256)
def _lattice(target: float, drop: float) -> tuple[float, int, int]:
    p1 = target - drop
    if not 0.0 < p1 < target < 1.0:
        raise ConfigError(f"target {target} minus drop_to_detect {drop} = {p1:.3f} is not an accuracy between 0 and the target")
    exact_correct, exact_wrong = math.log(p1 / target), math.log((1.0 - p1) / (1.0 - target))
    step = min(-exact_correct, exact_wrong) / LATTICE
    return step, round(exact_correct / step), round(exact_wrong / step)


def daily_llr(n: ArrayLike, correct: ArrayLike, target: float, drop: float) -> NDArray[np.float64]:
    """The CUSUM increment of each day: the sum of its images' log-likelihood ratios."""
    if_correct, if_wrong = llr_weights(target, drop)
    n_arr, c_arr = np.asarray(n, dtype=float), np.asarray(correct, dtype=float)
    return c_arr * if_correct + (n_arr - c_arr) * if_wrong


def cusum_recursion(increments: ArrayLike, threshold: float) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Run the reflected CUSUM along axis 0 (days); other axes are independent series (classes, trials).

    Returns the statistic after each day and the alarm state: on from the day the statistic reaches
    ``threshold`` until the day it is back at 0.
    """
    x = np.asarray(increments, dtype=float)
    s_path = np.empty_like(x)
    alarm_path = np.empty(x.shape, dtype=bool)
    s = np.zeros(x.shape[1:])
    alarm = np.zeros(x.shape[1:], dtype=bool)
    for t in range(x.shape[0]):
        s = np.maximum(0.0, s + x[t])
        # "back at 0" up to float residue of adding and subtracting lattice steps
        alarm = np.where(alarm, s > ZERO, s >= threshold)
        s_path[t] = s
        alarm_path[t] = alarm
    return s_path, alarm_path


def average_run_length(threshold: float, target: float, drop: float, n: int, accuracy: float | None = None) -> float:
    """Expected days until the CUSUM first reaches ``threshold`` from 0: the Brook-Evans Markov chain.

    ``n`` images a day, each correct with probability ``accuracy`` (default: the target, the in-control
    case); the daily number of errors is binomial. The statistic lives on the lattice ``k * step``
    (:func:`llr_weights`), so the chain's states are exactly its values below the threshold.
    """
    p = target if accuracy is None else accuracy
    step, if_correct, if_wrong = _lattice(target, drop)
    states = max(1, math.ceil(threshold / step - 1e-9))  # values 0 .. states-1 (times step) are below h
    errors = np.arange(n + 1)
    prob = stats.binom.pmf(errors, n, 1.0 - p)
    keep = prob > 1e-15  # far tails add nothing and would only slow large n down
    jump = errors[keep] * if_wrong + (n - errors[keep]) * if_correct
    prob = prob[keep]
    here = np.repeat(np.arange(states), jump.size)
    there = np.maximum(0, here + np.tile(jump, states))
    weight = np.tile(prob, states)
    inside = there < states  # the rest reaches the threshold: absorbed
    transition = sparse.csr_matrix((weight[inside], (here[inside], there[inside])), shape=(states, states))
    run_lengths = sparse_linalg.spsolve((sparse.identity(states, format="csr") - transition).tocsc(), np.ones(states))
    return float(np.atleast_1d(run_lengths)[0])


@lru_cache(maxsize=256)
def cusum_threshold(target: float, drop: float, n: int, arl: float) -> float:
    """The smallest threshold whose in-control average run length (days) is at least ``arl``.

    Solved with ``brentq`` on log ARL; cached per (target, drop, n, arl).
    """
    if n < 1:
        raise ConfigError(f"samples_per_class {n} must be at least 1 to calibrate the CUSUM")

    def gap(h: float) -> float:
        return math.log(average_run_length(h, target, drop, n)) - math.log(arl)

    low = llr_step(target, drop) / 2
    if gap(low) >= 0.0:
        return low
    high = max(1.0, math.log(arl))
    while gap(high) < 0.0:
        high *= 1.5
        if high > 200:  # an ARL this far out is beyond double precision: the setting is nonsense
            raise ConfigError(f"cannot calibrate a CUSUM threshold for an average run length of {arl:g} days")
    h = optimize.brentq(gap, low, high, xtol=1e-9)
    # The ARL is a step function of h (the statistic lives on a lattice): take the first lattice point
    # that meets the bound and return the midpoint below it, so float residue cannot flip a comparison.
    step = llr_step(target, drop)
    points = math.ceil(h / step - 1e-9)
    while gap(points * step) < 0.0:
        points += 1
    return float((points - 0.5) * step)


def required_arl(classes: int, false_alarms_per_year: float) -> float:
    """Days between false alarms each class must reach so that all classes together stay within the bound."""
    return max(1, classes) * 365.0 / false_alarms_per_year


def threshold_for(target: float, settings: Settings, classes: int) -> float:
    """The calibrated CUSUM threshold for one class target under ``settings``."""
    return cusum_threshold(
        round(target, 10), round(settings.drop_to_detect, 10), settings.samples_per_class,
        required_arl(classes, settings.false_alarms_per_year),
    )


# --- window evidence and the verdict rule ----------------------------------------------------


def prob_below(correct: ArrayLike, n: ArrayLike, target: float) -> NDArray[np.float64]:
    """P(accuracy < target) under the Beta(1 + correct, 1 + wrong) posterior of a uniform prior."""
    c, total = np.asarray(correct, dtype=float), np.asarray(n, dtype=float)
    return np.asarray(stats.beta.cdf(target, 1.0 + c, 1.0 + total - c), dtype=float)


def verdict_codes(
    alarm: ArrayLike, cusum: ArrayLike, threshold: float, pooled_n: ArrayLike, prob_below_target: ArrayLike, settings: Settings
) -> NDArray[np.int64]:
    """The verdict rule of the module docstring, element-wise; codes index :data:`VERDICTS`."""
    alarm_a = np.asarray(alarm, dtype=bool)
    watch = (np.asarray(cusum) >= threshold / 2.0) | (np.asarray(prob_below_target) >= settings.confidence_level)
    return np.select(
        [alarm_a, np.asarray(pooled_n) < settings.min_samples, watch],
        [NEEDS_RETRAINING, INSUFFICIENT_DATA, WATCH],
        default=HEALTHY,
    ).astype(np.int64)


def _as_date(value: dt.date | str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise DataError(f"{value!r} is not a date YYYY-MM-DD") from exc


def assess_history(
    daily: Sequence[DailyCounts], target: float, settings: Settings, *, classes: int = 1, date: dt.date | str | None = None
) -> dict[str, Any]:
    """Judge one class from its daily ``(date, n, correct)`` counts up to ``date`` (default: the last day).

    ``classes`` is how many classes share the false-alarm bound (it sets the CUSUM threshold). Returns
    the evidence fields of a ``class_health`` row (all but model_id, date and label).
    """
    days = sorted(((_as_date(d), int(n), int(c)) for d, n, c in daily), key=lambda row: row[0])
    for day, n, c in days:
        if n < 0 or not 0 <= c <= n:
            raise DataError(f"counts on {day}: correct {c} of n {n} are inconsistent")
    if len({day for day, _, _ in days}) != len(days):
        raise DataError("the daily counts repeat a date")
    as_of = _as_date(date) if date is not None else (days[-1][0] if days else None)
    if as_of is None:
        raise DataError("no daily counts to judge")
    days = [row for row in days if row[0] <= as_of]
    window_start = as_of - dt.timedelta(days=settings.window_days - 1)
    in_window = [(n, c) for day, n, c in days if day >= window_start]
    pooled_n = sum(n for n, _ in in_window)
    pooled_correct = sum(c for _, c in in_window)
    ci_low, ci_high = wilson_interval(pooled_correct, pooled_n, settings.confidence_level) if pooled_n else (None, None)
    p_below = float(prob_below(pooled_correct, pooled_n, target))

    h = threshold_for(target, settings, classes)
    if days:
        n_arr = np.array([n for _, n, _ in days])
        c_arr = np.array([c for _, _, c in days])
        s_path, alarm_path = cusum_recursion(daily_llr(n_arr, c_arr, target, settings.drop_to_detect), h)
        cusum, alarm = float(s_path[-1]), bool(alarm_path[-1])
    else:
        s_path, alarm_path, cusum, alarm = np.zeros(0), np.zeros(0, dtype=bool), 0.0, False
    verdict = VERDICTS[int(verdict_codes(alarm, cusum, h, pooled_n, p_below, settings))]

    accuracy = pooled_correct / pooled_n if pooled_n else None
    level = f"{settings.confidence_level:.0%}"
    window = (
        f"last {settings.window_days} days {pooled_correct}/{pooled_n} = {accuracy:.2f}, {level} CI [{ci_low:.2f}, {ci_high:.2f}]"
        if pooled_n and accuracy is not None and ci_low is not None and ci_high is not None
        else f"no images in the last {settings.window_days} days"
    )
    odds = f"P(accuracy < {target:.2f}) = {p_below:.2f}"
    if verdict == "needs_retraining":
        since = days[_alarm_start(alarm_path)][0]
        reason = (
            f"CUSUM {cusum:.1f} reached the threshold {h:.1f} on {since}: a sustained drop below the {target:.2f} target "
            f"({window}; {odds})."
            if cusum >= h
            else f"flagged since the CUSUM reached {h:.1f} on {since}, and it has not fallen back to 0 yet (now {cusum:.1f}; {window}; {odds})."
        )
    elif verdict == "insufficient_data":
        reason = f"Only {pooled_n} images in the last {settings.window_days} days (at least {settings.min_samples} needed); CUSUM {cusum:.1f} < {h:.1f}."
    elif verdict == "watch":
        why = (
            f"CUSUM {cusum:.1f} is past half its threshold {h:.1f}"
            if cusum >= h / 2
            else f"{odds} reaches {settings.confidence_level:.2f}"
        )
        reason = f"{why} ({window}; target {target:.2f})."
    else:
        reason = f"{window} against target {target:.2f}; {odds}; CUSUM {cusum:.1f} < {h:.1f}."
    return {
        "verdict": verdict,
        "target": float(target),
        "window_days": settings.window_days,
        "window_start": window_start.isoformat(),
        "pooled_n": pooled_n,
        "pooled_correct": pooled_correct,
        "pooled_accuracy": accuracy,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "prob_below_target": p_below,
        "cusum": cusum,
        "cusum_threshold": h,
        "method": METHOD,
        "reason": reason,
    }


def _alarm_start(alarm_path: NDArray[np.bool_]) -> int:
    """Index of the first day of the alarm run that includes the last day."""
    off = np.flatnonzero(~alarm_path)
    return int(off[-1]) + 1 if off.size else 0


# --- the store ------------------------------------------------------------------------------------


def compute_health(store: Any, model_id: str, date: str, settings: Settings) -> list[dict[str, Any]]:
    """Verdicts of every class of ``model_id`` evaluated on ``date``, from that model's history only.

    Replaces the model's ``class_health`` rows for ``date`` (idempotent) and returns them without ``_id``.
    """
    day = _as_date(date).isoformat()
    try:
        docs = list(
            store.class_metrics.find(
                {"model_id": model_id, "date": {"$lte": day}}, {"_id": 0, "label": 1, "date": 1, "n": 1, "correct": 1}
            )
        )
    except PyMongoError as exc:
        raise StoreError(f"could not read class_metrics of {model_id} from {store.description}: {exc}") from exc
    history: dict[str, list[DailyCounts]] = defaultdict(list)
    for doc in docs:
        history[str(doc["label"])].append((str(doc["date"]), int(doc.get("n") or 0), int(doc.get("correct") or 0)))
    labels = sorted(label for label, rows in history.items() if any(d == day for d, _, _ in rows))
    if not labels:
        raise DataError(f"no class metrics of model {model_id} on {day}: run the metrics step for {day} first")

    rows: list[dict[str, Any]] = []
    for label in labels:
        evidence = assess_history(history[label], settings.target_for(label), settings, classes=len(labels), date=day)
        rows.append({"model_id": model_id, "date": day, "label": label, **evidence})
    try:
        store.class_health.delete_many({"model_id": model_id, "date": day})
        store.class_health.insert_many([dict(row) for row in rows])  # copies: insert_many adds _id in place
    except PyMongoError as exc:
        raise StoreError(f"could not write class_health of {model_id} on {day} to {store.description}: {exc}") from exc
    return rows
