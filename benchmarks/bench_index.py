"""Indexing speed: images indexed per second vs the bare listing rate of the same source (target ratio >= 0.8); its memory.

For a local folder and for a bucket on the gcp-storage-emulator (served in this process on
127.0.0.1, started as tests/fixtures/gcs.py does), one run measures:

- the bare listing rate: ``for blob in source.list()`` (best of three);
- ``index_source`` into a store whose lookups by (source, path) are hash lookups, as MongoDB's
  unique ``source_path`` index serves them (an in-process stand-in: no real MongoDB is
  available here; it keeps its counts per source as documents are written, as MongoDB counts
  from an index). This isolates the indexer's own work (hashing, classifying, diffing,
  building bulk writes) from any server: the ratio the target is about. Best of three, each
  in a new store, as the listing is;
- the second, unchanged run (lookups only, no writes) on the hash-indexed store, opened again;
- ``index_source`` into the hash-indexed store behind a simulated network latency (4 ms per
  round trip + 20 us per document, spent sleeping as a socket wait would): the indexer overlaps
  listing with the store's round trips, so the run should take about max(listing, store), not
  their sum;
- ``index_source`` into the embedded store, as users get it without ``MONITOR_MONGO_URI``
  (``open_store`` on a fresh data dir: mongomock partitions per (source, label), written to BSON
  files by the commit that follows, whose time is reported beside it), and the unchanged run after
  opening it again (as the next day's command does: the partitions are read back from disk). Also
  on a smaller source (``--embedded-files``), to show how its cost grows with the source.

Then, with no I/O at all, a synthetic listing (``SyntheticSource``: a generator of ``BlobInfo``,
1,000,000 blobs; quick 100,000): its bare listing rate and the indexer into the hash-indexed store
(first run and unchanged re-run). Its listing costs only the making of each ``BlobInfo``, so this
ratio is the strictest.

Memory: the tracemalloc peak of ``index_source`` over synthetic listings of two sizes (100,000 and
1,000,000; quick 10,000 and 100,000), into stores that keep nothing in this process (what a store
holds is not the indexer's): a first run (every blob new, the writes dropped), and an unchanged
re-run that finds ``--vanished`` stored blobs gone (the lookups answered from the listing's own
rule; ``Store.present_images`` streams the stored paths as a cursor does). Beside them, what holding
the listing would take (tracemalloc of ``list(source.list())``, per blob).

Every ratio is given by wall time and by the process's CPU time (all threads; the emulator's server
thread included on GCS): a busy machine stretches wall times, much less CPU times. The objects made
before measuring (the emulator's buckets above all) are frozen out of the garbage collector's reach
(``gc.freeze``), so that a full collection costs what it would without an emulator in the process. Each index run
also reports the share of its wall time spent inside the store's operations
(``Store.count_images``, ``stored_images``, ``write_images``, ``present_images``, ``mark_missing``:
the store layer's own work included, whatever the engine).

    .venv/bin/python benchmarks/bench_index.py --quick     # about a minute on an idle 2-core machine
    .venv/bin/python benchmarks/bench_index.py             # several minutes, about 2 GB of memory (a store of 1M documents)
    .venv/bin/python benchmarks/bench_index.py --quick --json   # the figures as one JSON object (the table on stderr)
    .venv/bin/python benchmarks/bench_index.py --only synthetic memory --synthetic 200000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymongo import UpdateOne  # noqa: E402
from pymongo.errors import BulkWriteError  # noqa: E402

from monitor.core.errors import SourceError  # noqa: E402
from monitor.core.settings import Settings  # noqa: E402
from monitor.core.sources import BlobInfo, GCSSource, ImageSource, LocalSource  # noqa: E402
from monitor.domain.indexing import IndexReport, classify, index_source, sample_key  # noqa: E402
from monitor.store import MongoStore, Store, open_store  # noqa: E402

WHEN = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()
#: The parts of a run (``--only``).
PARTS = ("local", "gcs", "gcs-latency", "synthetic", "memory")


# --- stores -------------------------------------------------------------------------------------


class _Result:
    def __init__(self, modified: int) -> None:
        self.modified_count = modified


def _projector(projection: dict[str, int] | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The projection as a function of a document, worked out once per query as a server does."""
    wanted = [name for name, on in (projection or {}).items() if on and name != "_id"]
    if not wanted:
        return dict
    return lambda doc: {k: doc[k] for k in wanted if k in doc}


class HashIndexedImages:
    """The ``images`` calls ``Store`` makes on a MongoDB backend for ``index_source``, served from a dict keyed by (source, path).

    A stand-in for MongoDB's unique (source, path) index: each lookup, insert or update costs O(1), so
    a batch costs O(batch) whatever the collection's size. Counts per source (and of its ``missing``
    documents) are kept as documents are written, as MongoDB answers them from an index (a COUNT_SCAN
    in C++), not by a Python pass over every document. Only the call shapes the store issues are
    understood (``count_documents`` by source and status; ``find`` by source with ``path $in`` or
    ``status $ne``; ``insert_many(ordered=False)``; ``bulk_write`` of ``UpdateOne`` by (source, path);
    ``update_many`` with ``path $in``); anything else raises, so the benchmark cannot silently
    measure something else.
    """

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.per_source: Counter[str] = Counter()
        self.missing: Counter[str] = Counter()  # documents of status "missing", per source

    @staticmethod
    def _status_ok(doc: dict[str, Any], cond: Any) -> bool:
        if cond is None:
            return True
        if isinstance(cond, dict) and set(cond) == {"$ne"}:
            return doc.get("status") != cond["$ne"]
        raise NotImplementedError(f"status condition {cond!r}")

    def _set(self, doc: dict[str, Any], fields: dict[str, Any]) -> None:
        was = doc.get("status") == "missing"
        doc.update(fields)
        now = doc.get("status") == "missing"
        if was != now:
            self.missing[doc["source"]] += 1 if now else -1

    def count_documents(self, flt: dict[str, Any]) -> int:
        if set(flt) - {"source", "status"}:
            raise NotImplementedError(f"count filter {flt!r}")
        source, cond = flt["source"], flt.get("status")
        if cond is None:
            return self.per_source[source]
        if cond == {"$ne": "missing"}:
            return self.per_source[source] - self.missing[source]
        return sum(1 for (src, _), doc in self.docs.items() if src == source and self._status_ok(doc, cond))

    def _found(self, flt: dict[str, Any]) -> list[dict[str, Any]]:
        if set(flt) - {"source", "path", "status"}:
            raise NotImplementedError(f"find filter {flt!r}")
        source = flt["source"]
        if isinstance(flt.get("path"), dict) and set(flt["path"]) == {"$in"}:
            get = self.docs.get
            docs = (get((source, path)) for path in flt["path"]["$in"])
            if flt.get("status") is None:
                return [d for d in docs if d is not None]
            return [d for d in docs if d is not None and self._status_ok(d, flt["status"])]
        if "path" not in flt:
            return [d for (src, _), d in self.docs.items() if src == source and self._status_ok(d, flt.get("status"))]
        raise NotImplementedError(f"find filter {flt!r}")

    def find(self, flt: dict[str, Any], projection: dict[str, int] | None = None, **cursor: Any) -> _Cursor:
        return _Cursor(map(_projector(projection), self._found(flt)))

    def insert_many(self, docs: list[dict[str, Any]], ordered: bool = True) -> None:
        errors = []
        for index, doc in enumerate(docs):
            key = (doc["source"], doc["path"])
            if key in self.docs:  # the unique source_path index
                errors.append({"index": index, "code": 11000, "errmsg": f"E11000 duplicate key {key}"})
                if ordered:
                    break
                continue
            self.docs[key] = stored = dict(doc)
            self.per_source[key[0]] += 1
            if stored.get("status") == "missing":
                self.missing[key[0]] += 1
        if errors:
            raise BulkWriteError({"writeErrors": errors, "nInserted": len(docs) - len(errors)})

    def bulk_write(self, ops: list[UpdateOne], ordered: bool = True) -> None:
        for op in ops:
            flt, update = op._filter, op._doc
            if not isinstance(op, UpdateOne) or set(flt) != {"source", "path"} or not isinstance(update, dict):
                raise NotImplementedError(f"bulk operation {op!r}")
            key = (flt["source"], flt["path"])
            doc = self.docs.get(key)
            if doc is None:
                if not op._upsert:
                    continue
                doc = {"source": key[0], "path": key[1]}
                self.docs[key] = doc
                self.per_source[key[0]] += 1
                self._set(doc, update.get("$setOnInsert", {}))
            self._set(doc, update.get("$set", {}))
            for name in update.get("$unset", {}):
                doc.pop(name, None)

    def update_many(self, flt: dict[str, Any], update: dict[str, Any]) -> _Result:
        if set(update) != {"$set"} or not (isinstance(flt.get("path"), dict) and set(flt["path"]) == {"$in"}):
            raise NotImplementedError(f"update_many {flt!r} {update!r}")
        modified = 0
        for doc in self._found(flt):
            self._set(doc, update["$set"])
            modified += 1
        return _Result(modified)


class _Cursor:
    def __init__(self, docs: Iterable[dict[str, Any]]) -> None:
        self._docs = iter(docs)

    def __iter__(self) -> _Cursor:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._docs)


class _Client:
    def close(self) -> None:
        pass


class _DB:
    """The database ``MongoStore(db=...)`` is given: only ``images`` exists (``index_source`` touches nothing else)."""

    def __init__(self, images: Any) -> None:
        self.images = images
        self.client = _Client()

    def __getitem__(self, name: str) -> Any:
        if name != "images":
            raise KeyError(name)
        return self.images


class SlowHashIndexedImages(HashIndexedImages):
    """The hash-indexed store behind a network: each call waits ``round_trip_s`` plus ``per_doc_s`` per document.

    Sleeping releases the GIL as waiting on a socket does, so this shows whether listing goes on
    while the store answers (a simulation of a MongoDB server's latency, not a measurement of one).
    Documents are those sent (inserted, updated, asked for by path) or returned, whichever is more.
    """

    round_trip_s = 0.004
    per_doc_s = 20e-6

    def _wait(self, docs: int) -> None:
        time.sleep(self.round_trip_s + self.per_doc_s * docs)

    def count_documents(self, flt: dict[str, Any]) -> int:
        self._wait(0)
        return super().count_documents(flt)

    def find(self, flt: dict[str, Any], projection: dict[str, int] | None = None, **cursor: Any) -> _Cursor:
        found = self._found(flt)
        asked = len(flt["path"]["$in"]) if isinstance(flt.get("path"), dict) else 0
        self._wait(max(asked, len(found)))
        return _Cursor(map(_projector(projection), found))

    def insert_many(self, docs: list[dict[str, Any]], ordered: bool = True) -> None:
        self._wait(len(docs))
        super().insert_many(docs, ordered)

    def bulk_write(self, ops: list[UpdateOne], ordered: bool = True) -> None:
        self._wait(len(ops))
        super().bulk_write(ops, ordered)

    def update_many(self, flt: dict[str, Any], update: dict[str, Any]) -> _Result:
        self._wait(len(flt["path"]["$in"]))
        return super().update_many(flt, update)


#: The store operations ``index_source`` calls (``Store``'s named operations, whatever the engine).
INDEX_OPERATIONS = ("count_images", "stored_images", "write_images", "present_images", "mark_missing")


class StoreTimer:
    """Adds up the seconds spent inside the store's operations ``index_source`` calls (from any thread).

    Wraps the operations on the one ``Store`` instance; ``present_images`` is a generator, so it is
    read to the end inside the timed call (``index_source`` reads it whole before writing anyway).
    """

    def __init__(self, store: Store) -> None:
        self.seconds = 0.0
        for name in INDEX_OPERATIONS:
            setattr(store, name, self._timed(getattr(store, name), name == "present_images"))

    def _timed(self, operation: Callable[..., Any], generator: bool) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = operation(*args, **kwargs)
                return iter(list(result)) if generator else result
            finally:
                self.seconds += time.perf_counter() - start

        return timed


class Stores:
    """Makes the stores a run indexes into, and opens them again (a later ``monitor`` command); cleans up at the end."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp

    @staticmethod
    def hash_store() -> Callable[[], Store]:
        db = _DB(HashIndexedImages())
        return lambda: MongoStore(db=db, description="hash-indexed in-process images")  # type: ignore[arg-type]

    @staticmethod
    def slow_store() -> Callable[[], Store]:
        db = _DB(SlowHashIndexedImages())
        return lambda: MongoStore(db=db, description="hash-indexed images behind simulated latency")  # type: ignore[arg-type]

    def embedded_store(self) -> Callable[[], Store]:
        """The embedded store users get without MONITOR_MONGO_URI: a fresh data dir, opened writable."""
        settings = Settings(data_dir=self._tmp / f"data-{uuid.uuid4().hex[:8]}", mongo_uri="")
        return lambda: open_store(settings)


# --- sources ---------------------------------------------------------------------------------------


def names(count: int, classes: int) -> list[str]:
    return [f"class_{i % classes:02d}/img_{i:07d}.jpg" for i in range(count)]


def make_folder(root: Path, count: int, classes: int) -> LocalSource:
    for name in names(count, classes):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xd8 not decoded by the indexer")
        os.utime(path, (WHEN, WHEN))
    return LocalSource(root)


def start_emulator() -> tuple[Any, str]:
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=True)
    server._storage._write_config_to_file = lambda: None  # the stock server rewrites its metadata file per upload
    server._api.daemon = True
    server.start()
    url = f"http://127.0.0.1:{server._api._httpd.server_address[1]}"
    os.environ["STORAGE_EMULATOR_HOST"] = url
    return server, url


def make_bucket(count: int, classes: int) -> GCSSource:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="bench", credentials=AnonymousCredentials())
    bucket = client.create_bucket(f"bench-{uuid.uuid4().hex[:12]}")
    for name in names(count, classes):
        bucket.blob(f"val/{name}").upload_from_string(b"\xff\xd8 not decoded by the indexer")
    return GCSSource(bucket.name, "val", client=client)


class SyntheticSource:
    """A listing of ``count`` blobs made up as it is read: a generator of ``BlobInfo``, no files, no bucket.

    ``class_KK/img_NNNNNNN.jpg`` in ``classes`` contiguous classes (a real listing is sorted, so a class's
    blobs come together), each with its own size, checksum string and creation time (whole milliseconds,
    as GCS gives them): the per-blob work of a source's listing without its I/O. At most 10 million blobs.
    """

    epoch = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)

    def __init__(self, count: int, classes: int, uri: str = "synthetic://bench/val") -> None:
        if not 0 < count <= 10_000_000:
            raise ValueError(f"count must be in 1..10,000,000, got {count}")
        self.count, self.classes, self.uri = count, classes, uri

    def __repr__(self) -> str:
        return f"SyntheticSource({self.count}, {self.classes})"

    def check(self) -> None:
        pass

    def path(self, i: int) -> str:
        return f"class_{i * self.classes // self.count:02d}/img_{i:07d}.jpg"

    def blob(self, i: int) -> BlobInfo:
        size = 4096 + i % 65_536
        when = self.epoch + dt.timedelta(milliseconds=i)
        return BlobInfo(path=self.path(i), size=size, checksum=f"{size}-{i}", created=when, updated=when)

    def list(self) -> Iterator[BlobInfo]:
        epoch, ms, classes, count = self.epoch, dt.timedelta(milliseconds=1), self.classes, self.count
        for i in range(count):
            size = 4096 + i % 65_536
            when = epoch + ms * i
            yield BlobInfo(
                path=f"class_{i * classes // count:02d}/img_{i:07d}.jpg",
                size=size,
                checksum=f"{size}-{i}",
                created=when,
                updated=when,
            )

    def read(self, path: str) -> bytes:
        raise SourceError(f"{self.uri} is synthetic: it has no bytes")

    def stored(self, path: str) -> dict[str, Any]:
        """The document an earlier index run left for ``path`` (a path of this listing): what the indexer writes."""
        blob = self.blob(int(path[-11:-4]))
        label, status, reason = classify(blob.path, blob.size)
        return {
            "path": path,
            "label": label,
            "size": blob.size,
            "checksum": blob.checksum,
            "created": blob.created,
            "updated": blob.updated,
            "status": status,
            "reason": reason,
            "sample_key": sample_key(path),
        }


class DiscardingImages:
    """An ``images`` collection that keeps nothing: the first run over a source, with the writes dropped (memory runs)."""

    def __init__(self) -> None:
        self.inserted = 0

    def count_documents(self, flt: dict[str, Any]) -> int:
        return 0

    def insert_many(self, docs: list[dict[str, Any]], ordered: bool = True) -> None:
        self.inserted += len(docs)


class MirrorImages:
    """The ``images`` an earlier run over a :class:`SyntheticSource` left, made up when asked (nothing is held).

    Every listed blob is stored unchanged, and ``vanished`` more stored blobs are no longer listed: an
    unchanged re-run that finds ``vanished`` blobs gone (memory runs).
    """

    def __init__(self, source: SyntheticSource, vanished: int) -> None:
        self.source, self.vanished, self.marked = source, vanished, 0

    def count_documents(self, flt: dict[str, Any]) -> int:
        return self.source.count + self.vanished

    def find(
        self, flt: dict[str, Any], projection: dict[str, int] | None = None, **cursor: Any
    ) -> Iterator[dict[str, Any]]:
        project = _projector(projection)
        if isinstance(flt.get("path"), dict):
            return (project(self.source.stored(path)) for path in flt["path"]["$in"])
        if flt.get("status") == {"$ne": "missing"}:
            listed = (self.source.path(i) for i in range(self.source.count))
            gone = (f"class_00/gone_{i:07d}.jpg" for i in range(self.vanished))
            return ({"path": path, "label": path.partition("/")[0]} for stream in (listed, gone) for path in stream)
        raise NotImplementedError(f"find filter {flt!r}")

    def update_many(self, flt: dict[str, Any], update: dict[str, Any]) -> _Result:
        self.marked += len(flt["path"]["$in"])
        return _Result(len(flt["path"]["$in"]))


# --- measuring ----------------------------------------------------------------------------------------


def list_rate(source: ImageSource, repeats: int = 3) -> tuple[float, int, float]:
    """Blobs listed per second of wall time and per second of this process's CPU time (each the best of ``repeats``)."""
    best, best_cpu, listed = float("inf"), float("inf"), 0
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        listed = sum(1 for _ in source.list())
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return listed / best, listed, listed / max(best_cpu, 1e-9)


def _timed_index(source: ImageSource, store: Store) -> tuple[IndexReport, float, float, float]:
    """``index_source`` with its wall seconds, CPU seconds (the whole process: every thread) and seconds in store operations."""
    timer = StoreTimer(store)
    start, cpu = time.perf_counter(), time.process_time()
    report = index_source(source, store)
    return report, time.perf_counter() - start, time.process_time() - cpu, timer.seconds


def index_run(
    source: ImageSource, make: Callable[[], Callable[[], Store]], *, again: bool = False, repeats: int = 1
) -> dict[str, Any]:
    """Index ``source`` into a new store (timed, with the share inside store operations), commit it, close it;
    with ``again``, open the store again (as the next day's command does) and index the unchanged source.

    ``make`` gives a new store's opener. With ``repeats``, this is done that many times, each time in a new
    store, and the best wall rate and the best CPU rate of each run are kept (as the bare listing's are)."""
    firsts: list[dict[str, Any]] = []
    agains: list[dict[str, Any]] = []
    for _ in range(repeats):
        opener = make()
        store = opener()
        report, seconds, cpu_s, store_s = _timed_index(source, store)
        start = time.perf_counter()
        store.commit()  # the embedded store writes its partitions (the pipeline commits after the stage); MongoDB: nothing
        commit_s = time.perf_counter() - start
        store.close()
        firsts.append(
            {
                "listed": report.listed,
                "rate": report.listed / seconds,
                "seconds": seconds,
                "store_share": store_s / seconds,
                "store_seconds": store_s,
                "commit_seconds": commit_s,
                "new": report.new,
                "cpu_rate": report.listed / cpu_s,
            }
        )
        if again:
            store = opener()
            second, seconds2, cpu2_s, store2_s = _timed_index(source, store)
            store.close()
            assert second.wrote_nothing and second.unchanged == report.listed, second
            agains.append(
                {
                    "again_rate": second.listed / seconds2,
                    "again_seconds": seconds2,
                    "again_store_share": store2_s / seconds2,
                    "again_cpu_rate": second.listed / cpu2_s,
                }
            )
        del store, opener
    result = max(firsts, key=lambda run: run["rate"]) | {"cpu_rate": max(run["cpu_rate"] for run in firsts)}
    if agains:
        result |= max(agains, key=lambda run: run["again_rate"]) | {
            "again_cpu_rate": max(run["again_cpu_rate"] for run in agains)
        }
    return result


@contextlib.contextmanager
def setup_frozen() -> Iterator[None]:
    """The objects made so far (the emulator's in-memory buckets above all) moved out of the garbage collector's
    reach while measuring: its full collections, whichever run triggers them, then cost what they would in a
    process without an emulator in it, instead of falling on a run at random."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _ratio(run: dict[str, Any], listing: dict[str, Any], again: bool = False) -> str:
    wall, cpu = ("again_rate", "again_cpu_rate") if again else ("rate", "cpu_rate")
    return f"ratio {run[wall] / listing['rate']:.2f} (CPU {run[cpu] / listing['cpu_rate']:.2f})"


def _listing(source: ImageSource) -> dict[str, Any]:
    rate, blobs, cpu_rate = list_rate(source)
    return {"blobs": blobs, "rate": rate, "cpu_rate": cpu_rate}


def _hash_rows(n: int, listing: dict[str, Any], hashed: dict[str, Any], say: Callable[[str], None]) -> None:
    say(f"  {n:>9,} blobs  bare listing                 {listing['rate']:>10,.0f} blobs/s")
    say(
        f"  {n:>9,} blobs  index, hash-indexed store   {hashed['rate']:>10,.0f} img/s   {_ratio(hashed, listing)}"
        f"   (store calls {hashed['store_share']:.0%} of the time)"
    )
    say(
        f"  {n:>9,} blobs  re-index, nothing changed   {hashed['again_rate']:>10,.0f} img/s   {_ratio(hashed, listing, again=True)}"
        f"   (store calls {hashed['again_store_share']:.0%})"
    )


def _hash_figures(listing: dict[str, Any], hashed: dict[str, Any]) -> dict[str, Any]:
    return {
        **hashed,
        "ratio": hashed["rate"] / listing["rate"],
        "again_ratio": hashed["again_rate"] / listing["rate"],
        "cpu_ratio": hashed["cpu_rate"] / listing["cpu_rate"],
        "again_cpu_ratio": hashed["again_cpu_rate"] / listing["cpu_rate"],
    }


def report_source(
    kind: str, big: ImageSource, small: ImageSource, stores: Stores, say: Callable[[str], None]
) -> dict[str, Any]:
    listing = _listing(big)
    rate_big, n_big = listing["rate"], listing["blobs"]
    hashed = index_run(big, stores.hash_store, again=True, repeats=3)
    slow = index_run(big, stores.slow_store)
    embedded_big = index_run(big, stores.embedded_store, again=True)
    embedded: dict[str, Any] | None = None
    if small is not big:
        rate_small, n_small, _ = list_rate(small)
        embedded = index_run(small, stores.embedded_store, again=True)
    say(f"\n{kind}")
    _hash_rows(n_big, listing, hashed, say)
    list_s, store_s = n_big / rate_big, slow["store_seconds"]
    say(
        f"  {n_big:>9,} blobs  index, store with latency   {slow['rate']:>10,.0f} img/s   ratio {slow['rate'] / rate_big:.2f}"
        f"   (store busy {store_s:.2f} s + listing {list_s:.2f} s, run took {slow['seconds']:.2f} s; sequential would be their sum plus the indexer's CPU)"
    )
    rows = [(n_big, rate_big, embedded_big)] + ([(n_small, rate_small, embedded)] if embedded is not None else [])
    for n, rate, run in rows:
        if run is embedded:
            say(f"  {n:>9,} blobs  bare listing                 {rate:>10,.0f} blobs/s")
        say(
            f"  {n:>9,} blobs  index, embedded store       {run['rate']:>10,.0f} img/s   ratio {run['rate'] / rate:.2f}"
            f"   (store calls {run['store_share']:.0%}; then commit to disk {run['commit_seconds']:.2f} s)"
        )
        say(
            f"  {n:>9,} blobs  re-index embedded, reopened {run['again_rate']:>10,.0f} img/s   ratio {run['again_rate'] / rate:.2f}"
            f"   (store calls {run['again_store_share']:.0%}; partitions read back from disk)"
        )
    return {
        "source": kind,
        "listing": listing,
        "hash_indexed": _hash_figures(listing, hashed),
        "latency": {**slow, "ratio": slow["rate"] / rate_big, "listing_seconds": list_s},
        "embedded": {
            **embedded_big,
            "ratio": embedded_big["rate"] / rate_big,
            "again_ratio": embedded_big["again_rate"] / rate_big,
        },
        "embedded_small": None
        if embedded is None
        else {
            **embedded,
            "listing_rate": rate_small,
            "ratio": embedded["rate"] / rate_small,
            "again_ratio": embedded["again_rate"] / rate_small,
        },
    }


def report_synthetic(source: SyntheticSource, say: Callable[[str], None]) -> dict[str, Any]:
    """The bare listing of a synthetic source and the indexer on it, into the hash-indexed store (first run and unchanged re-run)."""
    listing = _listing(source)
    hashed = index_run(source, Stores.hash_store, again=True, repeats=3)
    say(f"\nsynthetic listing ({source.classes} classes: a generator of BlobInfo, no files, no I/O)")
    _hash_rows(source.count, listing, hashed, say)
    return {"source": "synthetic", "listing": listing, "hash_indexed": _hash_figures(listing, hashed)}


def peak_memory(source: ImageSource, store: Store) -> tuple[int, IndexReport]:
    """The tracemalloc peak of one ``index_source`` run: the most bytes its allocations held at once (every thread)."""
    tracemalloc.start()
    try:
        report = index_source(source, store)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, report


def listing_bytes_per_blob(classes: int, count: int = 20_000) -> float:
    """What holding a listing takes, per blob: ``list(source.list())`` of a synthetic source, traced."""
    tracemalloc.start()
    try:
        held = list(SyntheticSource(count, classes).list())
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del held
    return size / count


def report_memory(sizes: list[int], classes: int, vanished: int, say: Callable[[str], None]) -> dict[str, Any]:
    """tracemalloc peaks of index runs over synthetic listings of each size, the store holding nothing in this process."""
    per_blob = listing_bytes_per_blob(classes)
    say(
        f"\nmemory: tracemalloc peak of index_source over a synthetic listing (the stores keep nothing in this process;"
        f" holding the listing would take {per_blob:,.0f} bytes per blob)"
    )
    runs = []
    for n in sizes:
        source = SyntheticSource(n, classes)
        first, report = peak_memory(source, MongoStore(db=_DB(DiscardingImages()), description="discarding"))  # type: ignore[arg-type]
        assert report.new == n, report
        mirror = MirrorImages(source, vanished)
        again, report = peak_memory(source, MongoStore(db=_DB(mirror), description="mirror"))  # type: ignore[arg-type]
        assert (report.unchanged, report.missing) == (n, vanished), report
        runs.append(
            {
                "blobs": n,
                "first_run_peak": first,
                "rerun_peak": again,
                "listing_held": per_blob * n,
                "listed_keys_array": 8 * n,
            }
        )
        say(
            f"  {n:>9,} blobs  first run {first / 1e6:6.1f} MB;  unchanged re-run, {vanished:,} vanished {again / 1e6:6.1f} MB;"
            f" holding the listing {per_blob * n / 1e6:,.0f} MB"
        )
    if len(runs) > 1:
        small, big = runs[0], runs[-1]
        say(
            f"  {big['blobs'] / small['blobs']:.0f}x the blobs: first-run peak x{big['first_run_peak'] / small['first_run_peak']:.2f},"
            f" re-run peak x{big['rerun_peak'] / small['rerun_peak']:.2f}"
        )
    return {"listing_bytes_per_blob": per_blob, "vanished": vanished, "runs": runs}


def report_gcs_latency(
    count: int, classes: int, latency_ms: float, page_size: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """The GCS path with GCS's round trip: the real client against tests/fixtures/gcs_latency.py (in its own
    process), ``latency_ms`` before each answer, ``page_size`` objects a page. The bare listing pays one round
    trip per page; the indexer's work on a page overlaps the request for the next (GCSSource.list)."""
    from bench_fetch import BUCKET, PREFIX, ServerProcess

    objects = {f"{PREFIX}/{name}": b"\xff\xd8 not decoded by the indexer" for name in names(count, classes)}
    server = ServerProcess(latency_ms / 1000, objects)
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(
            project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": server.url}
        )
        source = GCSSource(BUCKET, PREFIX, client=client, page_size=page_size)
        rate, listed, _ = list_rate(source, repeats=2)
        hashed = index_run(source, Stores.hash_store, again=True, repeats=2)
    finally:
        server.close()
    pages = -(-listed // page_size)
    ratio, again_ratio = hashed["rate"] / rate, hashed["again_rate"] / rate
    say(
        f"\nGCS path at {latency_ms:.0f} ms a request (tests/fixtures/gcs_latency.py in its own process, {page_size:,} objects a page, {pages} pages)"
    )
    say(
        f"  {listed:>9,} blobs  bare listing                  {rate:>9,.0f} blobs/s   (one round trip per page: at most {page_size / (latency_ms / 1000):,.0f}/s)"
    )
    say(f"  {listed:>9,} blobs  index, hash-indexed store     {hashed['rate']:>9,.0f} img/s   ratio {ratio:.2f}")
    say(
        f"  {listed:>9,} blobs  re-index, nothing changed     {hashed['again_rate']:>9,.0f} img/s   ratio {again_ratio:.2f}"
    )
    return {
        "source": f"GCS path, {latency_ms:.0f} ms a request",
        "latency_ms": latency_ms,
        "page_size": page_size,
        "listing": {"blobs": listed, "rate": rate},
        "hash_indexed": hashed | {"ratio": ratio, "again_ratio": again_ratio},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, finishes in about a minute")
    parser.add_argument("--files", type=int, help="blobs in the local folder (default 50,000; quick 5,000)")
    parser.add_argument("--gcs-files", type=int, help="objects in the emulator bucket (default 6,000; quick 1,000)")
    parser.add_argument(
        "--latency-files", type=int, help="objects behind the latency server (default 50,000; quick 5,000)"
    )
    parser.add_argument(
        "--embedded-files", type=int, help="blobs of the smaller embedded-store runs (default 2,000; quick 1,000)"
    )
    parser.add_argument(
        "--synthetic", type=int, help="blobs of the synthetic listing (default 1,000,000; quick 100,000)"
    )
    parser.add_argument(
        "--memory",
        type=int,
        nargs="+",
        help="sizes of the memory runs (default 100,000 1,000,000; quick 10,000 100,000)",
    )
    parser.add_argument(
        "--vanished", type=int, default=1000, help="stored blobs no longer listed, in the memory re-runs"
    )
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    parser.add_argument("--classes", type=int, default=15)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object of the figures (the table goes to stderr)"
    )
    args = parser.parse_args(argv)
    files = args.files or (5_000 if args.quick else 50_000)
    gcs_files = args.gcs_files or (1_000 if args.quick else 6_000)
    embedded_files = args.embedded_files or (1_000 if args.quick else 2_000)
    synthetic = args.synthetic or (100_000 if args.quick else 1_000_000)
    memory = args.memory or ([10_000, 100_000] if args.quick else [100_000, 1_000_000])
    out = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say(
        f"bench_index  {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC  {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    say(
        "rates are per blob listed; ratio = index rate / bare listing rate of the same source (target >= 0.8), by wall time"
        " and (CPU) by the process's CPU time, which a busy machine disturbs less"
    )
    result: dict[str, Any] = {"classes": args.classes, "sources": []}
    with tempfile.TemporaryDirectory(prefix="bench_index_") as tmp:
        stores = Stores(Path(tmp))
        if "local" in args.only:
            started = time.perf_counter()
            big = make_folder(Path(tmp) / "big", files, args.classes)
            small = make_folder(Path(tmp) / "small", embedded_files, args.classes)
            say(f"(made the folders in {time.perf_counter() - started:.1f} s)")
            with setup_frozen():
                result["sources"].append(
                    report_source(f"local folder ({args.classes} classes)", big, small, stores, say)
                )

        if "gcs" in args.only:
            server, url = start_emulator()
            try:
                started = time.perf_counter()
                big_bucket = make_bucket(gcs_files, args.classes)
                small_bucket = make_bucket(embedded_files, args.classes) if embedded_files != gcs_files else big_bucket
                say(f"\n(uploaded to the emulator at {url} in {time.perf_counter() - started:.1f} s)")
                with setup_frozen():
                    result["sources"].append(
                        report_source(
                            "GCS bucket on gcp-storage-emulator (in process, one page per listing)",
                            big_bucket,
                            small_bucket,
                            stores,
                            say,
                        )
                    )
            finally:
                server.stop()
    if "gcs-latency" in args.only:
        result["gcs_latency"] = [
            report_gcs_latency(
                args.latency_files or (5_000 if args.quick else 50_000), args.classes, latency, 1000, say
            )
            for latency in (30.0, 80.0)
        ]
    if "synthetic" in args.only:
        result["synthetic"] = report_synthetic(SyntheticSource(synthetic, args.classes), say)
    if "memory" in args.only:
        result["memory"] = report_memory(memory, args.classes, args.vanished, say)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    return result


if __name__ == "__main__":
    main()
