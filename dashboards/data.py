"""The dashboard's data access: one read-only, cached reader of the store, the prediction files and the image source.

Nothing here runs at import. :class:`DashboardData` opens one :class:`~monitor.store.Store` lazily
with ``open_store(settings, read_only=True)`` and reads only through its named operations, with the
same code for both engines:

- the **embedded store** (the default): before answering, ``Store.refresh()`` follows the latest
  commit (a stat of its manifest); when a writer has committed, the cached answers are dropped, so a
  pipeline run shows up without restarting. The dashboard never takes the writer's lock and never
  writes a file of the store;
- a real **MongoDB**: answers are kept for ``ttl_s`` seconds.

A model's daily class metrics and class health are fetched whole, once per store version, and
sliced by date range (bisection of the sorted dates) and classes in pandas: the pages ask for many
overlapping ranges of the same history. Only the columns the pages use are read, a few weeks at a
time (:data:`ROWS_PER_READ`), and text that repeats (dates, classes, verdicts) is one shared string
per value: a year of 1,000 classes is held in about 150 MB of columns, never as 730,000 documents. Shaping documents into frames is :mod:`dashboards.records`'; pooling and verdict status are
:mod:`dashboards.pooling` and :mod:`dashboards.status` (pure, used by the pages). Prediction files
are found and read in the artifact store (local or ``gs://``) by :class:`evaluation.predictions.PredictionFiles`,
kept while their stamp (mtime or GCS generation) is unchanged; thumbnails are made by :func:`dashboards.thumbnails.make_thumbnail`.
A candidate's comparison with production is read as the compare stage stored it (``comparisons``): nothing
statistical is computed here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import pandas as pd

from dashboards import records
from dashboards.cache import Lru
from dashboards.records import HEALTH_FIELDS, METRIC_FIELDS, PREDICTION_FIELDS, UNUSABLE_FIELDS, ModelInfo, iso_date
from dashboards.state import shown
from dashboards.thumbnails import THUMB_SIDE, make_thumbnail
from evaluation.predictions import PredictionFiles
from monitor.core.artifacts import artifacts_for
from monitor.core.errors import DataError, MonitorError, SourceError
from monitor.core.settings import Settings
from monitor.store import Store, open_store

if TYPE_CHECKING:
    from monitor.domain.compare import ComparisonRecord

T = TypeVar("T")
log = logging.getLogger(__name__)

#: The count columns of class metrics: integers, a missing count 0.
COUNT_FIELDS = ("n", "correct", "failed")

#: Rows read from the store in one query when a history is read: a longer history is read in spans of days of about
#: this many rows (by the model's class count), each made into columns before the next, so its documents never all
#: exist at once (a year of 1,000 classes' health would be GBs of dicts).
ROWS_PER_READ = 20_000
#: Text columns whose values repeat from row to row: each value is held once, shared by the rows that have it.
SHARED_TEXT = ("date", "label", "verdict", "window_start", "method", "pred")

#: Thumbnails kept in memory (a few KB each).
THUMB_CACHE_SIZE = 1024
#: Prediction files kept in memory (one per date, a few hundred KB at most for a daily sample).
PREDICTION_CACHE_SIZE = 16


@dataclass(frozen=True)
class _History:
    """One model's cached ``class_metrics`` or ``class_health`` rows, and their date column when sorted (for bisection)."""

    frame: pd.DataFrame
    dates: np.ndarray | None


@dataclass(frozen=True)
class _Columns:
    """What one kept history is: the store collection, the fields read of it, and how its documents become a frame."""

    name: str
    kind: str
    fields: tuple[str, ...]
    shape: Callable[[list[dict[str, Any]]], pd.DataFrame]


_METRICS = _Columns(
    "class_metrics",
    "class_metrics",
    METRIC_FIELDS,
    # The counts as integers once here, not on every slice.
    lambda docs: records.counts(records.records_frame(docs, METRIC_FIELDS), COUNT_FIELDS),
)
_HEALTH = _Columns(
    "class_health", "class_health", HEALTH_FIELDS, lambda docs: records.records_frame(docs, HEALTH_FIELDS)
)
_CONFUSIONS = _Columns("confusions", "class_metrics", ("date", "label", "confusions"), records.confusions_frame)


def _share_text(frame: pd.DataFrame, pools: dict[str, dict[str, str]]) -> pd.DataFrame:
    """``frame`` with the strings of its :data:`SHARED_TEXT` columns replaced by the first equal string seen (``pools``,
    one per column, kept across the parts of one read): the store decodes a new string for every row."""
    for name in SHARED_TEXT:
        if name not in frame or frame[name].dtype != object:
            continue
        pool = pools.setdefault(name, {})
        values = frame[name].to_numpy(dtype=object)
        if pd.api.types.infer_dtype(values, skipna=True) == "string":  # text and gaps: hashed in C
            codes, uniques = pd.factorize(values)
            distinct = np.array([pool.setdefault(value, value) for value in uniques], dtype=object)
            shared, present = values.copy(), codes >= 0  # a gap (None or NaN) kept as it is
            shared[present] = distinct[codes[present]]
        else:  # other values too (1 and 1.0 and True hash alike): only the strings are shared
            shared = np.array([pool.setdefault(v, v) if type(v) is str else v for v in values], dtype=object)
        frame[name] = pd.Series(shared, index=frame.index, dtype=object)
    return frame


def _updated(
    frame: pd.DataFrame, old: dict[str, str], new: dict[str, str], read: Callable[[str, str], pd.DataFrame]
) -> pd.DataFrame:
    """``frame`` (rows by date, then label, read at day versions ``old``) brought to versions ``new``: the rows of dates
    that changed or went are dropped, those of changed dates read again with ``read(start, end)``."""
    changed = sorted(day for day, version in new.items() if old.get(day) != version)
    stale = set(changed) | (old.keys() - new.keys())
    if not stale:
        return frame
    parts = [frame[~frame["date"].isin(stale)]] if len(frame) else []
    if changed:
        fresh = read(changed[0], changed[-1])
        parts.append(fresh[fresh["date"].isin(set(changed))])
    parts = [part for part in parts if len(part)]
    if not parts:
        return frame.iloc[0:0]
    merged = pd.concat(parts, ignore_index=True)
    return merged.sort_values(["date", "label"], kind="stable", ignore_index=True)


class DashboardData:
    """Read-only, cached access to the store, the prediction files and the image source for one app.

    Thread-safe: Flask serves requests on threads, and one lock guards the store and its cached
    answers (the embedded store is not thread-safe, and a query that misses the cache is then run
    once, not by every waiting request); the predictions frames and thumbnails it keeps are in
    :class:`~dashboards.cache.Lru` mappings with their own locks.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        source: Any = None,
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        background_reload: bool = False,
        on_reload: Callable[[], Any] | None = None,
    ) -> None:
        """``source`` is the image source for thumbnails (default: ``open_source(settings.source_uri)`` on first use).

        ``on_reload`` runs after a new commit of the embedded store was seen and the cached answers
        dropped (e.g. to pre-compute the default overview): on a thread with ``background_reload``
        (the served app: the request that saw the commit is not kept waiting for it), else at once.
        """
        self.settings = settings
        self._background_reload = background_reload
        self.on_reload = on_reload
        self._reloading = False
        self._source = source
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.RLock()
        self._store: Store | None = None
        self._version: Hashable = None
        self._cache: dict[Hashable, Any] = {}
        # Histories kept across commits with the day versions they were read at (see _history).
        self._kept: dict[tuple[str, str], tuple[dict[str, str], _History]] = {}
        self._predictions: Lru[pd.DataFrame] = Lru(PREDICTION_CACHE_SIZE)
        self._thumbs: Lru[bytes] = Lru(THUMB_CACHE_SIZE)
        self._files = PredictionFiles(artifacts_for(settings))

    # --- store version and caching ------------------------------------------------------------

    def version(self) -> Hashable:
        """Changes whenever cached answers may be stale: the store's commit, or a TTL bucket when it has none (MongoDB)."""
        with self._lock:
            self._current_store()
            return self._version

    def describe(self) -> str:
        """A readable name for the store (passwords redacted)."""
        with self._lock:
            return self._current_store().description

    def _current_store(self) -> Store:
        """The open store, its cached answers dropped when they may be stale (called under the lock)."""
        if self._store is None:
            started = time.perf_counter()
            self._store = open_store(self.settings, read_only=True)
            log.info("opened %s in %.2f s", self._store.description, time.perf_counter() - started)
        store = self._store
        followed = store.refresh()  # a new commit of the embedded store (a stat of its manifest)
        commit = store.version()
        # A store that cannot tell when it changed (MongoDB) is asked again every ttl_s seconds.
        version = ("commit", commit) if commit is not None else ("ttl", int(self._clock() // self._ttl_s))
        if version != self._version:
            self._cache.clear()
            if followed:
                log.info("following commit %s of %s", commit, store.description)
                self._after_reload()
            self._version = version
        return store

    def _after_reload(self) -> None:
        """Run ``on_reload`` for a new commit (called under the lock; at most one background run at a time)."""
        if self.on_reload is None:
            return
        if not self._background_reload:
            self._run_on_reload()
            return
        if self._reloading:
            return
        self._reloading = True
        threading.Thread(target=self._run_on_reload, name="dashboard-store-reload", daemon=True).start()

    def _run_on_reload(self) -> None:
        try:
            if self.on_reload is not None:
                self.on_reload()
        except MonitorError as exc:  # a warm-up that fails must not fail the request or kill the thread's report
            log.warning("warming the dashboard after a new commit failed: %s", exc)
        finally:
            self._reloading = False

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Cache a derived value (a pooled table, a status) until the store changes; ``compute`` must not mutate shared frames."""
        return self._cached(("memo", key), lambda _store: compute())

    def _cached(self, key: Hashable, compute: Callable[[Store], Any]) -> Any:
        with self._lock:
            store = self._current_store()
            if key in self._cache:
                return self._cache[key]
            value = compute(store)
            self._cache[key] = value
            return value

    def close(self) -> None:
        """Close the store (a real MongoDB client keeps sockets open)."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            self._cache.clear()
            self._kept.clear()

    def warm(self) -> None:
        """Run the queries the overview needs for the default model, so the first visitor does not wait for them."""
        models = self.models()
        if models:
            model = models[0]
            self.metrics(model.model_id)
            self.health(model.model_id)

    # --- queries ------------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """Every model with results, the most recently evaluated first."""

        def compute(store: Store) -> list[ModelInfo]:
            return records.model_infos(store.models())

        return list(self._cached(("models",), compute))

    def model(self, model_id: str | None) -> ModelInfo | None:
        """The model ``model_id`` (None: the most recently evaluated one); None when the store has no results."""
        models = self.models()
        if not models:
            return None
        if model_id is None:
            return models[0]
        for info in models:
            if info.model_id == model_id:
                return info
        raise DataError(
            f"model {shown(model_id)} has no results in {self.describe()}; known models: {', '.join(m.model_id for m in models)}"
        )

    def _read(
        self, store: Store, columns: _Columns, model_id: str, start: str | None = None, end: str | None = None
    ) -> pd.DataFrame:
        """``columns``' frame of ``model_id``'s rows from ``start`` to ``end`` (None: open), read in spans of days of
        about :data:`ROWS_PER_READ` rows each (one read when the model's classes make the whole range that few)."""
        known = next((m for m in self.models() if m.model_id == model_id), None)
        per_read = max(ROWS_PER_READ // len(known.labels), 1) if known is not None and known.labels else 0
        days = (
            [
                d
                for d in store.dates(columns.kind, model_id)
                if (start is None or d >= start) and (end is None or d <= end)
            ]
            if per_read
            else []
        )
        if len(days) <= max(per_read, 1):
            spans = [(start, end)]
        else:  # the first span open at its start and the last at its end, as one read of the range would be
            cuts = list(range(0, len(days), per_read))
            spans = [(start if i == 0 else days[i], end if i == cuts[-1] else days[i + per_read - 1]) for i in cuts]
        pools: dict[str, dict[str, str]] = {}
        parts = [
            _share_text(
                columns.shape(store.rows(columns.kind, model_id, start=low, end=high, fields=list(columns.fields))),
                pools,
            )
            for low, high in spans
        ]
        filled = [part for part in parts if len(part)]  # an empty part would only cast the columns' types
        return pd.concat(filled, ignore_index=True) if len(filled) > 1 else (filled or parts)[0]

    def _history(self, columns: _Columns, model_id: str) -> _History:
        """One model's whole history of ``columns``, fetched once per store version; callers slice it.

        Across commits of the embedded store only the dates whose rows changed are read again (a daily
        run changes one date of a year: at 1,000 classes, re-reading the year would take seconds).
        """

        def compute(store: Store) -> _History:
            versions = store.day_versions(columns.kind, model_id)
            kept = self._kept.get((columns.name, model_id))
            if versions is None or kept is None:
                frame = self._read(store, columns, model_id)
            else:
                frame = _updated(
                    kept[1].frame,
                    kept[0],
                    versions,
                    lambda start, end: self._read(store, columns, model_id, start, end),
                )
            history = _History(frame, records.sorted_dates(frame))
            if versions is not None:
                self._kept[(columns.name, model_id)] = (versions, history)
            return history

        return self._cached((columns.name, model_id), compute)  # type: ignore[no-any-return]

    def metrics(
        self, model_id: str, start: str | None = None, end: str | None = None, labels: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Daily class metrics (``METRIC_FIELDS``) of ``model_id`` between ``start`` and ``end`` (inclusive)."""
        history = self._history(_METRICS, model_id)
        return records.counts(records.in_range(history.frame, start, end, labels, dates=history.dates), COUNT_FIELDS)

    def health(
        self, model_id: str, start: str | None = None, end: str | None = None, labels: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Daily class health rows (``HEALTH_FIELDS``) of ``model_id`` between ``start`` and ``end``."""
        history = self._history(_HEALTH, model_id)
        return records.in_range(history.frame, start, end, labels, dates=history.dates)

    def date_bounds(self, model_id: str) -> tuple[str, str] | None:
        """The first and last date with class metrics for ``model_id``; None when it has none."""

        def compute(store: Store) -> tuple[str, str] | None:
            dates = store.dates("class_metrics", model_id)
            return (dates[0], dates[-1]) if dates else None

        return self._cached(("bounds", model_id), compute)  # type: ignore[no-any-return]

    def labels(self, model_id: str) -> list[str]:
        """Every class with class metrics for ``model_id``, sorted (from the model's cached history: no second read)."""

        def compute(store: Store) -> list[str]:
            frame = self._history(_METRICS, model_id).frame
            return sorted({str(label) for label in frame["label"].dropna().unique()})

        return list(self._cached(("labels", model_id), compute))

    def unusable_images(self, sources: Sequence[str], limit: int = 200) -> pd.DataFrame:
        """Images of ``sources`` the index skipped or lost (status ``unusable`` or ``missing``): ``path``, ``status``, ``reason``."""
        key = ("unusable", tuple(sorted(sources)), limit)
        return self._cached(
            key, lambda store: records.frame(store.unusable_images(sorted(sources), limit), UNUSABLE_FIELDS)
        )  # type: ignore[no-any-return]

    def confusions(self, model_id: str, label: str, start: str | None = None, end: str | None = None) -> pd.DataFrame:
        """What ``label`` was mistaken for, per day: columns ``date``, ``pred``, ``count`` (wrong predictions only)."""

        # Every class's pairs of the model at once, kept like the histories: the errors page moves between classes.
        history = self._history(_CONFUSIONS, model_id)
        return (
            records.in_range(history.frame, start, end, [label], dates=history.dates)
            .loc[:, ["date", "pred", "count"]]
            .reset_index(drop=True)
        )

    def alerts(
        self, model_id: str, start: str | None = None, end: str | None = None, labels: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Alerts (``ALERT_FIELDS``) of ``model_id`` in the range, the newest first (then by class)."""
        chosen = tuple(sorted(set(labels))) if labels else None
        key = ("alerts", model_id, start, end, chosen)

        def compute(store: Store) -> pd.DataFrame:
            return records.alerts_frame(
                store.alerts(model_id, start=start, end=end, labels=list(chosen) if chosen else None)
            )

        return self._cached(key, compute)  # type: ignore[no-any-return]

    def latest_health(self, model_id: str) -> list[dict[str, Any]]:
        """The ``class_health`` rows of ``model_id``'s latest judged date, one per class (empty when none)."""

        def compute(store: Store) -> list[dict[str, Any]]:
            dates = store.dates("class_health", model_id)
            return store.rows("class_health", model_id, start=dates[-1], end=dates[-1]) if dates else []

        return list(self._cached(("latest_health", model_id), compute))

    def health_rows(
        self, model_id: str, start: str | None = None, end: str | None = None, labels: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """The stored ``class_health`` rows of ``model_id`` in the range (of ``labels``), by date and class: every field."""
        return self._stored_rows("class_health", model_id, start, end, labels)

    def metric_rows(
        self, model_id: str, start: str | None = None, end: str | None = None, labels: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """The stored ``class_metrics`` rows of ``model_id`` in the range (of ``labels``), by date and class."""
        return self._stored_rows("class_metrics", model_id, start, end, labels)

    def _stored_rows(
        self, kind: str, model_id: str, start: str | None, end: str | None, labels: Sequence[str] | None
    ) -> list[dict[str, Any]]:
        chosen = tuple(sorted(set(labels))) if labels else None
        return list(
            self._cached(
                ("rows", kind, model_id, start, end, chosen),
                lambda store: store.rows(kind, model_id, start=start, end=end, labels=chosen),
            )
        )

    def with_store(self, read: Callable[[Store], T]) -> T:
        """``read(store)`` on the current store, under the reader's lock (for a read that is not cached)."""
        with self._lock:
            return read(self._current_store())

    def pending_alerts(self) -> list[dict[str, Any]]:
        """The alerts not delivered yet, oldest first."""
        return list(self._cached(("pending_alerts",), lambda store: store.pending_alerts()))

    def runs(self, date: str) -> list[dict[str, Any]]:
        """The ``runs`` documents of ``date`` (one per source)."""
        day = iso_date(date)
        return list(self._cached(("runs", day), lambda store: store.runs_on(day)))

    # --- candidate models -------------------------------------------------------------------------

    def candidates(self) -> list[str]:
        """The candidate model ids with predictions (:meth:`evaluation.predictions.PredictionFiles.candidates`)."""
        return list(self.memo(("candidates",), lambda: self._files.candidates()))

    def comparison(self, candidate: str, start: str | None, end: str) -> ComparisonRecord | None:
        """The stored comparison of ``candidate`` (``monitor compare``, the DAG) of the latest date in ``start..end``, or None.

        Its verdict, per-class rows and discordant images as the compare stage stored them: nothing is computed here.
        """
        found = self._cached(
            ("comparison", candidate, start, end), lambda store: store.comparisons(candidate, start=start, end=end)
        )
        return cast("ComparisonRecord", found[-1]) if found else None

    # --- prediction files and thumbnails --------------------------------------------------------

    def prediction_dates(self) -> list[str]:
        """Dates that have a predictions file of production, oldest first."""
        return self._files.dates()

    def predictions(self, date: str) -> pd.DataFrame | None:
        """The predictions file of ``date`` (``PREDICTION_FIELDS``), or None when there is none; kept while the file is unchanged."""
        day = iso_date(date)
        name = self._files.production(day)
        stamp = self._files.artifacts.stamp(name)
        if stamp is None:
            return None
        key = (day, stamp)
        cached = self._predictions.get(key)
        if cached is not None:
            return cached
        return self._predictions.put(key, self._files.read(name).loc[:, list(PREDICTION_FIELDS)])

    def misclassified(self, date: str, label: str, model_id: str | None = None) -> pd.DataFrame:
        """The images of ``label`` predicted wrongly on ``date`` (most confident mistakes first)."""
        frame = self.predictions(date)
        if frame is None:
            return pd.DataFrame(columns=list(PREDICTION_FIELDS))
        return records.misclassified(frame, label, model_id)

    def failed_predictions(self, date: str) -> pd.DataFrame:
        """Rows of the date's predictions that failed (image unreadable, not decodable...), with their error."""
        frame = self.predictions(date)
        if frame is None:
            return pd.DataFrame(columns=list(PREDICTION_FIELDS))
        return records.failed(frame)

    def _image_source(self) -> Any:
        if self._source is None:
            from monitor.core.sources import open_source

            self._source = open_source(self.settings.source_uri)
        return self._source

    def thumbnail(self, date: str, path: str, max_side: int = THUMB_SIDE) -> bytes:
        """A small JPEG of image ``path`` from the image source.

        Only paths listed in the predictions file of ``date`` are served: the route that calls this
        takes both from the query string, and must never become a way to read arbitrary objects.
        Raises :class:`DataError` for a path that is not there and :class:`SourceError` when the
        source cannot give the bytes.
        """
        day = iso_date(date)
        frame = self.predictions(day)
        if frame is None:
            raise DataError(f"no predictions file for {day}")
        if not isinstance(path, str) or not bool((frame["image_path"] == path).any()):
            raise DataError(f"image {shown(path)} is not among the predictions of {day}")
        from monitor.core.sources import checked_relative_path

        try:
            # A predictions file is data too: a path in it that leaves the source is never read.
            checked_relative_path(path, self.settings.source_uri)
        except SourceError as exc:
            raise DataError(str(exc)) from exc
        key = (path, f"{day}:{max_side}")
        cached = self._thumbs.get(key)
        if cached is not None:
            return cached
        data = self._image_source().read(path)
        return self._thumbs.put(key, make_thumbnail(data, max_side, self.settings.max_image_pixels))
