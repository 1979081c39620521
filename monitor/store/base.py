"""What a store is: the :class:`Store` protocol (every operation the service uses), the one definition of its
collections (name, indexes, partition keys) that both engines read, and the pure helpers they share.

Callers (pipeline, CLI, indexing, sampling, health, alerts, the DAG, the dashboard) never see a collection
nor ask which engine they have: they call an operation named for what the service does. Two engines
implement it, each in its own module, like httpx's transports behind one base:

- :class:`monitor.store.mongo.MongoStore`: a real MongoDB (``MONITOR_MONGO_URI``), one collection per kind with
  the indexes below, every write durable at once;
- :class:`monitor.store.embedded_store.EmbeddedStore` (the default): mongomock partitions kept as small BSON
  files behind a manifest (:mod:`monitor.store.embedded`), loaded only when an operation touches them;
  :meth:`Store.commit` makes the writes so far durable, and readers never lock and never write.

A database error of either engine becomes one :class:`~monitor.core.errors.StoreError` naming the operation
and the store (:mod:`monitor.store.common`). Dates are ISO ``YYYY-MM-DD`` strings throughout; queries stay
within what both engines support (no ``$rand``, no transactions, no change streams).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol

Doc = dict[str, Any]
#: The key of one partition: the values of its collection's partition fields, as text ("" for a missing one).
Key = tuple[str, ...]
STATUS_OK, STATUS_UNUSABLE, STATUS_MISSING = "ok", "unusable", "missing"
ASCENDING, DESCENDING = 1, -1


@dataclass(frozen=True)
class Index:
    """One MongoDB index: its name, its key pattern and whether it is unique."""

    name: str
    keys: tuple[tuple[str, int], ...]
    unique: bool = False


@dataclass(frozen=True)
class Collection:
    """One collection: what each document is, the indexes MongoDB keeps, and the fields that name an embedded
    partition (every query of the service fixes them, or scans the partitions)."""

    holds: str
    indexes: tuple[Index, ...]
    partition: tuple[str, ...]


def _index(name: str, *fields: str, unique: bool = False, order: int = ASCENDING) -> Index:
    return Index(name, tuple((field, order) for field in fields), unique)


_PER_MODEL_DAY = (
    _index("model_date_label", "model_id", "date", "label", unique=True),
    _index("date", "date", order=DESCENDING),
)

#: Every collection of the service, once (docs/ARCHITECTURE.md describes every field).
COLLECTIONS: dict[str, Collection] = {
    "images": Collection(
        "one document per blob, unique on (source, path)",
        (
            _index("source_path", "source", "path", unique=True),
            # Sampling walks this index per class from a date-seeded pivot: cost ~ classes x N, not collection size.
            _index("sampling", "source", "status", "label", "sample_key"),
            _index("source_label_created", "source", "label", "created"),
        ),
        ("source", "label"),
    ),
    "samples": Collection(
        "one document per (source, date): the drawn sample",
        (_index("source_date", "source", "date", unique=True),),
        ("source", "date"),
    ),
    "class_metrics": Collection(
        "one document per (model_id, date, label): counts from Spark SQL", _PER_MODEL_DAY, ("model_id", "date")
    ),
    "class_health": Collection(
        "one document per (model_id, date, label): verdict and evidence", _PER_MODEL_DAY, ("model_id", "date")
    ),
    # One row per image a model evaluated, counted once: the image identity is unique per model and class.
    "evaluations": Collection(
        "one document per (model_id, label, image) a model evaluated, with the date it was drawn on",
        (
            _index("model_label_image", "model_id", "label", "image", unique=True),
            _index("model_date", "model_id", "date"),
        ),
        ("model_id", "date"),
    ),
    "alerts": Collection(
        "one document per verdict transition, with its delivery state",
        (_index("transition", "model_id", "label", "date", "kind", unique=True), _index("delivered", "delivered")),
        ("model_id",),
    ),
    "models": Collection(
        "one document per model id (name + weights checksum), first and last date seen",
        (_index("model_id", "model_id", unique=True),),
        (),
    ),
    "runs": Collection(
        "one document per (source, date): what each stage did",
        (_index("source_date", "source", "date", unique=True),),
        ("source",),
    ),
    "candidates": Collection(
        "one document per candidate model directory registered with ``monitor candidate add``",
        (_index("model_dir", "model_dir", unique=True),),
        (),
    ),
    "comparisons": Collection(
        "one document per (candidate model id, date): a candidate beside production up to that date (monitor.orchestration.compare_stage)",
        (_index("candidate_date", "candidate", "date", unique=True),),
        ("candidate",),
    ),
}

#: The key pattern of the ``sampling`` index: hinted on MongoDB so the planner walks it from the pivot.
SAMPLING_INDEX = [key for index in COLLECTIONS["images"].indexes if index.name == "sampling" for key in index.keys]
#: What a sampling read returns of each image (a MongoDB projection).
SAMPLE_FIELDS = {"_id": 0, "path": 1, "label": 1, "sample_key": 1, "created": 1, "checksum": 1}


class Store(Protocol):
    """The service's store: one named operation per thing the service reads or writes. Use as a context manager.

    ``close()`` commits the embedded store's pending writes (a failed stage keeps what earlier stages did:
    every stage is idempotent per date, so the re-run repairs a partial one).
    """

    #: What the store is, for messages: ``MongoDB <uri, password masked>`` or ``embedded store <folder>``.
    description: str
    #: How :meth:`walk_cost` counts: ``"explain"`` (the server's ``executionStats``, index keys included) or
    #: ``"query-shape"`` (documents fetched by the query's plan, counted here; no index keys).
    cost_method: Literal["explain", "query-shape"]

    # --- life cycle ---

    def refresh(self) -> bool:
        """A long-lived reader (the dashboard): follow the latest commit; True when it changed."""
        ...

    def version(self) -> Any:
        """A token that changes with every commit (None where writes are durable at once: MongoDB)."""
        ...

    def commit(self) -> None:
        """Make every write so far durable (the pipeline commits after each stage, alerts after each send)."""
        ...

    def close(self) -> None:
        """Commit what is pending (a writer) and release the store; a second call does nothing."""
        ...

    def __enter__(self) -> Store: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def info(self) -> dict[str, Any]:
        """The embedded store's commit, partition files, size and backups (empty on MongoDB)."""
        ...

    def counts(self) -> dict[str, int]:
        """Documents per collection (``monitor store info``)."""
        ...

    # --- runs ---

    def record_stage(
        self, source: str, date: str, stage: str, summary: Mapping[str, Any], *, finished_at: dt.datetime
    ) -> None:
        """Note that ``stage`` finished for (source, date), replacing its previous note, and commit."""
        ...

    def update_run(self, source: str, date: str, fields: Mapping[str, Any]) -> None:
        """Set ``fields`` on the run of (source, date), and commit."""
        ...

    def runs_on(self, date: str) -> list[Doc]:
        """The ``runs`` documents of ``date`` (one per source), by source."""
        ...

    # --- models and candidates ---

    def register_model(self, model_id: str, *, name: str, checksum: str, labels: Sequence[str], date: str) -> None:
        """Keep one ``models`` document per model id, with the first and last date it was evaluated on."""
        ...

    def models(self) -> list[Doc]:
        """Every registered model (``model_id``, ``name``, ``labels``, ``first_date``, ``last_date``); for stores without
        ``models`` documents, one bare entry per model with class metrics."""
        ...

    def measured_models(self) -> list[str]:
        """Every model with class metrics, sorted."""
        ...

    def add_candidate(self, model_dir: str, *, model_id: str, added_at: dt.datetime) -> bool:
        """Register a candidate model directory (predicted beside production each day); False when it already was."""
        ...

    def remove_candidate(self, model_dir: str) -> bool:
        """Stop predicting the candidate of ``model_dir``; False when it was not registered."""
        ...

    def candidates(self) -> list[Doc]:
        """The registered candidates (``model_dir``, ``model_id`` when added, ``added_at``), by directory."""
        ...

    def save_comparison(self, doc: Mapping[str, Any]) -> None:
        """Store a candidate's comparison of (``candidate``, ``date``), replacing the one of that date (a re-run never duplicates)."""
        ...

    def comparisons(self, candidate: str, *, start: str | None = None, end: str | None = None) -> list[Doc]:
        """The stored comparisons of ``candidate`` with ``start <= date <= end`` (without ``_id``), oldest first."""
        ...

    # --- images ---

    def count_images(self, source: str, *, present_only: bool = False) -> int:
        """How many images of ``source`` are stored (only those not marked missing, when asked)."""
        ...

    def stored_images(
        self, source: str, paths: Mapping[str | None, Sequence[str]], fields: Iterable[str]
    ) -> dict[str, Doc]:
        """The stored documents (``path`` and ``fields``) of ``paths`` (grouped by label), by path."""
        ...

    def write_images(self, source: str, new: Sequence[Doc], changed: Sequence[tuple[Doc, Doc]]) -> None:
        """Insert ``new`` image documents and apply ``(document, update)`` pairs to existing ones (by source and path)."""
        ...

    def present_images(self, source: str) -> Iterator[Doc]:
        """``path`` and ``label`` of every stored image of ``source`` not marked missing, streamed (a million-image
        index is never held as one list here); the caller must not write the images until it has read them all."""
        ...

    def mark_missing(self, source: str, images: Sequence[Doc], fields: Mapping[str, Any]) -> int:
        """Set ``fields`` on the given stored images (``path``, ``label``) unless already missing; returns how many changed."""
        ...

    def usable_labels(self, source: str, *, created_by: dt.datetime | None = None) -> list[str]:
        """Labels with a usable image of ``source`` (created by ``created_by``, when given), sorted."""
        ...

    def walk_class(
        self, source: str, label: str, created: Mapping[str, dt.datetime], pivot: float, size: int
    ) -> list[Doc]:
        """The ``size`` usable images of a class created in the ``created`` window following ``pivot`` in sampling-key
        order, wrapping around below it. Each: ``path``, ``label``, ``sample_key``, ``created``, ``checksum``."""
        ...

    def walk_cost(
        self, source: str, label: str, created: Mapping[str, dt.datetime], pivot: float, size: int
    ) -> tuple[int, int, int]:
        """(documents examined, index keys examined, queries) of :meth:`walk_class`, counted as :attr:`cost_method`
        says (for benchmarks and capacity planning)."""
        ...

    def unusable_counts(self, source: str) -> dict[str, int]:
        """How many stored images of ``source`` are unusable, per reason."""
        ...

    def unusable_images(self, sources: Sequence[str], limit: int) -> list[Doc]:
        """Up to ``limit`` images of ``sources`` that are unusable or missing (``path``, ``status``, ``reason``), by path."""
        ...

    def class_images(self, source: str, label: str, created: Mapping[str, dt.datetime]) -> list[Doc]:
        """Every usable image of a class created in the ``created`` window (``path``, ``label``, ``sample_key``, ``created``,
        ``checksum``): what the draw of unseen images orders (newest first)."""
        ...

    # --- samples and evaluations ---

    def sample(self, source: str, date: str, *, items: bool = False) -> Doc | None:
        """The recorded sample of (source, date), without its ``items`` unless asked; None when there is none."""
        ...

    def save_sample(self, doc: Mapping[str, Any]) -> None:
        """Record the sample of (source, date), replacing a previous one."""
        ...

    def evaluated(
        self, model_id: str, *, labels: Iterable[str] | None = None, other_than: str | None = None
    ) -> dict[str, set[str]]:
        """The image identities ``model_id`` evaluated, per label, on every date but ``other_than`` (the date being drawn)."""
        ...

    def replace_evaluations(self, model_id: str, date: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Replace the ``evaluations`` rows of (model, date): one per image (``label``, ``image``, ``path``, ``correct``,
        ``draw``); an image repeated is refused (:class:`~monitor.core.errors.DataError`). Returns how many."""
        ...

    # --- class metrics and class health ---

    def replace_day(self, kind: str, model_id: str, date: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Replace the ``class_metrics`` or ``class_health`` rows of (model, date) with ``rows``; returns how many.

        Delete then insert, so a re-run leaves exactly the new rows (labels gone since the last run disappear
        too). Rows carrying another model_id or date, or repeating a label, are refused (:class:`DataError`).
        """
        ...

    def rows(
        self,
        kind: str,
        model_id: str | None,
        *,
        start: str | None = None,
        end: str | None = None,
        labels: Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
    ) -> list[Doc]:
        """The ``class_metrics`` or ``class_health`` rows of ``model_id`` (None: every model) with ``start <= date <= end``, by date and label."""
        ...

    def day_versions(self, kind: str, model_id: str) -> dict[str, str] | None:
        """For a long-lived reader that keeps ``kind`` rows of ``model_id`` across commits: a token per date that changes
        whenever that date's rows do, so it re-reads only those dates. None where there is no such token (MongoDB,
        or an uncommitted write): re-read everything."""
        ...

    def dates(
        self, kind: str, model_id: str | None = None, *, after: str | None = None, before: str | None = None
    ) -> list[str]:
        """The dates with ``kind`` rows (of ``model_id``, or any model), strictly between ``after`` and ``before``, oldest first."""
        ...

    def models_on(self, kind: str, date: str) -> list[str]:
        """The models with ``kind`` rows on ``date``, sorted."""
        ...

    def latest_rows_before(self, kind: str, model_id: str, date: str, labels: Iterable[str]) -> dict[str, Doc]:
        """Each of ``labels``' latest ``kind`` row of ``model_id`` before ``date`` (walking back one stored day at a time)."""
        ...

    # --- alerts ---

    def add_alert(self, alert: Mapping[str, Any]) -> bool:
        """Store the alert of one transition unless it exists (by model, label, date and kind); True when it is new."""
        ...

    def withdraw_alerts(self, model_id: str, date: str, keep: set[tuple[str, str]]) -> int:
        """Delete the undelivered alerts of (model, date) whose (label, kind) is not in ``keep``; returns how many."""
        ...

    def pending_alerts(self) -> list[Doc]:
        """Undelivered alerts, oldest first (by transition date, then creation)."""
        ...

    def update_alert(self, alert: Mapping[str, Any], update: Mapping[str, Any]) -> None:
        """Apply ``update`` to one stored alert and commit at once: a delivery state is never lost to a crash."""
        ...

    def alerts(
        self,
        model_id: str | None = None,
        *,
        pending_only: bool = False,
        start: str | None = None,
        end: str | None = None,
        labels: Sequence[str] | None = None,
    ) -> list[Doc]:
        """Alerts (without ``_id``), newest first: by transition date, then creation."""
        ...


# --- pure helpers both engines use ------------------------------------------------------------------


def partition_key(kind: str, doc: Mapping[str, Any]) -> Key:
    """The partition ``doc`` of collection ``kind`` belongs to (a missing label is the empty string)."""
    return tuple("" if doc.get(name) is None else str(doc.get(name)) for name in COLLECTIONS[kind].partition)


def check_kind(kind: str) -> None:
    """Refuse a collection that is not kept per (model, day)."""
    if kind not in ("class_metrics", "class_health"):
        raise ValueError(f"not a per-day collection: {kind!r}")


def date_range(start: str | None, end: str | None) -> Doc:
    """The ``date`` condition of ``start <= date <= end`` (either bound optional)."""
    return {**({"$gte": start} if start else {}), **({"$lte": end} if end else {})}


def day_filter(model_id: str | None, start: str | None, end: str | None) -> Callable[[Key], bool]:
    """Accepts the (model_id, date) partition keys of ``model_id`` (None: any) with ``start <= date <= end``."""
    return lambda key: (
        (model_id is None or key[0] == model_id)
        and (start is None or key[1] >= start)
        and (end is None or key[1] <= end)
    )


def sortable_time(value: Any) -> str:
    """A stored time as text that sorts in time order (a missing one first)."""
    return value.isoformat() if isinstance(value, dt.datetime) else str(value or "")


def usable(doc: Mapping[str, Any], window: Mapping[str, dt.datetime] | None) -> bool:
    """Whether an image document is usable and created in ``window`` (``$lte`` and optionally ``$gte``; None: any time)."""
    return doc.get("status") == STATUS_OK and (window is None or in_window(doc.get("created"), window))


def in_window(created: Any, window: Mapping[str, dt.datetime]) -> bool:
    """Whether ``created`` lies in ``window`` (a naive time is read as UTC, as MongoDB stores it)."""
    if created is None:
        return False
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    return bool(created <= window["$lte"] and ("$gte" not in window or created >= window["$gte"]))
