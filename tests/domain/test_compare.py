"""The candidate comparison: paired counts (Spark SQL against pandas and a hand table), exact McNemar against scipy, the verdict rules."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evaluation.metrics import paired_counts_pandas, paired_counts_spark
from monitor.core.errors import DataError
from monitor.core.verdicts import ComparisonVerdict
from monitor.domain.compare import (
    compare_classes,
    days_still_needed,
    discordant_needed,
    holm,
    judge,
    mcnemar_exact_p,
    one_sided_p,
    paired_difference_ci,
)

PROMOTE, REJECT, INSUFFICIENT = ComparisonVerdict.PROMOTE, ComparisonVerdict.REJECT, ComparisonVerdict.INSUFFICIENT_DATA


def _frame(rows: list[tuple[str, str, str, str | None, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["date", "image_path", "label", "pred", "status"])


def _hand_pair() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Six images of class a, two of b, one failed for production, one only the candidate saw.

    By hand, class a: both right img1, img2; only production img3; only candidate img4, img5; both wrong img6.
    class b: only candidate b1; b2 failed for production (unpaired). c: only in the candidate (unpaired).
    """
    production = _frame(
        [
            ("2026-01-01", "a/1.png", "a", "a", "ok"),
            ("2026-01-01", "a/2.png", "a", "a", "ok"),
            ("2026-01-01", "a/3.png", "a", "a", "ok"),
            ("2026-01-01", "a/4.png", "a", "b", "ok"),
            ("2026-01-02", "a/5.png", "a", "b", "ok"),
            ("2026-01-02", "a/6.png", "a", "b", "ok"),
            ("2026-01-02", "b/1.png", "b", "a", "ok"),
            ("2026-01-02", "b/2.png", "b", None, "failed"),
        ]
    )
    candidate = _frame(
        [
            ("2026-01-01", "a/1.png", "a", "a", "ok"),
            ("2026-01-01", "a/2.png", "a", "a", "ok"),
            ("2026-01-01", "a/3.png", "a", "c", "ok"),
            ("2026-01-01", "a/4.png", "a", "a", "ok"),
            ("2026-01-02", "a/5.png", "a", "a", "ok"),
            ("2026-01-02", "a/6.png", "a", "c", "ok"),
            ("2026-01-02", "b/1.png", "b", "b", "ok"),
            ("2026-01-02", "b/2.png", "b", "b", "ok"),
            ("2026-01-02", "c/1.png", "c", "c", "ok"),
        ]
    )
    return production, candidate


HAND_TABLE = [
    {"label": "a", "both_right": 2, "only_production": 1, "only_candidate": 2, "both_wrong": 1, "unpaired": 0},
    {"label": "b", "both_right": 0, "only_production": 0, "only_candidate": 1, "both_wrong": 0, "unpaired": 1},
    {"label": "c", "both_right": 0, "only_production": 0, "only_candidate": 0, "both_wrong": 0, "unpaired": 1},
    {"label": "d", "both_right": 0, "only_production": 0, "only_candidate": 0, "both_wrong": 0, "unpaired": 0},
]


def test_pandas_paired_counts_equal_the_hand_computed_table() -> None:
    production, candidate = _hand_pair()
    assert paired_counts_pandas(production, candidate, labels=["d"]) == HAND_TABLE


@pytest.mark.spark
@pytest.mark.slow
def test_spark_paired_counts_equal_the_hand_table_and_the_pandas_reference(spark) -> None:
    production, candidate = _hand_pair()
    assert paired_counts_spark(spark, production, candidate, labels=["d"]) == HAND_TABLE
    # A larger random pair of runs: 20 classes over 5 days, failures on both sides, a few unpaired rows.
    rng = np.random.default_rng(7)
    labels = [f"c{i:02d}" for i in range(20)]
    rows_p: list[tuple[str, str, str, str | None, str]] = []
    rows_c: list[tuple[str, str, str, str | None, str]] = []
    for day in range(5):
        date = f"2026-02-0{day + 1}"
        for i in range(400):
            label = labels[rng.integers(20)]
            path = f"{label}/{day}-{i}.png"
            for rows, accuracy in ((rows_p, 0.8), (rows_c, 0.85)):
                if rng.random() < 0.02:
                    rows.append((date, path, label, None, "failed"))
                elif rows is rows_c and rng.random() < 0.01:
                    continue  # missing on the candidate side: unpaired
                else:
                    pred = label if rng.random() < accuracy else labels[rng.integers(20)]
                    rows.append((date, path, label, pred, "ok"))
    production, candidate = _frame(rows_p), _frame(rows_c)
    expected = paired_counts_pandas(production, candidate, labels=labels + ["zz"])
    assert paired_counts_spark(spark, production, candidate, labels=labels + ["zz"]) == expected
    assert sum(r["unpaired"] for r in expected) > 0 and expected[-1]["label"] == "zz"


def test_paired_counts_refuse_an_image_twice_and_disagreeing_truths() -> None:
    production, candidate = _hand_pair()
    with pytest.raises(DataError, match="a/1.png twice on 2026-01-01"):
        paired_counts_pandas(pd.concat([production, production.iloc[:1]]), candidate)
    candidate.loc[0, "label"] = "b"
    with pytest.raises(DataError, match="disagree on the truth label"):
        paired_counts_pandas(production, candidate)


@pytest.mark.parametrize("b, c", [(0, 0), (0, 5), (3, 9), (9, 3), (7, 7), (1, 20), (40, 61), (150, 100)])
def test_exact_mcnemar_equals_scipy_binomtest(b: int, c: int) -> None:
    if b + c == 0:
        assert mcnemar_exact_p([b], [c])[0] == 1.0
        return
    assert mcnemar_exact_p([b], [c])[0] == pytest.approx(stats.binomtest(c, b + c, 0.5).pvalue, rel=1e-9)
    assert one_sided_p([c], [b + c])[0] == pytest.approx(
        stats.binomtest(c, b + c, 0.5, alternative="greater").pvalue, rel=1e-9
    )
    assert one_sided_p([b], [b + c])[0] == pytest.approx(
        stats.binomtest(c, b + c, 0.5, alternative="less").pvalue, rel=1e-9
    )


def test_mcnemar_on_the_hand_table() -> None:
    # Class a: b = 1, c = 2 -> P(X <= 1 | Bin(3, 1/2)) * 2 = 2 * 4/8 = 1.0; one-sided better: P(X >= 2) = 4/8.
    table = compare_classes(pd.DataFrame(HAND_TABLE), flagged=["a"])
    a = table.set_index("label").loc["a"]
    assert a["p_mcnemar"] == 1.0
    assert a["p_better"] == pytest.approx(0.5)
    assert a["difference"] == pytest.approx((2 - 1) / 6)
    assert a["production_accuracy"] == pytest.approx(3 / 6) and a["candidate_accuracy"] == pytest.approx(4 / 6)


def test_holm_equals_statsmodels_and_a_hand_example() -> None:
    from statsmodels.stats.multitest import multipletests

    # Hand: p = (0.01, 0.04, 0.03) -> sorted 0.01*3, 0.03*2, 0.04*1 -> step-down maxima 0.03, 0.06, 0.06.
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    rng = np.random.default_rng(5)
    for size in (1, 2, 7, 100):
        p = np.concatenate([rng.uniform(size=size) ** 3, [0.5] * (size // 3)])  # ties included
        assert holm(p) == pytest.approx(multipletests(p, method="holm")[1], abs=1e-12)
    assert holm([]).size == 0


def test_agresti_min_interval_by_hand_and_its_coverage_by_simulation() -> None:
    # Hand: table (50, 5, 15, 30) + 1/2 each -> n = 102, b = 5.5, c = 15.5, d = 10/102,
    # var = (21 - 100/102) / 102^2, 95% half-width 1.959964 * sqrt(var).
    low, high = paired_difference_ci(np.array([[50, 5, 15, 30]]))
    d, half = 10 / 102, 1.959964 * np.sqrt((21 - 100 / 102) / 102**2)
    assert (low[0], high[0]) == pytest.approx((d - half, d + half), abs=1e-6)
    # Coverage by Monte Carlo: cells probabilities (0.7, 0.05, 0.1, 0.15), n = 140, true difference 0.05.
    rng = np.random.default_rng(3)
    tables = rng.multinomial(140, [0.7, 0.05, 0.1, 0.15], size=20_000)
    low, high = paired_difference_ci(tables)
    coverage = np.mean((low <= 0.05) & (0.05 <= high))
    assert 0.935 <= coverage <= 0.965


def _counts(rows: dict[str, tuple[int, int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"label": k, "both_right": v[0], "only_production": v[1], "only_candidate": v[2], "both_wrong": v[3]}
            for k, v in rows.items()
        ]
    )


def _judge(counts: pd.DataFrame, flagged: list[str], *, days: int = 14, margin: float = 0.02, min_samples: int = 1):
    table = compare_classes(counts, flagged=flagged, alpha=0.05, margin=margin)
    return judge(
        table,
        production="p@1",
        candidate="c@2",
        start="2026-01-01",
        end="2026-01-14",
        days=days,
        alpha=0.05,
        margin=margin,
        min_samples=min_samples,
    )


def test_promote_when_every_flagged_class_improves_and_none_is_worse() -> None:
    verdict = _judge(_counts({"3": (100, 1, 20, 19), "5": (120, 3, 2, 15), "7": (130, 2, 3, 5)}), ["3"])
    assert verdict.verdict == PROMOTE and verdict.improved == ["3"] and verdict.worse == []


def test_reject_names_the_classes_that_got_worse() -> None:
    verdict = _judge(_counts({"3": (100, 1, 20, 19), "5": (100, 25, 1, 14), "7": (130, 2, 3, 5)}), ["3"])
    assert verdict.verdict == REJECT and verdict.worse == ["5"]
    assert "5 (-0.171" in verdict.reason


def test_a_significant_drop_within_the_margin_is_not_worse() -> None:
    # 1000 images, 30 vs 5 discordant: significant, but the drop is 0.025 < a 0.03 margin.
    counts = _counts({"5": (900, 30, 5, 65)})
    assert compare_classes(counts, alpha=0.05, margin=0.0)["worse"].item()
    assert not compare_classes(counts, alpha=0.05, margin=0.03)["worse"].item()


def test_worse_is_judged_after_holm_over_all_classes() -> None:
    # One class at one-sided p = P(X >= 8 | Bin(9, 1/2)) = 10/512 ~ 0.0195: significant alone, not after Holm over 10 classes.
    rows = {f"{i}": (10, 0, 0, 0) for i in range(9)} | {"9": (10, 8, 1, 0)}
    table = compare_classes(_counts(rows), alpha=0.05, margin=0.0)
    assert table.set_index("label").loc["9", "p_worse"] == pytest.approx(10 / 512)
    assert not table["worse"].any()


def test_insufficient_data_says_how_many_more_days_at_the_observed_rate() -> None:
    # Flagged class: 3 discordant pairs over 7 days, all for the candidate: not yet significant (p = 1/8).
    verdict = _judge(_counts({"3": (60, 0, 3, 7), "5": (65, 2, 1, 2)}), ["3"], days=7)
    assert verdict.verdict == INSUFFICIENT
    expected = days_still_needed(0, 3, 7, 0.05)
    assert verdict.pending == {"3": expected} and verdict.days_more == expected
    # By hand: all discordant pairs favour the candidate -> 5 pairs are needed (1/32 < 0.05, power 1); 3 in 7 days -> 12 days, 5 more.
    assert discordant_needed(1.0, 0.05) == 5 and expected == 5


def test_days_needed_matches_a_monte_carlo_power_estimate() -> None:
    # At a 70/30 split, the exact one-sided test needs m discordant pairs for 80% power: check by simulation.
    m = discordant_needed(0.7, 0.05)
    assert m is not None
    rng = np.random.default_rng(11)
    successes = rng.binomial(m, 0.7, size=20_000)
    power = np.mean([stats.binomtest(int(k), m, 0.5, alternative="greater").pvalue < 0.05 for k in successes[:4000]])
    assert power >= 0.78
    # One pair fewer falls short (the exact test's power is saw-toothed; the minimum m is the first to reach 80%).
    assert discordant_needed(0.7, 0.05, limit=m - 1) is None


def test_a_flagged_class_where_the_candidate_is_not_ahead_has_no_day_estimate() -> None:
    verdict = _judge(_counts({"3": (60, 4, 2, 4)}), ["3"])
    assert verdict.verdict == INSUFFICIENT and verdict.pending == {"3": None} and verdict.days_more is None


def test_thin_classes_keep_the_verdict_at_insufficient_data() -> None:
    verdict = _judge(_counts({"3": (5, 0, 0, 0)}), [], min_samples=20)
    assert verdict.verdict == INSUFFICIENT and "fewer than 20" in verdict.reason


def test_compare_refuses_a_table_without_the_counts() -> None:
    with pytest.raises(DataError, match="only_candidate"):
        compare_classes(pd.DataFrame({"label": ["a"], "both_right": [1], "only_production": [0], "both_wrong": [0]}))


def test_discordant_images_are_the_pairs_one_model_got_right_taking_the_classes_in_turn() -> None:
    from monitor.domain.compare import discordant_images

    production, candidate = _hand_pair()
    frame = discordant_images(production, candidate)
    # By hand: a/3 (production right), a/4 and a/5 (candidate right), b/1 (candidate right); b/2 failed for production.
    assert frame[["image_path", "right"]].values.tolist() == [
        ["a/3.png", "production"],
        ["b/1.png", "candidate"],
        ["a/4.png", "candidate"],
        ["a/5.png", "candidate"],
    ]
    assert frame.iloc[0][["production_pred", "candidate_pred"]].tolist() == ["a", "c"]
    assert len(discordant_images(production, candidate, limit=2)) == 2


# --- the verdict at its boundaries (issue 22: a slip here promotes a candidate that should wait) -------------


def test_a_flagged_class_significantly_worse_within_the_margin_waits_and_is_neither_promoted_nor_rejected() -> None:
    # 1000 images, 30 vs 5 discordant: the candidate is significantly worse on the flagged class (two-sided p ~ 2e-5),
    # by 0.025, inside a 0.03 margin. Not worse (the margin), not improved (it went the wrong way): it waits.
    counts = _counts({"3": (900, 30, 5, 65), "5": (120, 2, 2, 16)})
    verdict = _judge(counts, ["3"], margin=0.03)
    assert verdict.verdict == INSUFFICIENT
    assert (verdict.improved, verdict.worse, verdict.flagged) == ([], [], ["3"])
    assert verdict.pending == {"3": None} and verdict.days_more is None
    assert "3 (not ahead yet)" in verdict.reason
    three = next(row for row in verdict.classes if row["label"] == "3")
    assert three["p_mcnemar"] < 0.001 and three["p_better"] > 0.99 and three["p_worse_holm"] < 0.05
    # Without the margin the same table rejects: the margin alone keeps it from "worse".
    assert _judge(counts, ["3"], margin=0.0).verdict == REJECT


@pytest.mark.parametrize("margin, verdict", [(0.025, INSUFFICIENT), (0.0249, REJECT)])
def test_worse_needs_a_drop_of_more_than_the_margin_not_equal_to_it(margin: float, verdict: str) -> None:
    # A drop of exactly 25/1000 = 0.025: "more than the margin" is strict.
    counts = _counts({"3": (900, 30, 5, 65)})
    assert _judge(counts, ["3"], margin=margin).verdict == verdict


def test_improved_is_one_sided_a_flagged_class_promotes_at_p_better_below_alpha_though_two_sided_p_is_above() -> None:
    # 5 discordant pairs, all for the candidate: one-sided p = 1/32 < 0.05 < two-sided p = 1/16.
    verdict = _judge(_counts({"3": (50, 0, 5, 5), "5": (60, 1, 1, 8)}), ["3"])
    three = next(row for row in verdict.classes if row["label"] == "3")
    assert (three["p_better"], three["p_mcnemar"]) == (pytest.approx(1 / 32), pytest.approx(1 / 16))
    assert verdict.verdict == PROMOTE and verdict.improved == ["3"] and verdict.pending == {}


def test_every_flagged_class_is_judged_at_alpha_unadjusted_intersection_union() -> None:
    # Three flagged classes, each at one-sided p = 1/32: each improved at 0.05 (no Holm or Bonferroni on "improved").
    verdict = _judge(_counts({label: (50, 0, 5, 5) for label in ("3", "5", "7")}), ["3", "5", "7"])
    assert verdict.verdict == PROMOTE and verdict.improved == ["3", "5", "7"]


def test_one_flagged_class_short_of_evidence_keeps_the_candidate_waiting_though_the_others_improved() -> None:
    verdict = _judge(_counts({"3": (50, 0, 5, 5), "5": (50, 0, 4, 6), "7": (50, 0, 5, 5)}), ["3", "5", "7"])
    # Class 5: 4 of 4 discordant for the candidate, p = 1/16: not yet.
    assert verdict.verdict == INSUFFICIENT and verdict.improved == ["3", "7"] and list(verdict.pending) == ["5"]


def test_worse_is_one_sided_a_class_at_p_worse_below_alpha_rejects_though_two_sided_p_is_above() -> None:
    # One class (Holm over one is the p-value itself): 5 discordant pairs, all for production, one-sided p = 1/32 < 0.05
    # < two-sided 1/16; a drop of 5/60, past a 0.02 margin. No class is flagged, so a slip here would promote.
    verdict = _judge(_counts({"5": (50, 5, 0, 5)}), [])
    assert verdict.verdict == REJECT and verdict.worse == ["5"]


@pytest.mark.parametrize("side", ["improved", "worse"])
def test_a_p_value_equal_to_alpha_is_not_significant(side: str) -> None:
    # alpha = 1/32 exactly, and the one-sided p-value of 5 of 5 discordant pairs is exactly 1/32 (one class: Holm
    # leaves it as it is): "below alpha" is strict.
    label, flagged = ("3", ["3"]) if side == "improved" else ("5", [])
    table = _counts({label: (50, 0, 5, 5)} if side == "improved" else {label: (50, 5, 0, 5)})
    alpha = 1 / 32
    at = compare_classes(table, flagged=flagged, alpha=alpha, margin=0.0)
    row = at.set_index("label").loc[label]
    assert row["p_better" if side == "improved" else "p_worse_holm"] == alpha
    assert not row[side]
    verdict = judge(
        at, production="p@1", candidate="c@2", start="2026-01-01", end="2026-01-14", days=14, alpha=alpha, margin=0.0
    )
    assert verdict.verdict == (INSUFFICIENT if side == "improved" else PROMOTE)
    # A hair above, the same table is significant.
    assert compare_classes(table, flagged=flagged, alpha=alpha * 1.001, margin=0.0).set_index("label").loc[label, side]


def test_a_class_without_paired_images_has_no_accuracies_and_the_verdict_records_its_inputs() -> None:
    verdict = _judge(_counts({"3": (50, 0, 5, 5), "9": (0, 0, 0, 0), "1": (1, 0, 0, 0)}), ["3"])
    rows = {row["label"]: row for row in verdict.classes}
    assert (rows["9"]["production_accuracy"], rows["9"]["candidate_accuracy"], rows["9"]["difference"]) == (
        None,
        None,
        None,
    )
    assert (rows["1"]["production_accuracy"], rows["1"]["candidate_accuracy"]) == (
        1.0,
        1.0,
    )  # n = 1 is a class with images
    record = verdict.to_dict()
    assert {k: record[k] for k in ("production", "candidate", "start", "end", "days", "alpha", "margin")} == {
        "production": "p@1",
        "candidate": "c@2",
        "start": "2026-01-01",
        "end": "2026-01-14",
        "days": 14,
        "alpha": 0.05,
        "margin": 0.02,
    }
    # The flagged class improved, but a class without a paired image keeps the candidate waiting.
    assert (record["verdict"], record["reason"]) == (INSUFFICIENT, "1 class(es) have fewer than 1 paired images")


@pytest.mark.parametrize(
    "counts, alpha, message",
    [
        (
            pd.DataFrame({"label": ["a"], "both_right": [1]}),
            0.05,
            r"lack the column\(s\) only_production, only_candidate, both_wrong$",
        ),
        (_counts({"a": (1, -1, 0, 0)}), 0.05, "^paired counts must not be negative$"),
        (_counts({"a": (1, 0, 0, 0)}), 0.0, "^alpha = 0.0 is not between 0 and 1$"),
        (_counts({"a": (1, 0, 0, 0)}), 1.0, "^alpha = 1.0 is not between 0 and 1$"),
    ],
)
def test_compare_refuses_bad_counts_and_alpha_naming_what_is_wrong(
    counts: pd.DataFrame, alpha: float, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        compare_classes(counts, alpha=alpha)


def test_a_rejection_names_each_worse_class_with_its_drop_and_discordant_counts() -> None:
    verdict = _judge(_counts({"5": (50, 9, 0, 5), "6": (50, 9, 1, 5)}), [])
    assert verdict.verdict == REJECT and verdict.worse == ["5", "6"]
    assert verdict.reason == (
        "2 class(es) got significantly worse by more than 0.020: 5 (-0.141, 9 vs 0 discordant), 6 (-0.123, 9 vs 1 discordant)"
    )


# --- the whole comparison from count rows, and its record (what is printed and stored) -------------------------


def test_compare_counts_judges_the_pooled_days_and_records_the_unpaired_images() -> None:
    from monitor.domain.compare import compare_counts

    result = compare_counts(
        HAND_TABLE,
        production="p@1",
        candidate="c@2",
        days=["2026-01-01", "2026-01-02"],
        flagged=["b"],
        alpha=0.05,
        margin=0.0,
        confidence=0.95,
        min_samples=1,
    )
    assert (result.start, result.end, result.days) == ("2026-01-01", "2026-01-02", 2)
    assert result.unpaired == {"b": 1, "c": 1}
    assert [row["label"] for row in result.classes] == ["a", "b", "c", "d"]
    # b is flagged with one discordant image, the candidate's (p_better 0.5): not yet improved. At that rate and
    # direction the one-sided test needs 5 discordant pairs (0.5^5 < 0.05): 10 days, 8 more than the 2 pooled.
    assert result.verdict == INSUFFICIENT and result.pending == {"b": 8} and result.flagged == ["b"]


def test_the_record_holds_plain_values_and_the_gallery_only_when_one_was_made() -> None:
    import json

    from monitor.domain.compare import discordant_images, gallery

    verdict = _judge(_counts({"3": (50, 0, 9, 5)}), ["3"])
    record = verdict.to_dict()
    assert type(record["verdict"]) is str and record["verdict"] == "promote"
    assert "discordant" not in record and record["unpaired"] == {}
    assert json.loads(json.dumps(record)) == record
    verdict.discordant = gallery(discordant_images(*_hand_pair(), limit=2))
    shown = verdict.to_dict()["discordant"]
    assert shown == [
        {
            "date": "2026-01-01",
            "image_path": "a/3.png",
            "label": "a",
            "production_pred": "a",
            "candidate_pred": "c",
            "right": "production",
        },
        {
            "date": "2026-01-02",
            "image_path": "b/1.png",
            "label": "b",
            "production_pred": "a",
            "candidate_pred": "b",
            "right": "candidate",
        },
    ]
    assert all(type(value) is str for row in shown for value in row.values())


# --- the compare stage: prediction files in, a stored comparison out (pandas counts, no JVM) ---------------


def _stage_world(tmp_path):
    """Two days of the hand pair as files (a third day of production only, and files that are not a day's), class b flagged."""
    from evaluation.predictions import PredictionFiles, predictions_frame
    from monitor.core.artifacts import artifacts_for
    from monitor.core.settings import Settings
    from monitor.store import open_store

    settings = Settings(data_dir=tmp_path / "data", source_uri=str(tmp_path))
    files = PredictionFiles(artifacts_for(settings))
    production, candidate = _hand_pair()
    for frame, model_id, path in (
        (production, "prod@1", files.production),
        (candidate, "cand@2", lambda day: files.candidate(day, "cand@2")),
    ):
        for day, rows in frame.groupby("date"):
            records = [
                {
                    **row,
                    "model_id": model_id,
                    "confidence": 0.9 if row["status"] == "ok" else None,
                    "topk_labels": [],
                    "topk_scores": [],
                    "error": None if row["status"] == "ok" else "unreadable",
                }
                for row in rows.to_dict(orient="records")
            ]
            files.write(predictions_frame(records), path(str(day)))
    files.write(predictions_frame([]), files.production("2026-01-03"))
    (settings.predictions_dir / "notes.parquet").write_bytes(b"not a day")
    (settings.predictions_dir / "candidates" / "cand@2" / ".2026-01-04.parquet.tmp1").write_bytes(
        b"a writer's temporary file"
    )
    with open_store(settings) as store:
        store.replace_day(
            "class_health",
            "prod@1",
            "2026-01-01",
            [{"label": "a", "verdict": "healthy"}, {"label": "b", "verdict": "needs_retraining"}],
        )
    return settings, files


def test_prediction_files_name_each_models_day_and_list_only_days(tmp_path) -> None:
    settings, files = _stage_world(tmp_path)
    assert files.location(files.production("2026-01-01")) == str(settings.predictions_dir / "2026-01-01.parquet")
    assert files.location(files.candidate("2026-01-01", "cand/x@2")) == str(
        settings.predictions_dir / "candidates" / "cand_x@2" / "2026-01-01.parquet"
    )
    assert files.dates() == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert files.dates("cand@2") == ["2026-01-01", "2026-01-02"] and files.dates("other@3") == []
    assert files.candidates() == ["cand@2"]


def test_the_stage_resolves_a_candidate_by_name_and_pairs_only_the_days_both_models_have(tmp_path) -> None:
    from monitor.orchestration.compare_stage import paired_predictions, resolve_candidate

    _, files = _stage_world(tmp_path)
    assert resolve_candidate(files, "cand") == resolve_candidate(files, "cand@2") == "cand@2"
    with pytest.raises(DataError, match=r"^no candidate 'nope' has predictions; known: cand@2$"):
        resolve_candidate(files, "nope")
    production, candidate, days = paired_predictions(files, "cand@2", None, dt.date(2026, 1, 3))
    assert days == ["2026-01-01", "2026-01-02"] and len(production) == 8 and len(candidate) == 9
    assert paired_predictions(files, "cand@2", dt.date(2026, 1, 2), dt.date(2026, 1, 3))[2] == ["2026-01-02"]
    with pytest.raises(DataError, match="no predictions of the same day between 2026-01-03 and 2026-01-03"):
        paired_predictions(files, "cand@2", dt.date(2026, 1, 3), dt.date(2026, 1, 3))


def test_run_compare_stores_one_comparison_per_candidate_and_date_and_a_rerun_replaces_it(tmp_path) -> None:
    from evaluation.metrics import paired_counts_pandas
    from monitor.orchestration.compare_stage import GALLERY_SIZE, run_compare
    from monitor.store import open_store

    settings, _ = _stage_world(tmp_path)
    result = run_compare(settings, "2026-01-02", engine="pandas")
    (summary,) = result["comparisons"]
    assert result["date"] == "2026-01-02" and result["ready"] == []
    assert "classes" not in summary and "discordant" not in summary
    assert (summary["candidate"], summary["production"], summary["flagged"], summary["days"]) == (
        "cand@2",
        "prod@1",
        ["b"],
        2,
    )
    run_compare(settings, "2026-01-02", engine="pandas")  # a re-run of the date
    run_compare(settings, "2026-01-01", engine="pandas")
    with open_store(settings, read_only=True) as store:
        assert store.counts()["comparisons"] == 2
        first, second = store.comparisons("cand@2")
        assert store.comparisons("cand@2", start="2026-01-02") == [second] and store.comparisons("other@3") == []
    assert (first["date"], first["end"], second["date"], second["end"]) == (
        "2026-01-01",
        "2026-01-01",
        "2026-01-02",
        "2026-01-02",
    )
    # What is stored is the whole comparison: the summary, the per-class rows of the pooled counts, the gallery.
    assert {k: second[k] for k in summary} == summary
    reference = paired_counts_pandas(*_hand_pair())
    assert [
        {k: row[k] for k in ("label", "both_right", "only_production", "only_candidate", "both_wrong")}
        for row in second["classes"]
    ] == [
        {k: row[k] for k in ("label", "both_right", "only_production", "only_candidate", "both_wrong")}
        for row in reference
    ]
    assert [row["image_path"] for row in second["discordant"]] == [
        "a/3.png",
        "b/1.png",
        "a/4.png",
        "a/5.png",
    ] and GALLERY_SIZE >= 4


def test_the_calculator_does_no_io_and_the_stage_and_the_dashboard_read_what_is_stored() -> None:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "import_graph_compare", Path(__file__).resolve().parents[2] / "scripts" / "import_graph.py"
    )
    assert spec is not None and spec.loader is not None
    graph = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graph)
    edges = graph.imports(graph.modules())
    io = {
        "monitor.store",
        "monitor.core.settings",
        "monitor.core.files",
        "evaluation.predictions",
        "evaluation.metrics",
        "evaluation.spark",
    }
    assert edges["monitor.domain.compare"] and not edges["monitor.domain.compare"] & io
    assert {"monitor.store", "evaluation.predictions", "evaluation.metrics", "monitor.domain.compare"} <= edges[
        "monitor.orchestration.compare_stage"
    ]
    # The dashboard counts nothing: no paired counts, no Spark, no stage.
    dashboard = set().union(*(targets for name, targets in edges.items() if name.startswith("dashboards")))
    assert not dashboard & {"evaluation.metrics", "evaluation.spark", "monitor.orchestration.compare_stage"}
