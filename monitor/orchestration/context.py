"""The run context: what every stage of one date's run needs, worked out once at the edge and passed down."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from monitor.core.dates import parse_run_date
from monitor.core.settings import Settings


@dataclass(frozen=True)
class RunContext:
    """One run of one date: the settings, the date (checked: a real date, not in the future) and the source's canonical URI.

    Built by :meth:`for_date` before anything is opened or written, so a bad date or source URI fails first and
    the stages below never parse or validate them again.
    """

    settings: Settings
    date: dt.date
    source_uri: str

    @classmethod
    def for_date(cls, settings: Settings, date: str | dt.date) -> "RunContext":
        from monitor.core.sources import open_source

        return cls(settings=settings, date=parse_run_date(date), source_uri=open_source(settings.source_uri).uri)

    @property
    def day(self) -> str:
        """The date as the store and the files name it (ISO ``YYYY-MM-DD``)."""
        return self.date.isoformat()
