"""The embedded engine (the default, no server): the store's operations over the partitions of
:class:`~monitor.store.embedded.EmbeddedDB` (mongomock collections kept as BSON files behind a manifest).

Each collection is split into partitions by the fields of :data:`~monitor.store.base.COLLECTIONS`, and an
operation visits only the partitions its arguments name. Reads that filter whole partitions (history for the
dashboard and health, the image index for sampling) take the partition's documents as decoded from its file
and filter them here: mongomock copies every document when a partition is loaded and again on every query.
Counts come from the manifest where it has them; nothing is read. Writes go to the loaded partition and are
durable at :meth:`EmbeddedStore.commit`; a store opened ``read_only`` never locks and never writes.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, Literal

from pymongo import UpdateOne
from pymongo.collection import Collection

from monitor.core.files import remove_leftovers
from monitor.core.settings import Settings
from monitor.store.base import (
    COLLECTIONS,
    SAMPLE_FIELDS,
    STATUS_MISSING,
    STATUS_OK,
    STATUS_UNUSABLE,
    Doc,
    Key,
    check_kind,
    day_filter,
    in_window,
    partition_key,
    usable,
)
from monitor.store.common import StoreBase
from monitor.store.embedded import EmbeddedDB


class EmbeddedStore(StoreBase):
    """:class:`~monitor.store.base.Store` on an :class:`EmbeddedDB`: the partitions each operation names."""

    cost_method: Literal["explain", "query-shape"] = "query-shape"

    def __init__(self, db: EmbeddedDB, *, description: str) -> None:
        self.description = description
        self._db = db
        self._closed = False

    def _part(self, kind: str, doc: Mapping[str, Any], *, write: bool = False) -> Collection:
        key = partition_key(kind, doc)
        if write:
            self._db.touched(kind, key)
        return self._db.collection(kind, key)

    def _parts(self, kind: str, where: Callable[[Key], bool] | None = None) -> list[Collection]:
        return [self._db.collection(kind, key) for key in self._db.keys(kind, where)]

    def _documents(self, kind: str, where: Callable[[Key], bool] | None = None) -> Iterator[Doc]:
        """The documents of the matching partitions as stored, shared, never to be changed (no mongomock copy)."""
        for key in self._db.keys(kind, where):
            yield from self._db.documents(kind, key)

    def _class(self, source: str, label: str) -> Iterator[Doc]:
        """The stored images of one class of ``source``: one partition."""
        key = partition_key("images", {"source": source, "label": label})
        return self._documents("images", lambda other: other == key)

    # --- life cycle -------------------------------------------------------------------------------

    def refresh(self) -> bool:
        return self._db.refresh()

    def version(self) -> Any:
        return self._db.manifest.commit

    def commit(self) -> None:
        if self._db.writable:
            self._db.commit()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close(commit=self._db.writable)

    def info(self) -> dict[str, Any]:
        return self._db.info()

    def counts(self) -> dict[str, int]:
        # From the manifest: nothing is read.
        return {kind: sum(self._db.count(kind, key) for key in self._db.keys(kind)) for kind in COLLECTIONS}

    # --- images -----------------------------------------------------------------------------------

    def count_images(self, source: str, *, present_only: bool = False) -> int:
        of_source = lambda key: key[0] == source  # noqa: E731
        with self._failing(f"count the indexed images of {source}"):
            if present_only:
                return sum(1 for doc in self._documents("images", of_source) if doc.get("status") != STATUS_MISSING)
            # The manifest knows each committed partition's size: nothing is read.
            return sum(self._db.count("images", key) for key in self._db.keys("images", of_source))

    def stored_images(
        self, source: str, paths: Mapping[str | None, Sequence[str]], fields: Iterable[str]
    ) -> dict[str, Doc]:
        names = ["path", *fields]
        found: dict[str, Doc] = {}
        with self._failing(f"read indexed images of {source}"):
            for label, group in paths.items():
                # mongomock checks ``$in`` against the whole list for every document: a set lookup instead.
                wanted = set(group)
                key = partition_key("images", {"source": source, "label": label})
                for doc in self._documents("images", partial(operator.eq, key)):
                    if doc["path"] in wanted:
                        found[doc["path"]] = {name: doc[name] for name in names if name in doc}
        return found

    def write_images(self, source: str, new: Sequence[Doc], changed: Sequence[tuple[Doc, Doc]]) -> None:
        with self._failing(f"write {len(new) + len(changed)} image documents of {source}"):
            by_part: dict[Key, list[Doc]] = {}
            for doc in new:
                by_part.setdefault(partition_key("images", doc), []).append(doc)
            for docs in by_part.values():
                self._part("images", docs[0], write=True).insert_many([dict(doc) for doc in docs], ordered=False)
            updates: dict[Key, list[tuple[Doc, Doc]]] = {}
            for doc, update in changed:
                updates.setdefault(partition_key("images", doc), []).append((doc, update))
            for pairs in updates.values():
                batch = [UpdateOne({"source": source, "path": doc["path"]}, update) for doc, update in pairs]
                self._part("images", pairs[0][0], write=True).bulk_write(batch, ordered=False)

    def present_images(self, source: str) -> Iterator[Doc]:
        with self._failing(f"read the indexed images of {source}"):
            for doc in self._documents("images", lambda key: key[0] == source):
                if doc.get("status") != STATUS_MISSING:
                    yield {"path": doc["path"], "label": doc.get("label")}

    def usable_labels(self, source: str, *, created_by: dt.datetime | None = None) -> list[str]:
        window = {"$lte": created_by} if created_by else None
        with self._failing(f"read the classes of {source}"):
            keys = self._db.keys("images", lambda key: key[0] == source)
            return sorted(
                key[1]
                for key in keys
                if key[1] and any(usable(doc, window) for doc in self._db.documents("images", key))
            )

    def walk_class(
        self, source: str, label: str, created: Mapping[str, dt.datetime], pivot: float, size: int
    ) -> list[Doc]:
        """The class's partition, sorted by sampling key here."""
        eligible = sorted(
            (doc for doc in self._class(source, label) if usable(doc, created)), key=lambda doc: doc["sample_key"]
        )
        start = next((i for i, doc in enumerate(eligible) if doc["sample_key"] >= pivot), len(eligible))
        ordered = eligible[start:] + eligible[:start]
        return [
            {name: doc.get(name) for name in ("path", "label", "sample_key", "created", "checksum")}
            for doc in ordered[:size]
        ]

    def walk_cost(
        self, source: str, label: str, created: Mapping[str, dt.datetime], pivot: float, size: int
    ) -> tuple[int, int, int]:
        """mongomock has no ``explain()`` and scans everything, so the count is the query's shape: documents fetched
        walking the ``sampling`` index range from the pivot in key order until ``size`` pass the ``created`` filter
        (MongoDB's IXSCAN -> FETCH(filter) -> LIMIT); index keys are not counted (0)."""
        coll = self._part("images", {"source": source, "label": label})
        index_part = {"source": source, "status": STATUS_OK, "label": label}
        docs = queries = found = 0
        with self._failing(f"explain the sampling queries of {source}"):
            for key_range in ({"$gte": pivot}, {"$lt": pivot}):
                if found >= size:
                    break
                queries += 1
                for doc in coll.find({**index_part, "sample_key": key_range}, {"_id": 0, "created": 1}).sort(
                    "sample_key", 1
                ):
                    docs += 1
                    if in_window(doc.get("created"), created):
                        found += 1
                        if found == size:
                            break
        return docs, 0, queries

    def unusable_counts(self, source: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for doc in self._documents("images", lambda key: key[0] == source):
            if doc.get("status") == STATUS_UNUSABLE:
                counts[str(doc.get("reason"))] = counts.get(str(doc.get("reason")), 0) + 1
        return dict(sorted(counts.items()))

    def class_images(self, source: str, label: str, created: Mapping[str, dt.datetime]) -> list[Doc]:
        return [
            {name: doc.get(name) for name in SAMPLE_FIELDS if name != "_id"}
            for doc in self._class(source, label)
            if usable(doc, created)
        ]

    # --- evaluations, class metrics and class health ----------------------------------------------

    def evaluated(
        self, model_id: str, *, labels: Iterable[str] | None = None, other_than: str | None = None
    ) -> dict[str, set[str]]:
        wanted = set(labels) if labels is not None else None
        out: dict[str, set[str]] = {}
        with self._failing(f"read the images {model_id} evaluated"):
            for doc in self._documents("evaluations", lambda key: key[0] == model_id and key[1] != other_than):
                label = str(doc.get("label"))
                if wanted is None or label in wanted:
                    out.setdefault(label, set()).add(str(doc.get("image")))
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
        """Whole day partitions, filtered here: mongomock would copy every document of each (a year is ~70k rows)."""
        check_kind(kind)
        wanted = set(labels) if labels is not None else None
        docs: list[Doc] = []
        with self._failing(f"read {kind} of {model_id or 'every model'}"):
            for doc in self._documents(kind, day_filter(model_id, start, end)):
                if wanted is None or doc.get("label") in wanted:
                    docs.append(
                        {name: doc[name] for name in fields if name in doc}
                        if fields
                        else {k: v for k, v in doc.items() if k != "_id"}
                    )
        return sorted(docs, key=lambda doc: (str(doc.get("date")), str(doc.get("label"))))

    def day_versions(self, kind: str, model_id: str) -> dict[str, str] | None:
        """The partition file of each date: a new file whenever that date's rows change."""
        check_kind(kind)
        versions: dict[str, str] = {}
        for key in self._db.keys(kind, day_filter(model_id, None, None)):
            token = self._db.file_of(kind, key)
            if token is None:
                return None
            versions[key[1]] = token
        return versions

    def dates(
        self, kind: str, model_id: str | None = None, *, after: str | None = None, before: str | None = None
    ) -> list[str]:
        check_kind(kind)
        with self._failing(f"read the dates of {kind}"):
            days = {key[1] for key in self._db.keys(kind, day_filter(model_id, None, None))}
        return sorted(day for day in days if (after is None or day > after) and (before is None or day < before))

    def models_on(self, kind: str, date: str) -> list[str]:
        check_kind(kind)
        with self._failing(f"read the models of {date}"):
            return sorted({key[0] for key in self._db.keys(kind, lambda key: key[1] == date)})

    def measured_models(self) -> list[str]:
        with self._failing("read the measured models"):
            return sorted({key[0] for key in self._db.keys("class_metrics")})


def open_embedded(settings: Settings, *, read_only: bool = False, lock_timeout_s: float = 600.0) -> EmbeddedStore:
    """The embedded store under the data dir; a writer takes its lock (waiting up to ``lock_timeout_s``), a reader
    (``read_only``) reads the last commit without it."""
    root = settings.store_dir / settings.mongo_db
    db = EmbeddedDB(root, writable=not read_only, lock_timeout_s=lock_timeout_s)
    if not read_only and settings.local_artifacts_dir == settings.data_dir:
        # The lock makes this the only writer of the data dir: any temporary file in it is a killed writer's
        # leftover (with MongoDB, or artifacts elsewhere, atomic_write removes them once stale).
        for folder in (settings.samples_dir, settings.predictions_dir):
            remove_leftovers(folder)
    return EmbeddedStore(db, description=f"embedded store {root}")
