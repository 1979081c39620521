"""Simulate daily samples and measure the health verdict: false alarms, detection delay, clearing, follow-up cost.

Runs the code of ``monitor/domain/health/`` itself (:func:`design_for` of the health stage calibrates, :func:`advance` is the
day-to-day recursion the pipeline runs, :func:`followup_extra` is the follow-up policy, :func:`grant_followup`
the daily cap the sampler is given, :func:`weighted_accuracy` the window estimate), for each class count asked
for (default 15, 100 and 1,000 classes, target 0.9, 10 base images per class and day). The daily cap
(``MONITOR_FOLLOWUP_DAILY_CAP``) applies in every column: in-control years are simulated as whole worlds of
``classes`` classes competing for it; a dropping class competes with a background of in-control classes drawn
from those worlds.

Two kinds of bucket:

- **infinite pool**: every image drawn is new, correct with the class's accuracy of the day (the model of
  the detector's calibration);
- **finite bucket** (``fixed_bucket_*``, ``arrivals_*``, ``first_verdict``): each class holds a fixed set of
  images whose correctness is fixed (a deterministic model on a real validation set), the bucket's own
  accuracy drawn around the model's; each image is evaluated once (the production sampler never draws an
  image the model evaluated), newest arrivals first, and a class with nothing unseen left adds no evidence.

Figures:

- false ``needs_retraining`` alarms per year over all classes, every class exactly at its target
  (infinite pool, and fixed buckets of 200 / 1,000 / 5,000 images per class, 15 classes);
- days from a drop's start to the flag: 0.95 -> 0.75, 0.95 -> 0.85, 0.95 -> 0.88 (median, p95, share <= 7 days);
- a drift 0.95 -> 0.75 over 30 days: days from the first day below 0.9 to the flag;
- alerts per class-year at a constant 0.86 / 0.87 / 0.88 (flags and recoveries: no flicker below target);
- days to clear after 60 days at 0.75 and a recovery to 0.95 (and to 0.90, reported);
- the window estimate's bias at 0.90 and 0.88 under follow-up (the pooled ratio beside it);
- a bucket of 500 images per class gaining 2 / 5 / 20 images a day whose arrivals drop from 0.95 to 0.75;
- the first verdict on a bucket of 500 images per class at 0.75 from day one (``MONITOR_FIRST_DRAW``);
- follow-up images per day as a share of the base sample, all classes at 0.95 and all at the target.

Each detection figure of the infinite pool is shown beside its **information bound**: the best single-drop
CUSUM at the base sample size (no follow-up), tuned to the true post-change accuracy (for the drift, the best
of several tunings), calibrated to the same false-alarm bound, run on the same kind of simulated days. A
ratio below 1 means the follow-up evidence beat what any fixed-size test could do.

    .venv/bin/python benchmarks/bench_health.py            # 20,000 drops a case; 20,000 class-years in control
    .venv/bin/python benchmarks/bench_health.py --quick    # 2,000 drops; about a minute
    .venv/bin/python benchmarks/bench_health.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.core.settings import Settings, load_settings
from monitor.core.stats import weighted_accuracy
from monitor.domain.health.calibration import Design, average_run_length, followup_extra, grant_unit, worst_run_length
from monitor.domain.health.detector import State, advance
from monitor.domain.health.judge import grant_followup, urgency
from monitor.orchestration.health_stage import design_for

WARMUP = 28
GOALS = {
    "false_alarms_per_year": ("<=", 1.0),
    "fixed_bucket_200": ("<=", 1.0),
    "fixed_bucket_1000": ("<=", 1.0),
    "fixed_bucket_5000": ("<=", 1.0),
    "drop_0.75_median": ("<=", 4),
    "drop_0.75_p95": ("<=", 7),
    "drop_0.75_within_7": (">=", 0.95),
    "drop_0.85_median": ("<=", 10),
    "drop_0.85_p95": ("<=", 29),
    "drift_median_after_crossing": ("<=", 10),
    "clear_0.95_median": ("<=", 7),
    "clear_0.95_p95": ("<=", 14),
    "first_flags_at_0.87": ("<=", 1.0),
    "recoveries_at_0.87": ("<=", 0.1),
    "window_bias_0.9": ("<=", 0.001),
    "window_bias_0.88": ("<=", 0.001),
    "first_verdict_day_median": ("<=", 1),
    "extra_share_at_0.95": ("<=", 0.05),
}


# --- the background a class competes with for the daily cap --------------------------------------------


@dataclass
class Background:
    """Snapshots of in-control worlds (the other classes): per day, their urgencies sorted from the most urgent,
    and the follow-up they ask for, summed in that order. ``left(u)`` is what the cap leaves a class of urgency ``u``."""

    urgency: np.ndarray  # (snapshots, others), descending
    asked: np.ndarray  # (snapshots, others), cumulative
    cap: int

    def left(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.urgency.shape[1] == 0:
            return np.full(u.shape, self.cap, dtype=np.int64)
        pick = rng.integers(0, len(self.urgency), u.shape)
        ahead = (self.urgency[pick] > u[:, None]).sum(axis=1)
        used = np.where(ahead > 0, self.asked[pick, np.maximum(ahead - 1, 0)], 0)
        return np.maximum(0, self.cap - used).astype(np.int64)


def day_images(
    state: State, d: Design, base: np.ndarray | int, left: np.ndarray | int, unit: int, followup: bool = True
) -> np.ndarray:
    """Base plus the follow-up the cap grants a class (``left``: what the more urgent classes left of the cap)."""
    if not followup:
        return np.broadcast_to(np.asarray(base, dtype=np.int64), state.s.shape).copy()
    asked = followup_extra(state.s, d.h, d.followup, state.flagged)
    return np.asarray(base, dtype=np.int64) + np.minimum(asked, left) // unit * unit


def simulate(
    accuracy: Callable[[int], float],
    days: int,
    d: Design,
    trials: int,
    rng: np.random.Generator,
    *,
    background: Background | None = None,
    followup: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Infinite pool: flags, images, correct and follow-up images per day (days x trials) of independent classes whose
    accuracy on day t is ``accuracy(t)``, each granted what the cap leaves it after ``background``."""
    unit = grant_unit(d.followup)
    state = State.zeros(trials)
    flags = np.zeros((days, trials), dtype=bool)
    images = np.zeros((days, trials), dtype=np.int32)
    right = np.zeros((days, trials), dtype=np.int32)
    for t in range(days):
        left = (
            background.left(urgency(state.s, d.h, state.flagged), rng) if background is not None else np.int64(1 << 40)
        )
        n = day_images(state, d, d.n, left, unit, followup)
        c = rng.binomial(n, accuracy(t))
        state, _, _ = advance(state, n, c, d)
        flags[t], images[t], right[t] = state.flagged, n, c
    return flags, images, right, images - d.n


def first_flag(flags: np.ndarray, start: int) -> np.ndarray:
    """1-based day from ``start`` of the first flag at or after it; inf when never flagged."""
    after = flags[start:]
    return np.where(after.any(axis=0), after.argmax(axis=0) + 1.0, np.inf)


def summary(delay: np.ndarray, within: int = 7) -> dict[str, float]:
    p50, p95 = np.percentile(delay, [50, 95])
    return {
        "median": float(p50),
        "p95": float(p95),
        "within_7": float((delay <= within).mean()),
        "never": float(np.isinf(delay).mean()),
    }


# --- whole worlds at target: false alarms with the cap, the background, finite buckets ------------------------


class Bucket:
    """Finite buckets, one per (world, class): groups of images by arrival day, each image correct or not for good.

    ``draw(need)`` takes unseen images newest group first (uniformly within a group: hypergeometric), as the
    production sampler does, and returns how many were drawn and how many of them were right.
    """

    def __init__(self, shape: tuple[int, ...], groups: int) -> None:
        self.right = np.zeros((*shape, groups), dtype=np.int64)
        self.wrong = np.zeros((*shape, groups), dtype=np.int64)
        self.newest = -1

    def arrive(
        self, group: int, count: int | np.ndarray, accuracy: float | np.ndarray, rng: np.random.Generator
    ) -> None:
        count_arr = np.broadcast_to(np.asarray(count, dtype=np.int64), self.right.shape[:-1])
        good = rng.binomial(count_arr, accuracy)
        self.right[..., group] += good
        self.wrong[..., group] += count_arr - good
        self.newest = max(self.newest, group)

    def unseen(self) -> np.ndarray:
        return (self.right + self.wrong).sum(axis=-1)

    def draw(self, need: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        left = np.asarray(need, dtype=np.int64).copy()
        drawn = np.zeros_like(left)
        good = np.zeros_like(left)
        for g in range(self.newest, -1, -1):
            if not left.any():
                break
            size = self.right[..., g] + self.wrong[..., g]
            take = np.minimum(left, size)
            if not take.any():
                continue
            got = rng.hypergeometric(self.right[..., g], self.wrong[..., g], take)
            self.right[..., g] -= got
            self.wrong[..., g] -= take - got
            drawn += take
            good += got
            left -= take
        return drawn, good


def in_control(
    d: Design,
    classes: int,
    class_years: int,
    rng: np.random.Generator,
    target: float,
    cap: int,
    *,
    bucket: int | None = None,
    first_draw: int = 0,
    days: int = 365,
    snapshots: int = 0,
) -> dict[str, Any]:
    """False alarms a year over ``classes`` classes at ``target`` (whole worlds sharing the daily cap), the follow-up
    they draw, and (``snapshots``) a background of their states for :class:`Background`. With ``bucket``: each class
    is a fixed bucket of that many images (its own accuracy drawn around ``target``), each image evaluated once."""
    worlds = max(1, -(-max(classes, class_years) // classes))
    shape = (worlds, classes)
    unit = grant_unit(d.followup)
    state = State.zeros(shape)
    pool = None
    if bucket is not None:
        pool = Bucket(shape, 1)
        pool.arrive(0, bucket, target, rng)
    seen = np.zeros(shape, dtype=np.int64)
    raised_total = extra_total = 0
    kept_u: list[np.ndarray] = []
    kept_a: list[np.ndarray] = []
    for t in range(days):
        asked = followup_extra(state.s, d.h, d.followup, state.flagged)
        urgent = urgency(state.s, d.h, state.flagged)
        granted = grant_followup(asked, urgent, cap, unit)
        base = np.where((seen == 0) & (first_draw > d.n), first_draw, d.n)
        if pool is None:
            n = base + granted
            c = rng.binomial(n, target)
        else:
            n, c = pool.draw(base + granted, rng)
        seen += n
        state, raised, _ = advance(state, n, c, d)
        raised_total += int(raised.sum())
        extra_total += int(granted.sum())
        if snapshots and t >= 60 and len(kept_u) < snapshots:
            order = np.argsort(-urgent[:, 1:], axis=1, kind="stable")  # class 0 is the one a background serves
            kept_u.append(np.take_along_axis(urgent[:, 1:], order, axis=1))
            kept_a.append(np.cumsum(np.take_along_axis(asked[:, 1:], order, axis=1), axis=1))
    per_class_year = raised_total / (worlds * classes) * 365 / days
    out: dict[str, Any] = {
        "false_alarms_per_year": per_class_year * classes,
        "alarms_simulated": raised_total,
        "extra_share": extra_total / (worlds * classes * days * d.n),
        "worlds": worlds,
    }
    if snapshots:
        out["background"] = Background(np.concatenate(kept_u), np.concatenate(kept_a), cap) if kept_u else None
    return out


def exact_false_alarms(d: Design, classes: int) -> float:
    """The small-drop test's chain with the policy, plus the collapse test's worst-policy run length (an upper bound on
    its rate): the pair's rate is at most the sum. For rates too rare to simulate."""
    small = average_run_length(d.h, d.target, d.drop, d.n, d.followup)
    choices = sorted({d.n + int(e) for e in followup_extra(np.arange(d.h), d.h, d.followup)})
    collapse, _ = worst_run_length(d.big_h, d.big_up, d.big_down, 1.0 - d.target, choices)
    return classes * 365.0 / small + classes * 365.0 / collapse


def bound(
    settings: Settings,
    classes: int,
    accuracy: Callable[[int], float],
    days: int,
    start: int,
    tunings: list[float],
    trials: int,
    rng: np.random.Generator,
) -> dict[str, float]:
    """The best single-drop CUSUM at the base sample size (no follow-up), over ``tunings`` (post-change accuracies)."""
    best: dict[str, float] | None = None
    for p1 in tunings:
        d = design_for(
            settings.target_accuracy,
            settings.model_copy(update={"drop_to_detect": round(settings.target_accuracy - p1, 10)}),
            classes,
            followup=0,
        )
        flags, *_ = simulate(accuracy, days, d, trials, rng, followup=False)
        result = {**summary(first_flag(flags, start)), "tuned_to": p1}
        if best is None or result["median"] < best["median"]:
            best = result
    assert best is not None
    return best


def window_bias(
    d: Design, settings: Settings, accuracy: float, trials: int, rng: np.random.Generator, background: Background | None
) -> dict[str, float]:
    """Mean of the window's estimate minus the true accuracy, over class-days after a warm-up (the pooled ratio beside it)."""
    days, window = 200, settings.window_days
    _, images, right, extra = simulate(lambda t: accuracy, days, d, trials, rng, background=background)
    estimates, pooled = [], []
    for t in range(60, days):
        part = slice(t - window + 1, t + 1)
        estimate, *_ = weighted_accuracy(images[part].T, right[part].T, (images[part] - extra[part]).T)
        estimates.append(estimate)
        pooled.append(right[part].sum(axis=0) / images[part].sum(axis=0))
    mean, spread = np.mean(estimates), np.std(np.mean(estimates, axis=0)) / np.sqrt(trials)
    return {"bias": float(mean - accuracy), "se": float(spread), "pooled_bias": float(np.mean(pooled) - accuracy)}


def constant(
    d: Design, accuracy: float, trials: int, rng: np.random.Generator, background: Background | None
) -> dict[str, float]:
    """Alerts per class-year for a class at a constant accuracy from day one: flags raised and recoveries."""
    unit = grant_unit(d.followup)
    state = State.zeros(trials)
    flags = clears = 0
    for _ in range(365):
        left = (
            background.left(urgency(state.s, d.h, state.flagged), rng) if background is not None else np.int64(1 << 40)
        )
        n = day_images(state, d, d.n, left, unit)
        state, raised, cleared = advance(state, n, rng.binomial(n, accuracy), d)
        flags, clears = flags + int(raised.sum()), clears + int(cleared.sum())
    return {"flags": flags / trials, "recoveries": clears / trials, "flagged_at_year_end": float(state.flagged.mean())}


def arrivals(
    d: Design, per_day: int, trials: int, rng: np.random.Generator, *, initial: int = 500, first_draw: int = 0
) -> dict[str, float]:
    """A bucket of ``initial`` images at 0.95 gaining ``per_day`` a day; from ``WARMUP`` the arrivals are at 0.75.
    Newest first, each image once: days from the drop to the flag."""
    horizon = 150
    days = WARMUP + horizon
    unit = grant_unit(d.followup)
    pool = Bucket((trials,), days + 1)
    pool.arrive(0, initial, 0.95, rng)
    state = State.zeros(trials)
    seen = np.zeros(trials, dtype=np.int64)
    flags = np.zeros((days, trials), dtype=bool)
    for t in range(days):
        pool.arrive(t + 1, per_day, 0.95 if t < WARMUP else 0.75, rng)
        base = np.where((seen == 0) & (first_draw > d.n), first_draw, d.n)
        n, c = pool.draw(day_images(state, d, base, np.int64(1 << 40), unit), rng)
        seen += n
        state, _, _ = advance(state, n, c, d)
        flags[t] = state.flagged
    return {**summary(first_flag(flags, WARMUP)), "flagged_before_drop": float(flags[:WARMUP].any(axis=0).mean())}


def first_verdict(
    d: Design, trials: int, rng: np.random.Generator, first_draw: int, *, size: int = 500, accuracy: float = 0.75
) -> dict[str, float]:
    """A bucket of ``size`` images per class at ``accuracy`` from the model's first day: the day of the first flag."""
    unit = grant_unit(d.followup)
    pool = Bucket((trials,), 1)
    pool.arrive(0, size, accuracy, rng)
    state = State.zeros(trials)
    flags = np.zeros((30, trials), dtype=bool)
    for t in range(30):
        base = first_draw if t == 0 and first_draw > d.n else d.n
        n, c = pool.draw(day_images(state, d, np.full(trials, base), np.int64(1 << 40), unit), rng)
        state, _, _ = advance(state, n, c, d)
        flags[t] = state.flagged
    delay = first_flag(flags, 0)
    return {"median": float(np.median(delay)), "day_one": float((delay == 1).mean())}


def run_case(
    settings: Settings, classes: int, trials: int, class_years: int, seed: int, *, quick: bool = False
) -> dict[str, Any]:
    rng = np.random.default_rng([seed, classes])
    target = settings.target_accuracy
    cap = settings.followup_daily_cap
    started = time.perf_counter()
    d = design_for(target, settings, classes)
    calibrated = time.perf_counter() - started
    out: dict[str, Any] = {
        "classes": classes,
        "threshold": d.threshold,
        "recovery_threshold": d.recovery_threshold,
        "required_run_length_days": d.arl,
        "calibration_s": round(calibrated, 3),
    }
    control = in_control(d, classes, class_years, rng, target, cap, snapshots=200 if classes > 1 else 0)
    background = control.pop("background", None)
    out["false_alarms_per_year"] = control["false_alarms_per_year"]
    out["false_alarms_per_year_chain"] = exact_false_alarms(d, classes)
    out["alarms_simulated"] = control["alarms_simulated"]
    out["extra_share_at_target"] = control["extra_share"]
    _, images, _, _ = simulate(lambda t: 0.95, 365, d, min(trials, 5000), rng, background=background)
    out["extra_share_at_0.95"] = float((images.mean() - d.n) / d.n)
    out["base_images_per_day"] = classes * d.n
    out["extra_images_per_day_at_target"] = control["extra_share"] * classes * d.n
    out["cap_binds_at_target"] = bool(out["extra_images_per_day_at_target"] > cap)

    horizon = 150
    for after in (0.75, 0.85, 0.88):

        def step(t: int, after: float = after) -> float:
            return 0.95 if t < WARMUP else after

        flags, *_ = simulate(step, WARMUP + horizon, d, trials, rng, background=background)
        ours = summary(first_flag(flags, WARMUP))
        best = bound(settings, classes, step, WARMUP + horizon, WARMUP, [after], trials, rng)
        out[f"drop_{after}"] = {
            **ours,
            "flagged_before_drop": float(flags[:WARMUP].any(axis=0).mean()),
            "bound": best,
            "ratio_median": _ratio(ours["median"], best["median"]),
            "ratio_p95": _ratio(ours["p95"], best["p95"]),
        }

    def drift(t: int) -> float:
        return 0.95 if t < WARMUP else max(0.75, 0.95 - 0.2 * (t - WARMUP + 1) / 30)

    crossing = next(t for t in range(WARMUP, WARMUP + 60) if drift(t) < target)
    flags, *_ = simulate(drift, WARMUP + horizon, d, trials, rng, background=background)
    ours = summary(first_flag(flags, crossing))
    best = bound(settings, classes, drift, WARMUP + horizon, crossing, [0.85, 0.8, 0.75], trials, rng)
    out["drift"] = {
        **ours,
        "bound": best,
        "ratio_median": ours["median"] / best["median"],
        "ratio_p95": ours["p95"] / best["p95"],
    }

    for back in (0.95, 0.9):

        def episode(t: int, back: float = back) -> float:
            return 0.95 if t < WARMUP else (0.75 if t < WARMUP + 60 else back)

        flags, *_ = simulate(episode, WARMUP + 60 + horizon, d, trials, rng, background=background)
        held = flags[WARMUP + 59]
        cleared = first_flag(~flags, WARMUP + 60)[held]
        reflagged = (flags[WARMUP + 61 :] & ~flags[WARMUP + 60 : -1]).any(axis=0)[held]
        out[f"clear_{back}"] = {
            **summary(cleared),
            "flagged_at_recovery": float(held.mean()),
            "reflagged_within_150": float(reflagged.mean()),
        }

    for level in (0.86, 0.87, 0.88):
        out[f"constant_{level}"] = constant(d, level, min(trials, 5000), rng, background)
    for level in (0.9, 0.88):
        out[f"window_bias_{level}"] = window_bias(
            d, settings, level, min(trials, 2000 if quick else 10_000), rng, background
        )

    if classes <= 15:  # the finite buckets: the case users meet first (the cap does not bind at this size)
        years = max(classes, class_years // (4 if quick else 1))
        for size in (200, 1000, 5000):
            found = in_control(d, classes, years, rng, target, cap, bucket=size, first_draw=settings.first_draw)
            out[f"fixed_bucket_{size}"] = {
                "false_alarms_per_year": found["false_alarms_per_year"],
                "alarms_simulated": found["alarms_simulated"],
                "class_years": found["worlds"] * classes,
            }
        for per_day in (2, 5, 20):
            out[f"arrivals_{per_day}"] = arrivals(d, per_day, min(trials, 5000), rng, first_draw=settings.first_draw)
        out["first_verdict"] = {
            **first_verdict(d, min(trials, 5000), rng, settings.first_draw),
            "first_draw": settings.first_draw,
        }
        out["first_verdict_base_only"] = first_verdict(d, min(trials, 5000), rng, 0)
    return out


def _ratio(ours: float, best: float) -> float:
    return ours / best if np.isfinite(best) else float("nan")


def flat(case: dict[str, Any]) -> dict[str, float]:
    """The figures the goals name, from one case (the finite-bucket figures only where simulated)."""
    figures = {
        "false_alarms_per_year": case["false_alarms_per_year"],
        "drop_0.75_median": case["drop_0.75"]["median"],
        "drop_0.75_p95": case["drop_0.75"]["p95"],
        "drop_0.75_within_7": case["drop_0.75"]["within_7"],
        "drop_0.85_median": case["drop_0.85"]["median"],
        "drop_0.85_p95": case["drop_0.85"]["p95"],
        "drift_median_after_crossing": case["drift"]["median"],
        "clear_0.95_median": case["clear_0.95"]["median"],
        "clear_0.95_p95": case["clear_0.95"]["p95"],
        # every flag after the first follows a recovery: the first flags are the flags less the recoveries
        "first_flags_at_0.87": case["constant_0.87"]["flags"] - case["constant_0.87"]["recoveries"],
        "recoveries_at_0.87": case["constant_0.87"]["recoveries"],
        "window_bias_0.9": abs(case["window_bias_0.9"]["bias"]),
        "window_bias_0.88": abs(case["window_bias_0.88"]["bias"]),
        "extra_share_at_0.95": case["extra_share_at_0.95"],
    }
    for size in (200, 1000, 5000):
        if f"fixed_bucket_{size}" in case:
            figures[f"fixed_bucket_{size}"] = case[f"fixed_bucket_{size}"]["false_alarms_per_year"]
    if "first_verdict" in case:
        figures["first_verdict_day_median"] = case["first_verdict"]["median"]
    return figures


def verdicts(case: dict[str, Any]) -> dict[str, bool]:
    figures = flat(case)
    return {
        name: (figures[name] <= goal if op == "<=" else figures[name] >= goal)
        for name, (op, goal) in GOALS.items()
        if name in figures
    }


def show(value: float) -> str:
    return ">150" if not np.isfinite(value) else (f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}")


def print_table(settings: Settings, cases: list[dict[str, Any]]) -> None:
    print(
        f"settings: target {settings.target_accuracy}, drop_to_detect {settings.drop_to_detect}, {settings.samples_per_class} base images/class/day, "
        f"followup_samples {settings.followup_samples} (tiers x1/x3/x6, flagged x2), daily cap {settings.followup_daily_cap}, "
        f"first_draw {settings.first_draw}, false_alarms_per_year {settings.false_alarms_per_year}, "
        f"false_recoveries_per_year {settings.false_recoveries_per_year}"
    )
    header = f"{'figure':<44}" + "".join(f"{str(c['classes']) + ' classes':>24}" for c in cases) + f"{'goal':>12}"
    print(header)
    print("-" * len(header))

    def row(name: str, key: str, cell: Callable[[dict[str, Any]], str], goal: str = "") -> None:
        print(f"{name:<44}" + "".join(f"{(cell(c) if key in c else '-'):>24}" for c in cases) + f"{goal:>12}")

    row(
        "threshold h / recovery hr (nats)",
        "threshold",
        lambda c: f"{c['threshold']:.2f} / {c['recovery_threshold']:.2f}",
    )
    row(
        "false alarms / year, infinite pool (MC)",
        "threshold",
        lambda c: f"{c['false_alarms_per_year']:.2f} ({c['alarms_simulated']} alarms)",
        "<= 1.0",
    )
    row("  bound from the chains (both tests)", "threshold", lambda c: f"{c['false_alarms_per_year_chain']:.2f}")
    for size in (200, 1000, 5000):
        key = f"fixed_bucket_{size}"
        row(
            f"false alarms / year, bucket of {size}/class",
            key,
            lambda c, key=key: f"{c[key]['false_alarms_per_year']:.2f} ({c[key]['alarms_simulated']})",
            "<= 1.0",
        )
    for after, goal in ((0.75, "4/7/95%"), (0.85, "10/29"), (0.88, "report")):
        key = f"drop_{after}"
        row(
            f"0.95->{after}: median / p95 / <=7 d / never",
            key,
            lambda c, key=key: (
                f"{show(c[key]['median'])} / {show(c[key]['p95'])} / {c[key]['within_7']:.0%} / {c[key]['never']:.0%}"
            ),
            goal,
        )
        row(
            "  bound: median / p95 (ratio)",
            key,
            lambda c, key=key: (
                f"{show(c[key]['bound']['median'])} / {show(c[key]['bound']['p95'])} ({c[key]['ratio_median']:.2f})"
            ),
        )
    row(
        "drift 0.95->0.75/30 d: median / p95",
        "drift",
        lambda c: f"{show(c['drift']['median'])} / {show(c['drift']['p95'])}",
        "<= 10",
    )
    row(
        "  bound: median / p95 (ratio)",
        "drift",
        lambda c: (
            f"{show(c['drift']['bound']['median'])} / {show(c['drift']['bound']['p95'])} ({c['drift']['ratio_median']:.2f})"
        ),
    )
    for level in (0.86, 0.87, 0.88):
        key = f"constant_{level}"
        row(
            f"constant {level}: flags / recoveries per year",
            key,
            lambda c, key=key: f"{c[key]['flags']:.3f} / {c[key]['recoveries']:.3f}",
            "<=1/<=0.1",
        )
    row(
        "clear after recovery to 0.95: med / p95",
        "clear_0.95",
        lambda c: f"{show(c['clear_0.95']['median'])} / {show(c['clear_0.95']['p95'])}",
        "7/14",
    )
    row(
        "clear after recovery to 0.90: med / p95",
        "clear_0.9",
        lambda c: f"{show(c['clear_0.9']['median'])} / {show(c['clear_0.9']['p95'])}",
        "report",
    )
    row("  still flagged 150 d after (at 0.90)", "clear_0.9", lambda c: f"{c['clear_0.9']['never']:.1%}")
    for level in (0.9, 0.88):
        key = f"window_bias_{level}"
        row(
            f"window estimate bias at {level} (pooled)",
            key,
            lambda c, key=key: f"{c[key]['bias']:+.4f} ({c[key]['pooled_bias']:+.4f})",
            "<= 0.001",
        )
    for per_day in (2, 5, 20):
        key = f"arrivals_{per_day}"
        row(
            f"arrivals {per_day}/day drop to 0.75: med / p95",
            key,
            lambda c, key=key: f"{show(c[key]['median'])} / {show(c[key]['p95'])}",
            "report",
        )
    row(
        "first verdict, 500/class at 0.75: median day",
        "first_verdict",
        lambda c: f"{show(c['first_verdict']['median'])} ({c['first_verdict']['day_one']:.0%} day 1)",
        "1",
    )
    row(
        "  base draw only (first_draw 0)",
        "first_verdict_base_only",
        lambda c: (
            f"{show(c['first_verdict_base_only']['median'])} ({c['first_verdict_base_only']['day_one']:.0%} day 1)"
        ),
    )
    row("extra images/day at 0.95 (share)", "threshold", lambda c: f"{c['extra_share_at_0.95']:.1%}", "<= 5%")
    row("extra images/day at target (share)", "threshold", lambda c: f"{c['extra_share_at_target']:.1%}", "report")
    row(
        "  images/day at target vs daily cap",
        "threshold",
        lambda c: f"{c['extra_images_per_day_at_target']:.0f} vs {settings.followup_daily_cap}",
    )
    print()
    for case in cases:
        missed = [name for name, ok in verdicts(case).items() if not ok]
        print(f"{case['classes']} classes: goals {'all MET' if not missed else 'NOT MET: ' + ', '.join(missed)}")


def save_figures(path: str, result: dict[str, Any]) -> None:
    """The headline figures of the first case (a sentence the dashboard shows, and the numbers), with the date and machine."""
    import datetime as dt
    import os
    import platform

    case = result["cases"][0]
    figures = flat(case)
    sentence = (
        f"Measured by benchmarks/bench_health.py ({case['classes']} classes, the defaults, {dt.date.today().isoformat()}): a class that falls from "
        f"0.95 to 0.75 is flagged in a median {show(figures['drop_0.75_median'])} days (p95 {show(figures['drop_0.75_p95'])}), one that falls to "
        f"0.85 in a median {show(figures['drop_0.85_median'])}; all classes together raise {figures['false_alarms_per_year']:.2f} false alarms "
        f"a year; a class back at 0.95 clears in a median {show(figures['clear_0.95_median'])} days, one still at 0.87 stays flagged "
        f"({case['constant_0.87']['recoveries']:.3f} clearings a year)."
    )
    out = {
        "sentence": sentence,
        "classes": case["classes"],
        "figures": figures,
        "settings": result["settings"],
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "trials": result["trials"],
        "class_years": result["class_years"],
    }
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(
            out, handle, indent=1, default=lambda v: None if isinstance(v, float) and not np.isfinite(v) else str(v)
        )
        handle.write("\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20_000, help="simulated classes per drop case")
    parser.add_argument(
        "--class-years", type=int, default=20_000, help="simulated class-years at target (at least the class count)"
    )
    parser.add_argument("--quick", action="store_true", help="2,000 drops, 2,000 class-years")
    parser.add_argument("--classes", default="15,100,1000", help="comma-separated class counts")
    parser.add_argument("--samples-per-class", type=int, default=None)
    parser.add_argument("--followup-samples", type=int, default=None)
    parser.add_argument("--drop-to-detect", type=float, default=None)
    parser.add_argument("--false-alarms-per-year", type=float, default=None)
    parser.add_argument("--first-draw", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "--save",
        type=str,
        default=None,
        help="write the headline figures (15 classes) to this JSON file, e.g. docs/health-figures.json, which the dashboard reads",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.class_years = 2_000, 2_000
    overrides = {
        k: v
        for k, v in {
            "samples_per_class": args.samples_per_class,
            "followup_samples": args.followup_samples,
            "drop_to_detect": args.drop_to_detect,
            "false_alarms_per_year": args.false_alarms_per_year,
            "first_draw": args.first_draw,
        }.items()
        if v is not None
    }
    settings = load_settings(**overrides)
    started = time.perf_counter()
    cases = [
        run_case(settings, int(k), args.trials, args.class_years, args.seed, quick=args.quick)
        for k in args.classes.split(",")
    ]
    result = {
        "settings": {
            k: getattr(settings, k)
            for k in (
                "target_accuracy",
                "drop_to_detect",
                "samples_per_class",
                "followup_samples",
                "followup_daily_cap",
                "first_draw",
                "false_alarms_per_year",
                "false_recoveries_per_year",
            )
        },
        "trials": args.trials,
        "class_years": args.class_years,
        "cases": cases,
        "goals": {str(c["classes"]): verdicts(c) for c in cases},
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.save:
        save_figures(args.save, result)
    if args.json:
        json.dump(
            result,
            sys.stdout,
            indent=2,
            default=lambda v: None if isinstance(v, float) and not np.isfinite(v) else str(v),
        )
        print()
    else:
        print_table(settings, cases)
        print(f"({args.trials:,} drops a case, {args.class_years:,} class-years at target; {result['seconds']} s)")
    return result


if __name__ == "__main__":
    main()
