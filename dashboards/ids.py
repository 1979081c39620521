"""Component ids and URL query parameter names of the dashboard, as constants (never spelled twice)."""

from __future__ import annotations

from typing import Final

# --- app shell --------------------------------------------------------------------------------
URL: Final = "url"
PAGE: Final = "page-content"
PAGE_LOADING: Final = "page-loading"

# --- controls: pattern-matching ids, so one callback writes every control's value into the URL ---
PARAM: Final = "param"  # {"type": PARAM, "name": <query name>} with a ``value`` prop
PARAM_RANGE: Final = "param-range"  # {"type": PARAM_RANGE, "name": "dates"} with start_date / end_date


def param(name: str) -> dict[str, str]:
    """The id of the control whose ``value`` is the query parameter ``name``."""
    return {"type": PARAM, "name": name}


def param_range(name: str) -> dict[str, str]:
    """The id of a date-range control whose ``start_date``/``end_date`` are the ``start``/``end`` parameters."""
    return {"type": PARAM_RANGE, "name": name}


DATES: Final = "dates"

# --- query parameters (shareable URL state) ---------------------------------------------------
Q_MODEL: Final = "model"
Q_START: Final = "start"
Q_END: Final = "end"
Q_CLASSES: Final = "classes"
Q_GRAIN: Final = "grain"
Q_DATE: Final = "date"
Q_COLOR: Final = "color"
Q_SORT: Final = "sort"
Q_PAGE: Final = "page"

# --- page paths -------------------------------------------------------------------------------
PATH_OVERVIEW: Final = "/"
PATH_CLASS: Final = "/class"
PATH_ERRORS: Final = "/errors"
PATH_RUN: Final = "/run"
PATH_COMPARE: Final = "/compare"
PATH_THUMB: Final = "/thumb"
PATH_METRICS: Final = "/metrics"
PATH_REPORT: Final = "/report"

# --- page content -----------------------------------------------------------------------------
NAV: Final = "nav"
FILTERS: Final = "filters"
EMPTY_STATE: Final = "empty-state"
SUMMARY: Final = "summary"
LEGEND: Final = "verdict-legend"
NEXT_STEPS: Final = "next-steps"
FIRST_VERDICT: Final = "first-verdict"
RUN_REPORT: Final = "run-report"
OVERVIEW_HEATMAP: Final = "overview-heatmap"
HEATMAP_PAGER: Final = "heatmap-pager"
FLAGGED: Final = "flagged-list"
CLASS_TIMESERIES: Final = "class-timeseries"
CLASS_EVIDENCE: Final = "class-evidence"
CLASS_ALERTS: Final = "class-alerts"
CONFUSION_CHART: Final = "confusion-chart"
CONFUSION_TABLE: Final = "confusion-table"
GALLERY: Final = "gallery"
RUN_TABLE: Final = "run-table"
RUN_SKIPPED: Final = "run-skipped"
RUN_FAILED: Final = "run-failed"
NOTICE: Final = "notice"
COMPARE_VERDICT: Final = "compare-verdict"
COMPARE_CHART: Final = "compare-chart"
COMPARE_TABLE: Final = "compare-table"
COMPARE_GALLERY: Final = "compare-gallery"
