"""The store layer: every read and write of the service, as named operations on one typed :class:`Store`.

One concept over ~700 lines: the store's operations, grouped by collection; the embedded engine beneath it
is :mod:`monitor.store.embedded`.

Callers (pipeline, CLI, indexing, sampling, health, alerts, the DAG, the dashboard) never see a collection:
they call an operation named for what the service does, and a ``PyMongoError`` becomes a
:class:`~monitor.core.errors.StoreError` here, naming the store. Two engines sit under the same operations:

- a real **MongoDB** (``MONITOR_MONGO_URI``): one collection per kind, the indexes below, every write durable at once;
- the **embedded store** (:mod:`monitor.store.embedded`, the default): mongomock partitions kept as small BSON
  files behind a manifest, loaded only when an operation touches them; :meth:`Store.commit` makes the
  writes so far durable (the pipeline commits after each stage, alerts after each send), and readers
  (``open_store(..., read_only=True)``) never lock and never write.

Collections (see docs/ARCHITECTURE.md for every field):

- ``images``        one document per blob, unique on (source, path)
- ``samples``       one document per (source, date): the drawn sample
- ``class_metrics`` one document per (model_id, date, label): counts from Spark SQL
- ``class_health``  one document per (model_id, date, label): verdict and evidence
- ``alerts``        one document per verdict transition, with its delivery state
- ``models``        one document per model id (name + weights checksum), first and last date seen
- ``runs``          one document per (source, date): what each stage did
- ``candidates``    one document per candidate model directory registered with ``monitor candidate add``

Queries stay within what both engines support (no ``$rand``, no transactions, no change streams);
``tests/test_store.py`` runs the same checks on both (``MONITOR_TEST_MONGO_URI`` for a real server).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import pymongo
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from monitor.store.embedded import EmbeddedDB, Key, partition_key
from monitor.core.errors import DataError, StoreError, redact
from monitor.core.files import remove_leftovers
from monitor.core.settings import Settings

log = logging.getLogger(__name__)

COLLECTIONS = ("images", "samples", "class_metrics", "class_health", "evaluations", "alerts", "models", "runs", "candidates")

INDEXES: dict[str, list[IndexModel]] = {
    "images": [
        IndexModel([("source", ASCENDING), ("path", ASCENDING)], unique=True, name="source_path"),
        # Sampling walks this index per class from a date-seeded pivot: cost ~ classes x N, not collection size.
        IndexModel(
            [("source", ASCENDING), ("status", ASCENDING), ("label", ASCENDING), ("sample_key", ASCENDING)],
            name="sampling",
        ),
        IndexModel([("source", ASCENDING), ("label", ASCENDING), ("created", ASCENDING)], name="source_label_created"),
    ],
    "samples": [IndexModel([("source", ASCENDING), ("date", ASCENDING)], unique=True, name="source_date")],
    "class_metrics": [
        IndexModel([("model_id", ASCENDING), ("date", ASCENDING), ("label", ASCENDING)], unique=True, name="model_date_label"),
        IndexModel([("date", DESCENDING)], name="date"),
    ],
    "class_health": [
        IndexModel([("model_id", ASCENDING), ("date", ASCENDING), ("label", ASCENDING)], unique=True, name="model_date_label"),
        IndexModel([("date", DESCENDING)], name="date"),
    ],
    # One row per image a model evaluated, counted once: the image identity is unique per model and class.
    "evaluations": [
        IndexModel([("model_id", ASCENDING), ("label", ASCENDING), ("image", ASCENDING)], unique=True, name="model_label_image"),
        IndexModel([("model_id", ASCENDING), ("date", ASCENDING)], name="model_date"),
    ],
    "alerts": [
        IndexModel([("model_id", ASCENDING), ("label", ASCENDING), ("date", ASCENDING), ("kind", ASCENDING)], unique=True, name="transition"),
        IndexModel([("delivered", ASCENDING)], name="delivered"),
    ],
    "models": [IndexModel([("model_id", ASCENDING)], unique=True, name="model_id")],
    "runs": [IndexModel([("source", ASCENDING), ("date", ASCENDING)], unique=True, name="source_date")],
    "candidates": [IndexModel([("model_dir", ASCENDING)], unique=True, name="model_dir")],
}


Doc = dict[str, Any]
#: The key pattern of the ``sampling`` index: hinted on MongoDB so the planner walks it from the pivot.
SAMPLING_INDEX = [("source", 1), ("status", 1), ("label", 1), ("sample_key", 1)]
_SAMPLE_FIELDS = {"_id": 0, "path": 1, "label": 1, "sample_key": 1, "created": 1, "checksum": 1}
STATUS_OK, STATUS_UNUSABLE, STATUS_MISSING = "ok", "unusable", "missing"


class Store:
    """The service's store: named operations over MongoDB or the embedded store. Use as a context manager.

    ``close()`` commits the embedded store's pending writes (a failed stage keeps what earlier stages did:
    every stage is idempotent per date, so the re-run repairs a partial one).
    """

    def __init__(self, *, description: str, db: Database | None = None, embedded: EmbeddedDB | None = None) -> None:
        if (db is None) == (embedded is None):
            raise ValueError("a Store needs exactly one of a MongoDB database or an embedded store")
        self.description = description
        self._db = db
        self._embedded = embedded
        self._closed = False

    @property
    def is_embedded(self) -> bool:
        return self._embedded is not None

    @property
    def read_only(self) -> bool:
        return self._embedded is not None and not self._embedded.writable

    # --- partitions: one collection on MongoDB, the matching partitions on the embedded store ------

    def _part(self, kind: str, doc: Mapping[str, Any], *, write: bool = False) -> Collection:
        if self._embedded is None:
            assert self._db is not None
            return self._db[kind]
        key = partition_key(kind, dict(doc))
        if write:
            self._embedded.touched(kind, key)
        return self._embedded.collection(kind, key)

    def _parts(self, kind: str, where: Callable[[Key], bool] | None = None) -> list[Collection]:
        if self._embedded is None:
            assert self._db is not None
            return [self._db[kind]]
        return [self._embedded.collection(kind, key) for key in self._embedded.keys(kind, where)]

    def _keys(self, kind: str, where: Callable[[Key], bool] | None = None) -> list[Key]:
        assert self._embedded is not None
        return self._embedded.keys(kind, where)

    def _raw(self, kind: str, where: Callable[[Key], bool] | None = None) -> Iterator[Doc]:
        """Embedded store, reading: the documents of the matching partitions as stored, shared, never to be changed.

        Reads that filter whole partitions skip mongomock, which copies every document when it is loaded and
        again on every query; a partition is loaded into mongomock only when it is written.
        """
        assert self._embedded is not None
        for key in self._embedded.keys(kind, where):
            yield from self._embedded.documents(kind, key)

    def _fail(self, what: str, exc: PyMongoError) -> StoreError:
        return StoreError(f"could not {what} on {self.description}: {redact(str(exc)).splitlines()[0][:300] if str(exc) else type(exc).__name__}")

    # --- life cycle -----------------------------------------------------------------------------

    def ensure_indexes(self) -> None:
        """Create every index the service relies on (idempotent; MongoDB only: the embedded store is partitioned instead)."""
        if self._db is None:
            return
        try:
            for name, models in INDEXES.items():
                self._db[name].create_indexes(models)
        except PyMongoError as exc:
            raise self._fail("create indexes", exc) from exc

    def refresh(self) -> bool:
        """A long-lived reader (the dashboard): follow the latest commit; True when it changed."""
        return self._embedded.refresh() if self._embedded is not None else False

    def version(self) -> Any:
        """Changes with every commit of the embedded store (None on MongoDB, which has no commits)."""
        return self._embedded.manifest.commit if self._embedded is not None else None

    def commit(self) -> None:
        """Make every write so far durable (the embedded store writes its changed partitions; MongoDB already has them)."""
        if self._embedded is not None and self._embedded.writable:
            self._embedded.commit()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._embedded is not None:
            self._embedded.close(commit=self._embedded.writable)
        elif self._db is not None:
            self._db.client.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # --- runs -----------------------------------------------------------------------------------

    def record_stage(self, source: str, date: str, stage: str, summary: Mapping[str, Any], *, finished_at: dt.datetime) -> None:
        """Note that ``stage`` finished for (source, date), replacing its previous note, and commit."""
        key = {"source": source, "date": date}
        try:
            self._part("runs", key, write=True).update_one(key, {"$set": {f"stages.{stage}": {**summary, "finished_at": finished_at}}}, upsert=True)
        except PyMongoError as exc:
            raise self._fail(f"record the {stage} stage of {date}", exc) from exc
        self.commit()

    def update_run(self, source: str, date: str, fields: Mapping[str, Any]) -> None:
        key = {"source": source, "date": date}
        try:
            self._part("runs", key, write=True).update_one(key, {"$set": dict(fields)}, upsert=True)
        except PyMongoError as exc:
            raise self._fail(f"record the run of {date}", exc) from exc
        self.commit()

    def runs_on(self, date: str) -> list[Doc]:
        """The ``runs`` documents of ``date`` (one per source), by source."""
        try:
            docs = [doc for coll in self._parts("runs") for doc in coll.find({"date": date}, {"_id": 0})]
        except PyMongoError as exc:
            raise self._fail(f"read the runs of {date}", exc) from exc
        return sorted(docs, key=lambda doc: str(doc.get("source")))

    # --- models ---------------------------------------------------------------------------------

    def register_model(self, model_id: str, *, name: str, checksum: str, labels: Sequence[str], date: str) -> None:
        """Keep one ``models`` document per model id, with the first and last date it was evaluated on."""
        try:
            self._part("models", {}, write=True).update_one(
                {"model_id": model_id},
                {
                    "$setOnInsert": {"model_id": model_id, "name": name, "checksum": checksum, "labels": list(labels)},
                    "$min": {"first_date": date},
                    "$max": {"last_date": date},
                },
                upsert=True,
            )
        except PyMongoError as exc:
            raise self._fail(f"register model {model_id}", exc) from exc

    def models(self) -> list[Doc]:
        """Every registered model (``model_id``, ``name``, ``labels``, ``first_date``, ``last_date``); for stores without
        ``models`` documents, one bare entry per model with class metrics."""
        try:
            docs = [doc for coll in self._parts("models") for doc in coll.find({}, {"_id": 0, "checksum": 0})]
        except PyMongoError as exc:
            raise self._fail("read the models", exc) from exc
        return docs or [{"model_id": model_id} for model_id in self.measured_models()]

    # --- candidates -----------------------------------------------------------------------------

    def add_candidate(self, model_dir: str, *, model_id: str, added_at: dt.datetime) -> bool:
        """Register a candidate model directory (predicted beside production each day); False when it already was."""
        try:
            result = self._part("candidates", {}, write=True).update_one(
                {"model_dir": model_dir},
                {"$setOnInsert": {"model_dir": model_dir, "model_id": model_id, "added_at": added_at}},
                upsert=True,
            )
        except PyMongoError as exc:
            raise self._fail(f"register candidate {model_dir}", exc) from exc
        return result.upserted_id is not None

    def remove_candidate(self, model_dir: str) -> bool:
        """Stop predicting the candidate of ``model_dir``; False when it was not registered."""
        try:
            result = self._part("candidates", {}, write=True).delete_one({"model_dir": model_dir})
        except PyMongoError as exc:
            raise self._fail(f"remove candidate {model_dir}", exc) from exc
        return bool(result.deleted_count)

    def candidates(self) -> list[Doc]:
        """The registered candidates (``model_dir``, ``model_id`` when added, ``added_at``), by directory."""
        try:
            docs = [doc for coll in self._parts("candidates") for doc in coll.find({}, {"_id": 0})]
        except PyMongoError as exc:
            raise self._fail("read the candidates", exc) from exc
        return sorted(docs, key=lambda doc: str(doc.get("model_dir")))

    # --- images ---------------------------------------------------------------------------------

    def _image_parts(self, source: str, label: str | None = None) -> list[Collection]:
        if label is not None:
            return [self._part("images", {"source": source, "label": label})]
        return self._parts("images", lambda key: key[0] == source)

    def count_images(self, source: str, *, present_only: bool = False) -> int:
        query: Doc = {"source": source, **({"status": {"$ne": STATUS_MISSING}} if present_only else {})}
        try:
            if self._embedded is not None and not present_only:
                # The manifest knows each committed partition's size: nothing is read.
                return sum(self._embedded.count("images", key) for key in self._keys("images", lambda key: key[0] == source))
            if self._embedded is not None:
                return sum(1 for doc in self._raw("images", lambda key: key[0] == source) if doc.get("status") != STATUS_MISSING)
            return sum(coll.count_documents(query) for coll in self._image_parts(source))
        except PyMongoError as exc:
            raise self._fail(f"count the indexed images of {source}", exc) from exc

    def stored_images(self, source: str, paths: Mapping[str | None, Sequence[str]], fields: Iterable[str]) -> dict[str, Doc]:
        """The stored documents (``path`` and ``fields``) of ``paths`` (grouped by label), by path."""
        projection = {"_id": 0, "path": 1, **{name: 1 for name in fields}}
        found: dict[str, Doc] = {}
        try:
            if self._embedded is None:
                assert self._db is not None
                wanted = [path for group in paths.values() for path in group]
                for doc in self._db["images"].find({"source": source, "path": {"$in": wanted}}, projection):
                    found[doc["path"]] = doc
                return found
            names = ["path", *fields]
            for label, group in paths.items():
                # mongomock checks ``$in`` against the whole list for every document: a set lookup instead.
                wanted_set = set(group)
                key = partition_key("images", {"source": source, "label": label})
                for doc in self._raw("images", _only(key)):
                    if doc["path"] in wanted_set:
                        found[doc["path"]] = {name: doc[name] for name in names if name in doc}
        except PyMongoError as exc:
            raise self._fail(f"read indexed images of {source}", exc) from exc
        return found

    def write_images(self, source: str, new: Sequence[Doc], changed: Sequence[tuple[Doc, Doc]]) -> None:
        """Insert ``new`` image documents and apply ``(document, update)`` pairs to existing ones (by source and path)."""
        try:
            by_part: dict[Key, list[Doc]] = {}
            for doc in new:  # MongoDB: one collection, one write per batch
                by_part.setdefault(partition_key("images", doc) if self._embedded is not None else (), []).append(doc)
            for docs in by_part.values():
                coll = self._part("images", docs[0], write=True)
                try:
                    coll.insert_many([dict(doc) for doc in docs], ordered=False)
                except BulkWriteError as exc:
                    # Another indexer of the same source inserted some first (MongoDB): theirs stand, equal by construction.
                    if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", [])):
                        raise
            ops: dict[Key, list[UpdateOne]] = {}
            colls: dict[Key, Collection] = {}
            for doc, update in changed:
                key = partition_key("images", doc) if self._embedded is not None else ()
                colls.setdefault(key, self._part("images", doc, write=True))
                ops.setdefault(key, []).append(UpdateOne({"source": source, "path": doc["path"]}, update))
            for key, batch in ops.items():
                colls[key].bulk_write(batch, ordered=False)
        except PyMongoError as exc:
            raise self._fail(f"write {len(new) + len(changed)} image documents of {source}", exc) from exc

    def present_images(self, source: str) -> Iterator[Doc]:
        """``path`` and ``label`` of every stored image of ``source`` not marked missing, streamed (a million-image
        index is never held as one list here); the caller must not write the images until it has read them all."""
        try:
            if self._embedded is not None:
                for d in self._raw("images", lambda key: key[0] == source):
                    if d.get("status") != STATUS_MISSING:
                        yield {"path": d["path"], "label": d.get("label")}
                return
            for coll in self._image_parts(source):
                yield from coll.find({"source": source, "status": {"$ne": STATUS_MISSING}}, {"_id": 0, "path": 1, "label": 1}, batch_size=10_000)
        except PyMongoError as exc:
            raise self._fail(f"read the indexed images of {source}", exc) from exc

    def mark_missing(self, source: str, images: Sequence[Doc], fields: Mapping[str, Any]) -> int:
        """Set ``fields`` on the given stored images (``path``, ``label``) unless already missing; returns how many changed."""
        marked = 0
        try:
            groups: dict[Key, list[Doc]] = {}
            for doc in images:
                groups.setdefault(partition_key("images", {"source": source, **doc}), []).append(doc)
            for docs in groups.values():
                coll = self._part("images", {"source": source, **docs[0]}, write=True)
                for start in range(0, len(docs), 1000):
                    chunk = [doc["path"] for doc in docs[start : start + 1000]]
                    result = coll.update_many({"source": source, "path": {"$in": chunk}, "status": {"$ne": STATUS_MISSING}}, {"$set": dict(fields)})
                    marked += result.modified_count
        except PyMongoError as exc:
            raise self._fail(f"mark vanished images of {source}", exc) from exc
        return marked

    def usable_labels(self, source: str, *, created_by: dt.datetime | None = None) -> list[str]:
        """Labels with a usable image of ``source`` (created by ``created_by``, when given), sorted."""
        query: Doc = {"source": source, "status": STATUS_OK, **({"created": {"$lte": created_by}} if created_by else {})}
        try:
            labels: set[Any] = set()
            if self._embedded is not None:
                for key in self._keys("images", lambda key: key[0] == source):
                    if key[1] and any(_usable(doc, {"$lte": created_by} if created_by else None) for doc in self._embedded.documents("images", key)):
                        labels.add(key[1])
            for coll in self._image_parts(source) if self._embedded is None else ():
                labels.update(coll.distinct("label", query))
        except PyMongoError as exc:
            raise self._fail(f"read the classes of {source}", exc) from exc
        return sorted(str(label) for label in labels if label)

    def walk_class(self, source: str, label: str, created: Mapping[str, dt.datetime], pivot: float, size: int) -> list[Doc]:
        """The ``size`` usable images of a class following ``pivot`` in sampling-key order, wrapping around below it.

        Each: ``path``, ``label``, ``sample_key``, ``created``. On MongoDB the ``sampling`` index is walked from the pivot.
        """
        if self._embedded is not None:
            key = partition_key("images", {"source": source, "label": label})
            eligible = sorted((doc for doc in self._raw("images", _only(key)) if _usable(doc, created)), key=lambda doc: doc["sample_key"])
            start = next((i for i, doc in enumerate(eligible) if doc["sample_key"] >= pivot), len(eligible))
            ordered = eligible[start:] + eligible[:start]
            return [{name: doc.get(name) for name in ("path", "label", "sample_key", "created", "checksum")} for doc in ordered[:size]]
        base = {"source": source, "status": STATUS_OK, "label": label, "created": dict(created)}
        coll = self._part("images", {"source": source, "label": label})
        try:
            run = list(self._hinted(coll.find({**base, "sample_key": {"$gte": pivot}}, _SAMPLE_FIELDS).sort("sample_key", 1)).limit(size))
            if len(run) < size:
                run += list(self._hinted(coll.find({**base, "sample_key": {"$lt": pivot}}, _SAMPLE_FIELDS).sort("sample_key", 1)).limit(size - len(run)))
        except PyMongoError as exc:
            raise self._fail(f"draw class {label!r} of {source}", exc) from exc
        return run

    def _hinted(self, cursor: Any) -> Any:
        return cursor if self._embedded is not None else cursor.hint(SAMPLING_INDEX)

    def walk_cost(self, source: str, label: str, created: Mapping[str, dt.datetime], pivot: float, size: int) -> tuple[int, int, int]:
        """(documents examined, index keys examined, queries) of :meth:`walk_class` (for benchmarks and capacity planning).

        MongoDB: ``explain()``'s ``executionStats``. mongomock has no explain and scans everything, so there the
        count is the query's shape: documents fetched walking the index range from the pivot in key order until
        ``size`` pass the ``created`` filter (MongoDB's IXSCAN -> FETCH(filter) -> LIMIT); keys are not counted.
        """
        base = {"source": source, "status": STATUS_OK, "label": label, "created": dict(created)}
        coll = self._part("images", {"source": source, "label": label})
        docs = keys = queries = found = 0
        try:
            for key_range in ({"$gte": pivot}, {"$lt": pivot}):
                if found >= size:
                    break
                queries += 1
                if self._embedded is not None:
                    index_part = {k: base[k] for k in ("source", "status", "label")}
                    for doc in coll.find({**index_part, "sample_key": key_range}, {"_id": 0, "created": 1}).sort("sample_key", 1):
                        docs += 1
                        if _in_window(doc.get("created"), created):
                            found += 1
                            if found == size:
                                break
                    continue
                cursor = self._hinted(coll.find({**base, "sample_key": key_range}, _SAMPLE_FIELDS).sort("sample_key", 1)).limit(size - found)
                stats = cursor.explain().get("executionStats", {})
                docs += int(stats.get("totalDocsExamined", 0))
                keys += int(stats.get("totalKeysExamined", 0))
                found += int(stats.get("nReturned", 0))
        except PyMongoError as exc:
            raise self._fail(f"explain the sampling queries of {source}", exc) from exc
        return docs, keys, queries

    def unusable_counts(self, source: str) -> dict[str, int]:
        """How many stored images of ``source`` are unusable, per reason."""
        counts: dict[str, int] = {}
        if self._embedded is not None:
            for doc in self._raw("images", lambda key: key[0] == source):
                if doc.get("status") == STATUS_UNUSABLE:
                    counts[str(doc.get("reason"))] = counts.get(str(doc.get("reason")), 0) + 1
            return dict(sorted(counts.items()))
        try:
            for coll in self._image_parts(source):
                for row in coll.aggregate([{"$match": {"source": source, "status": STATUS_UNUSABLE}}, {"$group": {"_id": "$reason", "count": {"$sum": 1}}}]):
                    counts[str(row["_id"])] = counts.get(str(row["_id"]), 0) + int(row["count"])
        except PyMongoError as exc:
            raise self._fail(f"count the unusable images of {source}", exc) from exc
        return dict(sorted(counts.items()))

    def unusable_images(self, sources: Sequence[str], limit: int) -> list[Doc]:
        """Up to ``limit`` images of ``sources`` that are unusable or missing (``path``, ``status``, ``reason``), by path."""
        query = {"source": {"$in": sorted(sources)}, "status": {"$in": [STATUS_UNUSABLE, STATUS_MISSING]}}
        fields = {"_id": 0, "path": 1, "status": 1, "reason": 1}
        try:
            parts = self._parts("images", lambda key: key[0] in set(sources))
            docs = [doc for coll in parts for doc in coll.find(query, fields).sort("path", 1).limit(limit)]
        except PyMongoError as exc:
            raise self._fail("read the unusable images", exc) from exc
        return sorted(docs, key=lambda doc: str(doc.get("path")))[:limit]

    # --- samples --------------------------------------------------------------------------------

    def sample(self, source: str, date: str, *, items: bool = False) -> Doc | None:
        """The recorded sample of (source, date), without its ``items`` unless asked; None when there is none."""
        key = {"source": source, "date": date}
        try:
            return self._part("samples", key).find_one(key, {"_id": 0, **({} if items else {"items": 0})})
        except PyMongoError as exc:
            raise self._fail(f"read the sample of {date}", exc) from exc

    def save_sample(self, doc: Mapping[str, Any]) -> None:
        """Record the sample of (source, date), replacing a previous one."""
        key = {"source": doc["source"], "date": doc["date"]}
        try:
            self._part("samples", key, write=True).replace_one(key, dict(doc), upsert=True)
        except PyMongoError as exc:
            raise self._fail(f"record the sample of {doc['date']}", exc) from exc

    def class_images(self, source: str, label: str, created: Mapping[str, dt.datetime]) -> list[Doc]:
        """Every usable image of a class created in the ``created`` window (``path``, ``label``, ``sample_key``, ``created``,
        ``checksum``): what the draw of unseen images orders (newest first). MongoDB reads the ``source_label_created`` index range."""
        if self._embedded is not None:
            key = partition_key("images", {"source": source, "label": label})
            return [{name: doc.get(name) for name in _SAMPLE_FIELDS if name != "_id"} for doc in self._raw("images", _only(key)) if _usable(doc, created)]
        query = {"source": source, "label": label, "created": dict(created), "status": STATUS_OK}
        try:
            return list(self._part("images", {"source": source, "label": label}).find(query, _SAMPLE_FIELDS))
        except PyMongoError as exc:
            raise self._fail(f"read class {label!r} of {source}", exc) from exc

    # --- evaluations: each image a model evaluated, once -------------------------------------------

    def evaluated(self, model_id: str, *, labels: Iterable[str] | None = None, other_than: str | None = None) -> dict[str, set[str]]:
        """The image identities ``model_id`` evaluated, per label, on every date but ``other_than`` (the date being drawn)."""
        wanted = set(labels) if labels is not None else None
        out: dict[str, set[str]] = {}
        try:
            if self._embedded is not None:
                keys = self._keys("evaluations", lambda key: key[0] == model_id and key[1] != other_than)
                docs: Iterable[Doc] = (doc for key in keys for doc in self._embedded.documents("evaluations", key))
            else:
                query: Doc = {"model_id": model_id, **({"date": {"$ne": other_than}} if other_than else {})}
                if wanted is not None:
                    query["label"] = {"$in": sorted(wanted)}
                docs = self._part("evaluations", {"model_id": model_id}).find(query, {"_id": 0, "label": 1, "image": 1})
            for doc in docs:
                label = str(doc.get("label"))
                if wanted is None or label in wanted:
                    out.setdefault(label, set()).add(str(doc.get("image")))
        except PyMongoError as exc:
            raise self._fail(f"read the images {model_id} evaluated", exc) from exc
        return out

    def replace_evaluations(self, model_id: str, date: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Replace the ``evaluations`` rows of (model, date): one per image (``label``, ``image``, ``path``, ``correct``, ``draw``)."""
        docs = [{**row, "model_id": model_id, "date": date} for row in rows]
        seen = {(doc.get("label"), doc.get("image")) for doc in docs}
        if len(seen) != len(docs):
            raise DataError(f"the evaluations of {model_id} on {date} repeat an image")
        return self._replace_day_docs("evaluations", model_id, date, docs)

    def _replace_day_docs(self, kind: str, model_id: str, date: str, docs: Sequence[Doc]) -> int:
        """Delete then insert, so a re-run leaves exactly ``docs`` for (model, date)."""
        key = {"model_id": model_id, "date": date}
        try:
            coll = self._part(kind, key, write=True)
            coll.delete_many(key)
            if docs:
                coll.insert_many(list(docs))
        except PyMongoError as exc:
            raise self._fail(f"write {kind} of {model_id} on {date}", exc) from exc
        return len(docs)

    # --- class metrics and class health ---------------------------------------------------------

    def replace_day(self, kind: str, model_id: str, date: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Replace the ``class_metrics`` or ``class_health`` rows of (model, date) with ``rows``; returns how many.

        Delete then insert, so a re-run leaves exactly the new rows (labels gone since the last run disappear
        too). Rows carrying another model_id or date, or repeating a label, are refused (:class:`DataError`).
        """
        _check_kind(kind)
        docs: list[Doc] = []
        for row in rows:
            for name, expected in (("model_id", model_id), ("date", date)):
                if row.get(name, expected) != expected:
                    raise DataError(f"a {kind} row for label {row.get('label')!r} has {name} {row[name]!r}, not {expected!r}")
            docs.append({**row, "model_id": model_id, "date": date})
        labels = [doc.get("label") for doc in docs]
        if len(set(labels)) != len(labels):
            raise DataError(f"{kind} rows for {model_id} on {date} repeat a label")
        return self._replace_day_docs(kind, model_id, date, docs)

    def _day_keys(self, kind: str, model_id: str | None, start: str | None, end: str | None) -> Callable[[Key], bool]:
        return lambda key: (model_id is None or key[0] == model_id) and (start is None or key[1] >= start) and (end is None or key[1] <= end)

    def rows(
        self, kind: str, model_id: str | None, *, start: str | None = None, end: str | None = None,
        labels: Sequence[str] | None = None, fields: Sequence[str] | None = None,
    ) -> list[Doc]:  # fmt: skip
        """The ``class_metrics`` or ``class_health`` rows of ``model_id`` (None: every model) with ``start <= date <= end``, by date and label."""
        _check_kind(kind)
        query: Doc = {}
        if model_id is not None:
            query["model_id"] = model_id
        if start or end:
            query["date"] = {**({"$gte": start} if start else {}), **({"$lte": end} if end else {})}
        if labels is not None:
            query["label"] = {"$in": sorted(set(labels))}
        projection = {"_id": 0, **({name: 1 for name in fields} if fields else {})}
        try:
            if self._embedded is not None:
                docs = self._embedded_rows(kind, model_id, start, end, labels, fields)
            else:
                docs = [doc for coll in self._parts(kind) for doc in coll.find(query, projection)]
        except PyMongoError as exc:
            raise self._fail(f"read {kind} of {model_id or 'every model'}", exc) from exc
        return sorted(docs, key=lambda doc: (str(doc.get("date")), str(doc.get("label"))))

    def _embedded_rows(
        self, kind: str, model_id: str | None, start: str | None, end: str | None, labels: Sequence[str] | None, fields: Sequence[str] | None
    ) -> list[Doc]:
        """Whole day partitions, filtered here: mongomock would copy every document of each (a year is ~70k rows)."""
        assert self._embedded is not None
        wanted = set(labels) if labels is not None else None
        out: list[Doc] = []
        for key in self._keys(kind, self._day_keys(kind, model_id, start, end)):
            for doc in self._embedded.documents(kind, key):
                if wanted is not None and doc.get("label") not in wanted:
                    continue
                out.append({name: doc[name] for name in fields if name in doc} if fields else {k: v for k, v in doc.items() if k != "_id"})
        return out

    def day_versions(self, kind: str, model_id: str) -> dict[str, str] | None:
        """For a long-lived reader that keeps ``kind`` rows of ``model_id`` across commits: a token per date that changes
        whenever that date's rows do (the embedded store's partition file), so it re-reads only those dates.
        None where there is no such token (MongoDB, or an uncommitted write): re-read everything."""
        _check_kind(kind)
        if self._embedded is None:
            return None
        versions: dict[str, str] = {}
        for key in self._keys(kind, self._day_keys(kind, model_id, None, None)):
            token = self._embedded.file_of(kind, key)
            if token is None:
                return None
            versions[key[1]] = token
        return versions

    def dates(self, kind: str, model_id: str | None = None, *, after: str | None = None, before: str | None = None) -> list[str]:
        """The dates with ``kind`` rows (of ``model_id``, or any model), strictly between ``after`` and ``before``, oldest first."""
        _check_kind(kind)
        keep = lambda day: (after is None or day > after) and (before is None or day < before)  # noqa: E731
        try:
            if self._embedded is not None:
                days = {key[1] for key in self._keys(kind, lambda key: model_id is None or key[0] == model_id)}
            else:
                assert self._db is not None
                days = {str(day) for day in self._db[kind].distinct("date", {"model_id": model_id} if model_id else {})}
        except PyMongoError as exc:
            raise self._fail(f"read the dates of {kind}", exc) from exc
        return sorted(day for day in days if keep(day))

    def models_on(self, kind: str, date: str) -> list[str]:
        """The models with ``kind`` rows on ``date``, sorted."""
        _check_kind(kind)
        try:
            if self._embedded is not None:
                return sorted({key[0] for key in self._keys(kind, lambda key: key[1] == date)})
            assert self._db is not None
            return sorted(str(m) for m in self._db[kind].distinct("model_id", {"date": date}))
        except PyMongoError as exc:
            raise self._fail(f"read the models of {date}", exc) from exc

    def measured_models(self) -> list[str]:
        """Every model with class metrics, sorted."""
        try:
            if self._embedded is not None:
                return sorted({key[0] for key in self._keys("class_metrics")})
            assert self._db is not None
            return sorted(str(m) for m in self._db["class_metrics"].distinct("model_id"))
        except PyMongoError as exc:
            raise self._fail("read the measured models", exc) from exc

    def latest_rows_before(self, kind: str, model_id: str, date: str, labels: Iterable[str]) -> dict[str, Doc]:
        """Each of ``labels``' latest ``kind`` row of ``model_id`` before ``date`` (walking back one stored day at a time)."""
        missing = set(labels)
        found: dict[str, Doc] = {}
        for day in reversed(self.dates(kind, model_id, before=date)):
            if not missing:
                break
            for doc in self.rows(kind, model_id, start=day, end=day, labels=sorted(missing)):
                found[str(doc["label"])] = doc
                missing.discard(str(doc["label"]))
        return found

    # --- alerts ---------------------------------------------------------------------------------

    def add_alert(self, alert: Mapping[str, Any]) -> bool:
        """Store the alert of one transition unless it exists (by model, label, date and kind); True when it is new."""
        key = {name: alert[name] for name in ("model_id", "label", "date", "kind")}
        try:
            result = self._part("alerts", key, write=True).update_one(key, {"$setOnInsert": dict(alert)}, upsert=True)
        except PyMongoError as exc:
            raise self._fail(f"write an alert of {alert['model_id']} on {alert['date']}", exc) from exc
        return result.upserted_id is not None

    def withdraw_alerts(self, model_id: str, date: str, keep: set[tuple[str, str]]) -> int:
        """Delete the undelivered alerts of (model, date) whose (label, kind) is not in ``keep``; returns how many."""
        key = {"model_id": model_id}
        removed = 0
        try:
            coll = self._part("alerts", key)
            for doc in list(coll.find({"model_id": model_id, "date": date, "delivered": False}, {"label": 1, "kind": 1})):
                if (str(doc["label"]), str(doc["kind"])) not in keep:
                    self._part("alerts", key, write=True).delete_one({"_id": doc["_id"]})
                    removed += 1
        except PyMongoError as exc:
            raise self._fail(f"withdraw alerts of {model_id} on {date}", exc) from exc
        return removed

    def pending_alerts(self) -> list[Doc]:
        """Undelivered alerts, oldest first (by transition date, then creation)."""
        try:
            docs = [doc for coll in self._parts("alerts") for doc in coll.find({"delivered": False})]
        except PyMongoError as exc:
            raise self._fail("read the pending alerts", exc) from exc
        return sorted(docs, key=lambda doc: (str(doc.get("date")), _sortable_time(doc.get("created_at"))))

    def update_alert(self, alert: Mapping[str, Any], update: Mapping[str, Any]) -> None:
        """Apply ``update`` to one stored alert and commit at once: a delivery state is never lost to a crash."""
        try:
            self._part("alerts", {"model_id": alert["model_id"]}, write=True).update_one({"_id": alert["_id"]}, dict(update))
        except PyMongoError as exc:
            raise self._fail("record the delivery of an alert", exc) from exc
        self.commit()

    def alerts(
        self, model_id: str | None = None, *, pending_only: bool = False, start: str | None = None, end: str | None = None,
        labels: Sequence[str] | None = None,
    ) -> list[Doc]:  # fmt: skip
        """Alerts (without ``_id``), newest first: by transition date, then creation."""
        query: Doc = {}
        if model_id:
            query["model_id"] = model_id
        if pending_only:
            query["delivered"] = False
        if start or end:
            query["date"] = {**({"$gte": start} if start else {}), **({"$lte": end} if end else {})}
        if labels is not None:
            query["label"] = {"$in": sorted(set(labels))}
        try:
            parts = self._parts("alerts", (lambda key: key[0] == model_id) if model_id else None)
            docs = [doc for coll in parts for doc in coll.find(query, {"_id": 0})]
        except PyMongoError as exc:
            raise self._fail("read the alerts", exc) from exc
        return sorted(docs, key=lambda doc: (str(doc.get("date")), _sortable_time(doc.get("created_at"))), reverse=True)

    # --- tests and tools ------------------------------------------------------------------------

    def find(self, kind: str, query: Mapping[str, Any] | None = None, fields: Sequence[str] | None = None) -> list[Doc]:
        """Every document of collection ``kind`` matching ``query`` (without ``_id``): for tests and tools, not for the service.

        On the embedded store this reads every partition of ``kind``.
        """
        if kind not in INDEXES:
            raise ValueError(f"no collection {kind!r}; known: {', '.join(INDEXES)}")
        projection = {"_id": 0, **({name: 1 for name in fields} if fields else {})}
        try:
            return [doc for coll in self._parts(kind) for doc in coll.find(dict(query or {}), projection)]
        except PyMongoError as exc:
            raise self._fail(f"read {kind}", exc) from exc

    def remove(self, kind: str, query: Mapping[str, Any]) -> int:
        """Delete the documents of ``kind`` matching ``query``; returns how many (tests and tools)."""
        if kind not in INDEXES:
            raise ValueError(f"no collection {kind!r}; known: {', '.join(INDEXES)}")
        removed = 0
        try:
            if self._embedded is None:
                assert self._db is not None
                return int(self._db[kind].delete_many(dict(query)).deleted_count)
            for key in self._keys(kind):
                result = self._embedded.collection(kind, key).delete_many(dict(query))
                if result.deleted_count:
                    self._embedded.touched(kind, key)
                    removed += int(result.deleted_count)
        except PyMongoError as exc:
            raise self._fail(f"delete from {kind}", exc) from exc
        return removed

    def info(self) -> dict[str, Any]:
        """The embedded store's commit, partition files, size and backups (empty on MongoDB)."""
        if self._embedded is None:
            return {}
        return self._embedded.info()

    def counts(self) -> dict[str, int]:
        """Documents per collection (for tests and ``monitor store``)."""
        out: dict[str, int] = {}
        try:
            for kind in INDEXES:
                if self._embedded is not None:  # from the manifest: nothing is read
                    out[kind] = sum(self._embedded.count(kind, key) for key in self._keys(kind))
                else:
                    out[kind] = sum(coll.count_documents({}) for coll in self._parts(kind))
        except PyMongoError as exc:
            raise self._fail("count documents", exc) from exc
        return out


KINDS = tuple(INDEXES)


def _check_kind(kind: str) -> None:
    if kind not in ("class_metrics", "class_health"):
        raise ValueError(f"not a per-day collection: {kind!r}")


def _sortable_time(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.datetime) else str(value or "")


def _only(key: Key) -> Callable[[Key], bool]:
    return lambda other: other == key


def _usable(doc: Mapping[str, Any], window: Mapping[str, dt.datetime] | None) -> bool:
    return doc.get("status") == STATUS_OK and (window is None or _in_window(doc.get("created"), window))


def _in_window(created: Any, window: Mapping[str, dt.datetime]) -> bool:
    if created is None:
        return False
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.timezone.utc)
    return bool(created <= window["$lte"] and ("$gte" not in window or created >= window["$gte"]))


def open_store(settings: Settings, *, read_only: bool = False, lock_timeout_s: float = 600.0) -> Store:
    """Open the configured store: ``settings.mongo_uri`` if set, else the embedded store under the data dir.

    ``read_only`` (``monitor health``, ``alerts``, the dashboard): the embedded store is read from its last
    commit without the writer's lock and is never written; MongoDB is opened as usual.
    """
    if settings.mongo_uri:
        return _open_mongodb(settings)
    root = settings.store_dir / settings.mongo_db
    embedded = EmbeddedDB(root, writable=not read_only, lock_timeout_s=lock_timeout_s)
    if not read_only:
        # The embedded store's lock makes this the only writer of the data dir: any temporary file
        # in it is a killed writer's leftover (with MongoDB, atomic_write removes them once stale).
        for folder in (settings.samples_dir, settings.predictions_dir):
            remove_leftovers(folder)
    return Store(embedded=embedded, description=f"embedded store {root}")


def _open_mongodb(settings: Settings) -> Store:
    shown = redact(settings.mongo_uri)
    try:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            settings.mongo_uri, serverSelectionTimeoutMS=settings.mongo_timeout_ms, tz_aware=True
        )
        client.admin.command("ping")
    except PyMongoError as exc:
        raise StoreError(f"MongoDB at {shown} is unreachable: {redact(str(exc)).splitlines()[0][:300]}") from exc
    store = Store(db=client[settings.mongo_db], description=f"MongoDB {shown}")
    store.ensure_indexes()
    return store
