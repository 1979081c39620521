"""MongoDB access: one :class:`Store` over a real server (pymongo) or the embedded, on-disk mongomock store.

Collections (see docs/ARCHITECTURE.md for every field):

- ``images``        one document per blob, unique on (source, path)
- ``samples``       one document per (source, date): the drawn sample
- ``class_metrics`` one document per (model_id, date, label): counts from Spark SQL
- ``class_health``  one document per (model_id, date, label): verdict and evidence
- ``alerts``        one document per verdict transition, with its delivery state
- ``models``        one document per model id (name + weights checksum), first and last date seen
- ``runs``          one document per (source, date): what each stage did

The embedded store keeps every collection in one JSON file (MongoDB extended JSON, so
dates and ids round-trip) under ``<data_dir>/store``. A writer holds a file lock from
open to close, and the file is replaced atomically, so a crash never leaves half a file
and two processes never interleave writes. mongomock scans linearly: it suits the demo,
tests and small buckets (a few thousand images); point ``MONITOR_MONGO_URI`` at a real
MongoDB for more.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import mongomock
import pymongo
from bson import json_util
from bson.errors import BSONError
from filelock import FileLock, Timeout
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import PyMongoError

from monitor.errors import StoreError, redact
from monitor.files import atomic_write, remove_leftovers
from monitor.settings import Settings

log = logging.getLogger(__name__)

COLLECTIONS = ("images", "samples", "class_metrics", "class_health", "alerts", "models", "runs")

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
    "alerts": [
        IndexModel([("model_id", ASCENDING), ("label", ASCENDING), ("date", ASCENDING), ("kind", ASCENDING)], unique=True, name="transition"),
        IndexModel([("delivered", ASCENDING)], name="delivered"),
    ],
    "models": [IndexModel([("model_id", ASCENDING)], unique=True, name="model_id")],
    "runs": [IndexModel([("source", ASCENDING), ("date", ASCENDING)], unique=True, name="source_date")],
}


class Store:
    """The service's view of MongoDB. Use as a context manager; ``close()`` persists the embedded store."""

    def __init__(self, db: Database, *, description: str, embedded_file: Path | None = None, lock: FileLock | None = None) -> None:
        self.db = db
        self.description = description
        self._embedded_file = embedded_file
        self._lock = lock
        self._closed = False

    # Typed shortcuts so callers never spell collection names as strings.
    @property
    def images(self) -> Collection:
        return self.db["images"]

    @property
    def samples(self) -> Collection:
        return self.db["samples"]

    @property
    def class_metrics(self) -> Collection:
        return self.db["class_metrics"]

    @property
    def class_health(self) -> Collection:
        return self.db["class_health"]

    @property
    def alerts(self) -> Collection:
        return self.db["alerts"]

    @property
    def models(self) -> Collection:
        return self.db["models"]

    @property
    def runs(self) -> Collection:
        return self.db["runs"]

    @property
    def is_embedded(self) -> bool:
        return self._embedded_file is not None

    def ensure_indexes(self) -> None:
        """Create every index the service relies on (idempotent)."""
        try:
            for name, models in INDEXES.items():
                self.db[name].create_indexes(models)
        except PyMongoError as exc:
            raise StoreError(f"could not create indexes on {self.description}: {exc}") from exc

    def flush(self) -> None:
        """Persist the embedded store now (a no-op on a real MongoDB, which persists every write)."""
        if self._embedded_file is None or self._lock is None:
            return
        _dump(self.db, self._embedded_file)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            if self._lock is not None:
                self._lock.release()
            self.db.client.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        # Persist what was written even when a stage fails halfway: every stage is idempotent per
        # date, so a partial write is repaired by the re-run, and earlier stages' work is kept.
        self.close()


def open_store(settings: Settings, *, read_only: bool = False, lock_timeout_s: float = 600.0) -> Store:
    """Open the configured store: ``settings.mongo_uri`` if set, else the embedded store under the data dir.

    ``read_only`` (the dashboard) loads the embedded store without taking the writer's lock and never writes it.
    """
    if settings.mongo_uri:
        return _open_mongodb(settings)
    store = _open_embedded(settings.store_dir, settings.mongo_db, read_only=read_only, lock_timeout_s=lock_timeout_s)
    if not read_only:
        # The embedded store's lock makes this the only writer of the data dir: any temporary file
        # in it is a killed writer's leftover (with MongoDB, atomic_write removes them once stale).
        for folder in (settings.samples_dir, settings.predictions_dir):
            remove_leftovers(folder)
    return store


def _open_mongodb(settings: Settings) -> Store:
    shown = redact(settings.mongo_uri)
    try:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            settings.mongo_uri, serverSelectionTimeoutMS=settings.mongo_timeout_ms, tz_aware=True
        )
        client.admin.command("ping")
    except PyMongoError as exc:
        raise StoreError(f"MongoDB at {shown} is unreachable: {redact(str(exc)).splitlines()[0][:300]}") from exc
    store = Store(client[settings.mongo_db], description=f"MongoDB {shown}")
    store.ensure_indexes()
    return store


def _open_embedded(store_dir: Path, db_name: str, *, read_only: bool, lock_timeout_s: float) -> Store:
    file = store_dir / f"{db_name}.json"
    lock: FileLock | None = None
    if not read_only:
        try:
            store_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the embedded store folder {store_dir}: {exc}") from exc
        lock = FileLock(str(store_dir / f".{db_name}.lock"))
        try:
            lock.acquire(timeout=lock_timeout_s)
        except Timeout as exc:
            raise StoreError(f"the embedded store {file} is held by another process (waited {lock_timeout_s:.0f} s)") from exc
        except OSError as exc:
            raise StoreError(f"cannot lock the embedded store {file}: {exc.strerror or exc} (is {store_dir} writable?)") from exc
        try:  # fail now, not after a whole run, if the store cannot be written back
            tempfile.TemporaryFile(dir=store_dir).close()
        except OSError as exc:
            lock.release()
            raise StoreError(f"cannot write the embedded store {file}: {exc.strerror or exc} (is {store_dir} writable?)") from exc
        # Holding the writer's lock, any temporary file beside the store is a killed writer's leftover.
        remove_leftovers(store_dir)
    client: mongomock.MongoClient = mongomock.MongoClient(tz_aware=True)
    db = client[db_name]
    try:
        _load(db, file)
    except (OSError, ValueError, TypeError, KeyError, PyMongoError, BSONError) as exc:
        if lock is not None:
            lock.release()
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise StoreError(
            f"the embedded store {file} cannot be read ({reason}); move it aside to start a new store "
            f"(`monitor evaluate` re-indexes the source; the history in it is lost unless you restore a copy)"
        ) from exc
    store = Store(db, description=f"embedded store {file}", embedded_file=None if read_only else file, lock=lock)
    store.ensure_indexes()
    return store


def _load(db: Database, file: Path) -> None:
    if not file.exists():
        return
    data = json_util.loads(file.read_text(encoding="utf-8"), json_options=json_util.JSONOptions(tz_aware=True))
    if not isinstance(data, dict) or not all(
        isinstance(name, str) and isinstance(docs, list) and all(isinstance(doc, dict) for doc in docs) for name, docs in data.items()
    ):
        raise ValueError("not a store file: expected a JSON object of collections, each a list of documents")
    for name, docs in data.items():
        if docs:
            db[name].insert_many(docs)


def _dump(db: Database, file: Path) -> None:
    data = {name: list(db[name].find({})) for name in db.list_collection_names()}
    text = json_util.dumps(data, json_options=json_util.RELAXED_JSON_OPTIONS)
    atomic_write(file, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), what="embedded store", error=StoreError)
