"""Indexing a source into ``images``: usable/unusable rules, incremental and idempotent runs, vanished blobs, bulk writes."""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections import Counter
from pathlib import Path
from typing import Any, cast

import mongomock
import pymongo
import pytest
from scipy import stats

from monitor.errors import SourceError, StoreError
from monitor.indexing import classify, index_source, sample_key
from monitor.sources import GCSSource, LocalSource
from monitor.storage import Store

T1 = dt.datetime(2026, 2, 1, 12, 0, tzinfo=dt.timezone.utc)
T2 = dt.datetime(2026, 2, 2, 12, 0, tzinfo=dt.timezone.utc)
T3 = dt.datetime(2026, 2, 3, 12, 0, tzinfo=dt.timezone.utc)
FILE_TIME = dt.datetime(2026, 1, 15, tzinfo=dt.timezone.utc)

# A small bucket with one of each kind of blob.
LAYOUT: dict[str, bytes] = {
    "Cat/a.jpg": b"cat-a",
    "Cat/b.JPEG": b"cat-b",
    "Cat/notes.txt": b"text",
    "Cat/empty.png": b"",
    "Dog/c.png": b"dog-c",
    "Dog/d.webp": b"dog-d",
    "Dog/sub/e.jpg": b"too deep",
    "README.md": b"top level",
}


def _write(root: Path, rel: str, data: bytes, when: dt.datetime = FILE_TIME) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (when.timestamp(), when.timestamp()))


def _folder(root: Path, layout: dict[str, bytes] = LAYOUT) -> LocalSource:
    for rel, data in layout.items():
        _write(root, rel, data)
    return LocalSource(root)


def _docs(store: Store, source: str) -> dict[str, dict[str, Any]]:
    return {doc["path"]: doc for doc in store.find("images", {"source": source})}


def _mongo_db() -> Any:
    """A MongoDB-like database (mongomock) with the service's indexes, as ``open_store`` leaves a real one."""
    db: Any = mongomock.MongoClient(tz_aware=True)["monitor"]
    Store(db=db, description="mongomock").ensure_indexes()
    return db


@pytest.mark.parametrize(
    ("path", "size", "expected"),
    [
        ("Cat/a.jpg", 10, ("Cat", "ok", None)),
        ("Cat/a.TIFF", 10, ("Cat", "ok", None)),
        ("Cat/a.gif", 10, ("Cat", "ok", None)),
        ("Cat/a.bmp", 10, ("Cat", "ok", None)),
        ("Cat/a.txt", 10, ("Cat", "unusable", "not_an_image_extension")),
        ("Cat/jpg", 10, ("Cat", "unusable", "not_an_image_extension")),
        ("Cat/a.jpg", 0, ("Cat", "unusable", "zero_bytes")),
        ("a.jpg", 10, (None, "unusable", "wrong_depth")),
        ("Cat/x/a.jpg", 10, (None, "unusable", "wrong_depth")),
    ],
)
def test_blobs_are_classified_by_depth_then_extension_then_size(path: str, size: int, expected: tuple) -> None:
    assert classify(path, size) == expected


def test_first_run_records_every_blob_with_its_label_status_and_reason(tmp_path: Path, store: Store) -> None:
    source = _folder(tmp_path / "src")

    report = index_source(source, store, now=T1)

    docs = _docs(store, source.uri)
    assert set(docs) == set(LAYOUT)
    assert report.listed == report.new == len(LAYOUT)
    assert report.labels == {"Cat": 2, "Dog": 2}
    assert report.unusable == {"not_an_image_extension": 1, "wrong_depth": 2, "zero_bytes": 1}
    assert docs["Cat/a.jpg"]["status"] == "ok" and docs["Cat/a.jpg"]["reason"] is None and docs["Cat/a.jpg"]["label"] == "Cat"
    assert (docs["Dog/sub/e.jpg"]["status"], docs["Dog/sub/e.jpg"]["reason"], docs["Dog/sub/e.jpg"]["label"]) == ("unusable", "wrong_depth", None)
    assert docs["Cat/empty.png"]["reason"] == "zero_bytes"
    doc = docs["Dog/c.png"]
    assert doc["size"] == len(b"dog-c")
    assert doc["created"] == FILE_TIME and doc["updated"] == FILE_TIME
    assert doc["first_seen"] == T1 and doc["last_seen"] == T1
    assert doc["sample_key"] == sample_key(source.uri, "Dog/c.png")
    assert 0.0 <= doc["sample_key"] < 1.0


def test_second_run_over_an_unchanged_source_writes_nothing(tmp_path: Path, store: Store) -> None:
    source = _folder(tmp_path / "src")
    index_source(source, store, now=T1)
    before = _docs(store, source.uri)

    report = index_source(source, store, now=T2)

    assert report.wrote_nothing
    assert (report.new, report.updated, report.missing, report.reappeared) == (0, 0, 0, 0)
    assert report.unchanged == report.listed == len(LAYOUT)
    # a rewrite would have moved last_seen to T2
    assert _docs(store, source.uri) == before


def test_changed_blob_is_rewritten_and_keeps_its_first_seen(tmp_path: Path, store: Store) -> None:
    root = tmp_path / "src"
    source = _folder(root)
    index_source(source, store, now=T1)
    _write(root, "Cat/a.jpg", b"a new picture", FILE_TIME + dt.timedelta(days=1))
    _write(root, "Cat/new.jpg", b"brand new")

    report = index_source(source, store, now=T2)

    assert (report.new, report.updated, report.unchanged) == (1, 1, len(LAYOUT) - 1)
    doc = _docs(store, source.uri)["Cat/a.jpg"]
    assert doc["size"] == len(b"a new picture")
    assert doc["first_seen"] == T1 and doc["last_seen"] == T2
    assert doc["updated"] == FILE_TIME + dt.timedelta(days=1)
    assert report.labels == {"Cat": 3, "Dog": 2}


def test_vanished_blobs_are_marked_missing_once_and_restored_when_they_return(tmp_path: Path, store: Store) -> None:
    root = tmp_path / "src"
    source = _folder(root)
    index_source(source, store, now=T1)
    (root / "Cat" / "a.jpg").unlink()
    (root / "Cat" / "notes.txt").unlink()

    gone = index_source(source, store, now=T2)

    docs = _docs(store, source.uri)
    assert gone.missing == 2
    assert {(docs[p]["status"], docs[p]["reason"]) for p in ("Cat/a.jpg", "Cat/notes.txt")} == {("missing", "vanished")}
    assert docs["Cat/a.jpg"]["missing_since"] == T2
    assert gone.labels == {"Cat": 1, "Dog": 2}
    assert index_source(source, store, now=T3).wrote_nothing, "a blob already marked missing is not marked again"

    _write(root, "Cat/a.jpg", LAYOUT["Cat/a.jpg"])
    back = index_source(source, store, now=T3)

    doc = _docs(store, source.uri)["Cat/a.jpg"]
    assert (back.reappeared, back.new, back.missing) == (1, 0, 0)
    assert (doc["status"], doc["reason"], doc["last_seen"], doc["first_seen"]) == ("ok", None, T3, T1)
    assert "missing_since" not in doc


def test_an_emptied_source_is_an_error_and_marks_nothing_missing(tmp_path: Path, store: Store) -> None:
    root = tmp_path / "src"
    source = _folder(root, {"Cat/a.jpg": b"x"})
    index_source(source, store, now=T1)
    (root / "Cat" / "a.jpg").unlink()

    with pytest.raises(SourceError, match="is empty"):
        index_source(source, store, now=T2)
    assert _docs(store, source.uri)["Cat/a.jpg"]["status"] == "ok"


def test_a_missing_folder_is_a_source_error(tmp_path: Path, store: Store) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        index_source(LocalSource(tmp_path / "nowhere"), store)


def test_sources_are_kept_apart_in_one_store(tmp_path: Path, store: Store) -> None:
    one = _folder(tmp_path / "one", {"Cat/a.jpg": b"x"})
    two = _folder(tmp_path / "two", {"Dog/b.jpg": b"y"})
    index_source(one, store, now=T1)
    index_source(two, store, now=T1)
    # indexing one source never marks another's blobs missing
    assert index_source(one, store, now=T2).wrote_nothing
    assert set(_docs(store, one.uri)) == {"Cat/a.jpg"} and set(_docs(store, two.uri)) == {"Dog/b.jpg"}
    assert _docs(store, two.uri)["Dog/b.jpg"]["status"] == "ok"


# --- writes go in bulk ---------------------------------------------------------------------------------


class _CountingCollection:
    """A real (mongomock) collection that counts the calls made on it."""

    def __init__(self, collection: Any, calls: Counter[str]) -> None:
        self._collection = collection
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._collection, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls[name] += 1
            return attr(*args, **kwargs)

        return counted


class _CountingDatabase:
    """A MongoDB-like database whose collections count the calls made on them (one call, one round trip)."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.calls: Counter[str] = Counter()
        self.client = db.client

    def __getitem__(self, name: str) -> _CountingCollection:
        return _CountingCollection(self._db[name], self.calls)


def _fake_store(db: _CountingDatabase, description: str) -> Store:
    """A store over a wrapped database (it quacks like a pymongo ``Database`` for what the store calls)."""
    return Store(db=cast(Any, db), description=description)


_SINGLE_WRITES = {"insert_one", "update_one", "replace_one", "delete_one", "find_one_and_update"}


def _labels_per_batch(source: LocalSource, batch_size: int) -> list[int]:
    """How many labels each batch of ``source``'s listing holds (the listing is sorted, so classes are contiguous)."""
    paths = [blob.path for blob in source.list()]
    return [len({path.split("/")[0] for path in paths[i : i + batch_size]}) for i in range(0, len(paths), batch_size)]


def test_index_writes_in_bulk_batches_never_one_round_trip_per_image(tmp_path: Path) -> None:
    layout = {f"L{i % 3}/{i:04d}.png": b"px" for i in range(250)}
    source = _folder(tmp_path / "src", layout)
    db = _mongo_db()
    counting = _CountingDatabase(db)
    advanced: list[int] = []

    report = index_source(source, _fake_store(counting, "counting"), now=T1, batch_size=100, progress=advanced.append)

    assert report.new == 250 and Store(db=db, description="mongomock").count_images(source.uri) == 250
    # New documents go in one insert_many per batch on MongoDB, whatever labels it holds; no per-image write at all.
    assert _labels_per_batch(source, 100) == [2, 2, 1]
    assert counting.calls["insert_many"] == 3
    assert counting.calls["bulk_write"] == 0 and counting.calls["update_many"] == 0
    assert not _SINGLE_WRITES & set(counting.calls)
    assert advanced == [100, 100, 50]

    counting.calls.clear()
    index_source(source, _fake_store(counting, "counting"), now=T2, batch_size=100)
    assert counting.calls["find"] == 3, "one lookup per batch"
    assert counting.calls["bulk_write"] == 0 and counting.calls["update_many"] == 0 and counting.calls["insert_many"] == 0

    # A changed blob in each batch (two in the first): one bulk write per batch, never per image.
    for rel in ("L0/0000.png", "L0/0003.png", "L1/0124.png", "L2/0245.png"):
        _write(tmp_path / "src", rel, b"changed", FILE_TIME + dt.timedelta(days=1))
    counting.calls.clear()
    changed = index_source(source, _fake_store(counting, "counting"), now=T3, batch_size=100)
    assert (changed.updated, changed.new) == (4, 0)
    assert counting.calls["find"] == 3 and counting.calls["bulk_write"] == 3
    assert counting.calls["insert_many"] == 0 and not _SINGLE_WRITES & set(counting.calls)


class _WritesFailAfterFirstBatch(_CountingDatabase):
    """Every write fails once ``batch_size`` documents are stored, as when the server goes away mid-run."""

    def __init__(self, db: Any, batch_size: int) -> None:
        super().__init__(db)
        self.batch_size = batch_size
        self.written = 0

    def __getitem__(self, name: str) -> _CountingCollection:
        collection = self._db[name]
        calls = self.calls
        server = self

        def write(method: str, count: int, *args: Any, **kwargs: Any) -> Any:
            calls[method] += 1
            if server.written >= server.batch_size:
                raise pymongo.errors.AutoReconnect("connection reset by peer")
            server.written += count
            return getattr(collection, method)(*args, **kwargs)

        class Failing(_CountingCollection):
            def insert_many(self, documents: Any, *args: Any, **kwargs: Any) -> Any:
                documents = list(documents)
                return write("insert_many", len(documents), documents, *args, **kwargs)

            def bulk_write(self, requests: Any, *args: Any, **kwargs: Any) -> Any:
                requests = list(requests)
                return write("bulk_write", len(requests), requests, *args, **kwargs)

        return Failing(collection, calls)


def test_a_store_failure_mid_run_is_a_store_error_and_keeps_the_batches_written_before(tmp_path: Path) -> None:
    source = _folder(tmp_path / "src", {f"L{i % 3}/{i:04d}.png": b"px" for i in range(500)})
    db = _mongo_db()
    failing = _WritesFailAfterFirstBatch(db, batch_size=100)

    with pytest.raises(StoreError, match="could not write 100 image documents .* on flaky: connection reset"):
        index_source(source, _fake_store(failing, "flaky"), now=T1, batch_size=100)

    store = Store(db=db, description="mongomock")
    assert failing.written == 100 and failing.calls["insert_many"] > 1, "the first batch was written, then a write failed"
    assert store.count_images(source.uri) == 100
    # the re-run repairs it: what was written is unchanged, the rest is new
    report = index_source(source, store, now=T2, batch_size=100)
    assert (report.new, report.unchanged, report.missing) == (400, 100, 0)


# --- store and key properties --------------------------------------------------------------------------


def test_an_unreachable_store_is_a_store_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client: pymongo.MongoClient = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=200, connect=False)
    dead = Store(db=client["db"], description=f"MongoDB 127.0.0.1:{port}")
    try:
        with pytest.raises(StoreError, match=f"127.0.0.1:{port}"):
            index_source(_folder(tmp_path / "src", {"Cat/a.jpg": b"x"}), dead)
    finally:
        client.close()


def test_sample_keys_are_uniform_on_the_unit_interval() -> None:
    keys = [sample_key("gs://bucket/val", f"L{i % 7}/img_{i:05d}.jpg") for i in range(4000)]
    assert len(set(keys)) == len(keys)
    # Kolmogorov-Smirnov against U(0, 1): a fixed set of paths, so this is deterministic.
    assert stats.kstest(keys, "uniform").pvalue > 0.01


def test_sample_keys_are_stable_and_depend_on_source_and_path() -> None:
    assert sample_key("file:///a", "Cat/x.jpg") == sample_key("file:///a", "Cat/x.jpg")
    assert sample_key("file:///a", "Cat/x.jpg") != sample_key("file:///b", "Cat/x.jpg")
    assert sample_key("file:///a", "Cat/x.jpg") != sample_key("file:///a", "Cat/y.jpg")


# --- GCS and local give the same index -------------------------------------------------------------------


@pytest.mark.gcs
def test_gcs_and_local_sources_with_the_same_files_index_alike(tmp_path: Path, store: Store, gcs_emulator, gcs_bucket: str) -> None:
    local = _folder(tmp_path / "src")
    gcs_emulator.upload(gcs_bucket, {f"val/{rel}": data for rel, data in LAYOUT.items()})
    remote = GCSSource(gcs_bucket, "val")

    local_report = index_source(local, store, now=T1)
    remote_report = index_source(remote, store, now=T1)

    def summary(report: Any) -> tuple:
        return (report.listed, report.new, report.unusable, report.labels)

    def rows(uri: str) -> dict[str, tuple]:
        return {p: (d["label"], d["status"], d["reason"], d["size"]) for p, d in _docs(store, uri).items()}

    assert summary(local_report) == summary(remote_report)
    assert rows(local.uri) == rows(remote.uri)
    assert index_source(remote, store, now=T2).wrote_nothing

    gcs_emulator.delete(gcs_bucket, ["val/Cat/a.jpg"])
    gcs_emulator.upload(gcs_bucket, {"val/Dog/c.png": b"rewritten"})
    changed = index_source(remote, store, now=T3)
    assert (changed.missing, changed.updated) == (1, 1)

