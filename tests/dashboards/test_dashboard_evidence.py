"""The class page's evidence card: what a verdict is about, the images evaluated once, and the measured figures read, not hard-coded."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dashboards.pages.class_health import FIGURES_FILE, VERDICT_SCOPE, evidence_card, health_figures


def _text(component: object) -> str:
    """Every string inside a Dash component tree."""
    if isinstance(component, str):
        return component
    children = getattr(component, "children", None)
    if isinstance(children, (list, tuple)):
        return " ".join(_text(child) for child in children)
    return _text(children) if children is not None else ""


def test_the_figures_come_from_what_bench_health_saved_and_are_absent_without_it(tmp_path: Path) -> None:
    saved = tmp_path / "figures.json"
    saved.write_text(json.dumps({"sentence": "Measured by benchmarks/bench_health.py: flagged in a median 4 days."}))
    assert health_figures(saved) == "Measured by benchmarks/bench_health.py: flagged in a median 4 days."
    assert health_figures(tmp_path / "missing.json") == ""
    (tmp_path / "bad.json").write_text("{not json")
    assert health_figures(tmp_path / "bad.json") == ""
    shipped = json.loads(FIGURES_FILE.read_text())  # the repo's own file, written by the benchmark
    assert (
        shipped["sentence"].startswith("Measured by benchmarks/bench_health.py")
        and shipped["figures"]["drop_0.75_median"] > 0
    )


def test_the_evidence_card_says_what_the_verdict_is_about_and_shows_the_images_evaluated_once() -> None:
    status = pd.DataFrame(
        [
            {
                "label": "eight",
                "verdict": "needs_retraining",
                "date": "2026-11-20",
                "since": "2026-11-18",
                "window_days": 14,
                "window_start": "2026-11-07",
                "pooled_accuracy": 0.7,
                "pooled_correct": 70,
                "pooled_n": 100,
                "ci_low": 0.6,
                "ci_high": 0.78,
                "target": 0.9,
                "prob_below_target": 1.0,
                "cusum": 9.0,
                "cusum_threshold": 6.1,
                "collapse": 1.0,
                "collapse_threshold": 9.0,
                "recovery": 0.5,
                "recovery_threshold": 4.5,
                "followup": 60,
                "evaluated_n": 200,
                "evaluated_correct": 150,
                "evaluated_ci_low": 0.69,
                "evaluated_ci_high": 0.8,
                "unseen_left": 0,
                "method": "m",
                "reason": "Nothing new to evaluate today",
            }
        ]
    ).set_index("label")
    text = _text(evidence_card("eight", status, 0.95))
    assert VERDICT_SCOPE in text and health_figures() in text
    assert "images evaluated, each once / not yet" in text and "200 / 0" in text
    assert "0.750" in text or "0.75" in text  # accuracy on them: 150 / 200
    assert "above its target" in text


def test_the_figures_are_shown_only_where_they_were_measured_and_the_difference_is_said_otherwise(
    tmp_path: Path,
) -> None:
    from monitor.core.settings import Settings

    saved = tmp_path / "figures.json"
    saved.write_text(
        json.dumps(
            {
                "sentence": "Flagged in a median 4 days.",
                "classes": 15,
                "settings": {"target_accuracy": 0.9, "samples_per_class": 10},
            }
        )
    )
    defaults = Settings(data_dir=tmp_path)
    assert health_figures(saved, settings=defaults, classes=15, target=0.9) == "Flagged in a median 4 days."
    other = health_figures(
        saved, settings=defaults.model_copy(update={"samples_per_class": 5}), classes=1000, target=0.8
    )
    assert "median 4 days" not in other
    assert "1000 classes (measured with 15" in other and "target_accuracy 0.8 (measured at 0.9)" in other
    assert "samples_per_class 5 (measured at 10)" in other and "bench_health.py --save" in other
