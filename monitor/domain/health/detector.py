"""The detector: one day's step of the three CUSUMs (:func:`advance`), the images a step counts, and the verdict rule.

Arrays of any shape (one class, or every class of a day at once); the thresholds come from a calibrated
:class:`~monitor.domain.health.calibration.Design`, the statistics are whole lattice units.

**Recovery.** From the day of a flag, a CUSUM ``R`` of :func:`~monitor.domain.health.calibration.recovery_alternative`
(``target + 0.6 drop``, 0.93 at the defaults) against the target runs on its own lattice; the flag clears when ``R``
reaches ``hr``, calibrated so that a class *not above* its target clears no more often than ``false_recoveries_per_year``
times a year (the worst grants included). ``R`` drifts down at any accuracy below about 0.93, so a class that
stays below its target stays flagged: at a constant 0.86 / 0.87 / 0.88 it is flagged once and cleared under
0.01 times a year (the old test, 0.90 against 0.85, had no drift near 0.876 and flickered 2 to 4 times a
year). A class back at 0.95 clears in 5 days (median). Then ``S`` restarts at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from monitor.core.verdicts import Verdict
from monitor.domain.health.calibration import TIERS, Design, followup_extra


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
    def zeros(cls, shape: int | tuple[int, ...] = ()) -> State:
        return cls(
            np.zeros(shape, dtype=np.int64),
            np.zeros(shape, dtype=np.int64),
            np.zeros(shape, dtype=bool),
            np.zeros(shape, dtype=np.int64),
        )


def advance(
    state: State, n: ArrayLike, correct: ArrayLike, d: Design
) -> tuple[State, NDArray[np.bool_], NDArray[np.bool_]]:
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


def counted(
    state: State, n: ArrayLike, correct: ArrayLike, followup_n: ArrayLike, followup_correct: ArrayLike, d: Design
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
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
