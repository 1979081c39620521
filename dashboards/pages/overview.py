"""The overview page (``/``): a class x period heatmap, paged and sorted, verdict counts, and the flagged classes with their evidence."""

from __future__ import annotations

from typing import Any

import pandas as pd
from dash import dcc, html

from dashboards import ids
from dashboards.components import badge, card, fmt_acc, fmt_ci, fmt_num, radio, summary_line, table, verdict_count
from dashboards.data import DashboardData
from dashboards.figures import heatmap_figure
from dashboards.pooling import auto_grain, pool_by_period, range_periods, range_pooled_accuracy
from dashboards.state import clamp_page, href
from dashboards.status import class_status, flagged_rows, rank_classes, verdict_counts
from dashboards.view import View

#: Classes per heatmap page: enough to see a pattern, few enough to read every label.
PAGE_SIZE = 30
#: Flagged classes listed on the page; the rest are counted, and all are in the list's CSV. Each row is ten Dash
#: components: 50 rows made the overview of 1,000 classes load in 2.0 s in Chromium, 10 rows in 0.9 s (bench_dashboard).
FLAGGED_SHOWN = 10


#: What a team does about a flagged class, in order, with the commands (README, "Comparing a candidate").
NEXT_STEPS: tuple[str, ...] = (
    "Retrain (or fine-tune) the model with more, and fresher, images of the flagged classes.",
    "Register the new model: `monitor candidate add /path/to/model` (or MONITOR_CANDIDATE_MODEL_DIRS).",
    "Let the daily runs predict it beside production on the same images (`monitor evaluate` does it).",
    "Compare: `monitor compare --candidate NAME`, or the Candidate page; promote when it says promote.",
    "Promote: point MONITOR_MODEL_DIR at the candidate; the flag clears once the evidence shows the class back above target.",
)


def _likelihood(p: Any) -> str:
    """P(below target) in words."""
    try:
        value = float(p)
    except (TypeError, ValueError):
        return "perhaps"
    if value >= 0.99:
        return "almost surely"
    if value >= 0.9:
        return "very likely"
    if value >= 0.5:
        return "more likely than not"
    return "possibly"


def plain_summary(label: str, row: Any) -> str:
    """One flagged class in plain words: how accurate it is, how sure, how many images say so, since when."""
    n, correct = row.get("pooled_n"), row.get("pooled_correct")
    images = (
        f" ({int(n) - int(correct)} of the last {int(n)} images wrong)"
        if pd.notna(n) and pd.notna(correct) and n
        else ""
    )
    since = f"; flagged since {row['since']}" if row.get("since") and pd.notna(row.get("since")) else ""
    return (
        f"{label}: about {fmt_acc(row.get('pooled_accuracy'))} right over the last {row.get('window_days') or '?'} days"
        f"{images}, {_likelihood(row.get('prob_below_target'))} below its target of {fmt_acc(row.get('target'))}{since}."
    )


def next_steps(status: pd.DataFrame, labels: list[str]) -> html.Div | None:
    """For the classes that need retraining: each in plain words, then what to do, with the commands."""
    needing = [
        label for label in labels if label in status.index and status.loc[label, "verdict"] == "needs_retraining"
    ]
    if not needing:
        return None
    return html.Div(
        [
            html.P(
                [html.B("What the evidence says. ")]
                + [plain_summary(name, status.loc[name]) + " " for name in needing[:5]]
            ),
            html.P(html.B("What to do next:")),
            html.Ol([html.Li(step) for step in NEXT_STEPS]),
        ],
        id=ids.NEXT_STEPS,
        className="notice",
    )


def first_verdict_hint(status: pd.DataFrame, min_samples: int, per_day: int, as_of: str) -> str | None:
    """When classes have no verdict yet (a new bucket): why, and about when the first verdicts come."""
    import datetime as dt
    import math

    waiting = status[status["verdict"] == "insufficient_data"] if "verdict" in status else status.iloc[0:0]
    if waiting.empty:
        return None
    pooled = pd.to_numeric(waiting.get("pooled_n"), errors="coerce").fillna(0)
    short = int(max(min_samples - int(pooled.max()), 0))
    days = math.ceil(short / per_day) if per_day > 0 else None
    when = (
        f" With {per_day} images a class a day, the first verdicts come in about {days} day(s), "
        f"around {dt.date.fromisoformat(as_of) + dt.timedelta(days=days)}."
        if days
        else ""
    )
    return (
        f"{len(waiting)} class(es) have no verdict yet: a class is judged once {min_samples} of its images are pooled "
        f"(the most pooled so far: {int(pooled.max())}).{when}"
    )


def flagged_list(status: pd.DataFrame, view: View, has_health: bool) -> html.Div:
    """Flagged classes with the evidence behind each verdict."""
    if not has_health:
        return card(
            "Flagged classes",
            html.P(
                "No health verdicts in this range: run the health step (`monitor health --date D`).", className="muted"
            ),
            id=ids.FLAGGED,
        )
    rows = flagged_rows(status, view.shown_labels)
    if rows.empty:
        return card(
            "Flagged classes", html.P(f"No class is flagged as of {view.end}.", className="muted"), id=ids.FLAGGED
        )
    every: list[list[Any]] = []
    for label, row in rows.iterrows():
        every.append(
            [
                str(label),
                badge(row["verdict"]),
                str(row.get("since") or "–"),
                fmt_acc(row.get("pooled_accuracy")),
                f"{int(row['pooled_correct'])}/{int(row['pooled_n'])}"
                if pd.notna(row.get("pooled_n")) and pd.notna(row.get("pooled_correct"))
                else "–",
                fmt_ci(row.get("ci_low"), row.get("ci_high")),
                fmt_acc(row.get("target")),
                fmt_num(row.get("prob_below_target")),
                str(row.get("reason") or ""),
            ]
        )
    shown = [
        [
            dcc.Link(
                cells[0], href=href(ids.PATH_CLASS, view.state, classes=(cells[0],), page=1), className="class-link"
            ),
            *cells[1:],
        ]
        for cells in every[:FLAGGED_SHOWN]
    ]
    more = len(every) - len(shown)
    return card(
        f"Flagged classes ({len(rows)}) as of {view.end}",
        html.Div(
            table(
                [
                    "class",
                    "verdict",
                    "since",
                    "pooled accuracy",
                    "correct/n",
                    f"{view.level:.0%} CI",
                    "target",
                    "P(below target)",
                    "evidence",
                ],
                shown,
                numeric=(3, 4, 5, 6, 7),
                export=f"flagged-classes-{view.end}",
                export_rows=every,
            ),
            className="scroll",
        ),
        html.P(
            f"…and {more} more, all in the table's CSV; or narrow the classes filter, or page through the heatmap.",
            className="muted",
        )
        if more > 0
        else None,
        next_steps(status, [str(label) for label in rows.index]),
        id=ids.FLAGGED,
    )


def overview_page(data: DashboardData, view: View) -> list[Any]:
    """Class x period heatmap (paged, sorted, aggregated), verdict counts and the flagged list."""
    state = view.state
    model_id = view.model.model_id
    chosen = list(view.chosen) or None
    grain = view.grain()
    health = data.health(model_id, None, view.end, chosen)
    # Pooling, the latest status and the ranking are the expensive part of a page; they only change with the store.
    key = (model_id, view.start, view.end, view.chosen, grain, view.level)
    status = data.memo(("status", *key), lambda: class_status(health, as_of=view.end))
    cells = data.memo(
        ("cells", *key), lambda: pool_by_period(data.metrics(model_id, view.start, view.end, chosen), grain, view.level)
    )
    range_accuracy = data.memo(
        ("range_accuracy", *key), lambda: range_pooled_accuracy(data.metrics(model_id, view.start, view.end, chosen))
    )
    ranked = data.memo(
        ("ranked", *key, state.sort), lambda: rank_classes(status, range_accuracy, view.shown_labels, state.sort)
    )
    has_health = data.memo(
        ("has_health", *key), lambda: not data.health(model_id, view.start, view.end, chosen).empty or not status.empty
    )
    page, pages = clamp_page(state.page, len(ranked), PAGE_SIZE)
    page_labels = ranked[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    periods = range_periods(view.start, view.end, grain)
    page_cells = cells[cells["label"].isin(page_labels)]
    page_health = None
    if state.color == "verdict":
        page_health = data.health(model_id, view.start, view.end, page_labels) if page_labels else health.iloc[0:0]
    figure = heatmap_figure(
        page_cells,
        page_labels,
        periods,
        color=state.color,
        grain=grain,
        level=view.level,
        verdicts=page_health,
        target=data.settings.target_accuracy,
    )
    controls = html.Div(
        [
            radio(ids.Q_COLOR, "Colour by", [("accuracy", "accuracy"), ("verdict", "verdict")], state.color),
            radio(
                ids.Q_GRAIN,
                "Per",
                [
                    ("auto", f"auto ({auto_grain(view.start, view.end)})"),
                    ("day", "day"),
                    ("week", "week"),
                    ("month", "month"),
                ],
                state.grain,
            ),
            radio(
                ids.Q_SORT,
                "Sort",
                [("worst", "worst first"), ("accuracy", "lowest accuracy"), ("name", "name")],
                state.sort,
            ),
            html.Div(
                [
                    html.Span("Page", className="caption"),
                    dcc.Dropdown(
                        id=ids.param(ids.Q_PAGE),
                        options=[{"label": f"{p} of {pages}", "value": str(p)} for p in range(1, pages + 1)],
                        value=str(page),
                        clearable=False,
                        searchable=False,
                        style={"minWidth": "120px"},
                    ),
                ],
                className="control",
                id=ids.HEATMAP_PAGER,
            ),
        ],
        className="controls-row",
    )
    first_row = (page - 1) * PAGE_SIZE + 1 if ranked else 0
    return [
        summary_line(
            view,
            grain,
            [
                html.Span(
                    [verdict_count(v, n) for v, n in verdict_counts(status, view.shown_labels)],
                    id=ids.LEGEND,
                    className="summary",
                )
            ],
        ),
        # The flagged classes first: what needs doing is above the fold, the heatmap below it.
        flagged_list(status, view, has_health=has_health),
        *(
            [html.P(hint, id=ids.FIRST_VERDICT, className="notice")]
            if (
                hint := first_verdict_hint(
                    status, data.settings.min_samples, data.settings.samples_per_class, str(view.end)
                )
            )
            else []
        ),
        card(
            f"Accuracy per class and {grain}" if state.color == "accuracy" else f"Worst verdict per class and {grain}",
            controls,
            html.P(
                f"Classes {first_row}–{first_row + len(page_labels) - 1 if page_labels else 0} of {len(ranked)}, "
                f"{ {'worst': 'most urgent verdict first', 'accuracy': 'lowest accuracy in the range first', 'name': 'by name'}[state.sort] }. "
                "Accuracy pools the counts of each cell (sum correct / sum n). Click a row to see that class over time.",
                className="muted",
            ),
            dcc.Graph(id=ids.OVERVIEW_HEATMAP, figure=figure, config={"displayModeBar": False}),
        ),
    ]
