"""The MongoDB engine (``MONITOR_MONGO_URI``): one collection per kind with the indexes of
:data:`~monitor.store.base.COLLECTIONS`, every write durable at once (nothing to commit).

Reads are single queries the server answers from those indexes: the sampling walk is hinted onto the
``sampling`` index from the pivot, label and date lists are ``distinct``, unusable images are counted by an
aggregation. A ``PyMongoError`` becomes a :class:`~monitor.core.errors.StoreError` naming the store with its
URI's password masked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import pymongo
from pymongo import IndexModel, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from monitor.core.errors import StoreError, redact
from monitor.core.settings import Settings
from monitor.store.base import (
    COLLECTIONS,
    SAMPLE_FIELDS,
    SAMPLING_INDEX,
    STATUS_MISSING,
    STATUS_OK,
    STATUS_UNUSABLE,
    Doc,
    Key,
    check_kind,
    date_range,
)
from monitor.store.common import StoreBase


class MongoStore(StoreBase):
    """:class:`~monitor.store.base.Store` on a MongoDB database (or anything with its collection API)."""

    cost_method: Literal["explain", "query-shape"] = "explain"

    def __init__(self, *, db: Database, description: str) -> None:
        self.description = description
        self._db = db
        self._closed = False

    def _part(self, kind: str, doc: Mapping[str, Any], *, write: bool = False) -> Collection:
        return self._db[kind]

    def _parts(self, kind: str, where: Callable[[Key], bool] | None = None) -> list[Collection]:
        return [self._db[kind]]

    # --- life cycle -------------------------------------------------------------------------------

    def ensure_indexes(self) -> None:
        """Create every index of :data:`~monitor.store.base.COLLECTIONS` (idempotent)."""
        with self._failing("create indexes"):
            for name, collection in COLLECTIONS.items():
                # ``unique`` only where it holds: the index specs stay those that existing databases were given.
                models = [
                    IndexModel(list(index.keys), name=index.name, **({"unique": True} if index.unique else {}))
                    for index in collection.indexes
                ]
                self._db[name].create_indexes(models)

    def refresh(self) -> bool:
        return False  # every reader sees every write at once

    def version(self) -> Any:
        return None

    def commit(self) -> None:
        return None  # every write is durable already

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.client.close()

    def info(self) -> dict[str, Any]:
        return {}

    def counts(self) -> dict[str, int]:
        with self._failing("count documents"):
            return {kind: self._db[kind].count_documents({}) for kind in COLLECTIONS}

    # --- images -----------------------------------------------------------------------------------

    def count_images(self, source: str, *, present_only: bool = False) -> int:
        query: Doc = {"source": source, **({"status": {"$ne": STATUS_MISSING}} if present_only else {})}
        with self._failing(f"count the indexed images of {source}"):
            return self._db["images"].count_documents(query)

    def stored_images(
        self, source: str, paths: Mapping[str | None, Sequence[str]], fields: Iterable[str]
    ) -> dict[str, Doc]:
        projection = {"_id": 0, "path": 1, **{name: 1 for name in fields}}
        wanted = [path for group in paths.values() for path in group]
        with self._failing(f"read indexed images of {source}"):
            return {
                doc["path"]: doc
                for doc in self._db["images"].find({"source": source, "path": {"$in": wanted}}, projection)
            }

    def write_images(self, source: str, new: Sequence[Doc], changed: Sequence[tuple[Doc, Doc]]) -> None:
        coll = self._db["images"]
        with self._failing(f"write {len(new) + len(changed)} image documents of {source}"):
            if new:
                try:
                    coll.insert_many([dict(doc) for doc in new], ordered=False)
                except BulkWriteError as exc:
                    # Another indexer of the same source inserted some first: theirs stand, equal by construction.
                    if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", [])):
                        raise
            if changed:
                coll.bulk_write(
                    [UpdateOne({"source": source, "path": doc["path"]}, update) for doc, update in changed],
                    ordered=False,
                )

    def present_images(self, source: str) -> Iterator[Doc]:
        with self._failing(f"read the indexed images of {source}"):
            yield from self._db["images"].find(
                {"source": source, "status": {"$ne": STATUS_MISSING}},
                {"_id": 0, "path": 1, "label": 1},
                batch_size=10_000,
            )

    def usable_labels(self, source: str, *, created_by: dt.datetime | None = None) -> list[str]:
        query: Doc = {
            "source": source,
            "status": STATUS_OK,
            **({"created": {"$lte": created_by}} if created_by else {}),
        }
        with self._failing(f"read the classes of {source}"):
            labels = self._db["images"].distinct("label", query)
        return sorted(str(label) for label in set(labels) if label)

    def walk_class(
        self, source: str, label: str, created: Mapping[str, dt.datetime], pivot: float, size: int
    ) -> list[Doc]:
        """The ``sampling`` index walked from the pivot up, then from its start for what is left."""
        base = {"source": source, "status": STATUS_OK, "label": label, "created": dict(created)}
        coll = self._db["images"]
        with self._failing(f"draw class {label!r} of {source}"):
            run = list(
                coll.find({**base, "sample_key": {"$gte": pivot}}, SAMPLE_FIELDS)
                .sort("sample_key", 1)
                .hint(SAMPLING_INDEX)
                .limit(size)
            )
            if len(run) < size:
                rest = (
                    coll.find({**base, "sample_key": {"$lt": pivot}}, SAMPLE_FIELDS)
                    .sort("sample_key", 1)
                    .hint(SAMPLING_INDEX)
                )
                run += list(rest.limit(size - len(run)))
        return run

    def walk_cost(
        self, source: str, label: str, created: Mapping[str, dt.datetime], pivot: float, size: int
    ) -> tuple[int, int, int]:
        """``explain()``'s ``executionStats`` of each query :meth:`walk_class` runs, summed."""
        base = {"source": source, "status": STATUS_OK, "label": label, "created": dict(created)}
        coll = self._db["images"]
        docs = keys = queries = found = 0
        with self._failing(f"explain the sampling queries of {source}"):
            for key_range in ({"$gte": pivot}, {"$lt": pivot}):
                if found >= size:
                    break
                queries += 1
                cursor = (
                    coll.find({**base, "sample_key": key_range}, SAMPLE_FIELDS)
                    .sort("sample_key", 1)
                    .hint(SAMPLING_INDEX)
                    .limit(size - found)
                )
                stats = cursor.explain().get("executionStats", {})
                docs += int(stats.get("totalDocsExamined", 0))
                keys += int(stats.get("totalKeysExamined", 0))
                found += int(stats.get("nReturned", 0))
        return docs, keys, queries

    def unusable_counts(self, source: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._failing(f"count the unusable images of {source}"):
            for row in self._db["images"].aggregate(
                [
                    {"$match": {"source": source, "status": STATUS_UNUSABLE}},
                    {"$group": {"_id": "$reason", "count": {"$sum": 1}}},
                ]
            ):
                counts[str(row["_id"])] = counts.get(str(row["_id"]), 0) + int(row["count"])
        return dict(sorted(counts.items()))

    def class_images(self, source: str, label: str, created: Mapping[str, dt.datetime]) -> list[Doc]:
        """The ``source_label_created`` index range."""
        query = {"source": source, "label": label, "created": dict(created), "status": STATUS_OK}
        with self._failing(f"read class {label!r} of {source}"):
            return list(self._db["images"].find(query, SAMPLE_FIELDS))

    # --- evaluations, class metrics and class health ----------------------------------------------

    def evaluated(
        self, model_id: str, *, labels: Iterable[str] | None = None, other_than: str | None = None
    ) -> dict[str, set[str]]:
        query: Doc = {"model_id": model_id, **({"date": {"$ne": other_than}} if other_than else {})}
        if labels is not None:
            query["label"] = {"$in": sorted(set(labels))}
        out: dict[str, set[str]] = {}
        with self._failing(f"read the images {model_id} evaluated"):
            for doc in self._db["evaluations"].find(query, {"_id": 0, "label": 1, "image": 1}):
                out.setdefault(str(doc.get("label")), set()).add(str(doc.get("image")))
        return out

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
        check_kind(kind)
        query: Doc = {}
        if model_id is not None:
            query["model_id"] = model_id
        if start or end:
            query["date"] = date_range(start, end)
        if labels is not None:
            query["label"] = {"$in": sorted(set(labels))}
        projection = {"_id": 0, **({name: 1 for name in fields} if fields else {})}
        with self._failing(f"read {kind} of {model_id or 'every model'}"):
            docs = list(self._db[kind].find(query, projection))
        return sorted(docs, key=lambda doc: (str(doc.get("date")), str(doc.get("label"))))

    def day_versions(self, kind: str, model_id: str) -> dict[str, str] | None:
        check_kind(kind)
        return None  # no commits: a reader re-reads everything

    def dates(
        self, kind: str, model_id: str | None = None, *, after: str | None = None, before: str | None = None
    ) -> list[str]:
        check_kind(kind)
        with self._failing(f"read the dates of {kind}"):
            days = {str(day) for day in self._db[kind].distinct("date", {"model_id": model_id} if model_id else {})}
        return sorted(day for day in days if (after is None or day > after) and (before is None or day < before))

    def models_on(self, kind: str, date: str) -> list[str]:
        check_kind(kind)
        with self._failing(f"read the models of {date}"):
            return sorted(str(m) for m in self._db[kind].distinct("model_id", {"date": date}))

    def measured_models(self) -> list[str]:
        with self._failing("read the measured models"):
            return sorted(str(m) for m in self._db["class_metrics"].distinct("model_id"))


def open_mongodb(settings: Settings) -> MongoStore:
    """Connect to ``settings.mongo_uri`` (one ping: an unreachable server is one :class:`StoreError`) and ensure the indexes."""
    shown = redact(settings.mongo_uri)
    try:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            settings.mongo_uri, serverSelectionTimeoutMS=settings.mongo_timeout_ms, tz_aware=True
        )
        client.admin.command("ping")
    except PyMongoError as exc:
        raise StoreError(f"MongoDB at {shown} is unreachable: {redact(str(exc)).splitlines()[0][:300]}") from exc
    store = MongoStore(db=client[settings.mongo_db], description=f"MongoDB {shown}")
    store.ensure_indexes()
    return store
