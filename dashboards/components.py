"""Reusable widgets: verdict badges, number formats, tables, cards, notices, controls and the summary line.

Pure functions from values to Dash components; no data access. Every page is built from these, so
one kind of thing looks the same everywhere.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from dash import dcc, html

from dashboards import ids
from dashboards.records import ModelInfo
from dashboards.status import as_verdict, verdict_text
from dashboards.style import NO_VERDICT_COLOUR, VERDICT_COLOURS
from monitor.core.dates import day_span, iso_day
from monitor.core.verdicts import Verdict

if TYPE_CHECKING:
    from dashboards.pooling import Grain
    from dashboards.view import View


def model_option_label(model: ModelInfo) -> str:
    """A model in the filter: its name, weights checksum, and the dates it was evaluated, so a model switch shows."""
    dates = f" · {model.first_date} → {model.last_date}" if model.first_date and model.last_date else ""
    return f"{model.name} ({model.model_id.split('@')[-1]}){dates}"


def badge(verdict: str | None) -> html.Span:
    """A coloured verdict label."""
    if not verdict or not isinstance(verdict, str):
        return html.Span("no verdict", className="badge", style={"background": NO_VERDICT_COLOUR})
    return html.Span(
        verdict_text(verdict),
        className=f"badge verdict-{verdict}",
        style={"background": verdict_colour(verdict)},
    )


def verdict_colour(verdict: object, default: str = NO_VERDICT_COLOUR) -> str:
    """The colour of ``verdict`` (:data:`~dashboards.style.VERDICT_COLOURS`); ``default`` for anything that is not a verdict."""
    known = as_verdict(verdict)
    return default if known is None else VERDICT_COLOURS[known]


def fmt_acc(value: Any) -> str:
    """An accuracy as a percentage with one decimal; "–" when there is none."""
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{float(value):.1%}"


def fmt_ci(low: Any, high: Any) -> str:
    """An interval as whole percentages, ``84%–94%``; "–" when a bound is missing."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return "–"
    return f"{float(low):.0%}–{float(high):.0%}"


def fmt_num(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals; "–" when there is none."""
    if value is None or pd.isna(value):
        return "–"
    return f"{float(value):.{digits}f}"


def cell_text(cell: Any) -> str:
    """What a table cell says, as text: a string as it is, a component by the text of its children."""
    if cell is None:
        return ""
    if isinstance(cell, (str, int, float)):
        return str(cell)
    children = getattr(cell, "children", None)
    if isinstance(children, (list, tuple)):
        return "".join(cell_text(child) for child in children)
    return cell_text(children)


def csv_href(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The table as a ``data:`` URI of CSV (UTF-8), the cells as they read."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(headers)
    writer.writerows([cell_text(cell) for cell in row] for row in rows)
    return "data:text/csv;charset=utf-8," + quote(out.getvalue())


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    id: str | None = None,
    numeric: Sequence[int] = (),
    narrow: bool = False,
    export: str = "table",
    export_rows: Sequence[Sequence[Any]] | None = None,
) -> html.Div:
    """A plain HTML table (fast to render, easy to read in tests); ``numeric`` columns are right-aligned.

    Below it, a link downloads it as ``<export>.csv`` (the cells as they read), so every table can leave the page;
    ``export_rows``: what the CSV holds when the page shows only the first of them (default: ``rows``).
    """
    body = [
        html.Tr([html.Td(cell, className="num" if i in numeric else None) for i, cell in enumerate(row)])
        for row in rows
    ]
    kwargs: dict[str, Any] = {"className": "data narrow" if narrow else "data"}
    if id is not None:
        kwargs["id"] = id
    name = id or export
    link_kwargs: dict[str, Any] = {"className": "export", "download": f"{name}.csv"}
    if id is not None:  # only a table with an id gives its link one: two tables without could not share it
        link_kwargs["id"] = f"{id}-csv"
    link = html.A("download CSV", href=csv_href(headers, rows if export_rows is None else export_rows), **link_kwargs)
    return html.Div(
        [html.Table([html.Thead(html.Tr([html.Th(h) for h in headers])), html.Tbody(body)], **kwargs), link]
    )


def card(title: str, *children: Any, id: str | None = None) -> html.Div:
    """A titled white box, the unit every page is made of."""
    kwargs: dict[str, Any] = {"className": "card"}
    if id is not None:
        kwargs["id"] = id
    return html.Div([html.H2(title), *children], **kwargs)


def notices(messages: Sequence[str] = ()) -> html.Div:
    """The page's notices (what the URL asked for that could not be shown as asked), one box each; empty when there are none."""
    boxes = [html.Div(message, className="notice") for message in messages]
    return html.Div(boxes or None, id=ids.NOTICE)


def radio(name: str, caption: str, options: Sequence[tuple[str, str]], value: str) -> html.Div:
    """Radio buttons that write the query parameter ``name`` (``options``: value and text)."""
    return html.Div(
        [
            html.Span(caption, className="caption"),
            dcc.RadioItems(
                id=ids.param(name),
                options=[{"label": text, "value": key} for key, text in options],
                value=value,
                inline=True,
                className="radio",
            ),
        ],
        className="control",
    )


def date_dropdown(dates: Sequence[str], value: str | None, caption: str) -> html.Div:
    """A dropdown of ``dates`` (newest first) that writes the ``date`` query parameter."""
    return html.Div(
        [
            html.Span(caption, className="caption"),
            dcc.Dropdown(
                id=ids.param(ids.Q_DATE),
                options=[{"label": day, "value": day} for day in reversed(list(dates))],
                value=value,
                clearable=False,
                style={"minWidth": "180px"},
            ),
        ],
        className="control",
    )


def summary_line(view: View, grain: Grain | None = None, extra: Sequence[Any] = ()) -> html.Div:
    """Which model and range the page shows, always visible."""
    days = day_span(iso_day(view.start), iso_day(view.end))
    parts: list[Any] = [
        html.Span(["Model ", html.B(view.model.model_id, id="summary-model")]),
        html.Span(["Dates ", html.B(f"{view.start} → {view.end}", id="summary-range"), f" ({days} days)"]),
        html.Span(
            [html.B(str(len(view.shown_labels))), f" of {len(view.labels)} classes" if view.chosen else " classes"]
        ),
    ]
    if grain:
        parts.append(html.Span(["Shown per ", html.B(grain)]))
    return html.Div([*parts, *extra], id=ids.SUMMARY, className="summary card")


def verdict_count(verdict: Verdict, count: int) -> html.Span:
    """A verdict's badge and how many classes have it."""
    return html.Span([badge(verdict), f" {count}"], className=f"count-{verdict}")
