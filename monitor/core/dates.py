"""Run dates: parsing and validation of ``--date`` / ``{{ ds }}`` values, and day boundaries in UTC."""

from __future__ import annotations

import datetime as dt

from monitor.core.errors import ConfigError

#: The earliest run date: no image can have been created before the Unix epoch, and every window
#: (fresh days, health window, follow-up look-back) stays far from ``datetime.date.min``.
MIN_RUN_DATE = dt.date(1970, 1, 1)


def today_utc() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def parse_run_date(text: str | dt.date, today: dt.date | None = None) -> str:
    """Return ``text`` as ``YYYY-MM-DD``; refuse malformed dates, dates after ``today`` (UTC) and before :data:`MIN_RUN_DATE`."""
    if isinstance(text, dt.datetime):
        day = text.date()
    elif isinstance(text, dt.date):
        day = text
    else:
        try:
            day = dt.date.fromisoformat(text.strip())
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"date {text!r} is not a valid YYYY-MM-DD date") from exc
        if len(text.strip()) != 10:
            raise ConfigError(f"date {text!r} is not in YYYY-MM-DD form")
    limit = today or today_utc()
    if day > limit:
        raise ConfigError(f"date {day.isoformat()} is in the future (today is {limit.isoformat()} UTC)")
    if day < MIN_RUN_DATE:
        raise ConfigError(f"date {day.isoformat()} is before {MIN_RUN_DATE.isoformat()}: no image was created that early; give a later date")
    return day.isoformat()


def _day(date: str) -> dt.date:
    try:
        return dt.date.fromisoformat(date)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"date {date!r} is not a valid YYYY-MM-DD date") from exc


def end_of_day(date: str) -> dt.datetime:
    """The last instant of ``date`` in UTC (exclusive upper bound is the next midnight)."""
    return dt.datetime.combine(_day(date), dt.time.max, tzinfo=dt.timezone.utc)


def start_of_day(date: str) -> dt.datetime:
    return dt.datetime.combine(_day(date), dt.time.min, tzinfo=dt.timezone.utc)


def days_before(date: str, days: int) -> str:
    """The date ``days`` days before ``date``; a window reaching before year 1 is a :class:`ConfigError` naming both."""
    try:
        return (_day(date) - dt.timedelta(days=days)).isoformat()
    except OverflowError as exc:
        raise ConfigError(f"{days} days before {date} is before the first representable date; choose a later date or a shorter window") from exc
