"""Run dates: the one place a date is parsed, and the arithmetic and day boundaries (UTC) every stage uses.

A run date is read from text once, at the edge (the CLI's ``--date``, Airflow's ``{{ ds }}``, a dashboard URL,
a stored document or a file name), and travels as a :class:`datetime.date` from there on. The store and the
files keep the ISO form (``YYYY-MM-DD``), which sorts as the dates do.
"""

from __future__ import annotations

import datetime as dt

from monitor.core.errors import ConfigError

#: The earliest run date: no image can have been created before the Unix epoch, and every window
#: (fresh days, health window, follow-up look-back) stays far from ``datetime.date.min``.
MIN_RUN_DATE = dt.date(1970, 1, 1)


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def iso_day(text: str) -> dt.date:
    """``text`` as a date when it is exactly ``YYYY-MM-DD`` (how the store, the files and URLs name a day).

    Raises :class:`ConfigError` naming the text otherwise; ``fromisoformat`` alone would also take ``20240105``.
    """
    stripped = text.strip() if isinstance(text, str) else text
    try:
        day = dt.date.fromisoformat(stripped)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"date {text!r} is not a valid YYYY-MM-DD date") from exc
    if len(stripped) != 10:
        raise ConfigError(f"date {text!r} is not in YYYY-MM-DD form")
    return day


def is_iso_day(text: str) -> bool:
    """Whether ``text`` names a day exactly as :func:`iso_day` reads it (e.g. a predictions file's stem)."""
    try:
        return iso_day(text).isoformat() == text
    except ConfigError:
        return False


def parse_run_date(text: str | dt.date, today: dt.date | None = None) -> dt.date:
    """The run date ``text`` names; refuses malformed dates, dates after ``today`` (UTC) and before :data:`MIN_RUN_DATE`."""
    if isinstance(text, dt.datetime):
        day = text.date()
    elif isinstance(text, dt.date):
        day = text
    else:
        day = iso_day(text)
    limit = today or today_utc()
    if day > limit:
        raise ConfigError(f"date {day.isoformat()} is in the future (today is {limit.isoformat()} UTC)")
    if day < MIN_RUN_DATE:
        raise ConfigError(
            f"date {day.isoformat()} is before {MIN_RUN_DATE.isoformat()}: no image was created that early; give a later date"
        )
    return day


def end_of_day(day: dt.date) -> dt.datetime:
    """The last instant of ``day`` in UTC (exclusive upper bound is the next midnight)."""
    return dt.datetime.combine(day, dt.time.max, tzinfo=dt.UTC)


def start_of_day(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def days_before(day: dt.date, days: int) -> dt.date:
    """The date ``days`` days before ``day``; a window reaching before year 1 is a :class:`ConfigError` naming both."""
    try:
        return day - dt.timedelta(days=days)
    except OverflowError as exc:
        raise ConfigError(
            f"{days} days before {day} is before the first representable date; choose a later date or a shorter window"
        ) from exc


def days_after(day: dt.date, days: int = 1) -> dt.date:
    """The date ``days`` days after ``day`` (the exclusive end of a range that ends with ``day``)."""
    try:
        return day + dt.timedelta(days=days)
    except OverflowError as exc:
        raise ConfigError(f"{days} days after {day} is after the last representable date") from exc


def day_span(first: dt.date, last: dt.date) -> int:
    """How many days the range ``first``..``last`` holds, both ends included."""
    return (last - first).days + 1
