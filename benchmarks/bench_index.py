"""Indexing speed: images indexed per second vs the bare listing rate of the same source (target ratio >= 0.8).

For a local folder and for a bucket on the gcp-storage-emulator (served in this process on
127.0.0.1, started as tests/fixtures/gcs.py does), one run measures:

- the bare listing rate: ``for blob in source.list()`` (best of three);
- ``index_source`` into a store whose lookups by (source, path) are hash lookups, as MongoDB's
  unique ``source_path`` index serves them (an in-process stand-in: no real MongoDB is
  available here). This isolates the indexer's own work (hashing, classifying, diffing,
  building bulk writes) from any server: the ratio the target is about;
- ``index_source`` into the embedded store, as users get it without ``MONITOR_MONGO_URI``
  (``open_store`` on a fresh data dir: mongomock partitions per (source, label), written to BSON
  files by the commit that follows, whose time is reported beside it), and the unchanged run after
  opening it again (as the next day's command does: the partitions are read back from disk). Also
  on a smaller source (``--embedded-files``), to show how its cost grows with the source;
- the second, unchanged run (lookups only, no writes) on the hash-indexed store, opened again;
- ``index_source`` into the hash-indexed store behind a simulated network latency (4 ms per
  round trip + 20 us per document, spent sleeping as a socket wait would): the indexer overlaps
  listing with the store's round trips, so the run should take about max(listing, store), not
  their sum.

Each index run also reports the share of its wall time spent inside the store's operations
(``Store.count_images``, ``stored_images``, ``write_images``, ``present_images``, ``mark_missing``:
the store layer's own work included, whatever the engine).

    .venv/bin/python benchmarks/bench_index.py --quick     # < 1 minute
    .venv/bin/python benchmarks/bench_index.py             # a few minutes
    .venv/bin/python benchmarks/bench_index.py --quick --json   # the figures as one JSON object (the table on stderr)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymongo import UpdateOne  # noqa: E402
from pymongo.errors import BulkWriteError  # noqa: E402

from monitor.indexing import IndexReport, index_source  # noqa: E402
from monitor.sources import GCSSource, ImageSource, LocalSource  # noqa: E402
from monitor.settings import Settings  # noqa: E402
from monitor.storage import Store, open_store  # noqa: E402

WHEN = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc).timestamp()


# --- stores -------------------------------------------------------------------------------------


class _Result:
    def __init__(self, modified: int) -> None:
        self.modified_count = modified


def _projected(doc: dict[str, Any], projection: dict[str, int] | None) -> dict[str, Any]:
    wanted = [name for name, on in (projection or {}).items() if on and name != "_id"]
    return {k: doc[k] for k in wanted if k in doc} if wanted else dict(doc)


class HashIndexedImages:
    """The ``images`` calls ``Store`` makes on a MongoDB backend for ``index_source``, served from a dict keyed by (source, path).

    A stand-in for MongoDB's unique (source, path) index: each lookup, insert or update costs O(1), so
    a batch costs O(batch) whatever the collection's size. Only the call shapes the store issues are
    understood (``count_documents`` by source and status; ``find`` by source with ``path $in`` or
    ``status $ne``; ``insert_many(ordered=False)``; ``bulk_write`` of ``UpdateOne`` by (source, path);
    ``update_many`` with ``path $in``); anything else raises, so the benchmark cannot silently
    measure something else.
    """

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}

    @staticmethod
    def _status_ok(doc: dict[str, Any], cond: Any) -> bool:
        if cond is None:
            return True
        if isinstance(cond, dict) and set(cond) == {"$ne"}:
            return doc.get("status") != cond["$ne"]
        raise NotImplementedError(f"status condition {cond!r}")

    def count_documents(self, flt: dict[str, Any]) -> int:
        if set(flt) - {"source", "status"}:
            raise NotImplementedError(f"count filter {flt!r}")
        return sum(1 for (src, _), doc in self.docs.items() if src == flt["source"] and self._status_ok(doc, flt.get("status")))

    def _found(self, flt: dict[str, Any]) -> list[dict[str, Any]]:
        if set(flt) - {"source", "path", "status"}:
            raise NotImplementedError(f"find filter {flt!r}")
        source = flt["source"]
        if isinstance(flt.get("path"), dict) and set(flt["path"]) == {"$in"}:
            found = (self.docs.get((source, path)) for path in flt["path"]["$in"])
            return [d for d in found if d is not None and self._status_ok(d, flt.get("status"))]
        if "path" not in flt:
            return [d for (src, _), d in self.docs.items() if src == source and self._status_ok(d, flt.get("status"))]
        raise NotImplementedError(f"find filter {flt!r}")

    def find(self, flt: dict[str, Any], projection: dict[str, int] | None = None) -> "_Cursor":
        return _Cursor(_projected(d, projection) for d in self._found(flt))

    def insert_many(self, docs: list[dict[str, Any]], ordered: bool = True) -> None:
        errors = []
        for index, doc in enumerate(docs):
            key = (doc["source"], doc["path"])
            if key in self.docs:  # the unique source_path index
                errors.append({"index": index, "code": 11000, "errmsg": f"E11000 duplicate key {key}"})
                if ordered:
                    break
                continue
            self.docs[key] = dict(doc)
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
                doc = {"source": key[0], "path": key[1], **update.get("$setOnInsert", {})}
                self.docs[key] = doc
            doc.update(update.get("$set", {}))
            for name in update.get("$unset", {}):
                doc.pop(name, None)

    def update_many(self, flt: dict[str, Any], update: dict[str, Any]) -> _Result:
        if set(update) != {"$set"} or not (isinstance(flt.get("path"), dict) and set(flt["path"]) == {"$in"}):
            raise NotImplementedError(f"update_many {flt!r} {update!r}")
        modified = 0
        for doc in self._found(flt):
            doc.update(update["$set"])
            modified += 1
        return _Result(modified)


class _Cursor:
    def __init__(self, docs: Iterable[dict[str, Any]]) -> None:
        self._docs = iter(docs)

    def __iter__(self) -> "_Cursor":
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._docs)


class _Client:
    def close(self) -> None:
        pass


class _DB:
    """The database ``Store(db=...)`` is given: only ``images`` exists (``index_source`` touches nothing else)."""

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

    def find(self, flt: dict[str, Any], projection: dict[str, int] | None = None) -> _Cursor:
        found = self._found(flt)
        asked = len(flt["path"]["$in"]) if isinstance(flt.get("path"), dict) else 0
        self._wait(max(asked, len(found)))
        return _Cursor(_projected(d, projection) for d in found)

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
        return lambda: Store(db=db, description="hash-indexed in-process images")  # type: ignore[arg-type]

    @staticmethod
    def slow_store() -> Callable[[], Store]:
        db = _DB(SlowHashIndexedImages())
        return lambda: Store(db=db, description="hash-indexed images behind simulated latency")  # type: ignore[arg-type]

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


# --- measuring ----------------------------------------------------------------------------------------


def list_rate(source: ImageSource, repeats: int = 3) -> tuple[float, int]:
    best, listed = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        listed = sum(1 for _ in source.list())
        best = min(best, time.perf_counter() - start)
    return listed / best, listed


def index_run(source: ImageSource, opener: Callable[[], Store], *, again: bool = False) -> dict[str, Any]:
    """Index ``source`` into a new store (timed, with the share inside store operations), commit it, close it;
    with ``again``, open the store again (as the next day's command does) and index the unchanged source."""
    store = opener()
    timer = StoreTimer(store)
    start = time.perf_counter()
    report: IndexReport = index_source(source, store)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    store.commit()  # the embedded store writes its partitions (the pipeline commits after the stage); MongoDB: nothing
    commit_s = time.perf_counter() - start
    store.close()
    result = {
        "listed": report.listed, "rate": report.listed / seconds, "seconds": seconds, "store_share": timer.seconds / seconds,
        "store_seconds": timer.seconds, "commit_seconds": commit_s, "new": report.new,
    }  # fmt: skip
    if again:
        store = opener()
        timer = StoreTimer(store)
        start = time.perf_counter()
        second = index_source(source, store)
        seconds2 = time.perf_counter() - start
        store.close()
        assert second.wrote_nothing and second.unchanged == report.listed, second
        result |= {"again_rate": second.listed / seconds2, "again_seconds": seconds2, "again_store_share": timer.seconds / seconds2}
    return result


def report_source(kind: str, big: ImageSource, small: ImageSource, stores: Stores, say: Callable[[str], None]) -> dict[str, Any]:
    rate_big, n_big = list_rate(big)
    hashed = index_run(big, stores.hash_store(), again=True)
    slow = index_run(big, stores.slow_store())
    embedded_big = index_run(big, stores.embedded_store(), again=True)
    embedded: dict[str, Any] | None = None
    if small is not big:
        rate_small, n_small = list_rate(small)
        embedded = index_run(small, stores.embedded_store(), again=True)
    say(f"\n{kind}")
    say(f"  {n_big:>7,} blobs  bare listing                 {rate_big:>10,.0f} blobs/s")
    say(
        f"  {n_big:>7,} blobs  index, hash-indexed store   {hashed['rate']:>10,.0f} img/s   ratio {hashed['rate'] / rate_big:.2f}"
        f"   (store calls {hashed['store_share']:.0%} of the time)"
    )
    say(
        f"  {n_big:>7,} blobs  re-index, nothing changed   {hashed['again_rate']:>10,.0f} img/s   ratio {hashed['again_rate'] / rate_big:.2f}"
        f"   (store calls {hashed['again_store_share']:.0%})"
    )
    list_s, store_s = n_big / rate_big, slow["store_seconds"]
    say(
        f"  {n_big:>7,} blobs  index, store with latency   {slow['rate']:>10,.0f} img/s   ratio {slow['rate'] / rate_big:.2f}"
        f"   (store busy {store_s:.2f} s + listing {list_s:.2f} s, run took {slow['seconds']:.2f} s; sequential would be their sum plus the indexer's CPU)"
    )
    rows = [(n_big, rate_big, embedded_big)] + ([(n_small, rate_small, embedded)] if embedded is not None else [])
    for n, rate, run in rows:
        if run is embedded:
            say(f"  {n:>7,} blobs  bare listing                 {rate:>10,.0f} blobs/s")
        say(
            f"  {n:>7,} blobs  index, embedded store       {run['rate']:>10,.0f} img/s   ratio {run['rate'] / rate:.2f}"
            f"   (store calls {run['store_share']:.0%}; then commit to disk {run['commit_seconds']:.2f} s)"
        )
        say(
            f"  {n:>7,} blobs  re-index embedded, reopened {run['again_rate']:>10,.0f} img/s   ratio {run['again_rate'] / rate:.2f}"
            f"   (store calls {run['again_store_share']:.0%}; partitions read back from disk)"
        )
    return {
        "source": kind,
        "listing": {"blobs": n_big, "rate": rate_big},
        "hash_indexed": {**hashed, "ratio": hashed["rate"] / rate_big, "again_ratio": hashed["again_rate"] / rate_big},
        "latency": {**slow, "ratio": slow["rate"] / rate_big, "listing_seconds": list_s},
        "embedded": {**embedded_big, "ratio": embedded_big["rate"] / rate_big, "again_ratio": embedded_big["again_rate"] / rate_big},
        "embedded_small": None if embedded is None else {
            **embedded, "listing_rate": rate_small, "ratio": embedded["rate"] / rate_small, "again_ratio": embedded["again_rate"] / rate_small,
        },  # fmt: skip
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, finishes in well under a minute")
    parser.add_argument("--files", type=int, help="blobs in the local folder (default 50,000; quick 5,000)")
    parser.add_argument("--gcs-files", type=int, help="objects in the emulator bucket (default 6,000; quick 1,000)")
    parser.add_argument("--embedded-files", type=int, help="blobs of the smaller embedded-store runs (default 2,000; quick 1,000)")
    parser.add_argument("--classes", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print one JSON object of the figures (the table goes to stderr)")
    args = parser.parse_args(argv)
    files = args.files or (5_000 if args.quick else 50_000)
    gcs_files = args.gcs_files or (1_000 if args.quick else 6_000)
    embedded_files = args.embedded_files or (1_000 if args.quick else 2_000)
    out = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say(f"bench_index  {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    say("rates are per blob listed; ratio = index rate / bare listing rate of the same source (target >= 0.8)")
    result: dict[str, Any] = {"classes": args.classes, "sources": []}
    with tempfile.TemporaryDirectory(prefix="bench_index_") as tmp:
        stores = Stores(Path(tmp))
        started = time.perf_counter()
        big = make_folder(Path(tmp) / "big", files, args.classes)
        small = make_folder(Path(tmp) / "small", embedded_files, args.classes)
        say(f"(made the folders in {time.perf_counter() - started:.1f} s)")
        result["sources"].append(report_source(f"local folder ({args.classes} classes)", big, small, stores, say))

        server, url = start_emulator()
        try:
            started = time.perf_counter()
            big_bucket = make_bucket(gcs_files, args.classes)
            small_bucket = make_bucket(embedded_files, args.classes) if embedded_files != gcs_files else big_bucket
            say(f"\n(uploaded to the emulator at {url} in {time.perf_counter() - started:.1f} s)")
            result["sources"].append(
                report_source("GCS bucket on gcp-storage-emulator (in process, one page per listing)", big_bucket, small_bucket, stores, say)
            )
        finally:
            server.stop()
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    return result


if __name__ == "__main__":
    main()
