"""The dashboard's data access: cached read-only queries through the store layer, and the pooling they feed.

Nothing here runs at import. :class:`DashboardData` opens one :class:`~monitor.storage.Store` lazily
with ``open_store(settings, read_only=True)`` and reads only through its named operations, with the
same code for both engines:

- the **embedded store** (the default): before answering, ``Store.refresh()`` follows the latest
  commit (a stat of its manifest); when a writer has committed, the cached answers are dropped, so a
  pipeline run shows up without restarting. The dashboard never takes the writer's lock and never
  writes a file of the store;
- a real **MongoDB**: answers are kept for ``ttl_s`` seconds.

A model's daily class metrics and class health are fetched whole, once per store version, and
sliced by date range and classes in pandas: the pages ask for many overlapping ranges of the same
history.

Accuracy over any period is pooled from counts (sum of ``correct`` over sum of ``n``), never an
average of daily ratios; its interval is a Wilson interval at ``settings.confidence_level``.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from monitor.errors import DataError, MonitorError, SourceError
from monitor.settings import Settings
from monitor.storage import Store, open_store

log = logging.getLogger(__name__)

Grain = Literal["day", "week", "month"]
GRAINS: tuple[str, ...] = ("day", "week", "month")

#: Verdicts from the most to the least urgent; "worst first" sorts by this order.
VERDICTS: tuple[str, ...] = ("needs_retraining", "watch", "insufficient_data", "healthy")
SEVERITY: dict[str, int] = {verdict: rank for rank, verdict in enumerate(VERDICTS)}
VERDICT_COLOURS: dict[str, str] = {
    "healthy": "#2e7d32",
    "watch": "#f0a202",
    "needs_retraining": "#c62828",
    "insufficient_data": "#9e9e9e",
}
VERDICT_TEXT: dict[str, str] = {
    "healthy": "healthy",
    "watch": "watch",
    "needs_retraining": "needs retraining",
    "insufficient_data": "insufficient data",
}
#: Verdicts that put a class on the overview's flagged list.
FLAGGED_VERDICTS: tuple[str, ...] = ("needs_retraining", "watch")

METRIC_FIELDS: tuple[str, ...] = ("date", "label", "n", "correct", "failed", "accuracy", "ci_low", "ci_high")
HEALTH_FIELDS: tuple[str, ...] = (
    "date",
    "label",
    "verdict",
    "target",
    "window_days",
    "window_start",
    "pooled_n",
    "pooled_correct",
    "pooled_accuracy",
    "ci_low",
    "ci_high",
    "prob_below_target",
    "cusum",
    "cusum_threshold",
    "collapse",
    "collapse_threshold",
    "recovery",
    "recovery_threshold",
    "followup",
    "method",
    "reason",
)
ALERT_FIELDS: tuple[str, ...] = ("label", "date", "kind", "message", "delivered", "delivered_at", "attempts", "last_error")
PREDICTION_FIELDS: tuple[str, ...] = ("image_path", "label", "pred", "confidence", "status", "error", "model_id")

#: Longest side of a gallery thumbnail, in pixels.
THUMB_SIDE = 128
#: Thumbnails kept in memory (a few KB each).
THUMB_CACHE_SIZE = 1024
#: Prediction files kept in memory (one per date, a few hundred KB at most for a daily sample).
PREDICTION_CACHE_SIZE = 16


@dataclass(frozen=True)
class ModelInfo:
    """One evaluated model, from the ``models`` collection (or, for stores without it, from ``class_metrics``)."""

    model_id: str
    name: str
    labels: tuple[str, ...]
    first_date: str | None
    last_date: str | None


# --- pure helpers ------------------------------------------------------------------------------


def wilson(correct: Any, n: Any, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson interval bounds for arrays of counts at ``level`` (NaN where ``n == 0``).

    The same function the metrics stage stores its daily intervals with, so a pooled day and a
    stored day agree.
    """
    from evaluation.metrics import wilson_intervals

    return wilson_intervals(np.asarray(correct, dtype=float), np.asarray(n, dtype=float), level)


def auto_grain(start: str, end: str) -> Grain:
    """Days up to about a quarter, weeks up to two years, months beyond: a heatmap stays under ~105 columns."""
    days = (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days + 1
    if days <= 92:
        return "day"
    if days <= 731:
        return "week"
    return "month"


def period_start(dates: pd.Series, grain: Grain) -> pd.Series:
    """The first day (ISO string) of the day, ISO week (Monday) or month that each date falls in."""
    if grain == "day":
        return dates.astype(str)
    stamps = pd.to_datetime(dates)
    if grain == "week":
        starts = stamps - pd.to_timedelta(stamps.dt.weekday, unit="D")
    elif grain == "month":
        starts = stamps - pd.to_timedelta(stamps.dt.day - 1, unit="D")
    else:
        raise DataError(f"unknown grain {grain!r}; choose one of {', '.join(GRAINS)}")
    return starts.dt.strftime("%Y-%m-%d")


def pool_by_period(metrics: pd.DataFrame, grain: Grain, level: float) -> pd.DataFrame:
    """Pool daily class metrics into periods: sum ``n``, ``correct`` and ``failed``, then accuracy and Wilson interval.

    Returns one row per (label, period) with ``period``, ``label``, ``n``, ``correct``, ``failed``,
    ``days`` (days with data), ``accuracy`` (NaN when ``n`` is 0), ``ci_low``, ``ci_high``.
    """
    columns = ["label", "period", "n", "correct", "failed", "days", "accuracy", "ci_low", "ci_high"]
    if metrics.empty:
        return pd.DataFrame(columns=columns)
    frame = metrics.assign(period=period_start(metrics["date"], grain))
    pooled = (
        frame.groupby(["label", "period"], sort=True)
        .agg(n=("n", "sum"), correct=("correct", "sum"), failed=("failed", "sum"), days=("date", "nunique"))
        .reset_index()
    )
    n = pooled["n"].to_numpy(dtype=float)
    correct = pooled["correct"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled["accuracy"] = np.where(n > 0, correct / np.where(n > 0, n, 1.0), np.nan)
    pooled["ci_low"], pooled["ci_high"] = wilson(correct, n, level)
    return pooled[columns]


def class_status(health: pd.DataFrame, as_of: str | None = None) -> pd.DataFrame:
    """Each class's latest health row on or before ``as_of``, with ``since``: the first day of its current verdict.

    One row per label (index: label), sorted by label. ``since`` is computed from the rows given,
    so pass the whole history for a true "since".
    """
    columns = list(HEALTH_FIELDS) + ["since", "previous_verdict"]
    if health.empty:
        return pd.DataFrame(columns=columns).set_index("label")
    rows = health if as_of is None else health[health["date"] <= as_of]
    if rows.empty:
        return pd.DataFrame(columns=columns).set_index("label")
    rows = rows.sort_values(["label", "date"], kind="stable")
    changed = rows["verdict"].ne(rows.groupby("label")["verdict"].shift())
    run_id = changed.groupby(rows["label"]).cumsum()
    run_start = rows["date"].where(changed).groupby([rows["label"], run_id]).transform("first")
    before = rows.groupby("label")["verdict"].shift().where(changed)
    previous = before.groupby([rows["label"], run_id]).transform("first")
    rows = rows.assign(since=run_start, previous_verdict=previous)
    latest = rows.groupby("label", sort=True).tail(1).set_index("label")
    return latest


def rank_classes(status: pd.DataFrame, pooled_accuracy: pd.Series, labels: Iterable[str], order: str) -> list[str]:
    """Order ``labels`` for display.

    ``worst``: verdict severity, then probability of being below target (high first), then pooled
    accuracy of the shown range (low first); ``accuracy``: pooled accuracy of the range, low first;
    ``name``: alphabetical. Classes with no data go last.
    """
    frame = pd.DataFrame(index=pd.Index(sorted(set(labels)), name="label"))
    frame["severity"] = [SEVERITY.get(status["verdict"].get(label), len(VERDICTS)) if "verdict" in status else len(VERDICTS) for label in frame.index]
    prob = status["prob_below_target"] if "prob_below_target" in status else pd.Series(dtype=float)
    frame["prob"] = pd.to_numeric(prob.reindex(frame.index), errors="coerce").fillna(-1.0)
    frame["acc"] = pd.to_numeric(pooled_accuracy.reindex(frame.index), errors="coerce").fillna(2.0)
    frame["name"] = frame.index
    if order == "name":
        ranked = frame.sort_values("name")
    elif order == "accuracy":
        ranked = frame.sort_values(["acc", "name"])
    else:
        ranked = frame.sort_values(["severity", "prob", "acc", "name"], ascending=[True, False, True, True])
    return list(ranked.index)


def verdict_changes(health: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``health`` (one label) where the verdict differs from the day before, with ``previous_verdict``."""
    if health.empty:
        return health.assign(previous_verdict=pd.Series(dtype=object))
    rows = health.sort_values("date")
    previous = rows["verdict"].shift()
    changed = previous.notna() & rows["verdict"].ne(previous)
    return rows[changed].assign(previous_verdict=previous[changed])


def make_thumbnail(data: bytes, max_side: int = THUMB_SIDE, max_pixels: int = 50_000_000) -> bytes:
    """A JPEG no larger than ``max_side`` on its longest side; refuses non-images and decompression bombs."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise DataError(f"image of {width}x{height} pixels is larger than the {max_pixels} pixel limit")
            image.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced scale, much cheaper
            picture = ImageOps.exif_transpose(image).convert("RGB")
            picture.thumbnail((max_side, max_side))
            out = io.BytesIO()
            picture.save(out, format="JPEG", quality=85)
            return out.getvalue()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DataError(f"not a readable image: {exc}") from exc


def _frame(docs: Sequence[dict[str, Any]], fields: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame.from_records(list(docs), columns=list(fields))


#: Fields of class metrics and class health that hold numbers (a column of them stays numeric even with gaps).
_NUMERIC = {
    "n", "correct", "failed", "accuracy", "ci_low", "ci_high", "target", "window_days", "pooled_n",
    "pooled_correct", "pooled_accuracy", "prob_below_target", "cusum", "cusum_threshold",
    "collapse", "collapse_threshold", "recovery", "recovery_threshold", "followup",
}  # fmt: skip


def _records_frame(docs: Sequence[dict[str, Any]], fields: Sequence[str]) -> pd.DataFrame:
    frame = _frame(docs, fields)
    for name in fields:
        if name in _NUMERIC and frame[name].dtype == object:
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


def _pairs(confusions: Any) -> list[dict[str, Any]]:
    """The (``pred``, ``count``) pairs of a ``confusions`` field (anything else: none)."""
    return [pair for pair in confusions if isinstance(pair, dict)] if isinstance(confusions, list) else []


def _iso_date(text: str) -> str:
    """``text`` if it is a YYYY-MM-DD date, else :class:`DataError` (dates reach queries and file names)."""
    try:
        day = dt.date.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise DataError(f"date {text!r} is not a valid YYYY-MM-DD date") from exc
    if len(text) != 10:
        raise DataError(f"date {text!r} is not in YYYY-MM-DD form")
    return day.isoformat()


def _in_range(frame: pd.DataFrame, start: str | None, end: str | None, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of ``frame`` with ``start <= date <= end`` (inclusive ISO dates) and, optionally, a label of ``labels``."""
    mask = pd.Series(True, index=frame.index)
    if start:
        mask &= frame["date"] >= start
    if end:
        mask &= frame["date"] <= end
    if labels:
        mask &= frame["label"].isin(list(labels))
    return frame if bool(mask.all()) else frame[mask]


# --- the cached reader ------------------------------------------------------------------------------


class DashboardData:
    """Read-only, cached access to the store, the prediction files and the image source for one app.

    Thread-safe: Flask serves requests on threads, and one lock guards the store and caches
    (the embedded store is not thread-safe, and a query that misses the cache is then run once,
    not by every waiting request).
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
        self._predictions: OrderedDict[tuple[str, int], pd.DataFrame | None] = OrderedDict()
        self._thumbs: OrderedDict[tuple[str, str], bytes] = OrderedDict()

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
            infos = [
                ModelInfo(
                    model_id=str(doc["model_id"]),
                    name=str(doc.get("name") or str(doc["model_id"]).split("@")[0]),
                    labels=tuple(sorted(str(label) for label in doc.get("labels") or ())),
                    first_date=doc.get("first_date"),
                    last_date=doc.get("last_date"),
                )
                for doc in store.models()
            ]
            return sorted(infos, key=lambda m: (m.last_date or "", m.model_id), reverse=True)

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
        raise DataError(f"model {model_id!r} has no results in {self.describe()}; known models: {', '.join(m.model_id for m in models)}")

    def _history(self, kind: str, fields: Sequence[str], model_id: str) -> pd.DataFrame:
        """One model's whole ``kind`` history (``fields``), fetched once per store version; callers slice it."""
        return self._cached(  # type: ignore[no-any-return]
            (kind, model_id), lambda store: _records_frame(store.rows(kind, model_id, fields=list(fields)), fields)
        )

    def metrics(self, model_id: str, start: str | None = None, end: str | None = None, labels: Sequence[str] | None = None) -> pd.DataFrame:
        """Daily class metrics (``METRIC_FIELDS``) of ``model_id`` between ``start`` and ``end`` (inclusive)."""
        frame = _in_range(self._history("class_metrics", METRIC_FIELDS, model_id), start, end, labels)
        for name in ("n", "correct", "failed"):
            if frame[name].isna().any() or frame[name].dtype == object:
                frame = frame.assign(**{name: pd.to_numeric(frame[name], errors="coerce").fillna(0).astype(int)})
        return frame

    def health(self, model_id: str, start: str | None = None, end: str | None = None, labels: Sequence[str] | None = None) -> pd.DataFrame:
        """Daily class health rows (``HEALTH_FIELDS``) of ``model_id`` between ``start`` and ``end``."""
        return _in_range(self._history("class_health", HEALTH_FIELDS, model_id), start, end, labels)

    def date_bounds(self, model_id: str) -> tuple[str, str] | None:
        """The first and last date with class metrics for ``model_id``; None when it has none."""

        def compute(store: Store) -> tuple[str, str] | None:
            dates = store.dates("class_metrics", model_id)
            return (dates[0], dates[-1]) if dates else None

        return self._cached(("bounds", model_id), compute)  # type: ignore[no-any-return]

    def labels(self, model_id: str) -> list[str]:
        """Every class with class metrics for ``model_id``, sorted."""

        def compute(store: Store) -> list[str]:
            return sorted({str(doc["label"]) for doc in store.rows("class_metrics", model_id, fields=["label"]) if doc.get("label") is not None})

        return list(self._cached(("labels", model_id), compute))

    def unusable_images(self, sources: Sequence[str], limit: int = 200) -> pd.DataFrame:
        """Images of ``sources`` the index skipped or lost (status ``unusable`` or ``missing``): ``path``, ``status``, ``reason``."""
        key = ("unusable", tuple(sorted(sources)), limit)
        return self._cached(key, lambda store: _frame(store.unusable_images(sorted(sources), limit), ("path", "status", "reason")))  # type: ignore[no-any-return]

    def confusions(self, model_id: str, label: str, start: str | None = None, end: str | None = None) -> pd.DataFrame:
        """What ``label`` was mistaken for, per day: columns ``date``, ``pred``, ``count`` (wrong predictions only)."""

        def compute(store: Store) -> pd.DataFrame:
            # Every class's pairs of the model at once, once per store version: the errors page moves between classes.
            rows = [
                {"date": doc["date"], "label": doc["label"], "pred": str(pair.get("pred")), "count": int(pair.get("count") or 0)}
                for doc in store.rows("class_metrics", model_id, fields=["date", "label", "confusions"])
                for pair in _pairs(doc.get("confusions"))
            ]
            return pd.DataFrame.from_records(rows, columns=["date", "label", "pred", "count"])

        frame: pd.DataFrame = self._cached(("confusions", model_id), compute)
        return _in_range(frame, start, end, [label]).loc[:, ["date", "pred", "count"]].reset_index(drop=True)

    def alerts(self, model_id: str, start: str | None = None, end: str | None = None, labels: Sequence[str] | None = None) -> pd.DataFrame:
        """Alerts (``ALERT_FIELDS``) of ``model_id`` in the range, the newest first (then by class)."""
        chosen = tuple(sorted(set(labels))) if labels else None
        key = ("alerts", model_id, start, end, chosen)

        def compute(store: Store) -> pd.DataFrame:
            docs = store.alerts(model_id, start=start, end=end, labels=list(chosen) if chosen else None)
            frame = _frame(docs, ALERT_FIELDS)
            if frame.empty:
                return frame
            # Newest day first, classes alphabetically within a day (the store's order within a day is by creation).
            frame = frame.sort_values("label", kind="stable").sort_values("date", ascending=False, kind="stable")
            return frame.reset_index(drop=True)

        return self._cached(key, compute)  # type: ignore[no-any-return]

    def runs(self, date: str) -> list[dict[str, Any]]:
        """The ``runs`` documents of ``date`` (one per source)."""
        day = _iso_date(date)
        return list(self._cached(("runs", day), lambda store: store.runs_on(day)))

    # --- prediction files and thumbnails --------------------------------------------------------

    def prediction_dates(self) -> list[str]:
        """Dates that have a predictions file, oldest first."""
        folder = self.settings.predictions_dir
        if not folder.is_dir():
            return []
        dates = []
        for path in folder.glob("*.parquet"):
            try:
                dates.append(_iso_date(path.stem))
            except DataError:
                continue  # not a daily predictions file
        return sorted(dates)

    def predictions(self, date: str) -> pd.DataFrame | None:
        """The predictions file of ``date`` (``PREDICTION_FIELDS``), or None when there is none."""
        day = _iso_date(date)
        path = self.settings.predictions_file(day)
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        key = (day, mtime)
        with self._lock:
            if key in self._predictions:
                self._predictions.move_to_end(key)
                return self._predictions[key]
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"predictions file {path} cannot be read: {exc}") from exc
        missing = [name for name in ("image_path", "label", "pred", "status") if name not in frame.columns]
        if missing:
            raise DataError(f"predictions file {path} lacks columns {', '.join(missing)}")
        for name in PREDICTION_FIELDS:
            if name not in frame.columns:
                frame[name] = None
        frame = frame[list(PREDICTION_FIELDS)]
        with self._lock:
            self._predictions[key] = frame
            while len(self._predictions) > PREDICTION_CACHE_SIZE:
                self._predictions.popitem(last=False)
        return frame

    def misclassified(self, date: str, label: str, model_id: str | None = None) -> pd.DataFrame:
        """The images of ``label`` predicted wrongly on ``date`` (most confident mistakes first)."""
        frame = self.predictions(date)
        if frame is None:
            return pd.DataFrame(columns=list(PREDICTION_FIELDS))
        rows = frame[(frame["label"] == label) & (frame["status"] == "ok") & (frame["pred"] != frame["label"])]
        if model_id is not None and rows["model_id"].notna().any():
            rows = rows[rows["model_id"] == model_id]
        return rows.sort_values(["confidence", "image_path"], ascending=[False, True], na_position="last")

    def failed_predictions(self, date: str) -> pd.DataFrame:
        """Rows of the date's predictions that failed (image unreadable, not decodable...), with their error."""
        frame = self.predictions(date)
        if frame is None:
            return pd.DataFrame(columns=list(PREDICTION_FIELDS))
        return frame[frame["status"] != "ok"].sort_values("image_path")

    def _image_source(self) -> Any:
        if self._source is None:
            from monitor.sources import open_source

            self._source = open_source(self.settings.source_uri)
        return self._source

    def thumbnail(self, date: str, path: str, max_side: int = THUMB_SIDE) -> bytes:
        """A small JPEG of image ``path`` from the image source.

        Only paths listed in the predictions file of ``date`` are served: the route that calls this
        takes both from the query string, and must never become a way to read arbitrary objects.
        Raises :class:`DataError` for a path that is not there and :class:`SourceError` when the
        source cannot give the bytes.
        """
        day = _iso_date(date)
        frame = self.predictions(day)
        if frame is None:
            raise DataError(f"no predictions file for {day}")
        if not isinstance(path, str) or not bool((frame["image_path"] == path).any()):
            raise DataError(f"image {path!r} is not among the predictions of {day}")
        from monitor.sources import checked_relative_path

        try:
            # A predictions file is data too: a path in it that leaves the source is never read.
            checked_relative_path(path, self.settings.source_uri)
        except SourceError as exc:
            raise DataError(str(exc)) from exc
        key = (path, f"{day}:{max_side}")
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        data = self._image_source().read(path)
        thumb = make_thumbnail(data, max_side, self.settings.max_image_pixels)
        with self._lock:
            self._thumbs[key] = thumb
            while len(self._thumbs) > THUMB_CACHE_SIZE:
                self._thumbs.popitem(last=False)
        return thumb

