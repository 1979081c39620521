"""The dashboard's layout: the app shell, the URL state, and one function per page that turns query answers into components.

Every function here is pure given a :class:`~dashboards.data.DashboardData` (the queries) and a
:class:`ViewState` (what the URL asks for): no module-level data, no queries at import. Figures
are built by separate functions so tests can check them without a browser.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast
from urllib.parse import parse_qs, urlencode

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from dash import dcc, html

from dashboards import ids
from dashboards.data import (
    FLAGGED_VERDICTS,
    GRAINS,
    SEVERITY,
    VERDICT_COLOURS,
    VERDICT_TEXT,
    VERDICTS,
    DashboardData,
    Grain,
    ModelInfo,
    auto_grain,
    class_status,
    period_start,
    pool_by_period,
    rank_classes,
    verdict_changes,
)

#: Classes per heatmap page: enough to see a pattern, few enough to read every label.
PAGE_SIZE = 30
#: Flagged classes listed in full; more are counted and reachable through sorting and paging.
FLAGGED_SHOWN = 50
#: Classes drawn at once on the class page (one figure each).
MAX_CLASS_FIGURES = 6
#: Misclassified images shown in the gallery.
GALLERY_SIZE = 48
#: Default history shown when the URL names no range.
DEFAULT_DAYS = 365
#: Labels a confusion chart names; the rest are summed as "other".
TOP_CONFUSIONS = 8

SORTS: tuple[str, ...] = ("worst", "accuracy", "name")
COLOURS: tuple[str, ...] = ("accuracy", "verdict")
PAGES: dict[str, str] = {
    ids.PATH_OVERVIEW: "Overview",
    ids.PATH_CLASS: "Class health",
    ids.PATH_ERRORS: "What goes wrong",
    ids.PATH_RUN: "Run detail",
}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2933; background: #f5f7fa; }
.shell { max-width: 1400px; margin: 0 auto; padding: 0 16px 32px; }
.topbar { display: flex; align-items: baseline; gap: 24px; padding: 12px 0; border-bottom: 1px solid #d9e2ec; }
.topbar h1 { font-size: 20px; margin: 0; }
.nav a { margin-right: 16px; color: #334e68; text-decoration: none; padding: 4px 2px; }
.nav a.active { border-bottom: 3px solid #2f80ed; font-weight: 600; }
.filters { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-end; padding: 12px 0; }
.filters .control { display: flex; flex-direction: column; gap: 4px; min-width: 180px; }
.filters .control.wide { min-width: 340px; flex: 1; }
.control > label, .control > .caption { font-size: 12px; color: #627d98; text-transform: uppercase; letter-spacing: .04em; }
.controls-row { display: flex; flex-wrap: wrap; gap: 24px; align-items: center; margin: 8px 0; }
.controls-row .radio label { margin-right: 10px; }
.card { background: white; border: 1px solid #d9e2ec; border-radius: 6px; padding: 12px 16px; margin: 12px 0; }
.card h2 { font-size: 16px; margin: 0 0 8px; }
.summary { display: flex; flex-wrap: wrap; gap: 8px 20px; align-items: center; }
.muted { color: #627d98; font-size: 13px; }
.evidence { font-size: 14px; line-height: 1.8; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: white; font-size: 12px; white-space: nowrap; }
table.data { border-collapse: collapse; width: 100%; font-size: 13px; }
table.data th { text-align: left; color: #486581; border-bottom: 2px solid #d9e2ec; padding: 4px 8px; position: sticky; top: 0; background: white; }
table.data td { border-bottom: 1px solid #f0f4f8; padding: 4px 8px; vertical-align: top; white-space: nowrap; }
table.data td:last-child { white-space: normal; }
table.data.narrow { width: auto; min-width: 360px; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.scroll { max-height: 520px; overflow-y: auto; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.gallery figure { margin: 0; width: 136px; text-align: center; font-size: 12px; }
.gallery img { width: 128px; height: 128px; object-fit: contain; background: #fff; border: 1px solid #d9e2ec; image-rendering: pixelated; }
.empty { text-align: center; padding: 48px 16px; }
.empty code { background: #e4e7eb; padding: 2px 6px; border-radius: 4px; }
.notice { background: #fff4e5; border: 1px solid #f0a202; border-radius: 6px; padding: 8px 12px; margin: 8px 0; }
"""

INDEX_STRING = (
    "<!DOCTYPE html>\n<html>\n<head>\n{%metas%}\n<title>{%title%}</title>\n{%favicon%}\n{%css%}\n<style>"
    + CSS
    + "</style>\n</head>\n<body>\n{%app_entry%}\n<footer>\n{%config%}\n{%scripts%}\n{%renderer%}\n</footer>\n</body>\n</html>"
)


# --- URL state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewState:
    """What the URL's query string asks for; every field has a default so a bare URL works."""

    model: str | None = None
    start: str | None = None
    end: str | None = None
    classes: tuple[str, ...] = ()
    grain: str = "auto"
    color: str = "accuracy"
    sort: str = "worst"
    page: int = 1
    date: str | None = None
    problems: tuple[str, ...] = field(default=(), compare=False)


def _valid_date(text: str) -> bool:
    try:
        return len(text) == 10 and dt.date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def parse_query(search: str | None) -> ViewState:
    """Read the query string leniently: a malformed value is dropped and named in ``problems``, never an error page."""
    query = parse_qs((search or "").lstrip("?"), keep_blank_values=False)
    problems: list[str] = []

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    def date_value(name: str) -> str | None:
        value = one(name)
        if value is not None and not _valid_date(value):
            problems.append(f"{name}={value!r} is not a YYYY-MM-DD date; ignored")
            return None
        return value

    def choice(name: str, allowed: Sequence[str], default: str) -> str:
        value = one(name)
        if value is None:
            return default
        if value not in allowed:
            problems.append(f"{name}={value!r} is not one of {', '.join(allowed)}; ignored")
            return default
        return value

    page_text = one(ids.Q_PAGE)
    page = 1
    if page_text is not None:
        if page_text.isdigit() and int(page_text) >= 1:
            page = int(page_text)
        else:
            problems.append(f"page={page_text!r} is not a page number; ignored")
    classes: list[str] = []
    for value in query.get(ids.Q_CLASSES, []):
        if value not in classes:
            classes.append(value)
    return ViewState(
        model=one(ids.Q_MODEL),
        start=date_value(ids.Q_START),
        end=date_value(ids.Q_END),
        classes=tuple(classes),
        grain=choice(ids.Q_GRAIN, ("auto", *GRAINS), "auto"),
        color=choice(ids.Q_COLOR, COLOURS, "accuracy"),
        sort=choice(ids.Q_SORT, SORTS, "worst"),
        page=page,
        date=date_value(ids.Q_DATE),
        problems=tuple(problems),
    )


def to_query(state: ViewState) -> str:
    """The query string for ``state`` ("" for all defaults); classes repeat the ``classes`` parameter."""
    pairs: list[tuple[str, str]] = []
    defaults = ViewState()
    for name, value in (
        (ids.Q_MODEL, state.model),
        (ids.Q_START, state.start),
        (ids.Q_END, state.end),
    ):
        if value:
            pairs.append((name, value))
    pairs.extend((ids.Q_CLASSES, label) for label in state.classes)
    for name, value, default in (
        (ids.Q_GRAIN, state.grain, defaults.grain),
        (ids.Q_COLOR, state.color, defaults.color),
        (ids.Q_SORT, state.sort, defaults.sort),
        (ids.Q_PAGE, str(state.page), str(defaults.page)),
    ):
        if value != default:
            pairs.append((name, value))
    if state.date:
        pairs.append((ids.Q_DATE, state.date))
    return "?" + urlencode(pairs) if pairs else ""


def href(path: str, state: ViewState, **changes: Any) -> str:
    """A link to ``path`` carrying the current state (with ``changes``), so filters survive navigation."""
    return path + to_query(replace(state, **changes))


# --- the resolved view: URL state checked against the data ---------------------------------------


@dataclass(frozen=True)
class View:
    """The URL state resolved against the store: the model, its history bounds and the range shown."""

    state: ViewState
    model: ModelInfo
    first: str
    last: str
    start: str
    end: str
    labels: tuple[str, ...]  # every class with metrics for this model
    chosen: tuple[str, ...]  # the classes filter, restricted to known classes (empty: all)
    notices: tuple[str, ...]
    level: float

    @property
    def shown_labels(self) -> list[str]:
        return list(self.chosen) if self.chosen else list(self.labels)


def resolve(data: DashboardData, state: ViewState) -> View | None:
    """Check the URL state against the store; None when the store has no results at all (the empty state)."""
    model = data.model(state.model)
    if model is None:
        return None
    bounds = data.date_bounds(model.model_id)
    if bounds is None:
        return None
    first, last = bounds
    notices = list(state.problems)
    end = state.end or last
    start = state.start or max(first, (dt.date.fromisoformat(min(end, last)) - dt.timedelta(days=DEFAULT_DAYS - 1)).isoformat())
    if start > end:
        notices.append(f"start {start} is after end {end}; swapped")
        start, end = end, start
    # The range is clamped to the evaluated dates: a shared URL asking for centuries must not build them.
    if start < first or start > last:
        notices.append(f"start {start} is outside the evaluated dates {first} … {last}; showing from {max(first, min(start, last))}")
        start = max(first, min(start, last))
    if end > last or end < first:
        notices.append(f"end {end} is outside the evaluated dates {first} … {last}; showing up to {min(last, max(end, first))}")
        end = min(last, max(end, first))
    labels = tuple(data.labels(model.model_id))
    unknown = [label for label in state.classes if label not in labels]
    if unknown:
        notices.append(f"no results for class{'es' if len(unknown) > 1 else ''} {', '.join(unknown)} with model {model.model_id}")
    chosen = tuple(label for label in state.classes if label in labels)
    return View(
        state=state,
        model=model,
        first=first,
        last=last,
        start=start,
        end=end,
        labels=labels,
        chosen=chosen,
        notices=tuple(notices),
        level=data.settings.confidence_level,
    )


# --- small building blocks --------------------------------------------------------------------------


def model_option_label(model: ModelInfo) -> str:
    """A model in the filter: its name, weights checksum, and the dates it was evaluated, so a model switch shows."""
    dates = f" · {model.first_date} → {model.last_date}" if model.first_date and model.last_date else ""
    return f"{model.name} ({model.model_id.split('@')[-1]}){dates}"


def badge(verdict: str | None) -> html.Span:
    """A coloured verdict label."""
    if not verdict or not isinstance(verdict, str):
        return html.Span("no verdict", className="badge", style={"background": "#bcccdc"})
    return html.Span(
        VERDICT_TEXT.get(verdict, verdict),
        className=f"badge verdict-{verdict}",
        style={"background": VERDICT_COLOURS.get(verdict, "#bcccdc")},
    )


def fmt_acc(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{float(value):.1%}"


def fmt_ci(low: Any, high: Any) -> str:
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return "–"
    return f"{float(low):.0%}–{float(high):.0%}"


def fmt_num(value: Any, digits: int = 2) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{float(value):.{digits}f}"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, id: str | None = None, numeric: Sequence[int] = (), narrow: bool = False
) -> html.Table:
    """A plain HTML table (fast to render, easy to read in tests); ``numeric`` columns are right-aligned."""
    body = [html.Tr([html.Td(cell, className="num" if i in numeric else None) for i, cell in enumerate(row)]) for row in rows]
    kwargs: dict[str, Any] = {"className": "data narrow" if narrow else "data"}
    if id is not None:
        kwargs["id"] = id
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in headers])), html.Tbody(body)], **kwargs)


def card(title: str, *children: Any, id: str | None = None) -> html.Div:
    kwargs: dict[str, Any] = {"className": "card"}
    if id is not None:
        kwargs["id"] = id
    return html.Div([html.H2(title), *children], **kwargs)


def notices(messages: Sequence[str]) -> html.Div:
    return html.Div([html.Div(message, className="notice") for message in messages], id=ids.NOTICE)


def radio(name: str, caption: str, options: Sequence[tuple[str, str]], value: str) -> html.Div:
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


# --- the shell --------------------------------------------------------------------------------------


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
        dcc.Link(title, href=path + to_query(kept), className="active" if path == pathname else "", id=f"nav-{path.strip('/') or 'overview'}")
        for path, title in PAGES.items()
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
    return html.Div(
        [html.H2(f"No page at {pathname}"), html.P([dcc.Link("Go to the overview", href=href(ids.PATH_OVERVIEW, state))])],
        className="card empty",
    )


def summary_line(view: View, grain: Grain | None = None, extra: Sequence[Any] = ()) -> html.Div:
    """Which model and range the page shows, always visible."""
    days = (dt.date.fromisoformat(view.end) - dt.date.fromisoformat(view.start)).days + 1
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


# --- overview -----------------------------------------------------------------------------------------


def heatmap_figure(
    cells: pd.DataFrame,
    labels: Sequence[str],
    periods: Sequence[str],
    *,
    color: str,
    grain: Grain,
    level: float,
    verdicts: pd.DataFrame | None = None,
) -> go.Figure:
    """Class x period heatmap: pooled accuracy (``cells`` from :func:`pool_by_period`) or the worst verdict in the period.

    Rows follow ``labels`` top to bottom; cells without data are blank.
    """
    labels = list(labels)
    periods = list(periods)
    if cells.empty:
        acc = pd.DataFrame(np.nan, index=labels, columns=periods)
        text = np.full(acc.shape, "", dtype=object)
    else:
        # Hover texts are formatted per cell before pivoting: a loop over arrays, not DataFrame lookups.
        labelled = cells.assign(
            text=[
                f"{a:.0%} ({int(c)}/{int(n)}), {level:.0%} CI {lo:.0%}–{hi:.0%}" if n > 0 else "no images"
                for a, c, n, lo, hi in zip(cells["accuracy"], cells["correct"], cells["n"], cells["ci_low"], cells["ci_high"])
            ]
        )
        acc = labelled.pivot(index="label", columns="period", values="accuracy").reindex(index=labels, columns=periods)
        text = labelled.pivot(index="label", columns="period", values="text").reindex(index=labels, columns=periods).fillna("").to_numpy(dtype=object)
    period_word = {"day": "day", "week": "week of", "month": "month of"}[grain]
    if color == "verdict":
        codes = pd.DataFrame(np.nan, index=labels, columns=periods)
        if verdicts is not None and not verdicts.empty:
            frame = verdicts.assign(period=period_start(verdicts["date"], grain), code=verdicts["verdict"].map(SEVERITY))
            worst = frame.groupby(["label", "period"])["code"].min().unstack()
            codes = worst.reindex(index=labels, columns=periods)
        z = codes.to_numpy(dtype=float)
        vtext = np.vectorize(lambda c: "" if np.isnan(c) else VERDICT_TEXT[VERDICTS[int(c)]], otypes=[object])(z) if z.size else z
        k = len(VERDICTS)
        scale = []
        for code, verdict in enumerate(VERDICTS):
            scale += [[code / k, VERDICT_COLOURS[verdict]], [(code + 1) / k, VERDICT_COLOURS[verdict]]]
        trace = go.Heatmap(
            z=z,
            x=periods,
            y=labels,
            zmin=-0.5,
            zmax=k - 0.5,
            colorscale=scale,
            customdata=np.dstack([vtext, text]) if z.size else None,
            hovertemplate=f"<b>%{{y}}</b> · {period_word} %{{x}}<br>worst verdict: %{{customdata[0]}}<br>accuracy %{{customdata[1]}}<extra></extra>",
            colorbar={"tickvals": list(range(k)), "ticktext": [VERDICT_TEXT[v] for v in VERDICTS], "title": "verdict"},
            xgap=1,
            ygap=1,
            name="verdict",
        )
    else:
        trace = go.Heatmap(
            z=acc.to_numpy(dtype=float),
            x=periods,
            y=labels,
            zmin=0.5,
            zmax=1.0,
            colorscale="RdYlGn",
            customdata=text,
            hovertemplate=f"<b>%{{y}}</b> · {period_word} %{{x}}<br>accuracy %{{customdata}}<extra></extra>",
            colorbar={"title": "accuracy", "tickformat": ".0%"},
            xgap=1,
            ygap=1,
            name="accuracy",
        )
    figure = go.Figure(trace)
    figure.update_layout(
        height=max(220, 60 + 22 * len(labels)),
        margin={"l": 10, "r": 10, "t": 10, "b": 40},
        yaxis={"type": "category", "autorange": "reversed", "automargin": True, "title": None},
        xaxis={"type": "category", "automargin": True, "title": None, "nticks": 24},
        plot_bgcolor="#f0f4f8",
    )
    return figure


def range_periods(start: str, end: str, grain: Grain) -> list[str]:
    """Every period (first day) from ``start`` to ``end``, so days without data still get their column."""
    days = pd.Series(pd.date_range(start, end, freq="D").strftime("%Y-%m-%d"))
    return sorted(period_start(days, grain).unique())


def range_pooled_accuracy(metrics: pd.DataFrame) -> pd.Series:
    """Each class's accuracy over the whole frame, pooled from counts (NaN for a class without images)."""
    totals = metrics.groupby("label")[["n", "correct"]].sum()
    return (totals["correct"] / totals["n"].where(totals["n"] > 0)).astype(float)


def flagged_rows(status: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """The classes whose latest verdict is flagged, most urgent first."""
    if status.empty or "verdict" not in status:
        return status.iloc[0:0]
    rows = status[status.index.isin(list(labels)) & status["verdict"].isin(FLAGGED_VERDICTS)]
    order = rows.assign(
        _sev=rows["verdict"].map(SEVERITY), _prob=pd.to_numeric(rows["prob_below_target"], errors="coerce").fillna(-1.0)
    )
    return order.sort_values(["_sev", "_prob"], ascending=[True, False]).drop(columns=["_sev", "_prob"])


def flagged_list(status: pd.DataFrame, view: View, has_health: bool) -> html.Div:
    """Flagged classes with the evidence behind each verdict."""
    if not has_health:
        return card(
            "Flagged classes",
            html.P("No health verdicts in this range: run the health step (`monitor health --date D`).", className="muted"),
            id=ids.FLAGGED,
        )
    rows = flagged_rows(status, view.shown_labels)
    if rows.empty:
        return card("Flagged classes", html.P(f"No class is flagged as of {view.end}.", className="muted"), id=ids.FLAGGED)
    shown = rows.head(FLAGGED_SHOWN)
    body = []
    for label, row in shown.iterrows():
        body.append(
            [
                dcc.Link(str(label), href=href(ids.PATH_CLASS, view.state, classes=(str(label),), page=1), className="class-link"),
                badge(row["verdict"]),
                str(row.get("since") or "–"),
                fmt_acc(row.get("pooled_accuracy")),
                f"{int(row['pooled_correct'])}/{int(row['pooled_n'])}" if pd.notna(row.get("pooled_n")) and pd.notna(row.get("pooled_correct")) else "–",
                fmt_ci(row.get("ci_low"), row.get("ci_high")),
                fmt_acc(row.get("target")),
                fmt_num(row.get("prob_below_target")),
                str(row.get("reason") or ""),
            ]
        )
    more = len(rows) - len(shown)
    return card(
        f"Flagged classes ({len(rows)}) as of {view.end}",
        html.Div(
            table(
                ["class", "verdict", "since", "pooled accuracy", "correct/n", f"{view.level:.0%} CI", "target", "P(below target)", "evidence"],
                body,
                numeric=(3, 4, 5, 6, 7),
            ),
            className="scroll",
        ),
        html.P(f"…and {more} more: narrow the classes filter or page through the heatmap.", className="muted") if more > 0 else None,
        id=ids.FLAGGED,
    )


def verdict_counts(status: pd.DataFrame, labels: Sequence[str]) -> list[Any]:
    if status.empty or "verdict" not in status:
        return []
    counts = status[status.index.isin(list(labels))]["verdict"].value_counts()
    return [html.Span([badge(verdict), f" {int(counts.get(verdict, 0))}"], className=f"count-{verdict}") for verdict in VERDICTS if verdict in counts]


def overview_page(data: DashboardData, view: View) -> list[Any]:
    """Class x period heatmap (paged, sorted, aggregated), verdict counts and the flagged list."""
    state = view.state
    model_id = view.model.model_id
    chosen = list(view.chosen) or None
    grain = auto_grain(view.start, view.end) if state.grain == "auto" else cast(Grain, state.grain)
    health = data.health(model_id, None, view.end, chosen)
    # Pooling and the latest status are the expensive part of a page; they only change with the store.
    key = (model_id, view.start, view.end, view.chosen, grain, view.level)
    status = data.memo(("status", *key), lambda: class_status(health, as_of=view.end))
    cells = data.memo(("cells", *key), lambda: pool_by_period(data.metrics(model_id, view.start, view.end, chosen), grain, view.level))  # type: ignore[arg-type]
    range_accuracy = data.memo(("range_accuracy", *key), lambda: range_pooled_accuracy(data.metrics(model_id, view.start, view.end, chosen)))
    ranked = rank_classes(status, range_accuracy, view.shown_labels, state.sort)
    pages = max(1, -(-len(ranked) // PAGE_SIZE))
    page = min(state.page, pages)
    page_labels = ranked[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    periods = range_periods(view.start, view.end, grain)
    page_cells = cells[cells["label"].isin(page_labels)]
    page_health = health[(health["label"].isin(page_labels)) & (health["date"] >= view.start)] if state.color == "verdict" else None
    figure = heatmap_figure(page_cells, page_labels, periods, color=state.color, grain=grain, level=view.level, verdicts=page_health)
    in_range = health[health["date"] >= view.start]
    controls = html.Div(
        [
            radio(ids.Q_COLOR, "Colour by", [("accuracy", "accuracy"), ("verdict", "verdict")], state.color),
            radio(ids.Q_GRAIN, "Per", [("auto", f"auto ({auto_grain(view.start, view.end)})"), ("day", "day"), ("week", "week"), ("month", "month")], state.grain),
            radio(ids.Q_SORT, "Sort", [("worst", "worst first"), ("accuracy", "lowest accuracy"), ("name", "name")], state.sort),
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
        summary_line(view, grain, [html.Span(verdict_counts(status, view.shown_labels), id=ids.LEGEND, className="summary")]),
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
        flagged_list(status, view, has_health=not in_range.empty or not status.empty),
    ]


# --- class health over time -----------------------------------------------------------------------------


def timeseries_figure(label: str, metrics: pd.DataFrame, health: pd.DataFrame, *, level: float, target: float, grain: Grain = "day") -> go.Figure:
    """One class over time: accuracy per day (or period) with its Wilson band, the pooled window estimate, target and verdict changes."""
    points = pool_by_period(metrics, grain, level).sort_values("period")  # type: ignore[arg-type]
    points = points[points["n"] > 0]
    x = list(points["period"])
    figure = go.Figure()
    band_name = f"{level:.0%} interval ({grain})"
    figure.add_trace(
        go.Scatter(x=x, y=points["ci_high"], mode="lines", line={"width": 0}, name=f"{band_name} upper", showlegend=False, hoverinfo="skip", legendgroup="band")
    )
    figure.add_trace(
        go.Scatter(
            x=x,
            y=points["ci_low"],
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(47,128,237,0.18)",
            name=band_name,
            legendgroup="band",
            hoverinfo="skip",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=x,
            y=points["accuracy"],
            mode="lines+markers",
            line={"color": "#2f80ed", "width": 1},
            marker={"size": 6},
            name=f"accuracy per {grain}",
            customdata=np.column_stack([points["correct"], points["n"], points["ci_low"], points["ci_high"]]) if len(points) else None,
            hovertemplate="%{x}<br>accuracy %{y:.0%} (%{customdata[0]:.0f}/%{customdata[1]:.0f})<br>"
            + f"{level:.0%} CI "
            + "%{customdata[2]:.0%}–%{customdata[3]:.0%}<extra></extra>",
        )
    )
    rows = health.sort_values("date") if not health.empty else health
    if not rows.empty:
        pooled = rows[pd.notna(rows["pooled_accuracy"])]
        window = int(pooled["window_days"].dropna().iloc[-1]) if len(pooled) and pooled["window_days"].notna().any() else None
        figure.add_trace(
            go.Scatter(
                x=list(pooled["date"]),
                y=pooled["pooled_accuracy"].astype(float),
                mode="lines",
                line={"color": "#102a43", "width": 2, "dash": "dash"},
                name=f"pooled {window}-day estimate" if window else "pooled window estimate",
                customdata=np.column_stack([pooled["pooled_correct"], pooled["pooled_n"], pooled["ci_low"], pooled["ci_high"], pooled["verdict"]]) if len(pooled) else None,
                hovertemplate="%{x}<br>pooled %{y:.1%} (%{customdata[0]}/%{customdata[1]})<br>"
                + f"{level:.0%} CI "
                + "%{customdata[2]:.0%}–%{customdata[3]:.0%}<br>verdict %{customdata[4]}<extra></extra>",
            )
        )
        targets = rows["target"].astype(float) if rows["target"].notna().any() else pd.Series(target, index=rows.index)
        target_x = [rows["date"].iloc[0], rows["date"].iloc[-1]] if len(x) == 0 else [min(x[0], rows["date"].iloc[0]), max(x[-1], rows["date"].iloc[-1])]
        target_value = float(targets.dropna().iloc[-1]) if targets.notna().any() else target
        changes = verdict_changes(rows)
    else:
        target_x = [x[0], x[-1]] if x else []
        target_value = target
        changes = rows
    figure.add_trace(
        go.Scatter(x=target_x, y=[target_value] * len(target_x), mode="lines", line={"color": "#c62828", "width": 1.5, "dash": "dot"}, name=f"target {target_value:.0%}", hoverinfo="name")
    )
    if changes is not None and not changes.empty:
        y = changes["pooled_accuracy"].astype(float).fillna(target_value)
        figure.add_trace(
            go.Scatter(
                x=list(changes["date"]),
                y=y,
                mode="markers",
                marker={"symbol": "diamond", "size": 13, "color": [VERDICT_COLOURS.get(v, "#999") for v in changes["verdict"]], "line": {"width": 1, "color": "#102a43"}},
                name="verdict change",
                text=[f"{VERDICT_TEXT.get(p, p)} → {VERDICT_TEXT.get(v, v)}" for p, v in zip(changes["previous_verdict"], changes["verdict"])],
                hovertemplate="%{x}<br>%{text}<extra></extra>",
            )
        )
        for day, verdict in zip(changes["date"], changes["verdict"]):
            figure.add_vline(x=day, line={"color": VERDICT_COLOURS.get(verdict, "#999"), "width": 1, "dash": "dot"})
    figure.update_layout(
        height=360,
        margin={"l": 10, "r": 10, "t": 30, "b": 30},
        title={"text": f"{label}", "x": 0.01, "font": {"size": 14}},
        yaxis={"range": [0, 1.02], "tickformat": ".0%", "title": "accuracy"},
        xaxis={"type": "date"},
        legend={"orientation": "h", "y": -0.15},
        hovermode="closest",
        plot_bgcolor="white",
    )
    figure.update_yaxes(gridcolor="#e4e7eb")
    figure.update_xaxes(gridcolor="#e4e7eb")
    return figure


#: What each verdict means, in plain words (monitor/health.py; the figures: README, "How class health is judged").
VERDICT_MEANING = {
    "needs_retraining": (
        "The evidence says this class is below its target and has not come back. It draws follow-up images every day; "
        "the flag clears only when the evidence for recovery reaches its threshold, so it does not flicker."
    ),
    "watch": "The evidence leans towards a drop below target: tomorrow's sample draws extra (follow-up) images of this class to settle it.",
    "healthy": "No evidence of a drop below the target.",
    "insufficient_data": "Too few images in the window to judge this class.",
}
#: The defaults' measured behaviour (benchmarks/bench_health.py, 15 classes, 10 images a class a day; README).
VERDICT_FIGURES = (
    "At the defaults, a class that falls from 0.95 to 0.75 is flagged in a median 4 days (95% within 7), one that falls to 0.85 in "
    "a median 11; all classes together raise at most one false alarm a year; a recovered class clears in a median 3 days."
)


def evidence_card(label: str, status: pd.DataFrame, level: float) -> html.Div:
    """The latest verdict of ``label`` with every number behind it, and what the verdict means."""
    if label not in status.index:
        return html.Div([html.B(label), ": no health verdict yet."], className="muted")
    row = status.loc[label]
    flagged = row.get("verdict") == "needs_retraining"
    facts: list[tuple[str, Any]] = [
        ("verdict", badge(row["verdict"])),
        ("since", str(row.get("since") or "–")),
        ("as of", str(row.get("date"))),
        (f"pooled over {row.get('window_days')} days from {row.get('window_start')}", f"{fmt_acc(row.get('pooled_accuracy'))} ({fmt_num(row.get('pooled_correct'), 0)}/{fmt_num(row.get('pooled_n'), 0)})"),
        (f"{level:.0%} CI", fmt_ci(row.get("ci_low"), row.get("ci_high"))),
        ("target", fmt_acc(row.get("target"))),
        ("P(below target)", fmt_num(row.get("prob_below_target"))),
        ("evidence of a drop (CUSUM) / flags at", f"{fmt_num(row.get('cusum'))} / {fmt_num(row.get('cusum_threshold'))}"),
        ("collapse test / flags at", f"{fmt_num(row.get('collapse'))} / {fmt_num(row.get('collapse_threshold'))}"),
        *([("evidence of recovery / clears at", f"{fmt_num(row.get('recovery'))} / {fmt_num(row.get('recovery_threshold'))}")] if flagged else []),
        ("follow-up images tomorrow", fmt_num(row.get("followup"), 0)),
        ("method", str(row.get("method") or "–")),
    ]
    return html.Div(
        [
            html.Div([html.Span(name + ": ", className="muted"), value], style={"display": "inline-block", "marginRight": "18px"})
            for name, value in facts
        ]
        + [
            html.P(str(row.get("reason") or ""), className="reason"),
            html.P([VERDICT_MEANING.get(str(row.get("verdict")), ""), " ", html.Span(VERDICT_FIGURES, className="muted")], className="meaning"),
        ],
        id=f"{ids.CLASS_EVIDENCE}-{label}",
        className="evidence",
    )


def class_page(data: DashboardData, view: View) -> list[Any]:
    """For each chosen class (default: the most urgent one), its health over time and the evidence of its verdict."""
    model_id = view.model.model_id
    health_all = data.health(model_id, None, view.end, list(view.chosen) or None)
    status = class_status(health_all, as_of=view.end)
    messages: list[str] = []
    if view.chosen:
        labels = list(view.chosen)
    else:
        accuracy = range_pooled_accuracy(data.metrics(model_id, view.start, view.end))
        labels = rank_classes(status, accuracy, view.labels, "worst")[:1]
        messages.append(f"Showing the most urgent class, {labels[0]}; choose classes in the filter above." if labels else "No classes.")
    if len(labels) > MAX_CLASS_FIGURES:
        messages.append(f"Showing the first {MAX_CLASS_FIGURES} of {len(labels)} chosen classes.")
        labels = labels[:MAX_CLASS_FIGURES]
    grain: Grain = "day" if view.state.grain == "auto" else cast(Grain, view.state.grain)
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
                    evidence_card(label, status, view.level),
                ],
                className="card class-block",
                **attrs,
            )
        )
    alert_rows = [
        [str(a["date"]), str(a["label"]), str(a["kind"]).replace("_", " "), "yes" if a.get("delivered") else "pending", str(a.get("message") or "")]
        for a in alerts.to_dict("records")
    ]
    return [
        summary_line(view, grain),
        notices(messages) if messages else html.Div(id=ids.NOTICE),
        html.Div(blocks, id=ids.CLASS_TIMESERIES),
        card(
            "Alerts in this range",
            table(["date", "class", "kind", "delivered", "message"], alert_rows) if alert_rows else html.P("No alerts.", className="muted"),
            id=ids.CLASS_ALERTS,
        ),
    ]


# --- what goes wrong --------------------------------------------------------------------------------------


def confusion_figure(confusions: pd.DataFrame, grain: Grain, label: str, periods: Sequence[str] | None = None) -> go.Figure:
    """Stacked bars: how many of ``label``'s images were predicted as each other label, per period."""
    figure = go.Figure()
    if not confusions.empty:
        frame = confusions.assign(period=period_start(confusions["date"], grain))  # type: ignore[arg-type]
        top = frame.groupby("pred")["count"].sum().sort_values(ascending=False)
        keep = list(top.index[:TOP_CONFUSIONS])
        frame = frame.assign(pred=frame["pred"].where(frame["pred"].isin(keep), "other"))
        table_ = frame.groupby(["period", "pred"])["count"].sum().unstack(fill_value=0)
        if periods is not None:
            table_ = table_.reindex(list(periods), fill_value=0)
        for pred in keep + (["other"] if "other" in table_.columns else []):
            figure.add_trace(go.Bar(x=list(table_.index), y=table_[pred], name=f"as {pred}", hovertemplate=f"%{{x}}: %{{y}} predicted as {pred}<extra></extra>"))
    figure.update_layout(
        barmode="stack",
        height=320,
        margin={"l": 10, "r": 10, "t": 30, "b": 30},
        title={"text": f"{label}: mistaken for (per {grain})", "x": 0.01, "font": {"size": 14}},
        yaxis={"title": "wrong predictions"},
        xaxis={"type": "category"},
        legend={"orientation": "h", "y": -0.2},
        plot_bgcolor="white",
    )
    return figure


def thumbnail_url(date: str, path: str) -> str:
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
                html.Figcaption([f"as {row['pred']}", html.Br(), f"{row['confidence']:.0%} sure" if pd.notna(row["confidence"]) else ""]),
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
        health_all = data.health(model_id, None, view.end)
        status = class_status(health_all, as_of=view.end)
        accuracy = range_pooled_accuracy(data.metrics(model_id, view.start, view.end))
        ranked = rank_classes(status, accuracy, view.labels, "worst")
        if not ranked:
            return [summary_line(view), notices(["No classes."])]
        label = ranked[0]
        messages.append(f"Showing the most urgent class, {label}; choose a class in the filter above.")
    grain = auto_grain(view.start, view.end) if view.state.grain == "auto" else cast(Grain, view.state.grain)
    confusions = data.confusions(model_id, label, view.start, view.end)
    totals_frame = confusions.groupby("pred")["count"].sum().sort_values(ascending=False) if not confusions.empty else pd.Series(dtype=int)
    errors_total = int(totals_frame.sum()) if len(totals_frame) else 0
    confusion_rows = [[str(pred), str(int(count)), f"{count / errors_total:.0%}"] for pred, count in totals_frame.head(20).items()]
    dates = [d for d in data.prediction_dates() if view.start <= d <= view.end]
    date = view.state.date if view.state.date in dates else (dates[-1] if dates else None)
    if view.state.date and view.state.date not in dates:
        messages.append(f"No predictions file for {view.state.date} in this range; showing {date or 'nothing'}.")
    return [
        summary_line(view, grain, [html.Span(["Class ", html.B(label, id="errors-class")])]),
        notices(messages) if messages else html.Div(id=ids.NOTICE),
        card(
            "Confusion pairs over time",
            dcc.Graph(
                id=ids.CONFUSION_CHART,
                figure=confusion_figure(confusions, grain, label, range_periods(view.start, view.end, grain)),
                config={"displayModeBar": False},
            ),
            table(["predicted as", "images", "share of errors"], confusion_rows, id=ids.CONFUSION_TABLE, numeric=(1, 2), narrow=True)
            if confusion_rows
            else html.P(f"{label} was never mistaken in this range.", className="muted", id=ids.CONFUSION_TABLE),
        ),
        card(
            f"Misclassified sampled images of {label}",
            html.Div([date_dropdown(dates, date, "Day")], className="controls-row"),
            gallery(data, date, label, model_id),
        ),
    ]


# --- run detail ---------------------------------------------------------------------------------------


def _count_rows(counts: dict[str, Any] | None) -> list[list[str]]:
    return [[str(reason), str(count)] for reason, count in sorted((counts or {}).items(), key=lambda kv: (-int(kv[1] or 0), kv[0]))]


def run_page(data: DashboardData, view: View) -> list[Any]:
    """For one date: the per-class table and what was skipped or failed."""
    model_id = view.model.model_id
    metrics_range = data.metrics(model_id, view.start, view.end)
    dates = sorted(metrics_range["date"].unique())
    messages: list[str] = []
    date = view.state.date if view.state.date in dates else (dates[-1] if dates else None)
    if view.state.date and view.state.date not in dates:
        messages.append(f"No run of {model_id} on {view.state.date} in this range; showing {date or 'nothing'}.")
    if date is None:
        return [summary_line(view), notices(messages + ["No runs in this range."])]
    day_metrics = data.metrics(model_id, date, date, list(view.chosen) or None)
    day_health = data.health(model_id, date, date, list(view.chosen) or None).set_index("label")
    frame = day_metrics.set_index("label").sort_index()
    frame = frame.assign(
        verdict=day_health["verdict"].reindex(frame.index),
        reason=day_health["reason"].reindex(frame.index),
        _sev=day_health["verdict"].reindex(frame.index).map(SEVERITY).fillna(len(VERDICTS)),
    ).sort_values(["_sev", "accuracy"], na_position="last")
    rows = [
        [
            dcc.Link(str(label), href=href(ids.PATH_CLASS, view.state, classes=(str(label),))),
            str(int(r["n"])),
            str(int(r["correct"])),
            str(int(r["failed"])),
            fmt_acc(r["accuracy"]),
            fmt_ci(r["ci_low"], r["ci_high"]),
            badge(r["verdict"]) if isinstance(r["verdict"], str) else "–",
            str(r["reason"]) if isinstance(r["reason"], str) else "",
        ]
        for label, r in frame.iterrows()
    ]
    runs = data.runs(date)
    skipped: dict[str, int] = {}
    failed: dict[str, int] = {}
    stages: list[list[str]] = []
    for run in runs:
        for reason, count in (run.get("skipped") or {}).items():
            skipped[reason] = skipped.get(reason, 0) + int(count)
        for reason, count in (run.get("failed") or {}).items():
            failed[reason] = failed.get(reason, 0) + int(count)
        for stage, info in sorted((run.get("stages") or {}).items(), key=lambda kv: str((kv[1] or {}).get("finished_at"))):
            stages.append([str(run.get("source")), stage, str((info or {}).get("finished_at", "–"))[:19]])
    failed_images = data.failed_predictions(date)
    sources = sorted({str(run.get("source")) for run in runs if run.get("source")})
    skipped_images = data.unusable_images(sources, limit=200) if sources else pd.DataFrame(columns=["path", "status", "reason"])
    return [
        summary_line(view, None, [html.Span(["Run of ", html.B(date, id="run-date")])]),
        notices(messages) if messages else html.Div(id=ids.NOTICE),
        html.Div([date_dropdown(dates, date, "Run date")], className="controls-row"),
        card(
            f"Per class on {date}",
            html.Div(
                table(["class", "n", "correct", "failed", "accuracy", f"{view.level:.0%} CI", "verdict", "evidence"], rows, id=ids.RUN_TABLE, numeric=(1, 2, 3, 4, 5)),
                className="scroll",
            ),
        ),
        card(
            "Skipped images",
            table(["reason", "images"], _count_rows(skipped), numeric=(1,), narrow=True) if skipped else html.P("Nothing was skipped when the source was indexed.", className="muted"),
            table(["path", "status", "reason"], [[str(r["path"]), str(r["status"]), str(r["reason"])] for r in skipped_images.to_dict("records")])
            if not skipped_images.empty
            else None,
            id=ids.RUN_SKIPPED,
        ),
        card(
            "Failed images",
            table(["reason", "images"], _count_rows(failed), numeric=(1,), narrow=True) if failed else None,
            table(["path", "class", "error"], [[str(r["image_path"]), str(r["label"]), str(r["error"])] for r in failed_images.head(200).to_dict("records")])
            if not failed_images.empty
            else html.P(f"No image failed on {date}.", className="muted"),
            id=ids.RUN_FAILED,
        ),
        card("Stages", table(["source", "stage", "finished at (UTC)"], stages) if stages else html.P("No run record for this date.", className="muted")),
    ]


def render_page(data: DashboardData, pathname: str, state: ViewState) -> tuple[View | None, list[Any]]:
    """The resolved view and the page's components for ``pathname``; an empty store gives the empty state."""
    view = resolve(data, state)
    if view is None:
        return None, [empty_state(data)]
    pages = {ids.PATH_OVERVIEW: overview_page, ids.PATH_CLASS: class_page, ids.PATH_ERRORS: errors_page, ids.PATH_RUN: run_page}
    builder = pages.get(pathname)
    if builder is None:
        return view, [not_found(pathname, state)]
    content = builder(data, view)
    if view.notices:
        content = [notices(list(view.notices)), *content]
    return view, content
