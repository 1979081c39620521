"""Indexing speed: images indexed per second vs the bare listing rate of the same source (target ratio >= 0.8).

For a local folder and for a bucket on the gcp-storage-emulator (served in this process on
127.0.0.1, started as tests/fixtures/gcs.py does), one run measures:

- the bare listing rate: ``for blob in source.list()`` (best of three);
- ``index_source`` into a store whose lookups by (source, path) are hash lookups, as MongoDB's
  unique ``source_path`` index serves them (an in-process stand-in: no real MongoDB is
  available here). This isolates the indexer's own work (hashing, classifying, diffing,
  building bulk writes) from any server: the ratio the target is about;
- ``index_source`` into the embedded store (mongomock, the service's indexes). mongomock scans
  every document for each upsert and each unique check, so its cost grows with the square
  of the collection: it is reported on a smaller folder, as what the embedded default costs,
  not as a MongoDB figure;
- the second, unchanged run (lookups only, no writes) on the hash-indexed store;
- ``index_source`` into the hash-indexed store behind a simulated network latency (4 ms per
  round trip + 20 us per document, spent sleeping as a socket wait would): the indexer overlaps
  listing with the store's round trips, so the run should take about max(listing, store), not
  their sum.

Each index run also reports the share of its wall time spent inside store calls.

    .venv/bin/python benchmarks/bench_index.py --quick     # < 1 minute
    .venv/bin/python benchmarks/bench_index.py             # a few minutes
"""

from __future__ import annotations

import argparse
import datetime as dt
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

import mongomock  # noqa: E402
from pymongo import UpdateOne  # noqa: E402

from monitor.indexing import IndexReport, index_source  # noqa: E402
from monitor.sources import GCSSource, ImageSource, LocalSource  # noqa: E402
from monitor.storage import Store  # noqa: E402

WHEN = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc).timestamp()


# --- stores -------------------------------------------------------------------------------------


class _Result:
    def __init__(self, modified: int) -> None:
        self.modified_count = modified


class HashIndexedImages:
    """The ``images`` queries ``index_source`` makes, served from a dict keyed by (source, path).

    A stand-in for MongoDB's unique (source, path) index: each lookup or upsert costs O(1), so a
    batch costs O(batch) whatever the collection's size. Only the query shapes the indexer uses
    are understood; anything else raises, so the benchmark cannot silently measure something else.
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

    def find(self, flt: dict[str, Any], projection: dict[str, int] | None = None) -> "_Cursor":
        source = flt["source"]
        wanted = [name for name, on in (projection or {}).items() if on and name != "_id"]
        if isinstance(flt.get("path"), dict) and set(flt["path"]) == {"$in"}:
            found = (self.docs.get((source, path)) for path in flt["path"]["$in"])
            docs: Iterable[dict[str, Any]] = (d for d in found if d is not None and self._status_ok(d, flt.get("status")))
        elif "path" not in flt:
            docs = (d for (src, _), d in self.docs.items() if src == source and self._status_ok(d, flt.get("status")))
        else:
            raise NotImplementedError(f"find filter {flt!r}")
        return _Cursor({k: d[k] for k in wanted if k in d} if wanted else dict(d) for d in docs)

    def bulk_write(self, ops: list[UpdateOne], ordered: bool = True) -> None:
        for op in ops:
            flt, update = op._filter, op._doc
            assert isinstance(update, dict)  # an update document, not a pipeline
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
        modified = 0
        for path in flt["path"]["$in"]:
            doc = self.docs.get((flt["source"], path))
            if doc is not None and self._status_ok(doc, flt.get("status")):
                doc.update(update["$set"])
                modified += 1
        return _Result(modified)


class _Cursor:
    def __init__(self, docs: Iterable[dict[str, Any]]) -> None:
        self._docs = iter(docs)

    def batch_size(self, _: int) -> "_Cursor":
        return self

    def __iter__(self) -> "_Cursor":
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._docs)


class Timed:
    """Wraps a collection and adds up the seconds spent inside its calls."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._collection, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = attr(*args, **kwargs)
                if name == "find":  # a cursor's work happens while it is iterated
                    result = list(result)
                return _Cursor(result) if name == "find" else result
            finally:
                self.seconds += time.perf_counter() - start

        return timed


class _DB:
    def __init__(self, images: Any) -> None:
        self.images = images
        self.client = None

    def __getitem__(self, name: str) -> Any:
        if name != "images":
            raise KeyError(name)
        return self.images


class SlowHashIndexedImages(HashIndexedImages):
    """The hash-indexed store behind a network: each call waits ``round_trip_s`` plus ``per_doc_s`` per document.

    Sleeping releases the GIL as waiting on a socket does, so this shows whether listing goes on
    while the store answers (a simulation of a MongoDB server's latency, not a measurement of one).
    """

    round_trip_s = 0.004
    per_doc_s = 20e-6

    def _wait(self, docs: int) -> None:
        time.sleep(self.round_trip_s + self.per_doc_s * docs)

    def find(self, flt: dict[str, Any], projection: dict[str, int] | None = None) -> _Cursor:
        self._wait(len(flt.get("path", {}).get("$in", [])) if isinstance(flt.get("path"), dict) else 0)
        return super().find(flt, projection)

    def bulk_write(self, ops: list[UpdateOne], ordered: bool = True) -> None:
        self._wait(len(ops))
        super().bulk_write(ops, ordered)


def slow_store() -> tuple[Store, Timed]:
    timed = Timed(SlowHashIndexedImages())
    return Store(_DB(timed), description="hash-indexed images behind simulated latency"), timed  # type: ignore[arg-type]


def hash_store() -> tuple[Store, Timed]:
    timed = Timed(HashIndexedImages())
    return Store(_DB(timed), description="hash-indexed in-process images"), timed  # type: ignore[arg-type]


def embedded_store() -> tuple[Store, Timed]:
    db: Any = mongomock.MongoClient(tz_aware=True)[f"bench{uuid.uuid4().hex[:8]}"]
    store = Store(db, description="mongomock (embedded default)")
    store.ensure_indexes()
    timed = Timed(db["images"])
    return Store(_DB(timed), description=store.description), timed  # type: ignore[arg-type]


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


def index_run(source: ImageSource, make: Callable[[], tuple[Store, Timed]], *, again: bool = False) -> dict[str, Any]:
    store, timed = make()
    start = time.perf_counter()
    report: IndexReport = index_source(source, store)
    seconds = time.perf_counter() - start
    result = {"rate": report.listed / seconds, "seconds": seconds, "store_share": timed.seconds / seconds, "new": report.new}
    if again:
        timed.seconds = 0.0
        start = time.perf_counter()
        second = index_source(source, store)
        seconds2 = time.perf_counter() - start
        assert second.wrote_nothing and second.unchanged == report.listed
        result |= {"again_rate": second.listed / seconds2, "again_store_share": timed.seconds / seconds2}
    return result


def report_source(kind: str, big: ImageSource, small: ImageSource) -> None:
    rate_big, n_big = list_rate(big)
    hashed = index_run(big, hash_store, again=True)
    slow = index_run(big, slow_store)
    rate_small, n_small = list_rate(small)
    embedded = index_run(small, embedded_store)
    print(f"\n{kind}")
    print(f"  {n_big:>7,} blobs  bare listing                 {rate_big:>10,.0f} blobs/s")
    print(
        f"  {n_big:>7,} blobs  index, hash-indexed store   {hashed['rate']:>10,.0f} img/s   ratio {hashed['rate'] / rate_big:.2f}"
        f"   (store calls {hashed['store_share']:.0%} of the time)"
    )
    print(
        f"  {n_big:>7,} blobs  re-index, nothing changed   {hashed['again_rate']:>10,.0f} img/s   ratio {hashed['again_rate'] / rate_big:.2f}"
        f"   (store calls {hashed['again_store_share']:.0%})"
    )
    list_s, store_s = n_big / rate_big, slow["store_share"] * slow["seconds"]
    print(
        f"  {n_big:>7,} blobs  index, store with latency   {slow['rate']:>10,.0f} img/s   ratio {slow['rate'] / rate_big:.2f}"
        f"   (store busy {store_s:.2f} s + listing {list_s:.2f} s, run took {slow['seconds']:.2f} s; sequential would be their sum plus the indexer's CPU)"
    )
    print(f"  {n_small:>7,} blobs  bare listing                 {rate_small:>10,.0f} blobs/s")
    print(
        f"  {n_small:>7,} blobs  index, embedded mongomock   {embedded['rate']:>10,.0f} img/s   ratio {embedded['rate'] / rate_small:.2f}"
        f"   (store calls {embedded['store_share']:.0%}; quadratic in the collection)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, finishes in well under a minute")
    parser.add_argument("--files", type=int, help="blobs in the local folder (default 50,000; quick 5,000)")
    parser.add_argument("--gcs-files", type=int, help="objects in the emulator bucket (default 6,000; quick 1,000)")
    parser.add_argument("--embedded-files", type=int, help="blobs for the mongomock runs (default 2,000; quick 1,000)")
    parser.add_argument("--classes", type=int, default=15)
    args = parser.parse_args(argv)
    files = args.files or (5_000 if args.quick else 50_000)
    gcs_files = args.gcs_files or (1_000 if args.quick else 6_000)
    embedded_files = args.embedded_files or (1_000 if args.quick else 2_000)

    print(f"bench_index  {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print("rates are per blob listed; ratio = index rate / bare listing rate of the same source (target >= 0.8)")
    with tempfile.TemporaryDirectory(prefix="bench_index_") as tmp:
        started = time.perf_counter()
        big = make_folder(Path(tmp) / "big", files, args.classes)
        small = make_folder(Path(tmp) / "small", embedded_files, args.classes)
        print(f"(made the folders in {time.perf_counter() - started:.1f} s)")
        report_source(f"local folder ({args.classes} classes)", big, small)

    server, url = start_emulator()
    try:
        started = time.perf_counter()
        big_bucket = make_bucket(gcs_files, args.classes)
        small_bucket = make_bucket(embedded_files, args.classes) if embedded_files != gcs_files else big_bucket
        print(f"\n(uploaded to the emulator at {url} in {time.perf_counter() - started:.1f} s)")
        report_source("GCS bucket on gcp-storage-emulator (in process, one page per listing)", big_bucket, small_bucket)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
