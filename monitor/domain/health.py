"""Class health: a verdict per model, class and date, carried forward from the stored state of the day before.

One concept, the verdict: its calibration, the day-to-day recursion and the verdict rule as
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
``followup_samples * FLAGGED_MULTIPLE`` extra to confirm its recovery. The threshold ``h`` is calibrated on that chain, so
the false-alarm bound *includes* the policy. A daily cap, or a class with fewer images than asked for,
may grant less than the request: grants are whole multiples of :func:`grant_unit`, and ``h`` meets the
bound against the *worst* choice, per state, of any grant from 0 to the request (a Markov decision
process solved by policy iteration), so no cap and no shortfall can raise false alarms. Measured cost
(15 classes, defaults): ``h`` = 906 lattice units against 776 for the policy alone (17%); the worst choice is
a non-monotone pattern of partial grants that the cap (which serves the most urgent first) never makes, but
an exact bound over the monotone grants alone is not a Markov decision process with a per-state choice, so
this bound is the tightest exact one here. All-or-nothing grants would buy little (896).
The collapse test's sample size follows the small-drop statistic, so its chain is not Markov on its own;
its threshold is calibrated against the worst choice of the day's images in every state (any grant up to
the largest), which bounds its false alarms whatever the follow-up does. The recovery threshold is
calibrated the same way over the grants a flagged class may get.

**Each image once per model: what the error rates are about.** The calibration treats every image as a fresh
draw, correct with the class's accuracy. A validation bucket is finite and a model is deterministic, so the
sampler (``monitor/domain/sampling.py``) never draws an image the model has already evaluated (by content on GCS),
and the metrics step counts each image once (the ``evaluations`` collection). The error rates are then about
the class's accuracy on images like those in the bucket, each counted once: a class of ``M`` images can show
at most ``M`` images of evidence, and a class with nothing unseen left adds no evidence (its verdict carries
over, and says so) until new images arrive. Measured with ``benchmarks/bench_health.py`` (README): with each
image once, a bucket of 200 / 1,000 / 5,000 images per class keeps false alarms under the bound; re-counting
the same images (main before 2026-12-07) gave 6.5 / 2.4 / 0.64 a year. What a bucket can show: a class at 0.75 is
flagged after 109 of its images on average (the chain, one image a step), at 0.80 after 176, at 0.85 after 453,
at 0.88 after 2,560: a bucket with fewer images of a class than that cannot show such a drop with this budget.
A class the model has never evaluated draws ``first_draw`` images at once (``MONITOR_FIRST_DRAW``, 200), so a
bucket that already holds hundreds of images per class gets a verdict on day one; a draw of any size from 0
adds at most ``e**-h`` to the false-alarm probability (Ville's inequality for the likelihood ratio), 4e-5 a
class at the defaults.

**Calibration, exactly.** The per-image ratios are snapped to small integers ``(+up if wrong,
-down if correct)`` times a unit (their ratio within 0.5%), so the statistic takes only whole values and
the Brook-Evans Markov chain over ``0..h-1`` is exact for the test actually run. ``h`` is the smallest
whole number whose in-control average run length (every image correct with probability ``target``) is
at least ``classes * 365 / false_alarms_per_year`` days: that bounds the false alarms of all classes
together.

**Recovery.** From the day of a flag, a CUSUM ``R`` of :func:`recovery_alternative` (``target + 0.6 drop``,
0.93 at the defaults) against the target runs on its own lattice; the flag clears when ``R`` reaches ``hr``,
calibrated so that a class *not above* its target clears no more often than ``false_recoveries_per_year``
times a year (the worst grants included). ``R`` drifts down at any accuracy below about 0.93, so a class that
stays below its target stays flagged: at a constant 0.86 / 0.87 / 0.88 it is flagged once and cleared under
0.01 times a year (the old test, 0.90 against 0.85, had no drift near 0.876 and flickered 2 to 4 times a
year). A class back at 0.95 clears in 5 days (median). Then ``S`` restarts at 0.

**Stored state.** Each day's row keeps the statistic, the recovery statistic, the alarm state, the
thresholds and the settings it was judged under (``judged_under``); the next day continues from it. A
change of the class count or of a setting applies from the day it happens and never rewrites a stored
day. A backfilled date recomputes the later days in order, each under its own stored settings.

**Window evidence**, shown beside the verdict: the counts of the last ``window_days`` days, and an accuracy
that stays unbiased under follow-up (:func:`monitor.core.stats.weighted_accuracy`: each day's share weighted by its
base draw, which no outcome decides; the pooled ratio is biased upward, since more images follow bad days),
with a Wilson interval at its effective size (statsmodels) and P(accuracy < target) under a uniform Beta prior
(scipy). ``insufficient_data`` means fewer than ``min_samples`` images evaluated so far, not in the window: a
class with nothing new keeps its verdict.

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

from monitor.core.errors import ConfigError, DataError, MonitorError
from monitor.core.files import atomic_write
from monitor.core.settings import Settings
from monitor.core.stats import prob_below, weighted_accuracy, weighted_sums, wilson_effective, wilson_interval
from monitor.store import Store
from monitor.core.verdicts import Verdict

log = logging.getLogger(__name__)

METHOD = "bernoulli-cusum with follow-up sampling + upward-cusum recovery; pooled-window wilson/beta"
#: Follow-up policy: at ``S >= fraction * h`` the next day draws ``followup_samples * multiple`` extra images.
#: The first tier is also where ``watch`` starts. Chosen by ``benchmarks/bench_health.py`` (README).
TIERS: tuple[tuple[float, int], ...] = ((0.15, 1), (0.30, 3), (0.50, 6))
#: A flagged class draws ``followup_samples * FLAGGED_MULTIPLE`` extra images a day: the evidence to clear it.
FLAGGED_MULTIPLE = 2
#: The collapse test's alternative, as a share of the target, and its share of the false-alarm budget.
COLLAPSE_FRACTION = 0.5
COLLAPSE_SHARE = 0.1
#: The recovery test's alternative: ``target + RECOVERY_MARGIN * drop_to_detect`` (0.93 at the defaults) against the target.
RECOVERY_MARGIN = 0.6
#: The snapped ratio of the per-image log-likelihood ratios is within this of the exact one.
RATIO_TOLERANCE = 0.005
#: The settings a day is judged under, stored with each row (``judged_under``) and reused when it is recomputed.
JUDGED_UNDER = (
    "drop_to_detect", "false_alarms_per_year", "false_recoveries_per_year", "samples_per_class", "followup_samples",
    "window_days", "min_samples", "confidence_level",
)  # fmt: skip

DailyCounts = tuple[Any, ...]  # (date, n, correct) or (date, n, correct, followup_n, followup_correct)


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
    return np.where(np.asarray(flagged, dtype=bool), followup * FLAGGED_MULTIPLE, extra).astype(np.int64)


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


def recovery_alternative(target: float, drop: float) -> float:
    """The accuracy the recovery test looks for: a little above the target (never past halfway to 1)."""
    return round(min(target + RECOVERY_MARGIN * drop, (1.0 + target) / 2.0), 10)


def recovery_lattice(target: float, drop: float) -> tuple[int, int, float]:
    """``(gain, loss, unit)`` of the recovery CUSUM ``R``: a correct image adds ``gain`` units, a wrong one takes ``loss``.

    ``R`` is the log-likelihood ratio of :func:`recovery_alternative` against the target, on its own lattice: it
    drifts down at any accuracy up to about ``target + 0.03``, so a class that stays below its target stays flagged.
    """
    above = recovery_alternative(target, drop)
    return lattice(above, round(above - target, 10))


def recovery_run_length(hr: int, target: float, drop: float, n: int, accuracy: float | None = None) -> float:
    """Expected days from a flag to clearing it (``R >= hr``) with ``n`` images a day; default accuracy: the target."""
    gain, loss, _ = recovery_lattice(target, drop)
    p = target if accuracy is None else accuracy
    return float(run_lengths(hr, gain, loss, p, np.full(hr, n))[0])


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
    rec_gain: int
    rec_loss: int
    rec_unit: float

    @property
    def threshold(self) -> float:
        """``h`` in nats."""
        return self.h * self.unit

    @property
    def recovery_threshold(self) -> float:
        """``hr`` in nats."""
        return self.hr * self.rec_unit

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
    # Recovery: a class not above its target (the worst case: drifting down the least) clears at most once in ``recovery_arl`` days.
    flagged_sizes = [size for size in sizes if size <= n + followup * FLAGGED_MULTIPLE]
    gain, loss, rec_unit = recovery_lattice(target, drop)
    hr = _smallest(
        lambda r: worst_run_length(r, gain, loss, target, flagged_sizes)[0] >= recovery_arl, math.ceil(math.log(recovery_arl) / rec_unit)
    )
    return Design(target, drop, n, followup, down, up, unit, h, hr, arl, recovery_arl, big_down, big_up, big_unit, big_h, gain, loss, rec_unit)


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

    The cache is read as bounded JSON (:func:`monitor.core.files.read_json_file`: a regular file, finite numbers,
    shallow nesting) and each entry checked against the ``Design`` it claims to be (the fields, their types,
    the arguments it was calibrated for); a damaged or odd cache is calibrated again, with a warning.
    """
    from monitor.core.files import read_json_file  # here: the rest of the module is another change's

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

    A flag is raised when ``S >= h`` or ``B >= big_h``; it clears when ``R >= hr`` (evidence that the class is
    above its target), and ``S`` and ``B`` then restart at 0 (a new episode starts the tests afresh, as the
    run-length calibration assumes).
    """
    n_arr, c_arr = np.asarray(n, dtype=np.int64), np.asarray(correct, dtype=np.int64)
    step = d.up * (n_arr - c_arr) - d.down * c_arr
    s = np.maximum(0, state.s + step)
    b = np.maximum(0, state.b + d.big_up * (n_arr - c_arr) - d.big_down * c_arr)
    r = np.where(state.flagged, np.maximum(0, state.r + d.rec_gain * c_arr - d.rec_loss * (n_arr - c_arr)), 0)
    cleared = state.flagged & (r >= d.hr)
    raised = ~state.flagged & ((s >= d.h) | (b >= d.big_h))
    flagged = (state.flagged & ~cleared) | raised
    s, b = np.where(cleared, 0, s), np.where(cleared, 0, b)
    r = np.where(flagged & ~raised, r, 0)
    return State(s, r, flagged, b), raised, cleared


def counted(state: State, n: ArrayLike, correct: ArrayLike, followup_n: ArrayLike, followup_correct: ArrayLike, d: Design) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The images a day's step counts: all of them, unless the day drew more follow-up than ``state`` asks for.

    The thresholds hold for any grant up to the request of the state the day starts from. In a daily run the
    grant comes from that very state, so this never bites; when a backfilled date changes the states of later
    days, a later day whose follow-up now exceeds its (recomputed) request counts its base draw only.
    """
    n_arr, c_arr = np.asarray(n, dtype=np.int64), np.asarray(correct, dtype=np.int64)
    fn, fc = np.asarray(followup_n, dtype=np.int64), np.asarray(followup_correct, dtype=np.int64)
    over = fn > followup_extra(state.s, d.h, d.followup, state.flagged)
    return np.where(over, n_arr - fn, n_arr), np.where(over, c_arr - fc, c_arr)


def verdict_codes(state: State, d: Design, evaluated_n: ArrayLike, min_samples: int) -> NDArray[np.int64]:
    """The verdict rule, element-wise; codes are :attr:`Verdict.code`.

    1. flagged: ``needs_retraining``; 2. fewer than ``min_samples`` images evaluated (each counted once, since the
    model's first day) so far: ``insufficient_data``; 3. ``S`` past the first follow-up tier: ``watch``;
    4. otherwise ``healthy``. A class with nothing new to evaluate keeps its verdict: the rule reads the
    detector's state and the images seen so far, not the window.
    """
    return np.select(
        [state.flagged, np.asarray(evaluated_n) < min_samples, state.s >= TIERS[0][0] * d.h],
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


def _sorted_days(daily: Sequence[DailyCounts]) -> list[tuple[dt.date, int, int, int, int]]:
    """``(date, n, correct[, followup_n, followup_correct])`` rows as 5-tuples by date, checked."""
    days: list[tuple[dt.date, int, int, int, int]] = []
    for row in daily:
        fn, fc = (int(row[3]), int(row[4])) if len(row) > 3 else (0, 0)
        days.append((_as_date(row[0]), int(row[1]), int(row[2]), fn, fc))
    days.sort(key=lambda row: row[0])
    for day, n, c, fn, fc in days:
        if n < 0 or not 0 <= c <= n or not 0 <= fc <= fn <= n or fn - fc > n - c:
            raise DataError(f"counts on {day}: correct {c} of n {n} are inconsistent")
    if len({row[0] for row in days}) != len(days):
        raise DataError("the daily counts repeat a date")
    return days


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


def judge_day(
    previous: Mapping[str, Any] | None,
    replay: Sequence[DailyCounts],
    daily: Sequence[DailyCounts],
    date: dt.date | str,
    d: Design,
    settings: Settings,
    *,
    unseen_left: int | None = None,
) -> dict[str, Any]:
    """Judge one class on ``date``: continue from ``previous`` (its stored row, or None), run the ``replay``
    days that have counts but no stored row, then ``date`` itself; window evidence from ``daily``.

    Rows are ``(date, n, correct)`` or ``(date, n, correct, followup_n, followup_correct)``. Returns the
    evidence and state fields of a ``class_health`` row (all but model_id, date and label). The scalar
    reference of :func:`_judge_classes`, written apart from it.
    """
    as_of = _as_date(date)
    days = [row for row in _sorted_days(daily) if row[0] <= as_of]
    state, since = state_from_row(previous, d)
    today = next((row[1:] for row in days if row[0] == as_of), (0, 0, 0, 0))
    if previous and "evaluated_n" in previous:
        evaluated = [int(previous["evaluated_n"]), int(previous.get("evaluated_correct") or 0)]
    else:
        evaluated = [sum(row[1] for row in days), sum(row[2] for row in days)]
    for day, n, c, fn, fc in [*_sorted_days(replay), (as_of, *today)]:
        if previous and "evaluated_n" in previous:
            evaluated[0], evaluated[1] = evaluated[0] + n, evaluated[1] + c
        used_n, used_c = counted(state, n, c, fn, fc, d)
        state, raised, _ = advance(state, used_n, used_c, d)
        if bool(raised):
            since = day.isoformat()
        if not bool(state.flagged):
            since = None

    window_start = as_of - dt.timedelta(days=settings.window_days - 1)
    inside = [row for row in days if row[0] >= window_start]
    pooled_n, pooled_correct = sum(row[1] for row in inside), sum(row[2] for row in inside)
    estimate, effective, low, high = weighted_accuracy(
        [row[1] for row in inside], [row[2] for row in inside], [row[1] - row[3] for row in inside], settings.confidence_level
    )
    return _row(Judgement(
        d=d, settings=settings, window_start=window_start,
        code=int(verdict_codes(state, d, evaluated[0], settings.min_samples)),
        pooled_n=pooled_n, pooled_correct=pooled_correct, estimate=_finite(estimate), effective_n=float(effective),
        ci_low=_finite(low), ci_high=_finite(high), p_below=float(_prob_below(estimate, effective, d.target)),
        s=float(state.s), r=float(state.r), b=float(state.b), flagged=bool(state.flagged), since=since,
        followup=int(followup_extra(state.s, d.h, d.followup, state.flagged)), day_n=int(today[0]), day_correct=int(today[1]),
        evaluated_n=evaluated[0], evaluated_correct=evaluated[1], unseen_left=unseen_left,
    ))  # fmt: skip


def _prob_below(estimate: ArrayLike, effective: ArrayLike, target: float) -> NDArray[np.float64]:
    """P(accuracy < target) under the Beta posterior of the window's estimate at its effective size (a uniform prior)."""
    size = np.asarray(effective, dtype=float)
    right = np.where(size > 0, np.nan_to_num(np.asarray(estimate, dtype=float)) * size, 0.0)
    return prob_below(right, size, target)


def _finite(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


@dataclass(frozen=True)
class Judgement:
    """One class's judgement on one day, everything a ``class_health`` row is built from (statistics in lattice units)."""

    d: Design
    settings: Settings
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
    unseen_left: int | None  # images of the class the model has still not evaluated after the day's draw (None: unknown)


def _row(j: Judgement) -> dict[str, Any]:
    """The evidence and state fields of a ``class_health`` row, from one class's judgement."""
    d = j.d
    verdict = Verdict.from_code(j.code)
    cusum, recovery = j.s * d.unit, j.r * d.rec_unit
    exhausted = j.unseen_left == 0
    bucket_low, bucket_high = wilson_interval(j.evaluated_correct, j.evaluated_n, j.settings.confidence_level) if j.evaluated_n else (None, None)
    return {
        "verdict": verdict.value,
        "target": float(d.target),
        "window_days": j.settings.window_days,
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


def _reason(j: Judgement, verdict: Verdict, cusum: float, recovery: float, bucket_low: float | None, bucket_high: float | None) -> str:
    """The verdict in plain words, with the numbers behind it."""
    d, settings = j.d, j.settings
    level = f"{settings.confidence_level:.0%}"
    window = (
        f"last {settings.window_days} days {j.pooled_correct}/{j.pooled_n} images, accuracy {j.estimate:.2f}, {level} CI [{j.ci_low:.2f}, {j.ci_high:.2f}]"
        if j.pooled_n and j.estimate is not None and j.ci_low is not None and j.ci_high is not None
        else f"no new images in the last {settings.window_days} days"
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
        return carried + f"Only {j.evaluated_n} images evaluated so far (at least {settings.min_samples} needed); CUSUM {cusum:.1f} < {d.threshold:.1f}{more}."
    if verdict == Verdict.WATCH:
        return carried + f"Evidence for a drop below {d.target:.2f}: CUSUM {cusum:.1f} of {d.threshold:.1f} ({window}; {odds}){more}."
    return carried + f"{window[0].upper()}{window[1:]} against target {d.target:.2f}; {odds}; CUSUM {cusum:.1f} < {d.threshold:.1f}."


def assess_history(
    daily: Sequence[DailyCounts],
    target: float,
    settings: Settings,
    *,
    classes: int = 1,
    date: dt.date | str | None = None,
) -> dict[str, Any]:
    """Judge one class from its whole daily ``(date, n, correct[, followup_n, followup_correct])`` history up to ``date``
    (default: the last day), under one ``settings``."""
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
        if starts is None or not (before and "flagged" in before and "evaluated_n" in before):
            starts = None
            break
        starts.append(_as_date(str(before["date"])) + dt.timedelta(days=1))
    first = min(starts).isoformat() if starts else None
    docs = store.rows("class_metrics", model_id, start=first, end=day, labels=labels, fields=_COUNT_FIELDS)
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
    followup_n: NDArray[np.int64]
    followup_correct: NDArray[np.int64]
    unseen_left: NDArray[np.int64]  # -1: not recorded


_COUNT_FIELDS = ["label", "date", "n", "correct", "followup_n", "followup_correct", "unseen_left"]


def _count_columns(docs: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> _Counts:
    """The ``class_metrics`` documents (:data:`_COUNT_FIELDS`) of ``labels`` as :class:`_Counts`, in one pass."""
    index = {label: i for i, label in enumerate(labels)}
    texts = [str(doc["date"]) for doc in docs]
    ordinals = {text: _as_date(text).toordinal() for text in set(texts)}
    size = len(texts)

    def column(name: str, missing: int = 0) -> NDArray[np.int64]:
        return np.fromiter((missing if doc.get(name) is None else int(doc[name]) for doc in docs), dtype=np.int64, count=size)

    label_arr = np.fromiter((index[str(doc["label"])] for doc in docs), dtype=np.int64, count=size)
    day_arr = np.fromiter((ordinals[text] for text in texts), dtype=np.int64, count=size)
    order = np.lexsort((day_arr, label_arr))  # stable: a repeated date keeps the order it was read in
    columns = [column(name) for name in ("n", "correct", "followup_n", "followup_correct")] + [column("unseen_left", -1)]
    return _Counts(label_arr[order], day_arr[order], *(c[order] for c in columns))


def _check_counts(counts: _Counts) -> None:
    """The checks of :func:`_sorted_days`, class by class: inconsistent counts, then a repeated date (the first class with either)."""
    fn, fc = counts.followup_n, counts.followup_correct
    bad = (counts.n < 0) | (counts.correct < 0) | (counts.correct > counts.n) | (fc < 0) | (fc > fn) | (fn > counts.n) | (fn - fc > counts.n - counts.correct)
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
    # Images evaluated so far, each once: carried in the rows, or (for a class without) summed over its whole history.
    carried = np.asarray([row is not None and "evaluated_n" in row for row in previous], dtype=bool)
    evaluated_n = np.asarray([int(row["evaluated_n"]) if row is not None and "evaluated_n" in row else 0 for row in previous], dtype=np.int64)
    evaluated_c = np.asarray([int(row.get("evaluated_correct") or 0) if row is not None and "evaluated_n" in row else 0 for row in previous], dtype=np.int64)
    counted_from = np.where(carried, after, 0)[np.maximum(where, 0)]
    summed = mine & (counts.day > counted_from) & (counts.day <= today)
    np.add.at(evaluated_n, where[summed], counts.n[summed])
    np.add.at(evaluated_c, where[summed], counts.correct[summed])

    replay = np.flatnonzero(mine & (counts.day > after[np.maximum(where, 0)]) & (counts.day < today))
    replay = replay[np.argsort(counts.day[replay], kind="stable")]  # day by day; each day, the classes with counts
    days = counts.day[replay]
    bounds = np.flatnonzero(np.r_[True, days[1:] != days[:-1], True]) if len(replay) else np.zeros(0, dtype=np.int64)
    for first, last in zip(bounds[:-1], bounds[1:]):
        rows = replay[first:last]
        who = where[rows]
        before = State(state.s[who], state.r[who], state.flagged[who], state.b[who])
        used_n, used_c = counted(before, counts.n[rows], counts.correct[rows], counts.followup_n[rows], counts.followup_correct[rows], d)
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
    window_start = as_of - dt.timedelta(days=settings.window_days - 1)
    inside = mine & (counts.day >= window_start.toordinal()) & (counts.day <= today)
    pooled_n, pooled_c = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
    np.add.at(pooled_n, where[inside], counts.n[inside])
    np.add.at(pooled_c, where[inside], counts.correct[inside])
    has = inside & (counts.n > 0)
    base = (counts.n - counts.followup_n)[has].astype(float)
    day_n = counts.n[has].astype(float)
    sums = [np.zeros(size) for _ in range(3)]
    for total, values in zip(sums, (base, base * counts.correct[has] / day_n, base * base / day_n)):
        np.add.at(total, where[has], values)
    estimate, effective = weighted_sums(*sums)
    ci_lows, ci_highs = wilson_effective(estimate, effective, settings.confidence_level)
    p_below = _prob_below(estimate, effective, d.target)
    codes = verdict_codes(state, d, evaluated_n, settings.min_samples)
    followups = followup_extra(state.s, d.h, d.followup, state.flagged)

    judged: list[dict[str, Any]] = []
    for i in range(size):
        judged.append(_row(Judgement(
            d=d, settings=settings, window_start=window_start, code=int(codes[i]),
            pooled_n=int(pooled_n[i]), pooled_correct=int(pooled_c[i]), estimate=_finite(estimate[i]), effective_n=float(effective[i]),
            ci_low=_finite(ci_lows[i]), ci_high=_finite(ci_highs[i]), p_below=float(p_below[i]),
            s=float(state.s[i]), r=float(state.r[i]), b=float(state.b[i]), flagged=bool(state.flagged[i]), since=since[i],
            followup=int(followups[i]), day_n=int(n_today[i]), day_correct=int(c_today[i]),
            evaluated_n=int(evaluated_n[i]), evaluated_correct=int(evaluated_c[i]),
            unseen_left=None if unseen_today[i] < 0 else int(unseen_today[i]),
        )))  # fmt: skip
    return judged


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


def followup_requests(store: Store, date: str, cap: int, unit: int = 1) -> dict[str, int]:
    """Extra images per class for ``date``'s sample: what the latest verdicts before ``date`` asked for, within ``cap``.

    The latest judged date before ``date`` is used (point-in-time: nothing judged on or after ``date``);
    with several models judged that day a class gets the largest request. When the requests exceed the
    daily ``cap``, :func:`grant_followup` serves flagged classes and the classes closest to their threshold
    first, and a partial grant is a whole multiple of ``unit`` (:func:`grant_unit`: what the calibration allows for).
    """
    day = _as_date(date).isoformat()
    judged = store.dates("class_health", before=day)
    if not judged:
        return {}
    rows = [row for row in store.rows("class_health", None, start=judged[-1], end=judged[-1]) if int(row.get("followup") or 0) > 0]
    wanted: dict[str, tuple[int, float]] = {}
    for row in rows:
        urgent = float(urgency(float(row.get("cusum") or 0.0), float(row.get("cusum_threshold") or 1.0), bool(row.get("flagged"))))
        label, extra = str(row["label"]), int(row["followup"])
        # Several models judged that day: the largest request, served as urgently as the most urgent of them (a flag first).
        before = wanted.get(label, (0, -math.inf))
        wanted[label] = (max(before[0], extra), max(before[1], urgent))
    labels = sorted(wanted)  # ties in urgency: by label
    given = grant_followup([wanted[label][0] for label in labels], [wanted[label][1] for label in labels], cap, unit)
    return {label: int(give) for label, give in zip(labels, given) if give > 0}
