"""The index stage: the configured source walked into the store, incrementally (only new or changed blobs are written)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from monitor.core.progress import ProgressFactory, no_progress
from monitor.core.settings import Settings
from monitor.orchestration.results import IndexResult
from monitor.store import Store, open_store

if TYPE_CHECKING:
    from monitor.core.sources import ImageSource

log = logging.getLogger(__name__)


def label_map_of(settings: Settings) -> dict[str, str] | None:
    """The folder -> label map the settings name (``MONITOR_LABEL_MAP``), or None."""
    from monitor.core.labels import load_label_map

    return load_label_map(settings.label_map) if settings.label_map else None


def index_with(
    settings: Settings, store: Store, *, progress: ProgressFactory = no_progress, source: ImageSource | None = None
) -> IndexResult:
    """Index ``source`` (else the configured one) into ``store`` (incremental: only new or changed blobs are written)."""
    from monitor.core.image_times import ImageTime
    from monitor.core.sources import open_source
    from monitor.domain.indexing import index_source

    source = source or open_source(settings.source_uri)
    source.check()
    with progress("index", None) as advance:
        report = index_source(
            source,
            store,
            progress=advance,
            label_map=label_map_of(settings),
            image_time=ImageTime.parse(settings.image_time),
        )
    summary: IndexResult = {
        "source": source.uri,
        "listed": report.listed,
        "new": report.new,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "missing": report.missing,
        "reappeared": report.reappeared,
        "unusable": dict(report.unusable),
        "labels": dict(report.labels),
        "wrote_nothing": report.wrote_nothing,
    }
    log.info("indexed %s: %s", source.uri, summary)
    return summary


def run_index(settings: Settings, *, progress: ProgressFactory = no_progress) -> IndexResult:
    with open_store(settings) as store:
        return index_with(settings, store, progress=progress)
