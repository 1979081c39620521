"""Judging one day: the counts of the classes of one model and date in, typed ``class_health`` rows out.

:func:`judge_classes` continues each class from the state its latest stored row left (:func:`state_from_row`), replays
the days it has counts for since, steps through the day judged, and turns the result into the evidence of each row
(:func:`judged_row`: the verdict, its numbers and the reason in plain words). :func:`grant_followup` and :func:`urgency`
are the rule that shares the next day's follow-up out within the daily cap. Pure: no store, files or settings (the
pipeline's :mod:`monitor.orchestration.health_stage` reads the counts and writes the rows).

**Stored state.** Each day's row keeps the statistic, the recovery statistic, the alarm state, the
thresholds and the settings it was judged under (``judged_under``, :mod:`.policy`); the next day continues from it. A
change of the class count or of a setting applies from the day it happens and never rewrites a stored
day. A backfilled date recomputes the later days in order, each under its own stored settings.

**Window evidence**, shown beside the verdict: the counts of the last ``window_days`` days, and an accuracy
that stays unbiased under follow-up (:func:`monitor.core.stats.weighted_accuracy`: each day's share weighted by its
base draw, which no outcome decides; the pooled ratio is biased upward, since more images follow bad days),
with a Wilson interval at its effective size (statsmodels) and P(accuracy < target) under a uniform Beta prior
(scipy). ``insufficient_data`` means fewer than ``min_samples`` images evaluated so far, not in the window: a
class with nothing new keeps its verdict.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from typing_extensions import TypedDict  # pydantic reads these on Python 3.11 (the schemas)

from monitor.core.dates import days_before
from monitor.core.errors import DataError
from monitor.core.stats import prob_below, weighted_sums, wilson_effective, wilson_interval
from monitor.core.verdicts import Verdict
from monitor.domain.health.calibration import Design, followup_extra
from monitor.domain.health.detector import State, advance, counted, verdict_codes
from monitor.domain.health.policy import HealthPolicy, JudgedUnder

METHOD = "bernoulli-cusum with follow-up sampling + upward-cusum recovery; pooled-window wilson/beta"


class Evidence(TypedDict):
    """The judged fields of a ``class_health`` row: the verdict, the window's evidence and the detector's state."""

    verdict: str
    target: float
    window_days: int
    window_start: str
    pooled_n: int
    pooled_correct: int
    pooled_accuracy: float | None  # the window's unbiased accuracy (:func:`monitor.core.stats.weighted_accuracy`)
    effective_n: float
    ci_low: float | None
    ci_high: float | None
    prob_below_target: float
    cusum: float
    cusum_threshold: float
    collapse: float
    collapse_threshold: float
    flagged: bool
    flagged_since: str | None
    recovery: float
    recovery_threshold: float
    followup: int
    day_n: int
    day_correct: int
    evaluated_n: int
    evaluated_correct: int
    evaluated_ci_low: float | None
    evaluated_ci_high: float | None
    unseen_left: int | None
    exhausted: bool
    method: str
    reason: str


class HealthRow(Evidence):
    """A stored ``class_health`` document (without ``_id``): one model, date and class."""

    model_id: str
    date: str
    label: str
    judged_under: JudgedUnder


@dataclass(frozen=True)
class Counts:
    """Daily counts of many classes as columns, sorted by class, then date: one row per (class, day)."""

    label: NDArray[np.int64]  # the class's index in the labels judged
    day: NDArray[np.int64]  # the date's ordinal
    n: NDArray[np.int64]
    correct: NDArray[np.int64]
    followup_n: NDArray[np.int64]
    followup_correct: NDArray[np.int64]
    unseen_left: NDArray[np.int64]  # -1: not recorded


class Carried(NamedTuple):
    """A class's latest stored row before the day judged, with its date: the state the day continues from."""

    date: dt.date
    row: Mapping[str, Any]


def check_counts(counts: Counts) -> None:
    """Class by class: inconsistent counts, then a repeated date, are a :class:`DataError` (the first class with either)."""
    fn, fc = counts.followup_n, counts.followup_correct
    bad = (
        (counts.n < 0)
        | (counts.correct < 0)
        | (counts.correct > counts.n)
        | (fc < 0)
        | (fc > fn)
        | (fn > counts.n)
        | (fn - fc > counts.n - counts.correct)
    )
    repeat = np.zeros(counts.day.shape, dtype=bool)
    repeat[1:] = (counts.label[1:] == counts.label[:-1]) & (counts.day[1:] == counts.day[:-1])
    first_bad = int(counts.label[bad].min()) if bad.any() else None
    first_repeat = int(counts.label[repeat].min()) if repeat.any() else None
    if first_bad is not None and (first_repeat is None or first_bad <= first_repeat):
        at = int(np.flatnonzero(bad & (counts.label == first_bad))[0])
        day = dt.date.fromordinal(int(counts.day[at]))
        raise DataError(f"counts on {day}: correct {int(counts.correct[at])} of n {int(counts.n[at])} are inconsistent")
    if first_repeat is not None:
        raise DataError("the daily counts repeat a date")


def state_from_row(row: Mapping[str, Any] | None, d: Design) -> tuple[State, str | None]:
    """The state a stored ``class_health`` row left (in the units of ``d``), and the date its flag was raised."""
    if not row or "cusum" not in row or "flagged" not in row:
        return State.zeros(), None
    s = round(float(row.get("cusum") or 0.0) / d.unit)
    r = round(float(row.get("recovery") or 0.0) / d.rec_unit)
    b = round(float(row.get("collapse") or 0.0) / d.big_unit)
    flagged = bool(row["flagged"])
    state = State(np.int64(s), np.int64(r if flagged else 0), np.bool_(flagged), np.int64(b))  # type: ignore[arg-type]
    return state, (row.get("flagged_since") if flagged else None)


def judge_classes(
    classes: NDArray[np.int64],
    previous: Sequence[Carried | None],
    counts: Counts,
    as_of: dt.date,
    d: Design,
    policy: HealthPolicy,
) -> list[Evidence]:
    """Judge on ``as_of`` the ``classes`` (indices into the labels of ``counts``) that share the test ``d`` and ``policy``.

    Each continues from its stored row in ``previous`` (or None), replays its days after that row and before
    ``as_of`` (its counts only: a day without counts is not a day of its test), then steps through ``as_of``.
    Every class advances with the others as arrays, day by day, so a daily run (each class continuing from
    yesterday's row) costs a few array operations whatever the length of the history. Returns the evidence
    and state fields of each class's row, in the order of ``classes``.
    """
    size = len(classes)
    position = np.full(int(max(int(classes.max()), int(counts.label.max(initial=0)))) + 1, -1, dtype=np.int64)
    position[classes] = np.arange(size)
    where = position[counts.label]  # each count row's place among ``classes`` (-1: another group's)
    mine = where >= 0
    started = [state_from_row(kept.row if kept else None, d) for kept in previous]
    state = State(
        np.asarray([s.s for s, _ in started], dtype=np.int64),
        np.asarray([s.r for s, _ in started], dtype=np.int64),
        np.asarray([s.flagged for s, _ in started], dtype=bool),
        np.asarray([s.b for s, _ in started], dtype=np.int64),
    )
    since = np.empty(size, dtype=object)
    since[:] = [flagged_since for _, flagged_since in started]
    after = np.asarray([kept.date.toordinal() if kept else 0 for kept in previous], dtype=np.int64)
    rows_before = [kept.row if kept else None for kept in previous]
    today = as_of.toordinal()
    # Images evaluated so far, each once: carried in the rows, or (for a class without) summed over its whole history.
    carried = np.asarray([row is not None and "evaluated_n" in row for row in rows_before], dtype=bool)
    evaluated_n = np.asarray(
        [int(row["evaluated_n"]) if row is not None and "evaluated_n" in row else 0 for row in rows_before],
        dtype=np.int64,
    )
    evaluated_c = np.asarray(
        [
            int(row.get("evaluated_correct") or 0) if row is not None and "evaluated_n" in row else 0
            for row in rows_before
        ],
        dtype=np.int64,
    )
    counted_from = np.where(carried, after, 0)[np.maximum(where, 0)]
    summed = mine & (counts.day > counted_from) & (counts.day <= today)
    np.add.at(evaluated_n, where[summed], counts.n[summed])
    np.add.at(evaluated_c, where[summed], counts.correct[summed])

    replay = np.flatnonzero(mine & (counts.day > after[np.maximum(where, 0)]) & (counts.day < today))
    replay = replay[np.argsort(counts.day[replay], kind="stable")]  # day by day; each day, the classes with counts
    days = counts.day[replay]
    bounds = np.flatnonzero(np.r_[True, days[1:] != days[:-1], True]) if len(replay) else np.zeros(0, dtype=np.int64)
    for first, last in zip(bounds[:-1], bounds[1:], strict=True):
        rows = replay[first:last]
        who = where[rows]
        before = State(state.s[who], state.r[who], state.flagged[who], state.b[who])
        used_n, used_c = counted(
            before, counts.n[rows], counts.correct[rows], counts.followup_n[rows], counts.followup_correct[rows], d
        )
        moved, raised, _ = advance(before, used_n, used_c, d)
        state.s[who], state.r[who], state.flagged[who], state.b[who] = moved.s, moved.r, moved.flagged, moved.b
        since[who[raised]] = dt.date.fromordinal(int(counts.day[rows[0]])).isoformat()
        since[who[~moved.flagged]] = None

    now = mine & (counts.day == today)
    n_today, c_today = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
    fn_today, fc_today = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
    unseen_today = np.full(size, -1, dtype=np.int64)
    n_today[where[now]], c_today[where[now]] = counts.n[now], counts.correct[now]
    fn_today[where[now]], fc_today[where[now]] = counts.followup_n[now], counts.followup_correct[now]
    unseen_today[where[now]] = counts.unseen_left[now]
    used_n, used_c = counted(state, n_today, c_today, fn_today, fc_today, d)
    state, raised, _ = advance(state, used_n, used_c, d)
    since[raised] = as_of.isoformat()
    since[~state.flagged] = None

    # The window: pooled counts (shown), and the unbiased day-weighted estimate with its effective size.
    window_start = days_before(as_of, policy.window_days - 1)
    inside = mine & (counts.day >= window_start.toordinal()) & (counts.day <= today)
    pooled_n, pooled_c = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
    np.add.at(pooled_n, where[inside], counts.n[inside])
    np.add.at(pooled_c, where[inside], counts.correct[inside])
    has = inside & (counts.n > 0)
    base = (counts.n - counts.followup_n)[has].astype(float)
    day_n = counts.n[has].astype(float)
    sums = [np.zeros(size) for _ in range(3)]
    for total, values in zip(sums, (base, base * counts.correct[has] / day_n, base * base / day_n), strict=True):
        np.add.at(total, where[has], values)
    estimate, effective = weighted_sums(*sums)
    ci_lows, ci_highs = wilson_effective(estimate, effective, policy.confidence_level)
    p_below = prob_below_target(estimate, effective, d.target)
    codes = verdict_codes(state, d, evaluated_n, policy.min_samples)
    followups = followup_extra(state.s, d.h, d.followup, state.flagged)

    judged: list[Evidence] = []
    for i in range(size):
        judged.append(
            judged_row(
                Judgement(
                    d=d,
                    policy=policy,
                    window_start=window_start,
                    code=int(codes[i]),
                    pooled_n=int(pooled_n[i]),
                    pooled_correct=int(pooled_c[i]),
                    estimate=finite_or_none(estimate[i]),
                    effective_n=float(effective[i]),
                    ci_low=finite_or_none(ci_lows[i]),
                    ci_high=finite_or_none(ci_highs[i]),
                    p_below=float(p_below[i]),
                    s=float(state.s[i]),
                    r=float(state.r[i]),
                    b=float(state.b[i]),
                    flagged=bool(state.flagged[i]),
                    since=since[i],
                    followup=int(followups[i]),
                    day_n=int(n_today[i]),
                    day_correct=int(c_today[i]),
                    evaluated_n=int(evaluated_n[i]),
                    evaluated_correct=int(evaluated_c[i]),
                    unseen_left=None if unseen_today[i] < 0 else int(unseen_today[i]),
                )
            )
        )
    return judged


def prob_below_target(estimate: ArrayLike, effective: ArrayLike, target: float) -> NDArray[np.float64]:
    """P(accuracy < target) under the Beta posterior of the window's estimate at its effective size (a uniform prior)."""
    size = np.asarray(effective, dtype=float)
    right = np.where(size > 0, np.nan_to_num(np.asarray(estimate, dtype=float)) * size, 0.0)
    return prob_below(right, size, target)


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, None for NaN (an estimate of no images)."""
    number = float(value)
    return None if math.isnan(number) else number


@dataclass(frozen=True)
class Judgement:
    """One class's judgement on one day, everything a ``class_health`` row is built from (statistics in lattice units)."""

    d: Design
    policy: HealthPolicy
    window_start: dt.date
    code: int
    pooled_n: int
    pooled_correct: int
    estimate: float | None  # the window's unbiased accuracy (:func:`monitor.core.stats.weighted_accuracy`)
    effective_n: float
    ci_low: float | None
    ci_high: float | None
    p_below: float
    s: float
    r: float
    b: float
    flagged: bool
    since: str | None
    followup: int
    day_n: int
    day_correct: int
    evaluated_n: int  # images of the class this model has evaluated so far, each once
    evaluated_correct: int
    unseen_left: (
        int | None
    )  # images of the class the model has still not evaluated after the day's draw (None: unknown)


def judged_row(j: Judgement) -> Evidence:
    """The evidence and state fields of a ``class_health`` row, from one class's judgement."""
    d = j.d
    verdict = Verdict.from_code(j.code)
    cusum, recovery = j.s * d.unit, j.r * d.rec_unit
    exhausted = j.unseen_left == 0
    bucket_low, bucket_high = (
        wilson_interval(j.evaluated_correct, j.evaluated_n, j.policy.confidence_level)
        if j.evaluated_n
        else (None, None)
    )
    return {
        "verdict": verdict.value,
        "target": float(d.target),
        "window_days": j.policy.window_days,
        "window_start": j.window_start.isoformat(),
        "pooled_n": j.pooled_n,
        "pooled_correct": j.pooled_correct,
        "pooled_accuracy": j.estimate,
        "effective_n": round(j.effective_n, 3),
        "ci_low": j.ci_low,
        "ci_high": j.ci_high,
        "prob_below_target": j.p_below,
        "cusum": cusum,
        "cusum_threshold": d.threshold,
        "collapse": j.b * d.big_unit,
        "collapse_threshold": d.collapse_threshold,
        "flagged": j.flagged,
        "flagged_since": j.since,
        "recovery": recovery,
        "recovery_threshold": d.recovery_threshold,
        "followup": j.followup,
        "day_n": j.day_n,
        "day_correct": j.day_correct,
        "evaluated_n": j.evaluated_n,
        "evaluated_correct": j.evaluated_correct,
        "evaluated_ci_low": bucket_low,
        "evaluated_ci_high": bucket_high,
        "unseen_left": j.unseen_left,
        "exhausted": exhausted,
        "method": METHOD,
        "reason": _reason(j, verdict, cusum, recovery, bucket_low, bucket_high),
    }


def _reason(
    j: Judgement, verdict: Verdict, cusum: float, recovery: float, bucket_low: float | None, bucket_high: float | None
) -> str:
    """The verdict in plain words, with the numbers behind it."""
    d, policy = j.d, j.policy
    level = f"{policy.confidence_level:.0%}"
    window = (
        f"last {policy.window_days} days {j.pooled_correct}/{j.pooled_n} images, accuracy {j.estimate:.2f}, {level} CI [{j.ci_low:.2f}, {j.ci_high:.2f}]"
        if j.pooled_n and j.estimate is not None and j.ci_low is not None and j.ci_high is not None
        else f"no new images in the last {policy.window_days} days"
    )
    odds = f"P(accuracy < {d.target:.2f}) = {j.p_below:.2f}"
    more = f"; {j.followup} follow-up images tomorrow" if j.followup and not j.unseen_left == 0 else ""
    carried = ""
    if j.unseen_left == 0 and j.evaluated_n and bucket_low is not None and bucket_high is not None:
        what = "Nothing new to evaluate today" if j.day_n == 0 else "The bucket has nothing more to show"
        carried = (
            f"{what}: all {j.evaluated_n} images of the class in the bucket evaluated by this model, each once; accuracy on them "
            f"{j.evaluated_correct / j.evaluated_n:.2f} [{bucket_low:.2f}, {bucket_high:.2f}]; the verdict carries over until new images arrive. "
        )
    if verdict == Verdict.NEEDS_RETRAINING:
        return carried + (
            f"Below the {d.target:.2f} target since {j.since}: the evidence for a drop reached its threshold "
            f"(sustained-drop CUSUM {d.threshold:.1f} or collapse CUSUM {d.collapse_threshold:.1f}); "
            f"it clears when the evidence that the class is above its target reaches {d.recovery_threshold:.1f} (now {recovery:.1f}; {window}; {odds}){more}."
        )
    if verdict == Verdict.INSUFFICIENT_DATA:
        return (
            carried
            + f"Only {j.evaluated_n} images evaluated so far (at least {policy.min_samples} needed); CUSUM {cusum:.1f} < {d.threshold:.1f}{more}."
        )
    if verdict == Verdict.WATCH:
        return (
            carried
            + f"Evidence for a drop below {d.target:.2f}: CUSUM {cusum:.1f} of {d.threshold:.1f} ({window}; {odds}){more}."
        )
    return (
        carried
        + f"{window[0].upper()}{window[1:]} against target {d.target:.2f}; {odds}; CUSUM {cusum:.1f} < {d.threshold:.1f}."
    )


def grant_followup(extra: ArrayLike, urgency: ArrayLike, cap: int, unit: int = 1) -> NDArray[np.int64]:
    """What the daily ``cap`` grants each request (last axis: the classes of one day), most urgent first.

    A request is served whole while the cap lasts; the first one it cannot serve whole gets the whole ``unit``
    multiples left, the rest nothing. Ties in urgency go by position. Vectorised over leading axes, so the
    benchmark runs the very rule the sampler is given.
    """
    want = np.asarray(extra, dtype=np.int64)
    urgent = np.asarray(urgency, dtype=float)
    order = np.argsort(-urgent, axis=-1, kind="stable")
    ranked = np.take_along_axis(want, order, axis=-1)
    before = np.cumsum(ranked, axis=-1) - ranked
    given = np.clip(cap - before, 0, ranked) // unit * unit
    out = np.empty_like(given)
    np.put_along_axis(out, order, given, axis=-1)
    return out


def urgency(s: ArrayLike, h: float, flagged: ArrayLike) -> NDArray[np.float64]:
    """The order follow-up is granted in: flagged classes first, then the classes closest to their threshold."""
    return np.where(np.asarray(flagged, dtype=bool), 2.0, np.asarray(s, dtype=float) / max(float(h), 1e-9))
