"""Simulate years of daily samples and measure the health verdicts' false alarms and detection delay.

Runs the code of ``monitor/health.py`` itself (the same CUSUM recursion, threshold calibration and
verdict rule, on arrays) and the naive rule "today's accuracy < target" on the same simulated days:

- false ``needs_retraining`` alarms per year over all classes when every class sits at its target
  (an alarm = a class moving into the flagged state, i.e. one alert);
- days from the start of a drop (0.95 -> 0.75 by default) to the first flag: median, 95th percentile,
  and the share flagged within 7 days.

    .venv/bin/python benchmarks/bench_health.py            # 200 years, 20,000 drop trials
    .venv/bin/python benchmarks/bench_health.py --quick    # 20 years, 2,000 trials (seconds)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from monitor.health import (
    NEEDS_RETRAINING,
    WATCH,
    average_run_length,
    cusum_recursion,
    daily_llr,
    prob_below,
    required_arl,
    threshold_for,
    verdict_codes,
)
from monitor.settings import load_settings


def rolling_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Sum over the last ``window`` days (fewer at the start), along axis 0."""
    c = np.cumsum(x, axis=0)
    out = c.copy()
    out[window:] = c[window:] - c[:-window]
    return out


def entries(flag: np.ndarray) -> np.ndarray:
    """Days on which a series moves into the flagged state (axis 0 = days)."""
    before = np.vstack([np.zeros((1,) + flag.shape[1:], dtype=bool), flag[:-1]])
    return flag & ~before


def first_flag(flag: np.ndarray, start: int) -> np.ndarray:
    """1-based day from ``start`` of the first flag at or after it; inf when never flagged."""
    after = flag[start:]
    hit = after.any(axis=0)
    return np.where(hit, after.argmax(axis=0) + 1.0, np.inf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--years", type=int, default=200, help="simulated years with every class at its target")
    parser.add_argument("--trials", type=int, default=20_000, help="simulated drops")
    parser.add_argument("--quick", action="store_true", help="20 years, 2,000 trials")
    parser.add_argument("--classes", type=int, default=15)
    parser.add_argument("--samples-per-class", type=int, default=None, help="default: the setting (10)")
    parser.add_argument("--drop-to-detect", type=float, default=None, help="default: the setting (0.2)")
    parser.add_argument("--false-alarms-per-year", type=float, default=None, help="default: the setting (0.5)")
    parser.add_argument("--before", type=float, default=0.95, help="accuracy before the drop")
    parser.add_argument("--after", type=float, default=0.75, help="accuracy after the drop")
    parser.add_argument("--within", type=int, default=7, help="days within which 95%% of drops must be flagged")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.years, args.trials = 20, 2_000

    overrides = {
        k: v
        for k, v in {
            "samples_per_class": args.samples_per_class,
            "drop_to_detect": args.drop_to_detect,
            "false_alarms_per_year": args.false_alarms_per_year,
        }.items()
        if v is not None
    }
    settings = load_settings(**overrides)
    target, n, k = settings.target_accuracy, settings.samples_per_class, args.classes
    rng = np.random.default_rng(args.seed)

    started = time.perf_counter()
    h = threshold_for(target, settings, k)
    calibrated_in = time.perf_counter() - started
    arl = required_arl(k, settings.false_alarms_per_year)
    print(
        f"settings: target {target}, drop_to_detect {settings.drop_to_detect}, {n} images/class/day, {k} classes, "
        f"false_alarms_per_year {settings.false_alarms_per_year}, window {settings.window_days} d, min_samples {settings.min_samples}"
    )
    print(
        f"CUSUM threshold h = {h:.3f} (calibrated in {calibrated_in:.2f} s) for an in-control ARL >= {arl:,.0f} days; "
        f"Markov-chain ARL at h: {average_run_length(h, target, settings.drop_to_detect, n):,.0f} days, "
        f"at {args.after}: {average_run_length(h, target, settings.drop_to_detect, n, accuracy=args.after):.1f} days"
    )

    # --- every class at its target for many years -------------------------------------------
    started = time.perf_counter()
    days = 365 * args.years
    correct = rng.binomial(n, target, size=(days, k))
    s, alarm = cusum_recursion(daily_llr(n, correct, target, settings.drop_to_detect), h)
    pooled_n = rolling_sum(np.full((days, k), n), settings.window_days)
    pooled_c = rolling_sum(correct, settings.window_days)
    codes = verdict_codes(alarm, s, h, pooled_n, prob_below(pooled_c, pooled_n, target), settings)
    cusum_alarms = entries(codes == NEEDS_RETRAINING).sum() / args.years
    naive_flag = correct < target * n  # today's accuracy < target
    naive_alarms = entries(naive_flag).sum() / args.years
    watch_share = (codes == WATCH).mean()
    in_control_s = time.perf_counter() - started

    # --- drops: 28 days at `before`, then `after` for up to 60 days ---------------------------
    started = time.perf_counter()
    warmup, horizon = 28, 60
    accuracy = np.r_[np.full(warmup, args.before), np.full(horizon, args.after)][:, None]
    correct = rng.binomial(n, np.broadcast_to(accuracy, (warmup + horizon, args.trials)))
    s, alarm = cusum_recursion(daily_llr(n, correct, target, settings.drop_to_detect), h)
    pooled_n = rolling_sum(np.full(correct.shape, n), settings.window_days)
    pooled_c = rolling_sum(correct, settings.window_days)
    codes = verdict_codes(alarm, s, h, pooled_n, prob_below(pooled_c, pooled_n, target), settings)
    flagged_before = (codes[:warmup] == NEEDS_RETRAINING).any(axis=0).mean()
    cusum_delay = first_flag(codes == NEEDS_RETRAINING, warmup)
    naive_delay = first_flag(correct < target * n, warmup)
    drop_s = time.perf_counter() - started

    def fmt(delay: np.ndarray) -> tuple[str, str, str]:
        p50, p95 = np.percentile(delay, [50, 95])
        show = lambda v: f"{v:.0f}" if np.isfinite(v) else f">{horizon}"  # noqa: E731
        return show(p50), show(p95), f"{(delay <= args.within).mean():.1%}"

    print()
    print(f"{'rule':<34} {'false alarms/yr':>16} {'median days':>12} {'p95 days':>9} {f'<= {args.within} d':>8}")
    for name, alarms, delay in (
        ("CUSUM verdict (needs_retraining)", cusum_alarms, cusum_delay),
        (f"naive: today's accuracy < {target}", naive_alarms, naive_delay),
    ):
        p50, p95, share = fmt(delay)
        print(f"{name:<34} {alarms:>16.2f} {p50:>12} {p95:>9} {share:>8}")
    print()
    print(
        f"{args.years} years x {k} classes at {target} ({in_control_s:.1f} s); {args.trials:,} drops {args.before} -> {args.after} "
        f"({drop_s:.1f} s). Class-days in 'watch' at target: {watch_share:.1%}; drop trials flagged before the drop: {flagged_before:.2%}."
    )
    false_ok = cusum_alarms < 1.0
    fast_ok = (cusum_delay <= args.within).mean() >= 0.95
    print(f"target < 1 false alarm/year over {k} classes: {'MET' if false_ok else 'NOT MET'} ({cusum_alarms:.2f})")
    print(
        f"target 95% of drops flagged within {args.within} days: {'MET' if fast_ok else 'NOT MET'} "
        f"({(cusum_delay <= args.within).mean():.1%})"
    )


if __name__ == "__main__":
    main()
