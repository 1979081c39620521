"""Run dates: parsing and validation of ``--date`` / ``{{ ds }}`` values, and day boundaries in UTC."""

from __future__ import annotations

import datetime as dt

from monitor.errors import ConfigError


def today_utc() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def parse_run_date(text: str | dt.date, today: dt.date | None = None) -> str:
    """Return ``text`` as ``YYYY-MM-DD``; refuse malformed dates and dates after ``today`` (UTC)."""
    if isinstance(text, dt.datetime):
        day = text.date()
    elif isinstance(text, dt.date):
        day = text
    else:
        try:
            day = dt.date.fromisoformat(text.strip())
        except ValueError as exc:
            raise ConfigError(f"date {text!r} is not a valid YYYY-MM-DD date") from exc
        if len(text.strip()) != 10:
            raise ConfigError(f"date {text!r} is not in YYYY-MM-DD form")
    limit = today or today_utc()
    if day > limit:
        raise ConfigError(f"date {day.isoformat()} is in the future (today is {limit.isoformat()} UTC)")
    return day.isoformat()


def end_of_day(date: str) -> dt.datetime:
    """The last instant of ``date`` in UTC (exclusive upper bound is the next midnight)."""
    day = dt.date.fromisoformat(date)
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min, tzinfo=dt.timezone.utc) - dt.timedelta(microseconds=1)


def start_of_day(date: str) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(date), dt.time.min, tzinfo=dt.timezone.utc)


def days_before(date: str, days: int) -> str:
    return (dt.date.fromisoformat(date) - dt.timedelta(days=days)).isoformat()
