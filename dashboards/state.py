"""The URL state: what a page's query string asks for, read leniently, written back without defaults, and clamped.

Pure: no data, no Dash. The query string is the dashboard's only state (callbacks rewrite it, pages
are rendered from it), so a view can be shared and survives reload and back/forward.
:func:`clamp_range`, :func:`pick_date` and :func:`clamp_page` fit what it asks for to what exists,
given the dates and counts that :mod:`dashboards.view` and the pages look up.

A shared link is input from anyone: reading it is bounded (at most :data:`MAX_QUERY_CHARS` read,
:data:`MAX_CLASSES` classes, pages up to :data:`MAX_PAGE`, ASCII digits only), no date arithmetic on
its values can overflow, and what is dropped is named (shortened) in ``problems``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlencode

from dashboards import ids
from dashboards.pooling import GRAINS
from monitor.core.dates import days_before, is_iso_day, iso_day
from monitor.core.errors import ConfigError

SORTS: tuple[str, ...] = ("worst", "accuracy", "name")
COLOURS: tuple[str, ...] = ("accuracy", "verdict")
#: Default history shown when the URL names no range.
DEFAULT_DAYS = 365
#: Characters of a query string read; the rest is ignored with a notice (1,000 class names of 50 characters fit).
MAX_QUERY_CHARS = 65_536
#: Classes one URL may choose (a store of more classes is shown whole by choosing none).
MAX_CLASSES = 1_000
#: Highest page number read (more than any store has pages; beyond the last page shows the last).
MAX_PAGE = 100_000
#: Characters of a rejected value quoted back in a notice.
SHOWN_CHARS = 60


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


def _valid_date(text: object) -> bool:
    return isinstance(text, str) and is_iso_day(text)


def shown(value: object) -> str:
    """``repr(value)`` cut to :data:`SHOWN_CHARS` characters, for quoting user input back in a notice."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def page_number(value: object) -> int | None:
    """``value`` as a page number (ASCII digits, 1 … :data:`MAX_PAGE`), else None.

    ``str.isdigit`` alone is not enough: it accepts '٣' (which ``int`` reads as 3) and '²' (which ``int`` refuses).
    """
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_PAGE)):
        return None
    page = int(text)
    return page if 1 <= page <= MAX_PAGE else None


def _bounded(search: object, problems: list[str]) -> str:
    """The part of ``search`` that is read: a string of at most :data:`MAX_QUERY_CHARS` whole parameters, valid UTF-8."""
    if not isinstance(search, str):
        return ""
    if len(search) > MAX_QUERY_CHARS:
        cut = search.rfind("&", 0, MAX_QUERY_CHARS + 1)
        problems.append(f"the address is {len(search):,} characters long; only its first {MAX_QUERY_CHARS:,} were read")
        search = search[: max(cut, 0)]
    # A lone surrogate (possible in a JSON string) cannot be sent back as UTF-8.
    return search.encode("utf-8", "replace").decode("utf-8")


def parse_query(search: str | None) -> ViewState:
    """Read the query string leniently: a malformed value is dropped and named in ``problems``, never an error page.

    Bounded: at most :data:`MAX_QUERY_CHARS` characters are read and :data:`MAX_CLASSES` classes kept, in linear time.
    """
    problems: list[str] = []
    query = parse_qs(_bounded(search, problems).lstrip("?"), keep_blank_values=False)

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    def date_value(name: str) -> str | None:
        value = one(name)
        if value is not None and not _valid_date(value):
            problems.append(f"{name}={shown(value)} is not a YYYY-MM-DD date; ignored")
            return None
        return value

    def choice(name: str, allowed: Sequence[str], default: str) -> str:
        value = one(name)
        if value is None:
            return default
        if value not in allowed:
            problems.append(f"{name}={shown(value)} is not one of {', '.join(allowed)}; ignored")
            return default
        return value

    page_text = one(ids.Q_PAGE)
    page = 1
    if page_text is not None:
        number = page_number(page_text)
        if number is not None:
            page = number
        else:
            problems.append(f"page={shown(page_text)} is not a page number from 1 to {MAX_PAGE:,}; ignored")
    classes = list(dict.fromkeys(query.get(ids.Q_CLASSES, [])))  # first occurrence kept, in linear time
    if len(classes) > MAX_CLASSES:
        problems.append(f"the address chooses {len(classes):,} classes; only the first {MAX_CLASSES:,} are shown")
        del classes[MAX_CLASSES:]
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


def state_from_controls(state: ViewState, params: dict[str, Any], start: str | None, end: str | None) -> ViewState:
    """``state`` updated with the controls' values; any change other than the page goes back to page 1."""
    # The values come from a request body: anything not of a control's type is ignored, never an error.
    changes: dict[str, Any] = {}
    for name, value in params.items():
        if name == ids.Q_CLASSES:
            if value is None or (isinstance(value, list) and all(isinstance(label, str) for label in value)):
                changes["classes"] = tuple(dict.fromkeys(value or ()))[:MAX_CLASSES]
        elif name == ids.Q_PAGE:
            changes["page"] = page_number(value) or 1
        elif name in (ids.Q_MODEL, ids.Q_GRAIN, ids.Q_COLOR, ids.Q_SORT, ids.Q_DATE):
            if isinstance(value, str):
                changes[name] = value
    # A date picker sends "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SS"; anything else is ignored.
    if isinstance(start, str) and _valid_date(start[:10]):
        changes["start"] = start[:10]
    if isinstance(end, str) and _valid_date(end[:10]):
        changes["end"] = end[:10]
    if "model" in changes and changes["model"] != state.model and state.model is not None:
        # Another model has other dates and classes: start from its defaults.
        changes.setdefault("classes", ())
        changes["start"] = changes["end"] = None
        changes["date"] = None
    updated = replace(state, **changes)
    if replace(updated, page=1) != replace(state, page=1):
        updated = replace(updated, page=1)
    return updated


def clamp_range(state: ViewState, first: str, last: str) -> tuple[str, str, list[str]]:
    """The range to show for ``state`` within the evaluated dates ``first`` … ``last``, and a notice per change made.

    No range asked: the last :data:`DEFAULT_DAYS` days. A reversed range is swapped; a range
    outside the evaluated dates is clamped to them (a shared URL asking for centuries must not build them).
    """
    notices: list[str] = []
    end = state.end or last
    start = state.start or max(first, _days_before(min(end, last), DEFAULT_DAYS - 1))
    if start > end:
        notices.append(f"start {start} is after end {end}; swapped")
        start, end = end, start
    if start < first or start > last:
        notices.append(
            f"start {start} is outside the evaluated dates {first} … {last}; showing from {max(first, min(start, last))}"
        )
        start = max(first, min(start, last))
    if end > last or end < first:
        notices.append(
            f"end {end} is outside the evaluated dates {first} … {last}; showing up to {min(last, max(end, first))}"
        )
        end = min(last, max(end, first))
    return start, end, notices


def _days_before(day: str, days: int) -> str:
    """The ISO date ``days`` before ``day``, or 0001-01-01 when that is before the calendar's first day (a shared ``end=0001-01-05``)."""
    try:
        return days_before(iso_day(day), days).isoformat()
    except ConfigError:
        return dt.date.min.isoformat()


def pick_date(wanted: str | None, dates: Sequence[str]) -> str | None:
    """``wanted`` when it is one of ``dates`` (oldest first), else the latest of them; None when there are none."""
    return wanted if wanted in dates else (dates[-1] if dates else None)


def clamp_page(page: int, items: int, size: int) -> tuple[int, int]:
    """``page`` (from 1) kept within the pages of ``items`` in pages of ``size``, and how many pages there are (at least 1)."""
    pages = max(1, -(-items // size))
    return min(page, pages), pages
