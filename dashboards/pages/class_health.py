"""The class health page (``/class``): each chosen class over time, the evidence behind its verdict, and its alerts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from dash import dcc, html

from dashboards import ids
from dashboards.components import badge, card, fmt_acc, fmt_ci, fmt_num, notices, summary_line, table
from dashboards.data import DashboardData
from dashboards.figures import timeseries_figure
from dashboards.view import View, latest_status, worst_first
from monitor.core.verdicts import Verdict

if TYPE_CHECKING:
    from monitor.core.settings import Settings

#: The health figures ``benchmarks/bench_health.py --save`` measured (a sentence and the numbers, with machine and date).
FIGURES_FILE = Path(__file__).resolve().parents[2] / "docs" / "health-figures.json"
#: Classes drawn at once (one figure each).
MAX_CLASS_FIGURES = 6

#: What each verdict means, in plain words (monitor/domain/health.py; the figures: README, "How class health is judged").
VERDICT_MEANING: dict[Verdict, str] = {
    Verdict.NEEDS_RETRAINING: (
        "The evidence says this class is below its target and has not come back. It draws follow-up images every day; "
        "the flag clears only when the evidence says the class is above its target, so a class that stays below stays flagged."
    ),
    Verdict.WATCH: "The evidence leans towards a drop below target: tomorrow's sample draws extra (follow-up) images of this class to settle it.",
    Verdict.HEALTHY: "No evidence of a drop below the target.",
    Verdict.INSUFFICIENT_DATA: "Too few images of this class evaluated so far to judge it.",
}
#: What every verdict is about: the model's accuracy on images like those in the bucket, each image counted once.
VERDICT_SCOPE = (
    "Each image counts once per model: the verdict is about the class's accuracy on images like those in the bucket, "
    "and a class with nothing new to evaluate keeps its verdict until new images arrive."
)


def _share(correct: Any, n: Any) -> str:
    try:
        return fmt_acc(float(correct) / float(n)) if n and float(n) > 0 else "–"
    except (TypeError, ValueError):
        return "–"


def health_figures(
    path: Path = FIGURES_FILE,
    *,
    settings: Settings | None = None,
    classes: int | None = None,
    target: float | None = None,
) -> str:
    """The measured behaviour that ``benchmarks/bench_health.py --save`` wrote, when it applies (nothing when absent).

    The figures hold for the settings and class count they were measured under: given ``settings`` (and the
    model's ``classes``, the class's ``target``), a difference is said instead of figures that would not be true here.
    """
    try:
        figures = json.loads(path.read_text(encoding="utf-8")) if path.stat().st_size < 65_536 else {}
    except (OSError, ValueError):
        return ""
    if not isinstance(figures, dict):
        return ""
    sentence = str(figures.get("sentence") or "")
    if not sentence or settings is None:
        return sentence
    recorded = figures.get("settings")
    measured: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    ours = {name: getattr(settings, name, None) for name in measured}
    if target is not None and "target_accuracy" in ours:
        ours["target_accuracy"] = target
    differ = [f"{name} {ours[name]} (measured at {value})" for name, value in measured.items() if ours[name] != value]
    if classes is not None and isinstance(figures.get("classes"), int) and classes != figures["classes"]:
        differ.insert(0, f"{classes} classes (measured with {figures['classes']}; false alarms grow with the count)")
    if not differ:
        return sentence
    return (
        f"How fast a drop is caught here is not measured: this model is judged with {'; '.join(differ[:3])}. "
        "Run `benchmarks/bench_health.py --save` with these settings to measure it."
    )


def evidence_card(label: str, status: pd.DataFrame, level: float, figures: str | None = None) -> html.Div:
    """The latest verdict of ``label`` with every number behind it, what the verdict means, and ``figures`` (the measured
    behaviour that applies to it, :func:`health_figures`; the saved sentence when not given)."""
    if label not in status.index:
        return html.Div([html.B(label), ": no health verdict yet."], className="muted")
    row = status.loc[label]
    flagged = row.get("verdict") == Verdict.NEEDS_RETRAINING
    facts: list[tuple[str, Any]] = [
        ("verdict", badge(row["verdict"])),
        ("since", str(row.get("since") or "–")),
        ("as of", str(row.get("date"))),
        (
            f"pooled over {row.get('window_days')} days from {row.get('window_start')}",
            f"{fmt_acc(row.get('pooled_accuracy'))} ({fmt_num(row.get('pooled_correct'), 0)}/{fmt_num(row.get('pooled_n'), 0)})",
        ),
        (f"{level:.0%} CI", fmt_ci(row.get("ci_low"), row.get("ci_high"))),
        ("target", fmt_acc(row.get("target"))),
        ("P(below target)", fmt_num(row.get("prob_below_target"))),
        (
            "evidence of a drop (CUSUM) / flags at",
            f"{fmt_num(row.get('cusum'))} / {fmt_num(row.get('cusum_threshold'))}",
        ),
        ("collapse test / flags at", f"{fmt_num(row.get('collapse'))} / {fmt_num(row.get('collapse_threshold'))}"),
        *(
            [
                (
                    "evidence of recovery / clears at",
                    f"{fmt_num(row.get('recovery'))} / {fmt_num(row.get('recovery_threshold'))}",
                )
            ]
            if flagged
            else []
        ),
        (
            "images evaluated, each once / not yet",
            f"{fmt_num(row.get('evaluated_n'), 0)} / {fmt_num(row.get('unseen_left'), 0)}",
        ),
        (
            "accuracy on them",
            f"{_share(row.get('evaluated_correct'), row.get('evaluated_n'))} {fmt_ci(row.get('evaluated_ci_low'), row.get('evaluated_ci_high'))}",
        ),
        ("follow-up images tomorrow", fmt_num(row.get("followup"), 0)),
        ("method", str(row.get("method") or "–")),
    ]
    return html.Div(
        [
            html.Div(
                [html.Span(name + ": ", className="muted"), value],
                style={"display": "inline-block", "marginRight": "18px"},
            )
            for name, value in facts
        ]
        + [
            html.P(str(row.get("reason") or ""), className="reason"),
            html.P(
                [
                    VERDICT_MEANING.get(row.get("verdict"), ""),
                    " ",
                    html.Span(
                        f"{VERDICT_SCOPE} {health_figures() if figures is None else figures}".strip(),
                        className="muted",
                    ),
                ],
                className="meaning",
            ),
        ],
        id=f"{ids.CLASS_EVIDENCE}-{label}",
        className="evidence",
    )


def class_page(data: DashboardData, view: View) -> list[Any]:
    """For each chosen class (default: the most urgent one), its health over time and the evidence of its verdict."""
    model_id = view.model.model_id
    health_all, status = latest_status(data, view, list(view.chosen) or None)
    messages: list[str] = []
    if view.chosen:
        labels = list(view.chosen)
    else:
        labels = worst_first(data, view, status)[:1]
        messages.append(
            f"Showing the most urgent class, {labels[0]}; choose classes in the filter above."
            if labels
            else "No classes."
        )
    if len(labels) > MAX_CLASS_FIGURES:
        messages.append(f"Showing the first {MAX_CLASS_FIGURES} of {len(labels)} chosen classes.")
        labels = labels[:MAX_CLASS_FIGURES]
    grain = view.grain(auto="day")
    metrics = data.metrics(model_id, view.start, view.end, labels)
    health = health_all[(health_all["label"].isin(labels)) & (health_all["date"] >= view.start)]
    alerts = data.alerts(model_id, view.start, view.end, labels)
    blocks: list[Any] = []
    for i, label in enumerate(labels):
        figure = timeseries_figure(
            label,
            metrics[metrics["label"] == label],
            health[health["label"] == label],
            level=view.level,
            target=data.settings.target_for(label),
            grain=grain,
        )
        attrs: dict[str, Any] = {"data-label": label}
        blocks.append(
            html.Div(
                [
                    dcc.Graph(id=f"{ids.CLASS_TIMESERIES}-{i}", figure=figure, config={"displayModeBar": False}),
                    evidence_card(
                        label,
                        status,
                        view.level,
                        health_figures(
                            settings=data.settings,
                            classes=len(data.labels(model_id)),
                            target=data.settings.target_for(label),
                        ),
                    ),
                ],
                className="card class-block",
                **attrs,
            )
        )
    alert_rows = [
        [
            str(a["date"]),
            str(a["label"]),
            str(a["kind"]).replace("_", " "),
            "yes" if a.get("delivered") else "pending",
            str(a.get("message") or ""),
        ]
        for a in alerts.to_dict("records")
    ]
    return [
        summary_line(view, grain),
        notices(messages),
        html.Div(blocks, id=ids.CLASS_TIMESERIES),
        card(
            "Alerts in this range",
            table(["date", "class", "kind", "delivered", "message"], alert_rows, export="alerts")
            if alert_rows
            else html.P("No alerts.", className="muted"),
            id=ids.CLASS_ALERTS,
        ),
    ]
