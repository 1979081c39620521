"""The frame around every page: the app shell (URL, title, nav, filter bar, page slot), the nav links and the shared filters."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from dashboards import ids
from dashboards.components import model_option_label
from dashboards.data import DashboardData
from dashboards.pages import PAGES
from dashboards.state import ViewState, to_query
from dashboards.view import View


def app_shell() -> html.Div:
    """The fixed frame: URL, title and nav, the filter bar and the page; callbacks fill in the rest."""
    return html.Div(
        [
            dcc.Location(id=ids.URL, refresh=False),
            html.Div(
                [html.H1("Class health"), html.Nav(id=ids.NAV, className="nav")],
                className="topbar",
            ),
            html.Div(id=ids.FILTERS, className="filters"),
            dcc.Loading(html.Div(id=ids.PAGE), id=ids.PAGE_LOADING, type="default", delay_show=300),
        ],
        className="shell",
    )


def nav(pathname: str, state: ViewState) -> list[Any]:
    """Links to every page, keeping the filters (model, range, classes)."""
    kept = ViewState(model=state.model, start=state.start, end=state.end, classes=state.classes, grain=state.grain)
    return [
        dcc.Link(
            page.title,
            href=path + to_query(kept),
            className="active" if path == pathname else "",
            id=f"nav-{path.strip('/') or 'overview'}",
        )
        for path, page in PAGES.items()
    ]


def filter_bar(data: DashboardData, view: View | None) -> list[Any]:
    """Model, date range and classes: the filters every page shares."""
    if view is None:
        return []
    models = data.models()
    return [
        html.Div(
            [
                html.Label("Model"),
                dcc.Dropdown(
                    id=ids.param(ids.Q_MODEL),
                    options=[{"label": model_option_label(m), "value": m.model_id} for m in models],
                    value=view.model.model_id,
                    clearable=False,
                ),
            ],
            className="control",
        ),
        html.Div(
            [
                html.Label("Dates"),
                dcc.DatePickerRange(
                    id=ids.param_range(ids.DATES),
                    start_date=view.start,
                    end_date=view.end,
                    min_date_allowed=view.first,
                    max_date_allowed=view.last,
                    display_format="YYYY-MM-DD",
                    updatemode="bothdates",
                ),
            ],
            className="control",
        ),
        html.Div(
            [
                html.Label("Classes"),
                dcc.Dropdown(
                    id=ids.param(ids.Q_CLASSES),
                    options=[{"label": label, "value": label} for label in view.labels],
                    value=list(view.chosen),
                    multi=True,
                    placeholder=f"all {len(view.labels)} classes",
                ),
            ],
            className="control wide",
        ),
    ]
