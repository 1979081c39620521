"""Simulate daily samples and measure the health verdict: false alarms, detection delay, clearing, follow-up cost.

Runs the code of ``monitor/health.py`` itself (:func:`design_for` calibrates, :func:`advance` is the
day-to-day recursion the pipeline runs, :func:`followup_extra` is the follow-up policy the sampler
serves), for each class count asked for (default 15, 100 and 1,000 classes, target 0.9, 10 base
images per class and day):

- false ``needs_retraining`` alarms per year over all classes, every class exactly at its target, with
  follow-up on (an alarm = a class moving into the flagged state, i.e. one alert);
- days from a drop's start to the flag: 0.95 -> 0.75 and 0.95 -> 0.85 (median, p95, share <= 7 days);
- a drift 0.95 -> 0.75 over 30 days: days from the first day below 0.9 to the flag;
- days to clear after 60 days at 0.75 and a recovery to 0.95 (and to 0.90, reported);
- follow-up images per day as a share of the base sample, all classes at 0.95 and all at the target.

Each detection figure is shown beside its **information bound**: the best single-drop CUSUM at the base
sample size (no follow-up), tuned to the true post-change accuracy (for the drift, the best of several
tunings), calibrated to the same false-alarm bound, run on the same kind of simulated days. A ratio
below 1 means the follow-up evidence beat what any fixed-size test could do.

    .venv/bin/python benchmarks/bench_health.py            # 20,000 drops a case; 3,000+ class-years in control
    .venv/bin/python benchmarks/bench_health.py --quick    # 2,000 drops; seconds
    .venv/bin/python benchmarks/bench_health.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from monitor.health import Design, State, advance, average_run_length, design_for, followup_extra, worst_run_length
from monitor.settings import Settings, load_settings

WARMUP = 28
GOALS = {
    "false_alarms_per_year": ("<=", 1.0),
    "drop_0.75_median": ("<=", 4),
    "drop_0.75_p95": ("<=", 7),
    "drop_0.75_within_7": (">=", 0.95),
    "drop_0.85_median": ("<=", 21),
    "drop_0.85_p95": ("<=", 45),
    "drift_median_after_crossing": ("<=", 10),
    "clear_0.95_median": ("<=", 7),
    "clear_0.95_p95": ("<=", 14),
    "extra_share_at_0.95": ("<=", 0.05),
}


def simulate(
    accuracy: Callable[[int], float], days: int, d: Design, trials: int, rng: np.random.Generator, followup: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Flag state and images drawn per day (days x trials) of independent classes whose accuracy on day t is ``accuracy(t)``."""
    state = State.zeros(trials)
    flags = np.zeros((days, trials), dtype=bool)
    images = np.zeros((days, trials), dtype=np.int32)
    for t in range(days):
        n = d.n + (followup_extra(state.s, d.h, d.followup, state.flagged) if followup else np.zeros(trials, dtype=np.int64))
        state, _, _ = advance(state, n, rng.binomial(n, accuracy(t)), d)
        flags[t], images[t] = state.flagged, n
    return flags, images


def first_flag(flags: np.ndarray, start: int) -> np.ndarray:
    """1-based day from ``start`` of the first flag at or after it; inf when never flagged."""
    after = flags[start:]
    return np.where(after.any(axis=0), after.argmax(axis=0) + 1.0, np.inf)


def summary(delay: np.ndarray, within: int = 7) -> dict[str, float]:
    p50, p95 = np.percentile(delay, [50, 95])
    return {"median": float(p50), "p95": float(p95), "within_7": float((delay <= within).mean()), "never": float(np.isinf(delay).mean())}


def in_control(d: Design, classes: int, class_years: int, rng: np.random.Generator, target: float) -> dict[str, float]:
    """False alarms a year over ``classes`` classes at ``target`` and the follow-up they draw, from ``class_years`` simulated."""
    trials = max(classes, class_years)
    state = State.zeros(trials)
    raised_total = 0
    extra_total = 0
    for _ in range(365):
        n = d.n + followup_extra(state.s, d.h, d.followup, state.flagged)
        state, raised, _ = advance(state, n, rng.binomial(n, target), d)
        raised_total += int(raised.sum())
        extra_total += int((n - d.n).sum())
    per_class_year = raised_total / trials
    # Exact, for rates too rare to simulate: the small-drop test's chain with the policy, plus the collapse
    # test's worst-policy run length (an upper bound on its rate); the pair's rate is at most the sum.
    small = average_run_length(d.h, d.target, d.drop, d.n, d.followup)
    choices = sorted({d.n + int(e) for e in followup_extra(np.arange(d.h), d.h, d.followup)})
    collapse, _ = worst_run_length(d.big_h, d.big_up, d.big_down, 1.0 - d.target, choices)
    return {
        "false_alarms_per_year": per_class_year * classes,
        "false_alarms_per_year_chain": classes * 365.0 / small + classes * 365.0 / collapse,
        "alarms_simulated": raised_total,
        "extra_share": extra_total / (trials * 365 * d.n),
    }


def extra_share(d: Design, accuracy: float, trials: int, rng: np.random.Generator) -> float:
    _, images = simulate(lambda t: accuracy, 365, d, trials, rng)
    return float((images.mean() - d.n) / d.n)


def bound(settings: Settings, classes: int, accuracy: Callable[[int], float], days: int, start: int, tunings: list[float],
          trials: int, rng: np.random.Generator) -> dict[str, float]:  # fmt: skip
    """The best single-drop CUSUM at the base sample size (no follow-up), over ``tunings`` (post-change accuracies)."""
    best: dict[str, float] | None = None
    for p1 in tunings:
        d = design_for(settings.target_accuracy, settings.model_copy(update={"drop_to_detect": round(settings.target_accuracy - p1, 10)}), classes, followup=0)
        flags, _ = simulate(accuracy, days, d, trials, rng, followup=False)
        result = {**summary(first_flag(flags, start)), "tuned_to": p1}
        if best is None or result["median"] < best["median"]:
            best = result
    assert best is not None
    return best


def run_case(settings: Settings, classes: int, trials: int, class_years: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, classes])
    target = settings.target_accuracy
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
    control = in_control(d, classes, class_years, rng, target)
    out["false_alarms_per_year"] = control["false_alarms_per_year"]
    out["false_alarms_per_year_chain"] = control["false_alarms_per_year_chain"]
    out["alarms_simulated"] = control["alarms_simulated"]
    out["extra_share_at_target"] = control["extra_share"]
    out["extra_share_at_0.95"] = extra_share(d, 0.95, min(trials, 5000), rng)
    out["base_images_per_day"] = classes * d.n
    out["extra_images_per_day_at_target"] = control["extra_share"] * classes * d.n
    out["cap_binds_at_target"] = bool(out["extra_images_per_day_at_target"] > settings.followup_daily_cap)

    horizon = 150
    for after in (0.75, 0.85):
        def step(t: int, after: float = after) -> float:
            return 0.95 if t < WARMUP else after

        flags, _ = simulate(step, WARMUP + horizon, d, trials, rng)
        ours = summary(first_flag(flags, WARMUP))
        best = bound(settings, classes, step, WARMUP + horizon, WARMUP, [after], trials, rng)
        out[f"drop_{after}"] = {**ours, "flagged_before_drop": float(flags[:WARMUP].any(axis=0).mean()), "bound": best,
                                "ratio_median": ours["median"] / best["median"], "ratio_p95": ours["p95"] / best["p95"]}  # fmt: skip

    def drift(t: int) -> float:
        return 0.95 if t < WARMUP else max(0.75, 0.95 - 0.2 * (t - WARMUP + 1) / 30)

    crossing = next(t for t in range(WARMUP, WARMUP + 60) if drift(t) < target)
    flags, _ = simulate(drift, WARMUP + horizon, d, trials, rng)
    ours = summary(first_flag(flags, crossing))
    best = bound(settings, classes, drift, WARMUP + horizon, crossing, [0.85, 0.8, 0.75], trials, rng)
    out["drift"] = {**ours, "bound": best, "ratio_median": ours["median"] / best["median"], "ratio_p95": ours["p95"] / best["p95"]}

    for back in (0.95, 0.9):
        def episode(t: int, back: float = back) -> float:
            return 0.95 if t < WARMUP else (0.75 if t < WARMUP + 60 else back)

        flags, _ = simulate(episode, WARMUP + 60 + horizon, d, trials, rng)
        held = flags[WARMUP + 59]
        cleared = first_flag(~flags, WARMUP + 60)[held]
        reflagged = (flags[WARMUP + 61 :] & ~flags[WARMUP + 60 : -1]).any(axis=0)[held]
        out[f"clear_{back}"] = {**summary(cleared), "flagged_at_recovery": float(held.mean()), "reflagged_within_150": float(reflagged.mean())}
    return out


def flat(case: dict[str, Any]) -> dict[str, float]:
    """The figures the goals name, from one case."""
    return {
        "false_alarms_per_year": case["false_alarms_per_year"],
        "drop_0.75_median": case["drop_0.75"]["median"],
        "drop_0.75_p95": case["drop_0.75"]["p95"],
        "drop_0.75_within_7": case["drop_0.75"]["within_7"],
        "drop_0.85_median": case["drop_0.85"]["median"],
        "drop_0.85_p95": case["drop_0.85"]["p95"],
        "drift_median_after_crossing": case["drift"]["median"],
        "clear_0.95_median": case["clear_0.95"]["median"],
        "clear_0.95_p95": case["clear_0.95"]["p95"],
        "extra_share_at_0.95": case["extra_share_at_0.95"],
    }


def verdicts(case: dict[str, Any]) -> dict[str, bool]:
    figures = flat(case)
    return {name: (figures[name] <= goal if op == "<=" else figures[name] >= goal) for name, (op, goal) in GOALS.items()}


def show(value: float) -> str:
    return ">150" if not np.isfinite(value) else (f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}")


def print_table(settings: Settings, cases: list[dict[str, Any]]) -> None:
    print(
        f"settings: target {settings.target_accuracy}, drop_to_detect {settings.drop_to_detect}, {settings.samples_per_class} base images/class/day, "
        f"followup_samples {settings.followup_samples} (tiers x1/x3/x6), false_alarms_per_year {settings.false_alarms_per_year}, "
        f"false_recoveries_per_year {settings.false_recoveries_per_year}"
    )
    header = f"{'figure':<42}" + "".join(f"{str(c['classes']) + ' classes':>22}" for c in cases) + f"{'goal':>10}"
    print(header)
    print("-" * len(header))

    def row(name: str, cells: list[str], goal: str = "") -> None:
        print(f"{name:<42}" + "".join(f"{cell:>22}" for cell in cells) + f"{goal:>10}")

    row("threshold h / recovery hr (nats)", [f"{c['threshold']:.2f} / {c['recovery_threshold']:.2f}" for c in cases])
    row("false alarms / year, all classes (MC)", [f"{c['false_alarms_per_year']:.2f} ({c['alarms_simulated']} alarms)" for c in cases], "<= 1.0")
    row("  bound from the chains (both tests)", [f"{c['false_alarms_per_year_chain']:.2f}" for c in cases])
    for after, goal in ((0.75, "4/7/95%"), (0.85, "21/45")):
        key = f"drop_{after}"
        row(f"0.95->{after}: median / p95 / <=7 d", [f"{show(c[key]['median'])} / {show(c[key]['p95'])} / {c[key]['within_7']:.0%}" for c in cases], goal)
        row("  bound: median / p95 (ratio)", [f"{show(c[key]['bound']['median'])} / {show(c[key]['bound']['p95'])} ({c[key]['ratio_median']:.2f})" for c in cases])
    row("drift 0.95->0.75/30 d: median / p95", [f"{show(c['drift']['median'])} / {show(c['drift']['p95'])}" for c in cases], "<= 10")
    row("  bound: median / p95 (ratio)", [f"{show(c['drift']['bound']['median'])} / {show(c['drift']['bound']['p95'])} ({c['drift']['ratio_median']:.2f})" for c in cases])
    row("clear after recovery to 0.95: med / p95", [f"{show(c['clear_0.95']['median'])} / {show(c['clear_0.95']['p95'])}" for c in cases], "7/14")
    row("clear after recovery to 0.90: med / p95", [f"{show(c['clear_0.9']['median'])} / {show(c['clear_0.9']['p95'])}" for c in cases], "report")
    row("  re-flagged within 150 d (at 0.90)", [f"{c['clear_0.9']['reflagged_within_150']:.1%}" for c in cases])
    row("extra images/day at 0.95 (share)", [f"{c['extra_share_at_0.95']:.1%}" for c in cases], "<= 5%")
    row("extra images/day at target (share)", [f"{c['extra_share_at_target']:.1%}" for c in cases], "report")
    row("  images/day at target vs daily cap", [f"{c['extra_images_per_day_at_target']:.0f} vs {settings.followup_daily_cap}" for c in cases])
    print()
    for case in cases:
        missed = [name for name, ok in verdicts(case).items() if not ok]
        print(f"{case['classes']} classes: goals {'all MET' if not missed else 'NOT MET: ' + ', '.join(missed)}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20_000, help="simulated classes per drop case")
    parser.add_argument("--class-years", type=int, default=20_000, help="simulated class-years at target (at least the class count)")
    parser.add_argument("--quick", action="store_true", help="2,000 drops, 2,000 class-years")
    parser.add_argument("--classes", default="15,100,1000", help="comma-separated class counts")
    parser.add_argument("--samples-per-class", type=int, default=None)
    parser.add_argument("--followup-samples", type=int, default=None)
    parser.add_argument("--drop-to-detect", type=float, default=None)
    parser.add_argument("--false-alarms-per-year", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
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
        }.items()
        if v is not None
    }
    settings = load_settings(**overrides)
    started = time.perf_counter()
    cases = [run_case(settings, int(k), args.trials, args.class_years, args.seed) for k in args.classes.split(",")]
    result = {
        "settings": {k: getattr(settings, k) for k in ("target_accuracy", "drop_to_detect", "samples_per_class", "followup_samples",
                                                       "followup_daily_cap", "false_alarms_per_year", "false_recoveries_per_year")},
        "trials": args.trials,
        "class_years": args.class_years,
        "cases": cases,
        "goals": {str(c["classes"]): verdicts(c) for c in cases},
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    if args.json:
        json.dump(result, sys.stdout, indent=2, default=lambda v: None if isinstance(v, float) and not np.isfinite(v) else str(v))
        print()
    else:
        print_table(settings, cases)
        print(f"({args.trials:,} drops a case, {args.class_years:,} class-years at target; {result['seconds']} s)")
    return result


if __name__ == "__main__":
    main()
