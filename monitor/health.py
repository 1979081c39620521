"""Class health: a verdict per model, class and date, carried forward from the stored state of the day before.

One concept, the verdict, over ~650 lines: its calibration, the day-to-day recursion and the verdict rule as
pure array functions first, then one class on one day, then the one function that reads and writes the store.

**What a verdict means.** ``needs_retraining``: the evidence says the class has fallen below its target
and has not come back. ``watch``: the evidence leans that way; the next day's sample draws extra images of
the class (follow-up) to settle it. ``healthy``: neither. ``insufficient_data``: fewer than ``min_samples``
images in the window.

**The detector** is a one-sided Bernoulli CUSUM of accuracy ``p1 = target - drop_to_detect`` against
``p0 = target``, with ``drop_to_detect`` the *smallest* drop worth catching (default 0.05). Each image
adds its log-likelihood ratio, a day the sum over its images, and the statistic is reflected at 0. A
CUSUM tuned to the smallest drop still has a positive drift for every larger one (at 0.75 it gains 0.059
nats an image against 0.092 for a CUSUM tuned to 0.75), whereas one tuned to a large drop *drifts down*
at a small one and never fires (main before 2026-12: 105 days on average for a class sitting at 0.85).
Beside it runs a second CUSUM for a **collapse** (``p1 = target / 2``: a class that broke, e.g. a label
mix-up), which flags 0 of 8 right on the first day, where the small-drop test needs two. The two share
the false-alarm budget (:data:`COLLAPSE_SHARE` to the collapse test); the rate of the pair is at most
the sum. Alternatives weighed: a GLR or mixture statistic is closer to optimal for every drop at a fixed
sample size, but has no one-dimensional Markov chain, so its calibration *with* a follow-up policy would
be Monte Carlo only; an e-detector needs no calibration but is conservative by design. The speed for
the drops in between is won with evidence instead: follow-up sampling.

**Follow-up sampling.** The statistic on a lattice (below) is a Markov chain, and so is the statistic
with a follow-up policy that depends only on it: at ``S >= frac * h`` the next day draws
``followup_samples * mult`` extra images of the class (:data:`TIERS`), and a flagged class draws
``followup_samples`` extra to confirm its recovery. The threshold ``h`` is calibrated on that chain, so
the false-alarm bound *includes* the policy. A daily cap, or a class with fewer images than asked for,
may grant less than the request: grants are whole multiples of :func:`grant_unit`, and ``h`` meets the
bound against the *worst* choice, per state, of any grant from 0 to the request (a Markov decision
process solved by policy iteration; about 5% above the threshold for the policy alone at 15 classes),
so no cap and no shortfall can raise false alarms.
The collapse test's sample size follows the small-drop statistic, so its chain is not Markov on its own;
its threshold is calibrated against the worst choice of the day's images in every state (any grant up to
the largest), which bounds its false alarms whatever the follow-up does. The recovery threshold is
calibrated the same way over the grants a flagged class may get.

**Calibration, exactly.** The per-image ratios are snapped to small integers ``(+up if wrong,
-down if correct)`` times a unit (their ratio within 0.5%), so the statistic takes only whole values and
the Brook-Evans Markov chain over ``0..h-1`` is exact for the test actually run. ``h`` is the smallest
whole number whose in-control average run length (every image correct with probability ``target``) is
at least ``classes * 365 / false_alarms_per_year`` days: that bounds the false alarms of all classes
together.

**Recovery.** From the day of a flag, an upward CUSUM ``R`` of ``p0`` against ``p1`` (the same ratios,
reversed) runs; the flag clears when ``R`` reaches ``hr``, calibrated so that a class still at ``p1``
clears falsely no more often than ``false_recoveries_per_year`` times a year. Then ``S`` restarts at 0.
A class at its target clears too (the test says it is not below), and, restarted from 0, is flagged
again only at the false-alarm rate: no flicker.

**Stored state.** Each day's row keeps the statistic, the recovery statistic, the alarm state, the
thresholds and the settings it was judged under (``judged_under``); the next day continues from it. A
change of the class count or of a setting applies from the day it happens and never rewrites a stored
day. A backfilled date recomputes the later days in order, each under its own stored settings.

**Window evidence**, shown beside the verdict: the counts of the last ``window_days`` days pooled, a
Wilson interval (statsmodels) and P(accuracy < target) under a uniform Beta prior (scipy).

The pure functions come first (lattice, run lengths, :func:`design`, :func:`advance`), one store function
last (:func:`compute_health`); ``benchmarks/bench_health.py`` runs exactly these over simulated years.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import linalg, stats

from monitor.errors import ConfigError, DataError, MonitorError
from monitor.files import atomic_write
from monitor.settings import Settings
from monitor.stats import prob_below, wilson_interval, wilson_intervals
from monitor.storage import Store
from monitor.verdicts import Verdict

log = logging.getLogger(__name__)

METHOD = "bernoulli-cusum with follow-up sampling + upward-cusum recovery; pooled-window wilson/beta"
#: Follow-up policy: at ``S >= fraction * h`` the next day draws ``followup_samples * multiple`` extra images.
#: The first tier is also where ``watch`` starts. Chosen by ``benchmarks/bench_health.py`` (README).
TIERS: tuple[tuple[float, int], ...] = ((0.15, 1), (0.30, 3), (0.50, 6))
#: The collapse test's alternative, as a share of the target, and its share of the false-alarm budget.
COLLAPSE_FRACTION = 0.5
COLLAPSE_SHARE = 0.1
#: The snapped ratio of the per-image log-likelihood ratios is within this of the exact one.
RATIO_TOLERANCE = 0.005
#: The settings a day is judged under, stored with each row (``judged_under``) and reused when it is recomputed.
JUDGED_UNDER = (
    "drop_to_detect", "false_alarms_per_year", "false_recoveries_per_year", "samples_per_class", "followup_samples",
    "window_days", "min_samples", "confidence_level",
)  # fmt: skip

DailyCounts = tuple[dt.date | str, int, int]


# --- the lattice and run lengths ---------------------------------------------------------------


@lru_cache(maxsize=256)
def lattice(target: float, drop: float) -> tuple[int, int, float]:
    """``(down, up, unit)``: a correct image subtracts ``down`` units, a wrong one adds ``up``; ``unit`` is in nats.

    ``down * unit`` is exactly ``log(target / p1)``; ``up / down`` is the smallest-denominator fraction
    within :data:`RATIO_TOLERANCE` of ``log((1 - p1) / (1 - target)) / log(target / p1)``.
    """
    p1 = target - drop
    if not 0.0 < p1 < target < 1.0:
        raise ConfigError(f"target {target} minus drop_to_detect {drop} = {p1:.3f} is not an accuracy between 0 and the target")
    if_correct, if_wrong = math.log(target / p1), math.log((1.0 - p1) / (1.0 - target))
    ratio = if_wrong / if_correct
    for denominator in range(1, 1001):
        fraction = Fraction(ratio).limit_denominator(denominator)
        if fraction > 0 and abs(float(fraction) - ratio) <= RATIO_TOLERANCE * ratio:
            break
    return fraction.denominator, fraction.numerator, if_correct / fraction.denominator


def llr_weights(target: float, drop: float) -> tuple[float, float]:
    """The snapped per-image log-likelihood ratios (if correct, if wrong) of ``target - drop`` against ``target``."""
    down, up, unit = lattice(target, drop)
    return -down * unit, up * unit


def followup_extra(s: ArrayLike, h: int, followup: int, flagged: ArrayLike | bool = False) -> NDArray[np.int64]:
    """Extra images the next day draws for a class with statistic ``s`` (units) under threshold ``h``."""
    s_arr = np.asarray(s, dtype=float)
    extra = np.zeros(s_arr.shape, dtype=np.int64)
    for fraction, multiple in TIERS:
        extra = np.where(s_arr >= fraction * h, followup * multiple, extra)
    return np.where(np.asarray(flagged, dtype=bool), followup, extra).astype(np.int64)


def run_lengths(limit: int, up: int, down: int, p_up: float, n_of_state: ArrayLike) -> NDArray[np.float64]:
    """Expected days from each state ``0..limit-1`` until ``S >= limit``: the Brook-Evans chain, exact on the lattice.

    A day in state ``s`` draws ``n_of_state[s]`` images; each moves ``S`` up by ``up`` with probability
    ``p_up`` and down by ``down`` otherwise; ``S`` is reflected at 0.
    """
    n_state = np.asarray(n_of_state, dtype=np.int64)
    transition = np.zeros((limit, limit))
    for n in np.unique(n_state):
        rows = np.flatnonzero(n_state == n)
        ups = np.arange(n + 1)
        prob = stats.binom.pmf(ups, n, p_up)
        keep = prob > 1e-16  # far tails add nothing
        jump, prob = up * ups[keep] - down * (n - ups[keep]), prob[keep]
        there = np.maximum(0, rows[:, None] + jump[None, :])
        inside = there < limit  # the rest reaches the limit: absorbed
        np.add.at(transition, (np.broadcast_to(rows[:, None], there.shape)[inside], there[inside]), np.broadcast_to(prob, there.shape)[inside])
    return np.asarray(linalg.solve(np.eye(limit) - transition, np.ones(limit)), dtype=float)


def worst_run_length(
    limit: int, up: int, down: int, p_up: float, choices: Sequence[int], most: ArrayLike | None = None
) -> tuple[float, NDArray[np.int64]]:
    """The shortest expected days from ``S = 0`` to ``S >= limit`` over every policy that picks, per state, how many
    images (one of ``choices``, at most ``most[s]`` in state ``s``) the day draws; and that worst policy. Policy iteration."""
    options = sorted({int(n) for n in choices})
    cap = np.full(limit, options[-1]) if most is None else np.asarray(most)
    allowed = np.asarray(options)[:, None] <= cap[None, :]  # the smallest option is always allowed
    policy = np.full(limit, options[0], dtype=np.int64)
    for _ in range(100):
        lengths = run_lengths(limit, up, down, p_up, policy)
        # One-step look-ahead of each allowed choice against the current run lengths.
        look = np.vstack([_one_step(limit, up, down, p_up, n, lengths) for n in options])
        look = np.where(allowed, look, np.inf)
        best = np.asarray(options)[look.argmin(axis=0)]
        current = look[[options.index(int(n)) for n in policy], np.arange(limit)]
        improve = look.min(axis=0) < current - 1e-9 * np.maximum(1.0, current)
        if not improve.any():
            break
        policy = np.where(improve, best, policy)
    return float(lengths[0]), policy


def _one_step(limit: int, up: int, down: int, p_up: float, n: int, lengths: NDArray[np.float64]) -> NDArray[np.float64]:
    """``1 + E[L(S')]`` from every state when the day draws ``n`` images (``L = 0`` once absorbed)."""
    ups = np.arange(n + 1)
    prob = stats.binom.pmf(ups, n, p_up)
    there = np.maximum(0, np.arange(limit)[:, None] + (up * ups - down * (n - ups))[None, :])
    value = np.where(there < limit, lengths[np.minimum(there, limit - 1)], 0.0)
    return np.asarray(1.0 + value @ prob, dtype=float)


def grant_unit(followup: int) -> int:
    """Follow-up images are granted in whole multiples of this (a sixth of ``followup_samples``), so that the
    calibration can take every grant the cap or a short class may give into account."""
    return max(1, followup // 6)


def average_run_length(
    h: int, target: float, drop: float, n: int, followup: int = 0, accuracy: float | None = None
) -> float:
    """Expected days from ``S = 0`` to a flag with ``n`` base images a day and the follow-up policy (units)."""
    down, up, _ = lattice(target, drop)
    p = target if accuracy is None else accuracy
    return float(run_lengths(h, up, down, 1.0 - p, n + followup_extra(np.arange(h), h, followup))[0])


def recovery_run_length(hr: int, target: float, drop: float, n: int, accuracy: float | None = None) -> float:
    """Expected days from a flag to clearing it (``R >= hr``) with ``n`` images a day; default accuracy ``target - drop``."""
    down, up, _ = lattice(target, drop)
    p = target - drop if accuracy is None else accuracy
    return float(run_lengths(hr, down, up, p, np.full(hr, n))[0])


def _smallest(meets: Any, start: int) -> int:
    """The smallest whole ``h >= 1`` with ``meets(h)``, for a monotone ``meets``: doubling, then bisection."""
    low, high = 0, max(1, start)
    while not meets(high):
        low, high = high, high * 2
        if high > 1_000_000:
            raise ConfigError("cannot calibrate the health test: the required run length is out of reach")
    while high - low > 1:
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    return high


@dataclass(frozen=True)
class Design:
    """The calibrated test of one class target under one day's settings (thresholds in lattice units)."""

    target: float
    drop: float
    n: int
    followup: int
    down: int
    up: int
    unit: float
    h: int
    hr: int
    arl: float
    recovery_arl: float
    big_down: int
    big_up: int
    big_unit: float
    big_h: int

    @property
    def threshold(self) -> float:
        """``h`` in nats."""
        return self.h * self.unit

    @property
    def recovery_threshold(self) -> float:
        """``hr`` in nats."""
        return self.hr * self.unit

    @property
    def collapse_threshold(self) -> float:
        """``big_h`` in nats."""
        return self.big_h * self.big_unit


@lru_cache(maxsize=512)
def design(target: float, drop: float, n: int, followup: int, arl: float, recovery_arl: float) -> Design:
    """Calibrate ``h`` (false alarms, follow-up policy included), ``big_h`` (the collapse test, worst follow-up
    policy) and ``hr`` (false recoveries); ``arl`` is shared out by :data:`COLLAPSE_SHARE`. Cached per argument set."""
    if n < 1:
        raise ConfigError(f"samples_per_class {n} must be at least 1 to calibrate the health test")
    down, up, unit = lattice(target, drop)
    small_arl, big_arl = arl / (1.0 - COLLAPSE_SHARE), arl / COLLAPSE_SHARE

    # Any grant from 0 to the request, in whole units: what the daily cap or a class short of images may give.
    step = grant_unit(followup)
    sizes = [n + k * step for k in range(followup * TIERS[-1][1] // step + 1)] if followup else [n]

    def meets(h: int) -> bool:
        most = n + followup_extra(np.arange(h), h, followup)
        return worst_run_length(h, up, down, 1.0 - target, sizes, most)[0] >= small_arl

    # No follow-up is one of the policies, so its (cheap) threshold is a lower bound to start from.
    h = _smallest(lambda b: average_run_length(b, target, drop, n) >= small_arl, math.ceil(math.log(small_arl) / unit))
    if followup and not meets(h):
        low, jump = h, max(1, h // 50)
        while not meets(low + jump):
            low, jump = low + jump, jump * 2
        h = low + _smallest(lambda extra: meets(low + extra), jump) if jump > 1 else low + 1
    big_drop = round(target * (1.0 - COLLAPSE_FRACTION), 10)
    big_down, big_up, big_unit = lattice(target, big_drop)
    big_h = _smallest(
        lambda b: worst_run_length(b, big_up, big_down, 1.0 - target, sizes)[0] >= big_arl, math.ceil(math.log(big_arl) / big_unit)
    )
    flagged_sizes = [size for size in sizes if size <= n + followup]
    hr = _smallest(
        lambda r: worst_run_length(r, down, up, target - drop, flagged_sizes)[0] >= recovery_arl, math.ceil(math.log(recovery_arl) / unit)
    )
    return Design(target, drop, n, followup, down, up, unit, h, hr, arl, recovery_arl, big_down, big_up, big_unit, big_h)


def required_arl(classes: int, false_alarms_per_year: float) -> float:
    """Days between false alarms each class must reach so that all classes together stay within the bound."""
    return max(1, classes) * 365.0 / false_alarms_per_year


def design_for(target: float, settings: Settings, classes: int, n: int | None = None, followup: int | None = None) -> Design:
    """The calibrated test for one class target under ``settings`` (``n``/``followup``: the day's sampling, if not the settings').

    A calibration takes seconds (policy iteration over ~1,000 states); each is kept in the process and in
    ``<data_dir>/cache/health-designs.json``, so a daily run pays for it once per settings change, not every day.
    """
    args = (
        round(target, 10),
        round(settings.drop_to_detect, 10),
        settings.samples_per_class if n is None else n,
        settings.followup_samples if followup is None else followup,
        required_arl(classes, settings.false_alarms_per_year),
        365.0 / settings.false_recoveries_per_year,
    )
    return _cached_design(settings.data_dir / "cache" / "health-designs.json", args)


@lru_cache(maxsize=1)
def _code_version() -> str:
    """Changes with this module's code: a calibration of another version is never reused."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _cached_design(file: Path, args: tuple[float, float, int, int, float, float]) -> Design:
    """The calibration for ``args``: from this process, else from the cache ``file``, else calibrated and kept there.

    The cache is read as bounded JSON (:func:`monitor.files.read_json_file`: a regular file, finite numbers,
    shallow nesting) and each entry checked against the ``Design`` it claims to be (the fields, their types,
    the arguments it was calibrated for); a damaged or odd cache is calibrated again, with a warning.
    """
    from monitor.files import read_json_file  # here: the rest of the module is another change's

    if args in _KNOWN:
        return _KNOWN[args]
    key = json.dumps([_code_version(), *args])
    try:
        known = read_json_file(file, what="calibration cache", max_bytes=8 << 20, max_depth=4, missing_ok=True)
    except MonitorError as exc:
        log.warning("%s; calibrating again (seconds), and replacing it", exc)
        known = None
    if known is not None and not isinstance(known, dict):
        log.warning("the calibration cache %s is not a JSON object; calibrating again (seconds), and replacing it", file)
    known = known if isinstance(known, dict) else {}
    entry = known.get(key)
    fields = dataclasses.fields(Design)
    if entry is not None and not (
        isinstance(entry, dict)
        and set(entry) == {f.name for f in fields}
        and all(type(entry[f.name]) is int if f.type in ("int", int) else type(entry[f.name]) in (int, float) for f in fields)
        and tuple(entry.get(name) for name in ("target", "drop", "n", "followup", "arl", "recovery_arl")) == args
        and all(entry[f.name] > 0 or (f.name == "followup" and entry[f.name] == 0) for f in fields)  # lattice steps, thresholds, units
    ):
        log.warning("the calibration cache %s holds a damaged entry for %s; calibrating again (seconds)", file, args)
        entry = None
    if entry is not None:
        result = Design(**entry)
    else:
        result = design(*args)
        known[key] = dataclasses.asdict(result)
        text = json.dumps(known, indent=1)
        try:
            atomic_write(file, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), what="calibration cache")
        except MonitorError as exc:  # a read-only data dir still judges; it calibrates again next time
            log.warning("could not keep the calibration: %s", exc)
    _KNOWN[args] = result
    return result


_KNOWN: dict[tuple[float, float, int, int, float, float], Design] = {}


# --- the day-to-day recursion ----------------------------------------------------------------------


@dataclass
class State:
    """The detector state of one or many classes (arrays of one shape): statistics in lattice units.

    ``s``: the small-drop CUSUM; ``r``: the recovery CUSUM (while flagged); ``b``: the collapse CUSUM.
    """

    s: NDArray[np.int64]
    r: NDArray[np.int64]
    flagged: NDArray[np.bool_]
    b: NDArray[np.int64]

    @classmethod
    def zeros(cls, shape: int | tuple[int, ...] = ()) -> "State":
        return cls(np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=bool), np.zeros(shape, dtype=np.int64))


def advance(state: State, n: ArrayLike, correct: ArrayLike, d: Design) -> tuple[State, NDArray[np.bool_], NDArray[np.bool_]]:
    """One day: ``S`` and ``B`` gain the day's ratios; a flagged class runs ``R`` the other way. Returns (state, raised, cleared).

    A flag is raised when ``S >= h`` or ``B >= big_h``; it clears when ``R >= hr``, and ``S`` and ``B``
    then restart at 0 (a new episode starts the tests afresh, as the run-length calibration assumes).
    """
    n_arr, c_arr = np.asarray(n, dtype=np.int64), np.asarray(correct, dtype=np.int64)
    step = d.up * (n_arr - c_arr) - d.down * c_arr
    s = np.maximum(0, state.s + step)
    b = np.maximum(0, state.b + d.big_up * (n_arr - c_arr) - d.big_down * c_arr)
    r = np.where(state.flagged, np.maximum(0, state.r - step), 0)
    cleared = state.flagged & (r >= d.hr)
    raised = ~state.flagged & ((s >= d.h) | (b >= d.big_h))
    flagged = (state.flagged & ~cleared) | raised
    s, b = np.where(cleared, 0, s), np.where(cleared, 0, b)
    r = np.where(flagged & ~raised, r, 0)
    return State(s, r, flagged, b), raised, cleared


def verdict_codes(state: State, d: Design, pooled_n: ArrayLike, min_samples: int) -> NDArray[np.int64]:
    """The verdict rule, element-wise; codes are :attr:`Verdict.code`.

    1. flagged: ``needs_retraining``; 2. fewer than ``min_samples`` in the window: ``insufficient_data``;
    3. ``S`` past the first follow-up tier: ``watch``; 4. otherwise ``healthy``.
    """
    return np.select(
        [state.flagged, np.asarray(pooled_n) < min_samples, state.s >= TIERS[0][0] * d.h],
        [Verdict.NEEDS_RETRAINING.code, Verdict.INSUFFICIENT_DATA.code, Verdict.WATCH.code],
        default=Verdict.HEALTHY.code,
    ).astype(np.int64)


# --- one class, one day ----------------------------------------------------------------------------


def _as_date(value: dt.date | str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise DataError(f"{value!r} is not a date YYYY-MM-DD") from exc


def _sorted_days(daily: Sequence[DailyCounts]) -> list[tuple[dt.date, int, int]]:
    days = sorted(((_as_date(d), int(n), int(c)) for d, n, c in daily), key=lambda row: row[0])
    for day, n, c in days:
        if n < 0 or not 0 <= c <= n:
            raise DataError(f"counts on {day}: correct {c} of n {n} are inconsistent")
    if len({day for day, _, _ in days}) != len(days):
        raise DataError("the daily counts repeat a date")
    return days


def state_from_row(row: Mapping[str, Any] | None, d: Design) -> tuple[State, str | None]:
    """The state a stored ``class_health`` row left (in the units of ``d``), and the date its flag was raised."""
    if not row or "cusum" not in row or "flagged" not in row:
        return State.zeros(), None
    s = round(float(row.get("cusum") or 0.0) / d.unit)
    r = round(float(row.get("recovery") or 0.0) / d.unit)
    b = round(float(row.get("collapse") or 0.0) / d.big_unit)
    flagged = bool(row["flagged"])
    state = State(np.int64(s), np.int64(r if flagged else 0), np.bool_(flagged), np.int64(b))  # type: ignore[arg-type]
    return state, (row.get("flagged_since") if flagged else None)


def judge_day(
    previous: Mapping[str, Any] | None,
    replay: Sequence[tuple[dt.date, int, int]],
    daily: Sequence[DailyCounts],
    date: dt.date | str,
    d: Design,
    settings: Settings,
) -> dict[str, Any]:
    """Judge one class on ``date``: continue from ``previous`` (its stored row, or None), run the ``replay``
    days that have counts but no stored row, then ``date`` itself; window evidence from ``daily``.

    Returns the evidence and state fields of a ``class_health`` row (all but model_id, date and label).
    """
    as_of = _as_date(date)
    days = [row for row in _sorted_days(daily) if row[0] <= as_of]
    state, since = state_from_row(previous, d)
    today = next(((n, c) for day, n, c in days if day == as_of), (0, 0))
    for day, n, c in [*replay, (as_of, *today)]:
        state, raised, _ = advance(state, n, c, d)
        if bool(raised):
            since = day.isoformat()
        if not bool(state.flagged):
            since = None

    window_start = as_of - dt.timedelta(days=settings.window_days - 1)
    in_window = [(n, c) for day, n, c in days if day >= window_start]
    pooled_n = sum(n for n, _ in in_window)
    pooled_correct = sum(c for _, c in in_window)
    ci_low, ci_high = wilson_interval(pooled_correct, pooled_n, settings.confidence_level) if pooled_n else (None, None)
    p_below = float(prob_below(pooled_correct, pooled_n, d.target))
    code = int(verdict_codes(state, d, pooled_n, settings.min_samples))
    followup = int(followup_extra(state.s, d.h, d.followup, state.flagged))
    return _row(
        d, settings, window_start, code, pooled_n, pooled_correct, ci_low, ci_high, p_below,
        float(state.s), float(state.r), float(state.b), bool(state.flagged), since, followup, int(today[0]), int(today[1]),
    )  # fmt: skip


def _row(
    d: Design, settings: Settings, window_start: dt.date, code: int, pooled_n: int, pooled_correct: int,
    ci_low: float | None, ci_high: float | None, p_below: float, s: float, r: float, b: float, flagged: bool,
    since: str | None, followup: int, day_n: int, day_correct: int,
) -> dict[str, Any]:  # fmt: skip
    """The evidence and state fields of a ``class_health`` row, from one class's judgement (statistics in lattice units)."""
    verdict = Verdict.from_code(code)
    cusum, recovery = s * d.unit, r * d.unit
    return {
        "verdict": verdict.value,
        "target": float(d.target),
        "window_days": settings.window_days,
        "window_start": window_start.isoformat(),
        "pooled_n": pooled_n,
        "pooled_correct": pooled_correct,
        "pooled_accuracy": pooled_correct / pooled_n if pooled_n else None,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "prob_below_target": p_below,
        "cusum": cusum,
        "cusum_threshold": d.threshold,
        "collapse": b * d.big_unit,
        "collapse_threshold": d.collapse_threshold,
        "flagged": flagged,
        "flagged_since": since,
        "recovery": recovery,
        "recovery_threshold": d.recovery_threshold,
        "followup": followup,
        "day_n": day_n,
        "day_correct": day_correct,
        "method": METHOD,
        "reason": _reason(verdict, d, cusum, recovery, since, pooled_n, pooled_correct, ci_low, ci_high, p_below, followup, settings),
    }

def _reason(
    verdict: str, d: Design, cusum: float, recovery: float, since: str | None, pooled_n: int, pooled_correct: int,
    ci_low: float | None, ci_high: float | None, p_below: float, followup: int, settings: Settings,
) -> str:  # fmt: skip
    """The verdict in plain words, with the numbers behind it."""
    level = f"{settings.confidence_level:.0%}"
    window = (
        f"last {settings.window_days} days {pooled_correct}/{pooled_n} = {pooled_correct / pooled_n:.2f}, {level} CI [{ci_low:.2f}, {ci_high:.2f}]"
        if pooled_n and ci_low is not None and ci_high is not None
        else f"no images in the last {settings.window_days} days"
    )
    odds = f"P(accuracy < {d.target:.2f}) = {p_below:.2f}"
    more = f"; {followup} follow-up images tomorrow" if followup else ""
    if verdict == Verdict.NEEDS_RETRAINING:
        return (
            f"Below the {d.target:.2f} target since {since}: the evidence for a drop reached its threshold "
            f"(sustained-drop CUSUM {d.threshold:.1f} or collapse CUSUM {d.collapse_threshold:.1f}); "
            f"it clears when the evidence for recovery reaches {d.recovery_threshold:.1f} (now {recovery:.1f}; {window}; {odds}){more}."
        )
    if verdict == Verdict.INSUFFICIENT_DATA:
        return f"Only {pooled_n} images in the last {settings.window_days} days (at least {settings.min_samples} needed); CUSUM {cusum:.1f} < {d.threshold:.1f}{more}."
    if verdict == Verdict.WATCH:
        return f"Evidence for a drop below {d.target:.2f}: CUSUM {cusum:.1f} of {d.threshold:.1f} ({window}; {odds}){more}."
    return f"{window} against target {d.target:.2f}; {odds}; CUSUM {cusum:.1f} < {d.threshold:.1f}."


def assess_history(
    daily: Sequence[DailyCounts],
    target: float,
    settings: Settings,
    *,
    classes: int = 1,
    date: dt.date | str | None = None,
) -> dict[str, Any]:
    """Judge one class from its whole daily ``(date, n, correct)`` history up to ``date`` (default: the last day), under one ``settings``."""
    days = _sorted_days(daily)
    if not days and date is None:
        raise DataError("no daily counts to judge")
    as_of = _as_date(date) if date is not None else days[-1][0]
    d = design_for(target, settings, classes)
    return judge_day(None, [row for row in days if row[0] < as_of], days, as_of, d, settings)


# --- the store ---------------------------------------------------------------------------------------


def judged_under(settings: Settings, classes: int, n: int, followup: int) -> dict[str, Any]:
    """The settings a day is judged under, as stored with its rows."""
    values = {name: getattr(settings, name) for name in JUDGED_UNDER}
    values.update(samples_per_class=n, followup_samples=followup, classes=classes)
    return values


def compute_health(
    store: Store,
    model_id: str,
    date: str,
    settings: Settings,
    *,
    n: int | None = None,
    followup: int | None = None,
    as_stored: bool = False,
) -> list[dict[str, Any]]:
    """Verdicts of every class of ``model_id`` evaluated on ``date``, each continuing from its latest stored row before ``date``.

    ``n``/``followup``: the day's base sample size and follow-up setting (default: the settings'). With
    ``as_stored`` (a later day recomputed after a backfill) the day is judged under the settings and
    targets its stored rows were judged under. Replaces the model's ``class_health`` rows for ``date``
    (idempotent) and returns them without ``_id``.

    The same recursion and evidence as :func:`judge_day`, for all classes at once: the counts are read
    in one pass into columns, and the classes that share a calibrated test (one target and settings:
    usually all of them) advance together as arrays, day by day, through the days they have to replay.
    A daily run (every class continues from yesterday's row) replays nothing and costs a few array
    operations, whatever the length of the history; a class without a stored state replays its history once.
    """
    as_of = _as_date(date)
    day = as_of.isoformat()
    labels = sorted({str(row["label"]) for row in store.rows("class_metrics", model_id, start=day, end=day, fields=["label"])})
    if not labels:
        raise DataError(f"no class metrics of model {model_id} on {day}: run the metrics step for {day} first")
    own = {str(row["label"]): row for row in store.rows("class_health", model_id, start=day, end=day)}
    previous = store.latest_rows_before("class_health", model_id, day, labels)
    # Only the counts the verdicts need: the window, and the days after each class's stored state (all, for a class without one).
    widest = max([settings.window_days, *(int((row.get("judged_under") or {}).get("window_days") or 0) for row in own.values())])
    starts: list[dt.date] | None = [as_of - dt.timedelta(days=widest - 1)]
    for label in labels:
        before = previous.get(label)
        if starts is None or not (before and "flagged" in before):
            starts = None
            break
        starts.append(_as_date(str(before["date"])) + dt.timedelta(days=1))
    first = min(starts).isoformat() if starts else None
    docs = store.rows("class_metrics", model_id, start=first, end=day, labels=labels, fields=["label", "date", "n", "correct"])
    history = _count_columns(docs, labels)

    # Each class's test and settings; the classes that share them are judged together.
    plans: list[tuple[Settings, Design]] = []
    groups: dict[tuple[Design, int, int, float], list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        day_settings, target, day_n, day_followup = settings, settings.target_for(label), n, followup
        if as_stored and own.get(label, {}).get("judged_under"):
            kept = dict(own[label]["judged_under"])
            day_n, day_followup = int(kept.pop("samples_per_class")), int(kept.pop("followup_samples"))
            kept.pop("classes", None)
            day_settings, target = settings.model_copy(update=kept), float(own[label]["target"])
        d = design_for(target, day_settings, len(labels), day_n, day_followup)
        plans.append((day_settings, d))
        groups[(d, day_settings.window_days, day_settings.min_samples, day_settings.confidence_level)].append(i)
    _check_counts(history)

    evidence: list[dict[str, Any] | None] = [None] * len(labels)
    for members in groups.values():
        day_settings, d = plans[members[0]]
        stored = [previous.get(labels[i]) for i in members]
        kept_state = [row if row and "flagged" in row else None for row in stored]
        for i, judged in zip(members, _judge_classes(np.asarray(members, dtype=np.int64), kept_state, history, as_of, d, day_settings)):
            evidence[i] = judged
    rows: list[dict[str, Any]] = []
    for label, (day_settings, d), found in zip(labels, plans, evidence):
        assert found is not None
        rows.append(
            {
                "model_id": model_id, "date": day, "label": label, **found,
                "judged_under": judged_under(day_settings, len(labels), d.n, d.followup),
            }
        )  # fmt: skip
    store.replace_day("class_health", model_id, day, rows)
    return rows


@dataclass(frozen=True)
class _Counts:
    """Daily counts of many classes as columns, sorted by class, then date: one row per (class, day)."""

    label: NDArray[np.int64]  # the class's index in the labels judged
    day: NDArray[np.int64]  # the date's ordinal
    n: NDArray[np.int64]
    correct: NDArray[np.int64]


def _count_columns(docs: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> _Counts:
    """The ``class_metrics`` documents (``label``, ``date``, ``n``, ``correct``) of ``labels`` as :class:`_Counts`, in one pass."""
    index = {label: i for i, label in enumerate(labels)}
    texts = [str(doc["date"]) for doc in docs]
    ordinals = {text: _as_date(text).toordinal() for text in set(texts)}
    size = len(texts)
    label_arr = np.fromiter((index[str(doc["label"])] for doc in docs), dtype=np.int64, count=size)
    day_arr = np.fromiter((ordinals[text] for text in texts), dtype=np.int64, count=size)
    n_arr = np.fromiter((int(doc.get("n") or 0) for doc in docs), dtype=np.int64, count=size)
    c_arr = np.fromiter((int(doc.get("correct") or 0) for doc in docs), dtype=np.int64, count=size)
    order = np.lexsort((day_arr, label_arr))  # stable: a repeated date keeps the order it was read in
    return _Counts(label_arr[order], day_arr[order], n_arr[order], c_arr[order])


def _check_counts(counts: _Counts) -> None:
    """The checks of :func:`_sorted_days`, class by class: inconsistent counts, then a repeated date (the first class with either)."""
    bad = (counts.n < 0) | (counts.correct < 0) | (counts.correct > counts.n)
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


def _judge_classes(
    classes: NDArray[np.int64],
    previous: Sequence[Mapping[str, Any] | None],
    counts: _Counts,
    as_of: dt.date,
    d: Design,
    settings: Settings,
) -> list[dict[str, Any]]:
    """:func:`judge_day` for the ``classes`` (indices into the labels of ``counts``) that share the test ``d`` and ``settings``.

    Each continues from its stored row in ``previous`` (or None), replays its days after that row and before
    ``as_of`` (its counts only: a day without counts is not a day of its test), then steps through ``as_of``.
    Returns the evidence and state fields of each class's row, in the order of ``classes``.
    """
    size = len(classes)
    position = np.full(int(max(int(classes.max()), int(counts.label.max(initial=0)))) + 1, -1, dtype=np.int64)
    position[classes] = np.arange(size)
    where = position[counts.label]  # each count row's place among ``classes`` (-1: another group's)
    mine = where >= 0
    started = [state_from_row(row, d) for row in previous]
    state = State(
        np.asarray([s.s for s, _ in started], dtype=np.int64),
        np.asarray([s.r for s, _ in started], dtype=np.int64),
        np.asarray([s.flagged for s, _ in started], dtype=bool),
        np.asarray([s.b for s, _ in started], dtype=np.int64),
    )
    since = np.empty(size, dtype=object)
    since[:] = [flagged_since for _, flagged_since in started]
    after = np.asarray([_as_date(str(row["date"])).toordinal() if row else 0 for row in previous], dtype=np.int64)
    today = as_of.toordinal()

    replay = np.flatnonzero(mine & (counts.day > after[np.maximum(where, 0)]) & (counts.day < today))
    replay = replay[np.argsort(counts.day[replay], kind="stable")]  # day by day; each day, the classes with counts
    days = counts.day[replay]
    bounds = np.flatnonzero(np.r_[True, days[1:] != days[:-1], True]) if len(replay) else np.zeros(0, dtype=np.int64)
    for first, last in zip(bounds[:-1], bounds[1:]):
        rows = replay[first:last]
        who = where[rows]
        moved, raised, _ = advance(State(state.s[who], state.r[who], state.flagged[who], state.b[who]), counts.n[rows], counts.correct[rows], d)
        state.s[who], state.r[who], state.flagged[who], state.b[who] = moved.s, moved.r, moved.flagged, moved.b
        since[who[raised]] = dt.date.fromordinal(int(counts.day[rows[0]])).isoformat()
        since[who[~moved.flagged]] = None

    now = mine & (counts.day == today)
    n_today, c_today = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
    n_today[where[now]], c_today[where[now]] = counts.n[now], counts.correct[now]
    state, raised, _ = advance(state, n_today, c_today, d)
    since[raised] = as_of.isoformat()
    since[~state.flagged] = None

    window_start = as_of - dt.timedelta(days=settings.window_days - 1)
    inside = mine & (counts.day >= window_start.toordinal()) & (counts.day <= today)
    pooled_n, pooled_c = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
    np.add.at(pooled_n, where[inside], counts.n[inside])
    np.add.at(pooled_c, where[inside], counts.correct[inside])
    seen = pooled_n > 0
    ci_lows, ci_highs = np.full(size, np.nan), np.full(size, np.nan)
    if seen.any():
        ci_lows[seen], ci_highs[seen] = wilson_intervals(pooled_c[seen], pooled_n[seen], settings.confidence_level)
    p_below = prob_below(pooled_c, pooled_n, d.target)
    codes = verdict_codes(state, d, pooled_n, settings.min_samples)
    followups = followup_extra(state.s, d.h, d.followup, state.flagged)

    judged: list[dict[str, Any]] = []
    for i in range(size):
        total = int(pooled_n[i])
        ci_low, ci_high = (float(ci_lows[i]), float(ci_highs[i])) if total else (None, None)
        judged.append(_row(
            d, settings, window_start, int(codes[i]), total, int(pooled_c[i]), ci_low, ci_high, float(p_below[i]),
            float(state.s[i]), float(state.r[i]), float(state.b[i]), bool(state.flagged[i]), since[i], int(followups[i]),
            int(n_today[i]), int(c_today[i]),
        ))  # fmt: skip
    return judged


def followup_requests(store: Store, date: str, cap: int, unit: int = 1) -> dict[str, int]:
    """Extra images per class for ``date``'s sample: what the latest verdicts before ``date`` asked for, within ``cap``.

    The latest judged date before ``date`` is used (point-in-time: nothing judged on or after ``date``);
    with several models judged that day a class gets the largest request. When the requests exceed the
    daily ``cap``, flagged classes and the classes closest to their threshold are served first, and a
    partial grant is a whole multiple of ``unit`` (:func:`grant_unit`: what the calibration allows for).
    """
    day = _as_date(date).isoformat()
    judged = store.dates("class_health", before=day)
    if not judged:
        return {}
    rows = [row for row in store.rows("class_health", None, start=judged[-1], end=judged[-1]) if int(row.get("followup") or 0) > 0]
    wanted: dict[str, tuple[int, float]] = {}
    for row in rows:
        urgency = 2.0 if row.get("flagged") else float(row.get("cusum") or 0.0) / max(float(row.get("cusum_threshold") or 1.0), 1e-9)
        label, extra = str(row["label"]), int(row["followup"])
        if label not in wanted or (extra, urgency) > wanted[label]:
            wanted[label] = (extra, urgency)
    granted: dict[str, int] = {}
    left = cap
    for label, (extra, _) in sorted(wanted.items(), key=lambda item: (-item[1][1], item[0])):
        give = min(extra, left) // unit * unit
        if give > 0:
            granted[label] = give
            left -= give
    return dict(sorted(granted.items()))
