"""The operations whose query is the same on both engines, written once over pymongo's collection API.

An engine says where a document lives (:meth:`StoreBase._part`: MongoDB's one collection, or the embedded
store's partition, marked changed when written) and which collections a read must visit
(:meth:`StoreBase._parts`); everything here runs unchanged on either. A ``PyMongoError`` becomes a
:class:`~monitor.core.errors.StoreError` in one place, :meth:`StoreBase._failing`, naming the operation
and the store (whose description masks a URI's password).
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from monitor.core.errors import DataError, StoreError, redact
from monitor.store.base import (
    STATUS_MISSING,
    STATUS_UNUSABLE,
    Doc,
    Key,
    check_kind,
    date_range,
    partition_key,
    sortable_time,
)


class StoreBase(abc.ABC):
    """The engine-independent half of a store; :class:`~monitor.store.mongo.MongoStore` and
    :class:`~monitor.store.embedded_store.EmbeddedStore` add the rest of :class:`~monitor.store.base.Store`."""

    description: str

    # --- what each engine provides ----------------------------------------------------------------

    @abc.abstractmethod
    def _part(self, kind: str, doc: Mapping[str, Any], *, write: bool = False) -> Collection:
        """The collection that holds (or will hold) ``doc`` of ``kind``; ``write``: it is about to be changed."""

    @abc.abstractmethod
    def _parts(self, kind: str, where: Callable[[Key], bool] | None = None) -> list[Collection]:
        """The collections a read of ``kind`` visits (the embedded store's partitions ``where`` accepts)."""

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def measured_models(self) -> list[str]: ...

    @abc.abstractmethod
    def rows(
        self,
        kind: str,
        model_id: str | None,
        *,
        start: str | None = None,
        end: str | None = None,
        labels: Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
    ) -> list[Doc]: ...

    @abc.abstractmethod
    def dates(
        self, kind: str, model_id: str | None = None, *, after: str | None = None, before: str | None = None
    ) -> list[str]: ...

    @contextmanager
    def _failing(self, what: str) -> Iterator[None]:
        """Turn a database error inside the block into one :class:`StoreError`: what could not be done, where, and why."""
        try:
            yield
        except PyMongoError as exc:
            cause = redact(str(exc)).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise StoreError(f"could not {what} on {self.description}: {cause}") from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- runs -------------------------------------------------------------------------------------

    def record_stage(
        self, source: str, date: str, stage: str, summary: Mapping[str, Any], *, finished_at: dt.datetime
    ) -> None:
        key = {"source": source, "date": date}
        with self._failing(f"record the {stage} stage of {date}"):
            self._part("runs", key, write=True).update_one(
                key, {"$set": {f"stages.{stage}": {**summary, "finished_at": finished_at}}}, upsert=True
            )
        self.commit()

    def update_run(self, source: str, date: str, fields: Mapping[str, Any]) -> None:
        key = {"source": source, "date": date}
        with self._failing(f"record the run of {date}"):
            self._part("runs", key, write=True).update_one(key, {"$set": dict(fields)}, upsert=True)
        self.commit()

    def runs_on(self, date: str) -> list[Doc]:
        with self._failing(f"read the runs of {date}"):
            docs = [doc for coll in self._parts("runs") for doc in coll.find({"date": date}, {"_id": 0})]
        return sorted(docs, key=lambda doc: str(doc.get("source")))

    # --- models and candidates --------------------------------------------------------------------

    def register_model(self, model_id: str, *, name: str, checksum: str, labels: Sequence[str], date: str) -> None:
        with self._failing(f"register model {model_id}"):
            self._part("models", {}, write=True).update_one(
                {"model_id": model_id},
                {
                    "$setOnInsert": {"model_id": model_id, "name": name, "checksum": checksum, "labels": list(labels)},
                    "$min": {"first_date": date},
                    "$max": {"last_date": date},
                },
                upsert=True,
            )

    def models(self) -> list[Doc]:
        with self._failing("read the models"):
            docs = [doc for coll in self._parts("models") for doc in coll.find({}, {"_id": 0, "checksum": 0})]
        return docs or [{"model_id": model_id} for model_id in self.measured_models()]

    def add_candidate(self, model_dir: str, *, model_id: str, added_at: dt.datetime) -> bool:
        with self._failing(f"register candidate {model_dir}"):
            result = self._part("candidates", {}, write=True).update_one(
                {"model_dir": model_dir},
                {"$setOnInsert": {"model_dir": model_dir, "model_id": model_id, "added_at": added_at}},
                upsert=True,
            )
        return result.upserted_id is not None

    def remove_candidate(self, model_dir: str) -> bool:
        with self._failing(f"remove candidate {model_dir}"):
            result = self._part("candidates", {}, write=True).delete_one({"model_dir": model_dir})
        return bool(result.deleted_count)

    def candidates(self) -> list[Doc]:
        with self._failing("read the candidates"):
            docs = [doc for coll in self._parts("candidates") for doc in coll.find({}, {"_id": 0})]
        return sorted(docs, key=lambda doc: str(doc.get("model_dir")))

    def save_comparison(self, doc: Mapping[str, Any]) -> None:
        key = {"candidate": doc["candidate"], "date": doc["date"]}
        with self._failing(f"store the comparison of {key['candidate']} on {key['date']}"):
            self._part("comparisons", key, write=True).replace_one(key, dict(doc), upsert=True)

    def comparisons(self, candidate: str, *, start: str | None = None, end: str | None = None) -> list[Doc]:
        query = {"candidate": candidate, **({"date": date_range(start, end)} if start or end else {})}
        with self._failing(f"read the comparisons of {candidate}"):
            docs = [
                doc
                for coll in self._parts("comparisons", lambda key: key == (candidate,))
                for doc in coll.find(query, {"_id": 0})
            ]
        return sorted(docs, key=lambda doc: str(doc["date"]))

    # --- images -----------------------------------------------------------------------------------

    def mark_missing(self, source: str, images: Sequence[Doc], fields: Mapping[str, Any]) -> int:
        marked = 0
        with self._failing(f"mark vanished images of {source}"):
            groups: dict[Key, list[Doc]] = {}
            for doc in images:
                groups.setdefault(partition_key("images", {"source": source, **doc}), []).append(doc)
            for docs in groups.values():
                coll = self._part("images", {"source": source, **docs[0]}, write=True)
                for start in range(0, len(docs), 1000):
                    chunk = [doc["path"] for doc in docs[start : start + 1000]]
                    result = coll.update_many(
                        {"source": source, "path": {"$in": chunk}, "status": {"$ne": STATUS_MISSING}},
                        {"$set": dict(fields)},
                    )
                    marked += result.modified_count
        return marked

    def unusable_images(self, sources: Sequence[str], limit: int) -> list[Doc]:
        query = {"source": {"$in": sorted(sources)}, "status": {"$in": [STATUS_UNUSABLE, STATUS_MISSING]}}
        fields = {"_id": 0, "path": 1, "status": 1, "reason": 1}
        with self._failing("read the unusable images"):
            parts = self._parts("images", lambda key: key[0] in set(sources))
            docs = [doc for coll in parts for doc in coll.find(query, fields).sort("path", 1).limit(limit)]
        return sorted(docs, key=lambda doc: str(doc.get("path")))[:limit]

    # --- samples and evaluations ------------------------------------------------------------------

    def sample(self, source: str, date: str, *, items: bool = False) -> Doc | None:
        key = {"source": source, "date": date}
        with self._failing(f"read the sample of {date}"):
            return self._part("samples", key).find_one(key, {"_id": 0, **({} if items else {"items": 0})})

    def save_sample(self, doc: Mapping[str, Any]) -> None:
        key = {"source": doc["source"], "date": doc["date"]}
        with self._failing(f"record the sample of {doc['date']}"):
            self._part("samples", key, write=True).replace_one(key, dict(doc), upsert=True)

    def replace_evaluations(self, model_id: str, date: str, rows: Sequence[Mapping[str, Any]]) -> int:
        docs = [{**row, "model_id": model_id, "date": date} for row in rows]
        seen = {(doc.get("label"), doc.get("image")) for doc in docs}
        if len(seen) != len(docs):
            raise DataError(f"the evaluations of {model_id} on {date} repeat an image")
        return self._replace_day_docs("evaluations", model_id, date, docs)

    def _replace_day_docs(self, kind: str, model_id: str, date: str, docs: Sequence[Doc]) -> int:
        """Delete then insert, so a re-run leaves exactly ``docs`` for (model, date)."""
        key = {"model_id": model_id, "date": date}
        with self._failing(f"write {kind} of {model_id} on {date}"):
            coll = self._part(kind, key, write=True)
            coll.delete_many(key)
            if docs:
                coll.insert_many(list(docs))
        return len(docs)

    # --- class metrics and class health -----------------------------------------------------------

    def replace_day(self, kind: str, model_id: str, date: str, rows: Sequence[Mapping[str, Any]]) -> int:
        check_kind(kind)
        docs: list[Doc] = []
        for row in rows:
            for name, expected in (("model_id", model_id), ("date", date)):
                if row.get(name, expected) != expected:
                    raise DataError(
                        f"a {kind} row for label {row.get('label')!r} has {name} {row[name]!r}, not {expected!r}"
                    )
            docs.append({**row, "model_id": model_id, "date": date})
        labels = [doc.get("label") for doc in docs]
        if len(set(labels)) != len(labels):
            raise DataError(f"{kind} rows for {model_id} on {date} repeat a label")
        return self._replace_day_docs(kind, model_id, date, docs)

    def latest_rows_before(self, kind: str, model_id: str, date: str, labels: Iterable[str]) -> dict[str, Doc]:
        missing = set(labels)
        found: dict[str, Doc] = {}
        for day in reversed(self.dates(kind, model_id, before=date)):
            if not missing:
                break
            for doc in self.rows(kind, model_id, start=day, end=day, labels=sorted(missing)):
                found[str(doc["label"])] = doc
                missing.discard(str(doc["label"]))
        return found

    # --- alerts -----------------------------------------------------------------------------------

    def add_alert(self, alert: Mapping[str, Any]) -> bool:
        key = {name: alert[name] for name in ("model_id", "label", "date", "kind")}
        with self._failing(f"write an alert of {alert['model_id']} on {alert['date']}"):
            result = self._part("alerts", key, write=True).update_one(key, {"$setOnInsert": dict(alert)}, upsert=True)
        return result.upserted_id is not None

    def withdraw_alerts(self, model_id: str, date: str, keep: set[tuple[str, str]]) -> int:
        key = {"model_id": model_id}
        removed = 0
        with self._failing(f"withdraw alerts of {model_id} on {date}"):
            coll = self._part("alerts", key)
            for doc in list(
                coll.find({"model_id": model_id, "date": date, "delivered": False}, {"label": 1, "kind": 1})
            ):
                if (str(doc["label"]), str(doc["kind"])) not in keep:
                    self._part("alerts", key, write=True).delete_one({"_id": doc["_id"]})
                    removed += 1
        return removed

    def pending_alerts(self) -> list[Doc]:
        with self._failing("read the pending alerts"):
            docs = [doc for coll in self._parts("alerts") for doc in coll.find({"delivered": False})]
        return sorted(docs, key=lambda doc: (str(doc.get("date")), sortable_time(doc.get("created_at"))))

    def update_alert(self, alert: Mapping[str, Any], update: Mapping[str, Any]) -> None:
        with self._failing("record the delivery of an alert"):
            self._part("alerts", {"model_id": alert["model_id"]}, write=True).update_one(
                {"_id": alert["_id"]}, dict(update)
            )
        self.commit()

    def alerts(
        self,
        model_id: str | None = None,
        *,
        pending_only: bool = False,
        start: str | None = None,
        end: str | None = None,
        labels: Sequence[str] | None = None,
    ) -> list[Doc]:
        query: Doc = {}
        if model_id:
            query["model_id"] = model_id
        if pending_only:
            query["delivered"] = False
        if start or end:
            query["date"] = date_range(start, end)
        if labels is not None:
            query["label"] = {"$in": sorted(set(labels))}
        with self._failing("read the alerts"):
            parts = self._parts("alerts", (lambda key: key[0] == model_id) if model_id else None)
            docs = [doc for coll in parts for doc in coll.find(query, {"_id": 0})]
        return sorted(docs, key=lambda doc: (str(doc.get("date")), sortable_time(doc.get("created_at"))), reverse=True)
