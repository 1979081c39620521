"""Indexing a source into ``images``: usable/unusable rules, incremental and idempotent runs, vanished blobs, bulk writes."""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import io
import logging
import os
import socket
import tempfile
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import mongomock
import numpy as np
import pymongo
import pytest
from scipy import stats

from monitor.core.errors import SourceError, StoreError
from monitor.core.sources import BlobInfo, GCSSource, LocalSource
from monitor.domain import indexing
from monitor.domain.indexing import (
    IndexReport,
    _path_hasher,
    _path_keys,
    _unit_floats,
    classify,
    index_source,
    sample_key,
    sample_key_int,
)
from monitor.domain.sampling import draw_sample, image_identity
from monitor.store import MongoStore, Store
from tests.fixtures.store import find

T1 = dt.datetime(2026, 2, 1, 12, 0, tzinfo=dt.UTC)
T2 = dt.datetime(2026, 2, 2, 12, 0, tzinfo=dt.UTC)
T3 = dt.datetime(2026, 2, 3, 12, 0, tzinfo=dt.UTC)
FILE_TIME = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)

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
    return {doc["path"]: doc for doc in find(store, "images", {"source": source})}


def _mongo_db() -> Any:
    """A MongoDB-like database (mongomock) with the service's indexes, as ``open_store`` leaves a real one."""
    db: Any = mongomock.MongoClient(tz_aware=True)["monitor"]
    MongoStore(db=db, description="mongomock").ensure_indexes()
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
    assert (
        docs["Cat/a.jpg"]["status"] == "ok"
        and docs["Cat/a.jpg"]["reason"] is None
        and docs["Cat/a.jpg"]["label"] == "Cat"
    )
    assert (docs["Dog/sub/e.jpg"]["status"], docs["Dog/sub/e.jpg"]["reason"], docs["Dog/sub/e.jpg"]["label"]) == (
        "unusable",
        "wrong_depth",
        None,
    )
    assert docs["Cat/empty.png"]["reason"] == "zero_bytes"
    doc = docs["Dog/c.png"]
    assert doc["size"] == len(b"dog-c")
    assert doc["created"] == FILE_TIME and doc["updated"] == FILE_TIME
    assert doc["first_seen"] == T1 and doc["last_seen"] == T1
    assert doc["sample_key"] == sample_key("Dog/c.png")
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
    return MongoStore(db=cast(Any, db), description=description)


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

    assert report.new == 250 and MongoStore(db=db, description="mongomock").count_images(source.uri) == 250
    # New documents go in one insert_many per batch on MongoDB, whatever labels it holds; no per-image write at all.
    assert _labels_per_batch(source, 100) == [2, 2, 1]
    assert counting.calls["insert_many"] == 3
    assert counting.calls["bulk_write"] == 0 and counting.calls["update_many"] == 0
    assert not _SINGLE_WRITES & set(counting.calls)
    assert advanced == [100, 100, 50]

    counting.calls.clear()
    index_source(source, _fake_store(counting, "counting"), now=T2, batch_size=100)
    assert counting.calls["find"] == 3, "one lookup per batch"
    assert (
        counting.calls["bulk_write"] == 0 and counting.calls["update_many"] == 0 and counting.calls["insert_many"] == 0
    )

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

    store = MongoStore(db=db, description="mongomock")
    assert failing.written == 100 and failing.calls["insert_many"] > 1, (
        "the first batch was written, then a write failed"
    )
    assert store.count_images(source.uri) == 100
    # the re-run repairs it: what was written is unchanged, the rest is new
    report = index_source(source, store, now=T2, batch_size=100)
    assert (report.new, report.unchanged, report.missing) == (400, 100, 0)


# --- store and key properties --------------------------------------------------------------------------


def test_an_unreachable_store_is_a_store_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client: pymongo.MongoClient = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=200, connect=False
    )
    dead = MongoStore(db=client["db"], description=f"MongoDB 127.0.0.1:{port}")
    try:
        with pytest.raises(StoreError, match=f"127.0.0.1:{port}"):
            index_source(_folder(tmp_path / "src", {"Cat/a.jpg": b"x"}), dead)
    finally:
        client.close()


def test_sample_keys_are_uniform_on_the_unit_interval() -> None:
    keys = [sample_key(f"L{i % 7}/img_{i:05d}.jpg") for i in range(4000)]
    assert len(set(keys)) == len(keys)
    # Kolmogorov-Smirnov against U(0, 1): a fixed set of paths, so this is deterministic.
    assert stats.kstest(keys, "uniform").pvalue > 0.01


def test_sample_keys_are_stable_and_differ_between_paths() -> None:
    assert sample_key("Cat/x.jpg") == sample_key("Cat/x.jpg")
    assert sample_key("Cat/x.jpg") != sample_key("Cat/y.jpg")
    assert sample_key("Cat/x.jpg") != sample_key("Dog/x.jpg")


def _dated_layout(root: Path) -> LocalSource:
    """Two classes of 60 images arriving over six days (so "newest first" has days to order), usable or not."""
    for label in ("Cat", "Dog"):
        for i in range(60):
            _write(root, f"{label}/{i:03d}.png", bytes([i]) * (1 + i), FILE_TIME + dt.timedelta(days=i % 6, hours=i))
    _write(root, "Cat/notes.txt", b"text")
    return LocalSource(root)


def _drawn(sample: Any) -> list[tuple[Any, ...]]:
    """What a draw chose, without the source it was drawn from."""
    return [(i.image_path, i.label, i.draw, i.sample_key, i.image) for i in sample.items]


@pytest.mark.parametrize("engine", ["embedded", "mongomock"])
def test_the_same_images_in_two_places_get_the_same_keys_and_draw_the_same_samples(
    tmp_path: Path, store: Store, engine: str
) -> None:
    """A copy of a bucket, or the demo's folder under another clone's path: a date and seed draw the same images."""
    target = store if engine == "embedded" else MongoStore(db=_mongo_db(), description="mongomock")
    here = _dated_layout(tmp_path / "clone" / "data" / "source")
    there = _dated_layout(tmp_path / "elsewhere" / "source")
    assert here.uri != there.uri
    for source in (here, there):
        index_source(source, target, now=T1)

    keys = {uri: {path: doc["sample_key"] for path, doc in _docs(target, uri).items()} for uri in (here.uri, there.uri)}
    assert keys[here.uri] == keys[there.uri] and len(keys[here.uri]) == 121
    # A model that evaluated every 7th cat (their identities hold no location either: path and size-mtime).
    seen = {
        "Cat": {
            image_identity(doc["checksum"], path)
            for path, doc in _docs(target, here.uri).items()
            if path.endswith(".png") and path.startswith("Cat/") and int(path[4:7]) % 7 == 0
        }
    }
    assert len(seen["Cat"]) == 9
    day = FILE_TIME.date() + dt.timedelta(days=8)
    for date in (day, day + dt.timedelta(days=1)):
        for seed in (0, 7):
            draws = [
                {
                    "walk": draw_sample(target, uri, date, 5, seed, followup={"Cat": 3}),
                    "unseen": draw_sample(target, uri, date, 5, seed, seen=seen, first_draw=8, model_id="m"),
                }
                for uri in (here.uri, there.uri)
            ]
            for kind in ("walk", "unseen"):
                a, b = draws[0][kind], draws[1][kind]
                assert _drawn(a) == _drawn(b), (kind, date, seed)
                assert (a.classes, a.followup, a.unseen) == (b.classes, b.followup, b.unseen)
            assert len(draws[0]["walk"].items) == 5 + 3 + 5


def test_copies_of_one_source_in_one_store_find_their_vanished_blobs_apart(tmp_path: Path, store: Store) -> None:
    """Keys hash the path only, so two copies share them: vanished blobs are still found per source."""
    layout = {f"L{i % 2}/{i:02d}.png": b"px" for i in range(10)}
    one, two = _folder(tmp_path / "one", layout), _folder(tmp_path / "two", layout)
    index_source(one, store, now=T1)
    index_source(two, store, now=T1)
    (tmp_path / "one" / "L0/04.png").unlink()

    report = index_source(one, store, now=T2)

    assert (report.missing, report.unchanged) == (1, 9)
    assert {path for path, doc in _docs(store, one.uri).items() if doc["status"] == "missing"} == {"L0/04.png"}
    assert {doc["status"] for doc in _docs(store, two.uri).values()} == {"ok"}
    assert index_source(two, store, now=T2).wrote_nothing


def _location_key(uri: str, path: str) -> float:
    """The sample key an earlier version stored: blake2b-64 of ``"<source URI>\\n<path>"`` (it hashed the location)."""
    return int.from_bytes(hashlib.blake2b(f"{uri}\n{path}".encode(), digest_size=8).digest(), "big") / 2**64


def test_a_store_keyed_with_the_source_location_is_rekeyed_once_and_keeps_everything_else(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    source = _dated_layout(tmp_path / "src")
    index_source(source, store, now=T1)
    store.write_images(
        source.uri,
        [],
        [
            (
                {"source": source.uri, "path": path, "label": doc["label"]},
                {"$set": {"sample_key": _location_key(source.uri, path)}},
            )
            for path, doc in _docs(store, source.uri).items()
        ],
    )
    old = _docs(store, source.uri)
    assert all(doc["sample_key"] == _location_key(source.uri, path) != sample_key(path) for path, doc in old.items())
    day = FILE_TIME.date() + dt.timedelta(days=8)
    # A model evaluated a draw made on the old keys: its images count as evaluated after the re-key too.
    evaluated = draw_sample(store, source.uri, day, 4, 3, seen={}, model_id="m")
    seen = {label: {item.image for item in evaluated.items if item.label == label} for label in evaluated.classes}
    assert sum(map(len, seen.values())) == 8

    with caplog.at_level(logging.INFO, logger="monitor.domain.indexing"):
        report = index_source(source, store, now=T2)

    # Every document's stored sample key changed, nothing else: each is one update, none new, vanished or back.
    assert (report.listed, report.new, report.updated, report.unchanged) == (121, 0, 121, 0)
    assert (report.missing, report.reappeared) == (0, 0)
    assert "121 of the 121 updated documents got only a new sample key" in caplog.text
    after = _docs(store, source.uri)
    assert len(find(store, "images", {"source": source.uri})) == len(after) == len(old) == 121
    for path, doc in after.items():
        assert doc["sample_key"] == sample_key(path)
        assert doc["first_seen"] == T1 and doc["last_seen"] == T2
        unchanged = {name: value for name, value in doc.items() if name not in ("sample_key", "last_seen")}
        assert unchanged == {
            name: value for name, value in old[path].items() if name not in ("sample_key", "last_seen")
        }
    assert index_source(source, store, now=T3).wrote_nothing

    # The next draw walks the new keys, skips what the model evaluated, and is what a store indexed anew draws.
    fresh = _dated_layout(tmp_path / "fresh")
    index_source(fresh, store, now=T3)
    following = day + dt.timedelta(days=1)
    drawn = draw_sample(store, source.uri, following, 4, 3, seen=seen, model_id="m")
    assert all(item.sample_key == sample_key(item.image_path) for item in drawn.items)
    assert not {item.image for item in drawn.items} & set().union(*seen.values())
    assert drawn.unseen == {"Cat": 56, "Dog": 56}
    assert _drawn(drawn) == _drawn(draw_sample(store, fresh.uri, following, 4, 3, seen=seen, model_id="m"))


# --- GCS and local give the same index -------------------------------------------------------------------


@pytest.mark.gcs
def test_gcs_and_local_sources_with_the_same_files_index_alike(
    tmp_path: Path, store: Store, gcs_emulator, gcs_bucket: str
) -> None:
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


# --- the batch loop keeps the rules; memory stays flat in the size of the listing -------------------------


class _Listing:
    """A source whose listing is given (any paths, sizes, timestamps and symlinks, as no folder could hold them)."""

    def __init__(self, blobs: list[BlobInfo], uri: str = "mem://listing") -> None:
        self.blobs, self.uri = blobs, uri

    def check(self) -> None:
        pass

    def list(self) -> Iterator[BlobInfo]:
        return iter(self.blobs)

    def read(self, path: str) -> bytes:
        raise SourceError(path)


def test_the_batch_loop_applies_classify_and_the_time_rules_to_odd_listings() -> None:
    paths = [
        "Cat/a.jpg",
        "Cat/b.JPEG",
        "Cat/c.JpG",
        "Cat/.jpg",
        "Cat/d.",
        "Cat/e",
        "Cat/f.txt",
        "Cat/g.tiff",
        "Cat/h.jpg.txt",
        "Cat/i..png",
        "Cat/j.GİF",
        "Cat/k.gif",
        "Cat/l.jpeg ",
        "Cat/",
        "/a.jpg",
        "Cat//a.jpg",
        "a.jpg",
        "x/y/z.jpg",
        ".",
        "Δ/ω.webp",
    ]
    naive = dt.datetime(2026, 1, 15, 10, 0, 0, 123456)
    east = dt.datetime(2026, 1, 15, 10, 0, 0, 999999, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    exact = dt.datetime(2026, 1, 15, 10, 0, 0, 123000, tzinfo=dt.UTC)
    # Each path three times (a file, an empty file, a symbolic link), each time in a source of its own.
    variants: list[list[BlobInfo]] = [[], [], []]
    for i, path in enumerate(paths):
        created = (naive, east, exact)[i % 3]
        updated = created if i % 2 else (east, exact, naive)[i % 3]
        for blobs, (size, symlink) in zip(variants, ((7, False), (0, False), (7, True))):
            blobs.append(
                BlobInfo(path=path, size=size, checksum=f"{size}", created=created, updated=updated, symlink=symlink)
            )
    store = MongoStore(db=_mongo_db(), description="mongomock")
    # A second store already holds another blob of each source: there, the same blobs are new to a run that looks up.
    seeded = MongoStore(db=_mongo_db(), description="mongomock")
    expected_labels: Counter[str] = Counter()
    expected_unusable: Counter[str] = Counter()
    for variant, blobs in enumerate(variants):
        source = _Listing(blobs, uri=f"mem://odd/{variant}")
        report = index_source(source, store, now=T1, batch_size=4)
        docs = _docs(store, source.uri)
        seed = BlobInfo(path="Seed/s.jpg", size=1, checksum="s", created=exact, updated=exact)
        index_source(_Listing([seed], uri=source.uri), seeded, now=T1)
        looked_up = index_source(source, seeded, now=T1, batch_size=4)
        assert (looked_up.new, looked_up.missing) == (report.new, 1)
        again = _docs(seeded, source.uri)
        assert again.pop(seed.path)["status"] == "missing"
        assert {p: {k: v for k, v in d.items() if k != "_id"} for p, d in again.items()} == {
            p: {k: v for k, v in d.items() if k != "_id"} for p, d in docs.items()
        }
        counts_labels: Counter[str] = Counter()
        counts_unusable: Counter[str] = Counter()
        for blob in source.blobs:
            label, status, reason = classify(blob.path, blob.size, blob.symlink)
            doc = docs[blob.path]
            assert (doc["label"], doc["status"], doc["reason"]) == (label, status, reason), blob
            assert doc["sample_key"] == sample_key(blob.path)
            for name, value in (("created", blob.created), ("updated", blob.updated)):
                utc = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
                assert doc[name] == utc.replace(microsecond=utc.microsecond // 1000 * 1000), (blob, name)
            if status == "ok":
                counts_labels[label or ""] += 1
            else:
                counts_unusable[reason or ""] += 1
        assert (report.labels, report.unusable) == (
            dict(sorted(counts_labels.items())),
            dict(sorted(counts_unusable.items())),
        )
        expected_labels += counts_labels
        expected_unusable += counts_unusable
        assert index_source(source, store, now=T2, batch_size=4).wrote_nothing
    assert expected_labels and expected_unusable["symlink"] == len(paths) and expected_unusable["zero_bytes"]


def test_sample_keys_made_for_a_whole_batch_are_those_of_sample_key() -> None:
    # uint64 -> float64 rounds to nearest, ties to even, as Python's exact int / int does: check the ties.
    keys = [
        0,
        1,
        2**53 - 1,
        2**53 + 1,
        2**63,
        2**63 + 2**10,
        2**63 + 2**10 + 1,
        2**63 + 3 * 2**10,
        2**64 - 1,
        2**64 - 2**10,
        2**64 - 2**11,
    ]
    keys += [(k * 0x9E3779B97F4A7C15) % 2**64 for k in range(1, 5000)]
    assert _unit_floats(np.array(keys, dtype=np.uint64)) == [key / 2**64 for key in keys]
    hasher = _path_hasher()
    paths = [f"L{i % 7}/img_{i:05d}.jpg" for i in range(2000)] + ["Δ/ω.png", "a b/c.jpg", "L\\xff/x.jpg"]
    assert _unit_floats(_path_keys(hasher, paths)) == [sample_key(path) for path in paths]
    assert _path_keys(hasher, paths).tolist() == [sample_key_int(path) for path in paths]


def test_vanished_blobs_are_found_when_the_listing_goes_to_a_temporary_file(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Any] = []
    temporary_file = tempfile.TemporaryFile

    def counted(*args: Any, **kwargs: Any) -> Any:
        opened.append(temporary_file(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(indexing, "_SPILL_BYTES", 64)  # 8 keys: every batch goes to the file
    monkeypatch.setattr(indexing.tempfile, "TemporaryFile", counted)
    root = tmp_path / "src"
    source = _folder(root, {f"L{i % 3}/{i:03d}.png": b"px" for i in range(120)})
    index_source(source, store, now=T1, batch_size=10)
    gone = ["L0/000.png", "L1/061.png", "L2/119.png"]
    for rel in gone:
        (root / rel).unlink()

    report = index_source(source, store, now=T2, batch_size=10)

    assert (report.missing, report.unchanged) == (3, 117)
    assert {p for p, doc in _docs(store, source.uri).items() if doc["status"] == "missing"} == set(gone)
    assert len(opened) == 2 and all(file.closed for file in opened), "one temporary file per run, closed at its end"


def test_the_listing_stays_in_memory_when_no_temporary_file_can_be_written(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(indexing, "_SPILL_BYTES", 64)
    monkeypatch.setattr(indexing.tempfile, "TemporaryFile", refused)
    root = tmp_path / "src"
    source = _folder(root, {f"L{i % 3}/{i:03d}.png": b"px" for i in range(60)})
    index_source(source, store, now=T1, batch_size=10)
    (root / "L0/030.png").unlink()

    report = index_source(source, store, now=T2, batch_size=10)

    assert (report.missing, report.unchanged) == (1, 59)
    assert _docs(store, source.uri)["L0/030.png"]["status"] == "missing"
    assert "keeping them in memory" in caplog.text


class _Generated:
    """``count`` blobs made as they are listed (a generator: the listing is never held), in 10 classes."""

    def __init__(self, count: int) -> None:
        self.count, self.uri = count, f"mem://generated/{count}"

    def check(self) -> None:
        pass

    def path(self, i: int) -> str:
        return f"L{i * 10 // self.count}/{i:07d}.jpg"

    def list(self) -> Iterator[BlobInfo]:
        return (
            BlobInfo(path=self.path(i), size=1 + i % 1000, checksum=f"c{i}", created=FILE_TIME, updated=FILE_TIME)
            for i in range(self.count)
        )

    def read(self, path: str) -> bytes:
        raise SourceError(path)


class _HoldsNothing(MongoStore):
    """The five operations the indexer calls, answered as a store holding an earlier run of ``source`` (when ``indexed``)
    plus ``vanished`` stored blobs no longer listed, with nothing held: a store's own memory is not the indexer's."""

    def __init__(self, source: _Generated, *, indexed: bool, vanished: int = 0) -> None:
        super().__init__(db=cast(Any, object()), description="generated")
        self.source, self.indexed, self.vanished = source, indexed, vanished
        self.written = 0
        self.marked: list[str] = []

    def count_images(self, source: str, *, present_only: bool = False) -> int:
        return self.source.count + self.vanished if self.indexed else 0

    def stored_images(self, source: str, paths: Any, fields: Any) -> dict[str, dict[str, Any]]:
        found = {}
        for label, group in paths.items():
            keys = _unit_floats(_path_keys(_path_hasher(), group))  # sample_key of each (checked above), per batch
            for path, key in zip(group, keys):
                i = int(path[-11:-4])
                found[path] = {
                    "path": path,
                    "label": label,
                    "size": 1 + i % 1000,
                    "checksum": f"c{i}",
                    "created": FILE_TIME,
                    "updated": FILE_TIME,
                    "status": "ok",
                    "reason": None,
                    "sample_key": key,
                }
        return found

    def write_images(self, source: str, new: Any, changed: Any) -> None:
        self.written += len(new) + len(changed)

    def present_images(self, source: str) -> Iterator[dict[str, Any]]:
        for i in range(self.source.count):
            path = self.source.path(i)
            yield {"path": path, "label": path.partition("/")[0]}
        for i in range(self.vanished):
            yield {"path": f"L0/gone{i:05d}.jpg", "label": "L0"}

    def mark_missing(self, source: str, images: Any, fields: Any) -> int:
        self.marked.extend(image["path"] for image in images)
        return len(images)


def _peak(source: _Generated, store: Store) -> tuple[int, IndexReport]:
    gc.collect()
    tracemalloc.start()
    try:
        report = index_source(source, store)
        return tracemalloc.get_traced_memory()[1], report
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_the_indexer_memory_does_not_grow_with_the_listing() -> None:
    """tracemalloc peaks of runs over generated listings 10x apart: a first run (everything new, written to a
    store that keeps nothing here), and an unchanged re-run that finds 50 stored blobs vanished (the earlier
    indexer read every stored path into a list for that, and kept 8 bytes per listed blob)."""
    first = {}
    for source in (_Generated(20_000), _Generated(200_000)):
        store = _HoldsNothing(source, indexed=False)
        first[source.count], report = _peak(source, store)
        assert report.new == store.written == source.count
    again = {}
    for source in (_Generated(5_000), _Generated(50_000)):
        store = _HoldsNothing(source, indexed=True, vanished=50)
        again[source.count], report = _peak(source, store)
        assert (report.unchanged, report.missing, store.written) == (source.count, 50, 0)
        assert store.marked == [f"L0/gone{i:05d}.jpg" for i in range(50)]

    # Holding the listing would take ~300 bytes per blob (a BlobInfo and its strings), and its path hashes
    # alone 8 bytes per blob (1.6 MB for 200,000). The peaks (~1.2 MB: the batches in flight) stay well below
    # the former, and with 10x the blobs they grow by less than the hashes kept in memory before they go to
    # a temporary file (256 KiB).
    tracemalloc.start()
    held = list(_Generated(20_000).list())
    per_blob = tracemalloc.get_traced_memory()[0] / len(held)
    tracemalloc.stop()
    del held
    for peaks in (first, again):
        small, big = sorted(peaks)
        assert peaks[big] < big * per_blob / 5, (peaks, per_blob)
        assert peaks[big] - peaks[small] < 2 * indexing._SPILL_BYTES, peaks


# --- closing mutants that survived scripts/mutation.sh --------------------------------------------------


def test_a_store_that_hands_back_naive_times_still_sees_an_unchanged_source_as_unchanged(tmp_path: Path) -> None:
    # A MongoClient without tz_aware returns naive UTC datetimes: equal to the listed aware ones, not a change.
    db: Any = mongomock.MongoClient(tz_aware=False)["monitor_naive"]
    store = MongoStore(db=db, description="mongomock without tz_aware")
    store.ensure_indexes()
    source = _folder(tmp_path / "src")
    index_source(source, store, now=T1)

    report = index_source(source, store, now=T2)

    assert report.wrote_nothing and report.unchanged == len(LAYOUT)


def test_every_blob_that_comes_back_is_counted_as_reappeared(tmp_path: Path, store: Store) -> None:
    root = tmp_path / "src"
    source = _folder(root)
    index_source(source, store, now=T1)
    for rel in ("Cat/a.jpg", "Dog/c.png", "Cat/notes.txt"):
        (root / rel).unlink()
    assert index_source(source, store, now=T2).missing == 3
    for rel in ("Cat/a.jpg", "Dog/c.png", "Cat/notes.txt"):
        _write(root, rel, LAYOUT[rel])

    back = index_source(source, store, now=T3)

    assert (back.reappeared, back.new, back.missing) == (3, 0, 0)


@pytest.mark.parametrize(
    ("path", "label"), [("Cat/link.jpg", "Cat"), ("Cat/sub/link.jpg", None), ("link.jpg", None), ("/link.jpg", None)]
)
def test_a_symlink_is_unusable_and_keeps_its_folder_as_label_only_when_well_placed(
    path: str, label: str | None
) -> None:
    assert classify(path, 10, symlink=True) == (label, "unusable", "symlink")


def test_a_size_listed_as_text_is_stored_as_a_number(store: Store) -> None:
    # The GCS JSON API lists sizes as strings.
    listing = _Listing([BlobInfo("Cat/a.jpg", "2048", "c1", T1, T1), BlobInfo("Cat/b.jpg", "0", "c2", T1, T1)])  # type: ignore[arg-type]

    index_source(listing, store, now=T2)

    docs = _docs(store, listing.uri)
    assert (docs["Cat/a.jpg"]["size"], docs["Cat/a.jpg"]["status"]) == (2048, "ok")
    assert (docs["Cat/b.jpg"]["size"], docs["Cat/b.jpg"]["reason"]) == (0, "zero_bytes")


class _FillsUp(io.FileIO):
    """An unnamed temporary file on a disk that fills up: the first writes go through, then ENOSPC."""

    def __init__(self, accepted: int) -> None:
        fd, path = tempfile.mkstemp(prefix="monitor-test-keys-")
        os.unlink(path)
        super().__init__(fd, "r+b")
        self.accepted = accepted

    def write(self, data: Any) -> int:
        if self.accepted <= 0:
            raise OSError(28, "No space left on device")
        self.accepted -= 1
        return super().write(data)


def test_keys_written_before_the_disk_filled_up_still_count_as_listed(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexing, "_SPILL_BYTES", 64)  # 8 keys a spill
    monkeypatch.setattr(indexing.tempfile, "TemporaryFile", lambda *args, **kwargs: _FillsUp(accepted=3))
    root = tmp_path / "src"
    source = _folder(root, {f"L{i % 3}/{i:03d}.png": b"px" for i in range(120)})
    index_source(source, store, now=T1, batch_size=10)
    (root / "L1/061.png").unlink()

    report = index_source(source, store, now=T2, batch_size=10)

    # Some keys reached the file, the rest stayed in memory: every listed blob is found in one or the other.
    assert (report.missing, report.unchanged) == (1, 119)
    assert [p for p, doc in _docs(store, source.uri).items() if doc["status"] == "missing"] == ["L1/061.png"]
