"""The pages: which path shows which page (and its title in the nav), and rendering the page a URL asks for.

One module per page, each a function ``(data, view) -> components`` that queries its content
through :class:`~dashboards.data.DashboardData` for the resolved :class:`~dashboards.view.View`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dash import dcc, html

from dashboards import ids
from dashboards.components import notices
from dashboards.data import DashboardData
from dashboards.pages.class_health import class_page
from dashboards.pages.compare import compare_page
from dashboards.pages.errors import errors_page
from dashboards.pages.overview import overview_page
from dashboards.pages.run import run_page
from dashboards.state import ViewState, href, shown
from dashboards.view import View, resolve


@dataclass(frozen=True)
class Page:
    """A page of the app: its title in the nav and the function that builds it."""

    title: str
    build: Callable[[DashboardData, View], list[Any]]


#: Every page by its path, in the nav's order.
PAGES: dict[str, Page] = {
    ids.PATH_OVERVIEW: Page("Overview", overview_page),
    ids.PATH_CLASS: Page("Class health", class_page),
    ids.PATH_ERRORS: Page("What goes wrong", errors_page),
    ids.PATH_RUN: Page("Run detail", run_page),
    ids.PATH_COMPARE: Page("Candidate", compare_page),
}


def render_page(data: DashboardData, pathname: str, state: ViewState) -> tuple[View | None, list[Any]]:
    """The resolved view and the page's components for ``pathname``; an empty store gives the empty state."""
    view = resolve(data, state)
    if view is None:
        return None, [empty_state(data)]
    page = PAGES.get(pathname)
    if page is None:
        return view, [not_found(pathname, state)]
    content = page.build(data, view)
    if view.notices:
        content = [notices(list(view.notices)), *content]
    return view, content


def empty_state(data: DashboardData) -> html.Div:
    """What an empty store shows: where the dashboard looked and how to fill it."""
    return html.Div(
        [
            html.H2("No results yet"),
            html.P(["The dashboard reads ", html.Code(data.describe()), ", which holds no class metrics."]),
            html.P(
                [
                    "Run ",
                    html.Code("monitor demo"),
                    " for a few simulated weeks of a digit classifier, or ",
                    html.Code("monitor evaluate --date YYYY-MM-DD"),
                    " on your own image source. Reload this page when the run has finished.",
                ]
            ),
            html.P(
                "If you expected results here, check that the dashboard and the pipeline use the same MONITOR_DATA_DIR (or MONITOR_MONGO_URI).",
                className="muted",
            ),
        ],
        id=ids.EMPTY_STATE,
        className="card empty",
    )


def not_found(pathname: str, state: ViewState) -> html.Div:
    """What a path without a page shows: a link back to the overview, keeping the state."""
    return html.Div(
        [
            html.H2(f"No page at {shown(pathname)}"),
            html.P([dcc.Link("Go to the overview", href=href(ids.PATH_OVERVIEW, state))]),
        ],
        className="card empty",
    )
