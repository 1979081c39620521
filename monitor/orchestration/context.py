"""The run context: what every stage of one date's run needs, worked out once at the edge and passed down."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from monitor.core.dates import parse_run_date
from monitor.core.settings import Settings

if TYPE_CHECKING:
    from monitor.core.artifacts import Artifacts
    from monitor.core.sources import ImageSource


@dataclass(frozen=True)
class RunContext:
    """One run of one date: the settings, the date (checked: a real date, not in the future) and the opened source.

    Built by :meth:`for_date` before anything is opened or written, so a bad date or source URI fails first; the
    stages below take the date as a ``datetime.date`` and the source as opened here, and parse neither again.
    """

    settings: Settings
    date: dt.date
    source: ImageSource = field(compare=False)
    #: Where the day's files go for the next task (``MONITOR_ARTIFACTS_URI``), opened with the source.
    artifacts: Artifacts = field(compare=False)
    #: When this run began here (``time.monotonic``), and when its last stage ended: each stage's note says its seconds.
    started: float = field(default_factory=time.monotonic, compare=False)
    marks: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def for_date(cls, settings: Settings, date: str | dt.date) -> RunContext:
        from monitor.core.artifacts import open_artifacts
        from monitor.core.sources import open_source

        return cls(
            settings=settings,
            date=parse_run_date(date),
            source=open_source(settings.source_uri),
            artifacts=open_artifacts(settings.artifacts_uri),
        )

    @property
    def source_uri(self) -> str:
        """The source's canonical URI (the key of its images, samples and runs in the store)."""
        return self.source.uri

    @property
    def day(self) -> str:
        """The date as the store and the files name it (ISO ``YYYY-MM-DD``)."""
        return self.date.isoformat()
