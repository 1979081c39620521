"""The "what goes wrong" page (``/errors``): what one class is mistaken for over time, and a gallery of one day's misclassified images."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pandas as pd
from dash import dcc, html

from dashboards import ids
from dashboards.components import card, date_dropdown, notices, summary_line, table
from dashboards.data import DashboardData
from dashboards.figures import confusion_figure
from dashboards.pooling import range_periods
from dashboards.state import pick_date
from dashboards.view import View, latest_status, worst_first

#: Misclassified images shown in the gallery.
GALLERY_SIZE = 48


def thumbnail_url(date: str, path: str) -> str:
    """The app's thumbnail route for image ``path`` of the predictions of ``date``."""
    return ids.PATH_THUMB + "?" + urlencode({"date": date, "path": path})


def gallery(data: DashboardData, date: str | None, label: str, model_id: str) -> html.Div:
    """Thumbnails of ``label``'s misclassified sampled images of ``date``, most confident mistakes first."""
    if date is None:
        return html.Div(html.P("No predictions file in this range.", className="muted"), id=ids.GALLERY)
    wrong = data.misclassified(date, label, model_id)
    if wrong.empty:
        return html.Div(html.P(f"No misclassified image of {label} on {date}.", className="muted"), id=ids.GALLERY)
    figures = [
        html.Figure(
            [
                html.Img(src=thumbnail_url(date, row["image_path"]), alt=row["image_path"], title=row["image_path"]),
                html.Figcaption(
                    [
                        f"as {row['pred']}",
                        html.Br(),
                        f"{row['confidence']:.0%} sure" if pd.notna(row["confidence"]) else "",
                    ]
                ),
            ]
        )
        for row in wrong.head(GALLERY_SIZE).to_dict("records")
    ]
    more = len(wrong) - len(figures)
    return html.Div(
        [html.Div(figures, className="gallery"), html.P(f"…and {more} more.", className="muted") if more > 0 else None],
        id=ids.GALLERY,
    )


def errors_page(data: DashboardData, view: View) -> list[Any]:
    """For one class: what it is mistaken for over time, and a gallery of one day's misclassified images."""
    model_id = view.model.model_id
    messages: list[str] = []
    if view.chosen:
        label = view.chosen[0]
        if len(view.chosen) > 1:
            messages.append(f"This page looks at one class at a time: showing {label}, the first chosen.")
    else:
        _, status = latest_status(data, view)
        ranked = worst_first(data, view, status)
        if not ranked:
            return [summary_line(view), notices(["No classes."])]
        label = ranked[0]
        messages.append(f"Showing the most urgent class, {label}; choose a class in the filter above.")
    grain = view.grain()
    confusions = data.confusions(model_id, label, view.start, view.end)
    totals_frame = (
        confusions.groupby("pred")["count"].sum().sort_values(ascending=False)
        if not confusions.empty
        else pd.Series(dtype=int)
    )
    errors_total = int(totals_frame.sum()) if len(totals_frame) else 0
    confusion_rows = [
        [str(pred), str(int(count)), f"{count / errors_total:.0%}"] for pred, count in totals_frame.head(20).items()
    ]
    dates = [d for d in data.prediction_dates() if view.start <= d <= view.end]
    date = pick_date(view.state.date, dates)
    if view.state.date and view.state.date not in dates:
        messages.append(f"No predictions file for {view.state.date} in this range; showing {date or 'nothing'}.")
    return [
        summary_line(view, grain, [html.Span(["Class ", html.B(label, id="errors-class")])]),
        notices(messages),
        card(
            "Confusion pairs over time",
            dcc.Graph(
                id=ids.CONFUSION_CHART,
                figure=confusion_figure(confusions, grain, label, range_periods(view.start, view.end, grain)),
                config={"displayModeBar": False},
            ),
            table(
                ["predicted as", "images", "share of errors"],
                confusion_rows,
                id=ids.CONFUSION_TABLE,
                numeric=(1, 2),
                narrow=True,
            )
            if confusion_rows
            else html.P(f"{label} was never mistaken in this range.", className="muted", id=ids.CONFUSION_TABLE),
        ),
        card(
            f"Misclassified sampled images of {label}",
            html.Div([date_dropdown(dates, date, "Day")], className="controls-row"),
            gallery(data, date, label, model_id),
        ),
    ]
