"""Calibration of the health test: the lattice, run lengths, and the thresholds (:func:`design`) that bound false alarms.

Pure: target, drop, sample sizes and run lengths in, a :class:`Design` out; no settings, store or files (the on-disk
cache of calibrations is the pipeline's, :mod:`monitor.orchestration.health_stage`).

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

**Calibration, exactly.** The per-image ratios are snapped to small integers ``(+up if wrong,
-down if correct)`` times a unit (their ratio within 0.5%), so the statistic takes only whole values and
the Brook-Evans Markov chain over ``0..h-1`` is exact for the test actually run. ``h`` is the smallest
whole number whose in-control average run length (every image correct with probability ``target``) is
at least ``classes * 365 / false_alarms_per_year`` days (:func:`required_arl`): that bounds the false alarms
of all classes together. The recovery test (:func:`recovery_alternative`, :mod:`.detector`) is calibrated
so that a class *not above* its target clears no more often than ``false_recoveries_per_year`` times a year.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import sparse, stats
from scipy.sparse import linalg as sparse_linalg

from monitor.core.errors import ConfigError

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


# --- the lattice and run lengths ---------------------------------------------------------------


@lru_cache(maxsize=256)
def lattice(target: float, drop: float) -> tuple[int, int, float]:
    """``(down, up, unit)``: a correct image subtracts ``down`` units, a wrong one adds ``up``; ``unit`` is in nats.

    ``down * unit`` is exactly ``log(target / p1)``; ``up / down`` is the smallest-denominator fraction
    within :data:`RATIO_TOLERANCE` of ``log((1 - p1) / (1 - target)) / log(target / p1)``.
    """
    p1 = target - drop
    if not 0.0 < p1 < target < 1.0:
        raise ConfigError(
            f"target {target} minus drop_to_detect {drop} = {p1:.3f} is not an accuracy between 0 and the target"
        )
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
    ``p_up`` and down by ``down`` otherwise; ``S`` is reflected at 0. A state reaches at most ``n + 1`` others, so
    the chain is solved as a sparse system (SuperLU): about 1 ms at 1,000 states against 35 ms dense.
    """
    n_state = np.asarray(n_of_state, dtype=np.int64)
    rows_of, cols_of, probs_of = [], [], []
    for n in np.unique(n_state):
        rows = np.flatnonzero(n_state == n)
        ups = np.arange(n + 1)
        prob = _binomial(int(n), p_up)
        keep = prob > 1e-16  # far tails add nothing
        jump, prob = up * ups[keep] - down * (n - ups[keep]), prob[keep]
        there = np.maximum(0, rows[:, None] + jump[None, :])
        inside = there < limit  # the rest reaches the limit: absorbed
        rows_of.append(np.broadcast_to(rows[:, None], there.shape)[inside])
        cols_of.append(there[inside])
        probs_of.append(np.broadcast_to(prob, there.shape)[inside])
    # Entries that land on the same state (the reflection at 0) are summed by the conversion.
    transition = sparse.csc_matrix(
        (np.concatenate(probs_of), (np.concatenate(rows_of), np.concatenate(cols_of))), shape=(limit, limit)
    )
    system = sparse.identity(limit, format="csc") - transition
    return np.asarray(sparse_linalg.spsolve(system, np.ones(limit)), dtype=float)


@lru_cache(maxsize=4096)
def _binomial(n: int, p: float) -> NDArray[np.float64]:
    """``P(k of n images move up)`` for ``k = 0..n`` (read-only: shared by every caller)."""
    prob = stats.binom.pmf(np.arange(n + 1), n, p)
    prob.flags.writeable = False
    return prob


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
    prob = _binomial(n, p_up)
    keep = prob > 1e-16  # as run_lengths: far tails add nothing
    ups, prob = ups[keep], prob[keep]
    there = np.clip(np.arange(limit)[:, None] + (up * ups - down * (n - ups))[None, :], 0, limit)
    absorbed = np.append(lengths, 0.0)  # state ``limit`` stands for every state past the threshold
    return np.asarray(1.0 + absorbed[there] @ prob, dtype=float)


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


def _smallest(meets: Callable[[int], bool], start: int) -> int:
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
        lambda b: worst_run_length(b, big_up, big_down, 1.0 - target, sizes)[0] >= big_arl,
        math.ceil(math.log(big_arl) / big_unit),
    )
    # Recovery: a class not above its target (the worst case: drifting down the least) clears at most once in ``recovery_arl`` days.
    flagged_sizes = [size for size in sizes if size <= n + followup * FLAGGED_MULTIPLE]
    gain, loss, rec_unit = recovery_lattice(target, drop)
    hr = _smallest(
        lambda r: worst_run_length(r, gain, loss, target, flagged_sizes)[0] >= recovery_arl,
        math.ceil(math.log(recovery_arl) / rec_unit),
    )
    return Design(
        target,
        drop,
        n,
        followup,
        down,
        up,
        unit,
        h,
        hr,
        arl,
        recovery_arl,
        big_down,
        big_up,
        big_unit,
        big_h,
        gain,
        loss,
        rec_unit,
    )


def required_arl(classes: int, false_alarms_per_year: float) -> float:
    """Days between false alarms each class must reach so that all classes together stay within the bound."""
    return max(1, classes) * 365.0 / false_alarms_per_year
