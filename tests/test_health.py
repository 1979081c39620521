"""Class health statistics: intervals and posteriors against independent references, the CUSUM calibration
against Monte Carlo, and verdicts computed from a stored history."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from scipy import integrate, stats

from evaluation.metrics import wilson_interval
from monitor.errors import ConfigError, DataError
from monitor.health import (
    VERDICTS,
    assess_history,
    average_run_length,
    compute_health,
    cusum_recursion,
    cusum_threshold,
    daily_llr,
    llr_step,
    llr_weights,
    prob_below,
    verdict_codes,
)

START = dt.date(2024, 3, 1)


def day(offset: int) -> str:
    return (START + dt.timedelta(days=offset)).isoformat()


@pytest.mark.parametrize(("correct", "n"), [(7, 10), (81, 90), (0, 20), (20, 20), (131, 140)])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_wilson_interval_matches_scipy_binomtest(correct: int, n: int, confidence: float) -> None:
    expected = stats.binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson_interval(correct, n, confidence)
    assert low == pytest.approx(expected.low, abs=1e-9)
    assert high == pytest.approx(expected.high, abs=1e-9)


def test_wilson_interval_of_seven_of_ten_is_the_design_example() -> None:
    low, high = wilson_interval(7, 10, 0.95)
    assert (round(low, 2), round(high, 2)) == (0.40, 0.89)


@pytest.mark.parametrize(("correct", "n", "target"), [(9, 10, 0.9), (120, 140, 0.9), (30, 40, 0.8), (0, 0, 0.7)])
def test_prob_below_target_matches_numeric_integration_of_the_posterior(correct: int, n: int, target: float) -> None:
    def density(x: float) -> float:  # unnormalised Beta(1 + correct, 1 + wrong)
        return x**correct * (1.0 - x) ** (n - correct)

    below, _ = integrate.quad(density, 0.0, target, epsabs=0, epsrel=1e-10, limit=200)
    total, _ = integrate.quad(density, 0.0, 1.0, epsabs=0, epsrel=1e-10, limit=200)
    assert float(prob_below(correct, n, target)) == pytest.approx(below / total, abs=1e-7)


def test_llr_weights_are_the_log_likelihood_ratios_within_one_percent() -> None:
    if_correct, if_wrong = llr_weights(0.9, 0.2)
    assert if_correct == pytest.approx(math.log(0.7 / 0.9), rel=0.01)
    assert if_wrong == pytest.approx(math.log(0.3 / 0.1), rel=0.01)
    step = llr_step(0.9, 0.2)
    assert if_correct / step == pytest.approx(round(if_correct / step), abs=1e-9)
    assert if_wrong / step == pytest.approx(round(if_wrong / step), abs=1e-9)


def test_a_drop_that_leaves_no_accuracy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="drop_to_detect"):
        llr_weights(0.15, 0.2)


def _monte_carlo_arl(h: float, target: float, drop: float, n: int, accuracy: float, trials: int, seed: int) -> tuple[float, float]:
    """Mean and standard error of the first day the CUSUM reaches h, simulated in blocks of days."""
    rng = np.random.default_rng(seed)
    if_correct, if_wrong = llr_weights(target, drop)
    s = np.zeros(trials)
    first = np.full(trials, -1)
    t = 0
    while (first < 0).any():
        t += 1
        wrong = rng.binomial(n, 1.0 - accuracy, trials)
        s = np.maximum(0.0, s + wrong * if_wrong + (n - wrong) * if_correct)
        first[(first < 0) & (s >= h)] = t
    return float(first.mean()), float(first.std(ddof=1) / math.sqrt(trials))


@pytest.mark.parametrize(("accuracy", "arl"), [(0.9, 150.0), (0.75, 150.0)])
def test_average_run_length_matches_monte_carlo(accuracy: float, arl: float) -> None:
    h = cusum_threshold(0.9, 0.2, 10, arl)
    predicted = average_run_length(h, 0.9, 0.2, 10, accuracy=accuracy)
    simulated, se = _monte_carlo_arl(h, 0.9, 0.2, 10, accuracy, trials=4000, seed=7)
    assert abs(predicted - simulated) < 4 * se + 0.02 * simulated


def test_calibrated_threshold_is_the_smallest_that_meets_the_run_length() -> None:
    arl = 15 * 365 / 0.5
    h = cusum_threshold(0.9, 0.2, 10, arl)
    step = llr_step(0.9, 0.2)
    assert average_run_length(h, 0.9, 0.2, 10) >= arl
    assert average_run_length(h - step, 0.9, 0.2, 10) < arl
    # More classes sharing the same yearly bound need a longer run length, hence a higher threshold.
    assert cusum_threshold(0.9, 0.2, 10, 30 * 365 / 0.5) > h


def test_cusum_recursion_reflects_at_zero_and_holds_the_alarm_until_zero() -> None:
    s, alarm = cusum_recursion([-1.0, 2.0, 3.0, -2.0, -2.5, -1.0, 4.0], threshold=4.5)
    assert s.tolist() == pytest.approx([0.0, 2.0, 5.0, 3.0, 0.5, 0.0, 4.0])
    assert alarm.tolist() == [False, False, True, True, True, False, False]


def test_cusum_recursion_runs_independent_series_on_extra_axes() -> None:
    increments = np.array([[1.0, -1.0], [1.0, 3.0], [1.0, -5.0]])
    s, alarm = cusum_recursion(increments, threshold=2.5)
    single, _ = cusum_recursion(increments[:, 1], threshold=2.5)
    assert s[:, 1].tolist() == single.tolist()
    assert alarm[:, 0].tolist() == [False, False, True]
    assert alarm[:, 1].tolist() == [False, True, False]


def test_assess_history_pools_counts_over_the_window_instead_of_averaging_ratios(settings) -> None:
    s = settings.model_copy(update={"window_days": 3})
    daily = [(day(0), 10, 0), (day(1), 10, 10), (day(2), 90, 45), (day(3), 0, 0)]
    row = assess_history(daily, 0.9, s, classes=1)
    assert row["window_start"] == day(1)
    assert (row["pooled_n"], row["pooled_correct"]) == (100, 55)
    assert row["pooled_accuracy"] == pytest.approx(0.55)  # the mean of daily ratios would be 0.75
    low, high = stats.binomtest(55, 100).proportion_ci(method="wilson")
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))


def test_assess_history_judges_only_up_to_the_given_date(settings) -> None:
    daily = [(day(i), 10, 10) for i in range(5)] + [(day(5 + i), 10, 2) for i in range(5)]
    assert assess_history(daily, 0.9, settings, date=day(4))["verdict"] == "healthy"
    assert assess_history(daily, 0.9, settings)["verdict"] == "needs_retraining"


def test_verdict_codes_follow_the_documented_rule(settings) -> None:
    h = 8.0
    codes = verdict_codes(
        alarm=[True, False, False, False, False, False],
        cusum=[9.0, 1.0, 4.0, 0.0, 0.0, 5.0],
        threshold=h,
        pooled_n=[5, 5, 100, 100, 100, 100],
        prob_below_target=[0.0, 0.99, 0.1, 0.96, 0.5, 0.5],
        settings=settings,
    )
    assert [VERDICTS[c] for c in codes] == ["needs_retraining", "insufficient_data", "watch", "watch", "healthy", "watch"]


def _store_metrics(store, model_id: str, rows: dict[str, list[tuple[int, int]]]) -> None:
    """class_metrics docs for each label: one (n, correct) per day from START."""
    docs = [
        {"model_id": model_id, "date": day(i), "label": label, "n": n, "correct": c, "failed": 0, "accuracy": c / n if n else None}
        for label, series in rows.items()
        for i, (n, c) in enumerate(series)
    ]
    store.class_metrics.insert_many(docs)


def _expected_flag_day(series: list[tuple[int, int]], target: float, drop: float, h: float) -> int:
    """First day a CUSUM of the exact per-image log-likelihood ratios reaches h (independent of health.py)."""
    s = 0.0
    for i, (n, c) in enumerate(series):
        s = max(0.0, s + c * math.log((target - drop) / target) + (n - c) * math.log((1 - target + drop) / (1 - target)))
        if s >= h:
            return i
    raise AssertionError("never flagged")


def test_compute_health_verdicts_move_from_insufficient_to_healthy_to_needs_retraining_and_back(store, settings) -> None:
    good = [(10, 10)] * 30
    dropping = [(10, 10)] * 8 + [(10, 4)] * 4 + [(10, 10)] * 18
    _store_metrics(store, "m@1", {"good": good, "dropping": dropping})
    # Another model's history must not leak into this model's verdicts.
    _store_metrics(store, "other@2", {"good": [(10, 0)] * 30, "dropping": [(10, 0)] * 30})

    verdicts: dict[str, list[str]] = {"good": [], "dropping": []}
    thresholds = set()
    for i in range(30):
        rows = compute_health(store, "m@1", day(i), settings)
        assert [r["label"] for r in rows] == ["dropping", "good"]
        for row in rows:
            verdicts[row["label"]].append(row["verdict"])
            thresholds.add(row["cusum_threshold"])
    (h,) = thresholds
    assert h == pytest.approx(cusum_threshold(0.9, settings.drop_to_detect, 10, 2 * 365 / settings.false_alarms_per_year))

    assert verdicts["good"][0] == "insufficient_data"  # 10 images < min_samples 20
    assert set(verdicts["good"][1:]) == {"healthy"}
    flag = _expected_flag_day(dropping, 0.9, settings.drop_to_detect, h)
    assert set(verdicts["dropping"][1:flag]) <= {"healthy", "watch"}
    assert verdicts["dropping"][flag] == "needs_retraining"
    flagged_days = [i for i, v in enumerate(verdicts["dropping"]) if v == "needs_retraining"]
    assert flagged_days == list(range(flag, flagged_days[-1] + 1))  # one run, no flicker
    assert verdicts["dropping"][-1] in {"healthy", "watch"}  # recovered once the CUSUM fell back to 0

    stored = list(store.class_health.find({"model_id": "m@1"}, {"_id": 0}))
    assert len(stored) == 60
    row = store.class_health.find_one({"model_id": "m@1", "date": day(flag), "label": "dropping"}, {"_id": 0})
    assert row["cusum"] >= row["cusum_threshold"] and str(round(row["cusum_threshold"], 1)) in row["reason"]


def test_compute_health_rerun_replaces_the_rows_of_the_date(store, settings) -> None:
    _store_metrics(store, "m@1", {"a": [(10, 9)] * 3, "b": [(10, 10)] * 3})
    first = compute_health(store, "m@1", day(2), settings)
    again = compute_health(store, "m@1", day(2), settings)
    assert first == again
    assert store.class_health.count_documents({"model_id": "m@1", "date": day(2)}) == 2
    assert all("_id" not in row for row in again)
    assert set(again[0]) == {
        "model_id", "date", "label", "verdict", "target", "window_days", "window_start", "pooled_n", "pooled_correct",
        "pooled_accuracy", "ci_low", "ci_high", "prob_below_target", "cusum", "cusum_threshold", "method", "reason",
    }


def test_compute_health_uses_per_class_targets(store, settings) -> None:
    _store_metrics(store, "m@1", {"a": [(10, 8)] * 3, "b": [(10, 8)] * 3})
    s = settings.model_copy(update={"target_overrides": {"b": 0.7}})
    rows = {r["label"]: r for r in compute_health(store, "m@1", day(2), s)}
    assert (rows["a"]["target"], rows["b"]["target"]) == (0.9, 0.7)
    assert rows["a"]["prob_below_target"] > rows["b"]["prob_below_target"]


def test_compute_health_without_metrics_on_the_date_is_a_data_error(store, settings) -> None:
    _store_metrics(store, "m@1", {"a": [(10, 9)]})
    with pytest.raises(DataError, match=f"no class metrics of model m@1 on {day(5)}"):
        compute_health(store, "m@1", day(5), settings)


def test_daily_llr_sums_image_ratios(settings) -> None:
    if_correct, if_wrong = llr_weights(0.9, 0.2)
    assert daily_llr([10, 0], [7, 0], 0.9, 0.2).tolist() == pytest.approx([7 * if_correct + 3 * if_wrong, 0.0])


def test_a_class_without_images_in_the_window_has_no_interval_and_insufficient_data(settings) -> None:
    row = assess_history([(day(0), 10, 10), (day(30), 0, 0)], 0.9, settings)
    assert row["verdict"] == "insufficient_data"
    assert (row["pooled_n"], row["pooled_accuracy"], row["ci_low"], row["ci_high"]) == (0, None, None, None)
    assert row["prob_below_target"] == pytest.approx(0.9)  # the uniform prior's P(accuracy < 0.9)
    assert row["reason"].startswith("Only 0 images in the last 14 days (at least 20 needed)")


def test_a_date_filled_in_late_gives_the_same_history_and_alerts_as_an_in_order_run(store, settings) -> None:
    from monitor.pipeline import health_with

    dropping = [(10, 10)] * 8 + [(10, 4), (10, 2), (10, 4), (10, 10)]
    series = {"good": [(10, 10)] * 12, "dropping": dropping}
    late = 9
    _store_metrics(store, "m@1", {label: [(n, c) for i, (n, c) in enumerate(s) if i != late] for label, s in series.items()})
    # The stored docs skip day 9, so they are dated 0..10: move days >= 9 one day on.
    for i in reversed(range(late, 11)):
        store.class_metrics.update_many({"model_id": "m@1", "date": day(i)}, {"$set": {"date": day(i + 1)}})
    for i in range(12):
        if i != late:
            health_with(settings, store, day(i), model_id="m@1")
    store.class_metrics.insert_many(
        [{"model_id": "m@1", "date": day(late), "label": label, "n": s[late][0], "correct": s[late][1], "failed": 0} for label, s in series.items()]
    )
    health_with(settings, store, day(late), model_id="m@1")

    def snapshot() -> tuple[list[dict], list[tuple]]:
        health = sorted(store.class_health.find({"model_id": "m@1"}, {"_id": 0}), key=lambda r: (r["date"], r["label"]))
        alerts = sorted((a["date"], a["label"], a["kind"]) for a in store.alerts.find({"model_id": "m@1"}))
        return health, alerts

    filled_late = snapshot()
    store.class_health.delete_many({})
    store.alerts.delete_many({})
    for i in range(12):
        health_with(settings, store, day(i), model_id="m@1")
    in_order = snapshot()

    assert filled_late == in_order
    flagged = [a for a in in_order[1] if a[2] == "needs_retraining"]
    assert len(flagged) == 1 and flagged[0][1] == "dropping"  # one alert for the one episode


def test_health_judges_the_model_the_day_last_evaluated_when_two_were_measured(store, settings) -> None:
    from monitor.pipeline import health_with

    _store_metrics(store, "old@1", {"a": [(10, 10)] * 3})
    _store_metrics(store, "new@2", {"a": [(10, 2)] * 3})
    with pytest.raises(DataError, match="new@2, old@1 were all measured"):
        health_with(settings, store, day(2))
    store.runs.insert_one({"source": "file:///x", "date": day(2), "model_id": "new@2"})
    assert health_with(settings, store, day(2))["model_id"] == "new@2"


def _reference_arl(h: float, target: float, drop: float, n: int, grid: int = 1500) -> float:
    """In-control run length of the CUSUM with the exact (unsnapped) log-likelihood ratios, from a dense
    Brook-Evans chain on ``grid`` cells of [0, h) solved with numpy: independent of health.py's lattice."""
    p1 = target - drop
    if_correct, if_wrong = math.log(p1 / target), math.log((1 - p1) / (1 - target))
    errors = np.arange(n + 1)
    increments = errors * if_wrong + (n - errors) * if_correct
    probs = stats.binom.pmf(errors, n, 1 - target)
    width = h / grid
    centres = (np.arange(grid) + 0.5) * width
    centres[0] = 0.0  # the reflecting state
    q = np.zeros((grid, grid))
    for inc, p in zip(increments, probs):
        nxt = np.maximum(centres + inc, 0.0)
        inside = nxt < h
        cells = np.where(nxt <= 0.0, 0, np.minimum((nxt / width).astype(int), grid - 1))
        np.add.at(q, (np.flatnonzero(inside), cells[inside]), p)
    return float(np.linalg.solve(np.eye(grid) - q, np.ones(grid))[0])


def test_production_threshold_meets_its_run_length_by_an_independent_computation() -> None:
    arl = 15 * 365 / 0.5  # the defaults: 15 classes, 0.5 false alarms a year
    h = cusum_threshold(0.9, 0.15, 10, arl)
    reference = _reference_arl(h, 0.9, 0.15, 10)
    # The snapped lattice moves the LLRs by < 1%, and the grid adds its own small error: agree within 5%.
    assert reference == pytest.approx(arl, rel=0.05)
    assert _reference_arl(0.8 * h, 0.9, 0.15, 10) < 0.7 * arl  # and the threshold is not loose either
