"""The dashboard's callbacks: the URL is the single source of truth, controls only rewrite it.

Two loops, no server-side state:

- ``controls -> URL``: any filter or page control writes its value into the query string
  (``dcc.Location.search``), so every view can be shared and survives reload and back/forward;
- ``URL -> page``: the nav, filter bar and page are rendered from ``pathname`` + ``search``.

The filter bar is rebuilt only when the URL no longer matches what it shows (navigation, back
button, a pasted link), so an open dropdown is not torn down by its own change.

A request's *shape* is checked before Dash reads it (:mod:`dashboards.guards`); its *values* are
checked here, at the top of each callback: a value of the wrong type is no update
(``PreventUpdate``, Dash's 204), never an exception.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from dash import ALL, Dash, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from dashboards import ids
from dashboards.components import notices
from dashboards.data import DashboardData
from dashboards.pages import render_page
from dashboards.shell import filter_bar, nav
from dashboards.state import parse_query, state_from_controls, to_query
from dashboards.view import View
from monitor.core.errors import MonitorError

log = logging.getLogger(__name__)

PARAM_VALUES = Input({"type": ids.PARAM, "name": ALL}, "value")
RANGE_STARTS = Input({"type": ids.PARAM_RANGE, "name": ALL}, "start_date")
RANGE_ENDS = Input({"type": ids.PARAM_RANGE, "name": ALL}, "end_date")


def _text_or_none(value: Any) -> str | None:
    """A URL part as the callback needs it: a string or None; anything else means the request was not the renderer's."""
    if value is None or isinstance(value, str):
        return value
    raise PreventUpdate


def _list(value: Any) -> list[Any]:
    """A wildcard dependency's values: a list (anything else is treated as no control)."""
    return value if isinstance(value, list) else []


def _controls_match(
    view: View | None, values: list[Any], value_ids: list[Any], starts: list[Any], ends: list[Any]
) -> bool:
    """Whether the filter bar already shows ``view`` (then it is left alone, so a control is not rebuilt under the user)."""
    if view is None or not value_ids or not starts or not ends:
        return False
    shown = {
        item["id"].get("name"): value
        for item, value in zip(value_ids, values)
        if isinstance(item, dict) and isinstance(item.get("id"), dict)
    }
    classes = shown.get(ids.Q_CLASSES)
    return (
        shown.get(ids.Q_MODEL) == view.model.model_id
        and isinstance(classes, list | None)
        and tuple(classes or ()) == view.chosen
        and str(starts[0])[:10] == view.start
        and str(ends[0])[:10] == view.end
    )


def register_callbacks(app: Dash, data: DashboardData) -> None:
    """Attach the callbacks to ``app``; ``data`` is the only thing they share (thread-safe, cached)."""

    @app.callback(
        Output(ids.URL, "search"),
        PARAM_VALUES,
        RANGE_STARTS,
        RANGE_ENDS,
        State(ids.URL, "search"),
        prevent_initial_call=True,
    )
    def controls_to_url(values: list[Any], starts: list[Any], ends: list[Any], search: str | None) -> Any:
        search = _text_or_none(search)
        present = len(_list(values)) + len(_list(starts)) + len(_list(ends))
        if present > 2 and len(ctx.triggered_prop_ids) >= present:
            # Every control "changed" at once: they were just rendered from the URL (Dash fires
            # pattern-matching callbacks when their inputs enter the layout), not changed by a user.
            return no_update
        # Only what the user changed goes into the URL: a default left alone (the latest range,
        # the newest model) stays a default, so a shared link keeps following new runs.
        params: dict[str, Any] = {}
        start = end = None
        for trigger in ctx.triggered:
            component, _, prop = str(trigger.get("prop_id", "")).rpartition(".")
            value = trigger.get("value")
            try:
                cid = json.loads(component)
            except (ValueError, RecursionError):
                continue
            if not isinstance(cid, dict):
                continue
            if cid.get("type") == ids.PARAM and prop == "value" and isinstance(cid.get("name"), str):
                params[cid["name"]] = value
            elif cid.get("type") == ids.PARAM_RANGE:
                if prop == "start_date":
                    start = value
                elif prop == "end_date":
                    end = value
        if not params and start is None and end is None:
            return no_update
        state = parse_query(search)
        updated = state_from_controls(state, params, start, end)
        query = to_query(updated)
        return no_update if query == (search or "") else query

    @app.callback(
        Output(ids.NAV, "children"),
        Output(ids.FILTERS, "children"),
        Output(ids.PAGE, "children"),
        Input(ids.URL, "pathname"),
        Input(ids.URL, "search"),
        State({"type": ids.PARAM, "name": ALL}, "value"),
        State({"type": ids.PARAM_RANGE, "name": ALL}, "start_date"),
        State({"type": ids.PARAM_RANGE, "name": ALL}, "end_date"),
    )
    def render(
        pathname: str | None, search: str | None, values: list[Any], starts: list[Any], ends: list[Any]
    ) -> tuple[Any, Any, Any]:
        pathname = _text_or_none(pathname) or ids.PATH_OVERVIEW
        search = _text_or_none(search)
        values, starts, ends = _list(values), _list(starts), _list(ends)
        state = parse_query(search)
        try:
            view, content = render_page(data, pathname, state)
        except MonitorError as exc:
            # A bad model id in a shared link, an unreadable store...: say so on the page.
            log.warning("dashboard page %s%s: %s", pathname, search or "", exc)
            return nav(pathname, state), [], [notices([str(exc)])]
        value_ids = _list(ctx.states_list[0]) if ctx.states_list else []
        keep_filters = _controls_match(view, values, value_ids, starts, ends)
        filters = no_update if keep_filters else filter_bar(data, view)
        return nav(pathname, state), filters, content

    @app.callback(
        Output(ids.URL, "href"),
        Input(ids.OVERVIEW_HEATMAP, "clickData"),
        State(ids.URL, "search"),
        prevent_initial_call=True,
    )
    def heatmap_click(click: dict[str, Any] | None, search: str | None) -> Any:
        """A click on a heatmap cell opens that class's health over time."""
        search = _text_or_none(search)
        # Plotly's click data: {"points": [{"y": <the row's class>, ...}, ...]}; any other shape is not a click on a row.
        points = click.get("points") if isinstance(click, dict) else None
        label = points[0].get("y") if isinstance(points, list) and points and isinstance(points[0], dict) else None
        if isinstance(label, int) and not isinstance(label, bool):
            label = str(label)  # a category axis sends the label's text, but a numeric-looking one may come as a number
        if not isinstance(label, str) or not label:
            raise PreventUpdate
        state = replace(parse_query(search), classes=(label,), page=1)
        return ids.PATH_CLASS + to_query(state)
