"""The comparison page (``/compare``): each candidate model beside production, class by class, with the promotion verdict.

The comparison stored for the range shown (the latest date in it that ``monitor compare`` or the DAG
compared): the per-class accuracy difference (candidate minus production) with its paired interval, the
verdict and its reason, the paired counts behind them, and a gallery of the images only one of the two
models got right. Everything comes from :meth:`DashboardData.comparison`: the page computes no statistic,
and where nothing is stored it says which command stores it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
from dash import dcc, html

from dashboards import ids
from dashboards.components import card, fmt_num, notices, summary_line, table
from dashboards.data import DashboardData
from dashboards.pages.errors import thumbnail_url
from dashboards.view import View
from monitor.core.errors import MonitorError
from monitor.core.verdicts import ComparisonVerdict

if TYPE_CHECKING:
    from monitor.domain.compare import ClassComparison, ComparisonRecord, DiscordantImage

VERDICT_CLASS: dict[str, str] = {
    ComparisonVerdict.PROMOTE: "verdict-promote",
    ComparisonVerdict.REJECT: "verdict-reject",
    ComparisonVerdict.INSUFFICIENT_DATA: "verdict-insufficient",
}


def difference_figure(rows: list[ClassComparison], margin: float, level: float) -> go.Figure:
    """Per class, candidate minus production accuracy with its interval; worse classes red, improved green, the margin dashed."""
    rows = [row for row in rows if row["n"]]
    colours = ["#c0392b" if row["worse"] else "#1e8449" if row["improved"] else "#34495e" for row in rows]
    figure = go.Figure(
        go.Scatter(
            x=[row["label"] for row in rows],
            y=[_number(row["difference"]) for row in rows],
            mode="markers",
            marker={"color": colours, "size": 9},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [_number(row["ci_high"]) - _number(row["difference"]) for row in rows],
                "arrayminus": [_number(row["difference"]) - _number(row["ci_low"]) for row in rows],
            },
            customdata=[[row["only_production"], row["only_candidate"], row["p_mcnemar"]] for row in rows],
            hovertemplate="%{x}: %{y:+.3f}<br>only production right %{customdata[0]}, only candidate right %{customdata[1]}"
            "<br>McNemar p %{customdata[2]:.3g}<extra></extra>",
            name="candidate - production",
        )
    )
    figure.add_hline(y=0, line={"color": "#7f8c8d", "width": 1})
    if margin:
        figure.add_hline(y=-margin, line={"color": "#c0392b", "width": 1, "dash": "dash"})
    figure.update_layout(
        margin={"l": 50, "r": 10, "t": 10, "b": 40},
        height=320,
        yaxis={"title": f"accuracy difference ({level:.0%} interval)", "zeroline": False},
        xaxis={"type": "category"},
        showlegend=False,
    )
    return figure


def _number(value: float | None) -> float:
    """A class with paired images always has its difference and interval; NaN (not drawn) were one missing."""
    return math.nan if value is None else value


def _verdict_box(result: ComparisonRecord) -> html.Div:
    return html.Div(
        [
            html.Span(result["verdict"], className="badge " + VERDICT_CLASS.get(result["verdict"], "")),
            html.Span(f" {result['reason']}"),
            html.P(
                f"{result['days']} days ({result['start']} … {result['end']}); level {result['alpha']}, margin {result['margin']}; "
                f"flagged: {', '.join(result['flagged']) or 'none'}. Multiplicity: {result['multiplicity']}.",
                className="muted",
            ),
        ],
        id=ids.COMPARE_VERDICT,
    )


def _gallery(images: list[DiscordantImage]) -> html.Div:
    if not images:
        return html.Div(html.P("No image was right for one model only.", className="muted"), id=ids.COMPARE_GALLERY)
    figures = [
        html.Figure(
            [
                html.Img(
                    src=thumbnail_url(row["date"], row["image_path"]), alt=row["image_path"], title=row["image_path"]
                ),
                html.Figcaption(
                    [
                        f"{row['label']}: {row['right']} right",
                        html.Br(),
                        f"prod. {row['production_pred']} · cand. {row['candidate_pred']}",
                    ]
                ),
            ],
            className=f"discordant-{row['right']}",
        )
        for row in images
    ]
    return html.Div(html.Div(figures, className="gallery"), id=ids.COMPARE_GALLERY)


def _not_compared(candidate: str, view: View) -> html.Div:
    command = f"monitor compare --candidate {candidate} --since {view.start} --until {view.end}"
    return card(
        f"{candidate}: no comparison stored",
        html.P(
            [
                f"No comparison of {candidate} with production is stored for {view.start} … {view.end}. Run ",
                html.Code(command),
                " to compute and store one (the Airflow DAG's compare_candidates task stores one each day).",
            ]
        ),
        id=ids.COMPARE_VERDICT,
    )


def compare_page(data: DashboardData, view: View) -> list[Any]:
    """For each candidate with predictions: the per-class differences with intervals, the verdict, the discordant images."""
    candidates = data.candidates()
    if not candidates:
        return [
            summary_line(view),
            card(
                "No candidate model",
                html.P(
                    [
                        "Add one with ",
                        html.Code("monitor candidate add DIR"),
                        " (or MONITOR_CANDIDATE_MODEL_DIRS); each day's run then predicts it beside production.",
                    ]
                ),
                id=ids.COMPARE_VERDICT,
            ),
        ]
    content: list[Any] = [summary_line(view)]
    wanted = [c for c in candidates if not view.state.model or c != view.state.model]
    for candidate in wanted:
        try:
            result = data.comparison(candidate, view.start, view.end)
        except MonitorError as exc:
            content.append(notices([f"{candidate}: {exc}"]))
            continue
        if result is None:
            content.append(_not_compared(candidate, view))
            break
        rows = [row for row in result["classes"] if not view.chosen or row["label"] in view.chosen]
        table_rows = [
            [
                str(row["label"]),
                str(row["n"]),
                str(row["both_right"]),
                str(row["only_production"]),
                str(row["only_candidate"]),
                str(row["both_wrong"]),
                fmt_num(row["difference"], 3),
                f"[{fmt_num(row['ci_low'], 3)}, {fmt_num(row['ci_high'], 3)}]",
                fmt_num(row["p_mcnemar"], 4),
                "worse" if row["worse"] else "improved" if row["improved"] else ("flagged" if row["flagged"] else ""),
            ]
            for row in rows
        ]
        content += [
            card(f"{candidate} vs {result['production']}", _verdict_box(result)),
            card(
                "Accuracy difference per class (candidate − production)",
                dcc.Graph(
                    id=ids.COMPARE_CHART,
                    figure=difference_figure(rows, result["margin"], view.level),
                    config={"displayModeBar": False},
                ),
            ),
            card(
                "Paired counts",
                html.Div(
                    table(
                        [
                            "class",
                            "n",
                            "both right",
                            "only production",
                            "only candidate",
                            "both wrong",
                            "difference",
                            f"{view.level:.0%} CI",
                            "McNemar p",
                            "",
                        ],
                        table_rows,
                        id=ids.COMPARE_TABLE,
                        numeric=(1, 2, 3, 4, 5, 6, 8),
                    ),
                    className="scroll",
                ),
            ),
            card("Images only one model got right", _gallery(result.get("discordant") or [])),
        ]
        break  # one candidate per page view: the first; the rest are named below
    others = [c for c in wanted[1:]]
    if others:
        content.append(
            html.P(f"Other candidates: {', '.join(others)} (`monitor compare --candidate ID`).", className="muted")
        )
    return content
