"""Index a source into the ``images`` collection: incremental, idempotent bulk upserts; vanished blobs marked missing.

One document per blob, keyed by (source, path); see docs/ARCHITECTURE.md for the fields.
A run lists the source once, in batches: for each batch it looks up the stored documents of
those paths (one query, served by the unique ``source_path`` index), and writes only what is
new or changed, as one unordered ``bulk_write``. A blob listed unchanged costs a lookup and no
write, so a second run over an unchanged source writes nothing at all (not even ``last_seen``):
``last_seen`` is the run time at which the document was last written (appeared, changed or
came back), and vanished blobs are found without touching every document:

- before listing, count the source's present (not ``missing``) documents;
- while listing, count how many listed blobs matched a present document;
- if the two differ, some stored blobs were not listed: stream the stored paths of the source
  (projection on ``path`` only) and keep those whose 64-bit path hash is not among the hashes
  of this run's listing (a sorted array, 8 bytes per blob, so millions of blobs fit in memory),
  then mark them ``missing`` / ``vanished`` with one ``update_many`` per batch.

A blob that comes back is restored (``reappeared``). Bytes are never read here: decoding
problems are found at predict time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

import numpy as np

from monitor.errors import SourceError
from monitor.sources import BlobInfo, ImageSource
from monitor.storage import STATUS_MISSING, STATUS_OK, STATUS_UNUSABLE, Store

#: File extensions accepted as images (compared lower-cased).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})

REASON_WRONG_DEPTH = "wrong_depth"
REASON_NOT_AN_IMAGE = "not_an_image_extension"
REASON_ZERO_BYTES = "zero_bytes"
REASON_VANISHED = "vanished"
REASON_SYMLINK = "symlink"

T = TypeVar("T")

# Fields that the listing determines; a stored document differing in any of them is rewritten.
_LISTED_FIELDS = ("label", "size", "checksum", "created", "updated", "status", "reason", "sample_key")


@dataclass
class IndexReport:
    """What one index run saw and did. Counts are of blobs (documents), per category."""

    source: str
    listed: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    missing: int = 0  # stored blobs that vanished in this run (marked status missing)
    reappeared: int = 0  # blobs marked missing before, listed again in this run
    unusable: dict[str, int] = field(default_factory=dict)  # reason -> listed blobs that cannot be sampled
    labels: dict[str, int] = field(default_factory=dict)  # label -> listed usable images

    @property
    def written(self) -> int:
        """Documents written by this run."""
        return self.new + self.updated + self.missing + self.reappeared

    @property
    def wrote_nothing(self) -> bool:
        """True when the run found nothing new, changed, vanished or back: the store was left untouched."""
        return self.written == 0

    def summary(self) -> str:
        """One line a person can read."""
        unusable = ", ".join(f"{reason} {count}" for reason, count in sorted(self.unusable.items())) or "none"
        return (
            f"{self.source}: listed {self.listed}, new {self.new}, updated {self.updated}, unchanged {self.unchanged}, "
            f"vanished {self.missing}, reappeared {self.reappeared}; {len(self.labels)} labels; unusable: {unusable}"
        )


def sample_key_int(source_uri: str, path: str) -> int:
    """A stable 64-bit hash of (source, path): the identity used for sampling and vanished-blob detection."""
    digest = hashlib.blake2b(f"{source_uri}\n{path}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def sample_key(source_uri: str, path: str) -> float:
    """The image's sampling key: a float in [0, 1), uniform and independent of the image's content.

    ``blake2b`` behaves as a random function, so keys of distinct paths are (pseudo-)independent
    uniforms; the key never changes while the path exists, so the sample of a date is reproducible.
    """
    return sample_key_int(source_uri, path) / 2**64


def classify(path: str, size: int, symlink: bool = False) -> tuple[str | None, str, str | None]:
    """``(label, status, reason)`` for a listed blob: the rules that make an image usable.

    A symbolic link (local folders) is ``symlink``: never followed, so never read. The label is
    the first path segment when the path is exactly ``<Label>/<file>``; any other depth is
    ``wrong_depth`` (no label). Then the extension must be an image's, and the blob must not be empty.
    """
    parts = path.split("/")
    if symlink:
        return (parts[0] if len(parts) == 2 and parts[0] else None), STATUS_UNUSABLE, REASON_SYMLINK
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None, STATUS_UNUSABLE, REASON_WRONG_DEPTH
    label, name = parts
    # PurePosixPath(name).suffix, without building a path object per blob (this runs for every one).
    dot = name.rfind(".")
    suffix = name[dot:].lower() if 0 < dot < len(name) - 1 else ""
    if suffix not in IMAGE_EXTENSIONS:
        return label, STATUS_UNUSABLE, REASON_NOT_AN_IMAGE
    if size == 0:
        return label, STATUS_UNUSABLE, REASON_ZERO_BYTES
    return label, STATUS_OK, None


def _bson_time(value: dt.datetime) -> dt.datetime:
    """UTC, to the millisecond: what MongoDB stores, so comparisons with stored values are exact."""
    if value.tzinfo is not dt.timezone.utc:
        value = value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    extra = value.microsecond % 1000
    return value.replace(microsecond=value.microsecond - extra) if extra else value


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _fields(source_uri: str, blob: BlobInfo) -> tuple[dict[str, Any], int]:
    label, status, reason = classify(blob.path, blob.size, blob.symlink)
    key = sample_key_int(source_uri, blob.path)
    created = _bson_time(blob.created)
    return {
        "label": label,
        "size": int(blob.size),
        "checksum": blob.checksum,
        "created": created,
        "updated": created if blob.updated is blob.created else _bson_time(blob.updated),
        "status": status,
        "reason": reason,
        "sample_key": key / 2**64,
    }, key


def _same(stored: dict[str, Any], fields: dict[str, Any]) -> bool:
    for name in _LISTED_FIELDS:
        old, new = stored.get(name), fields[name]
        # Stores without tz_aware hand back naive UTC datetimes: normalise only when they differ.
        if old != new and not (isinstance(old, dt.datetime) and _bson_time(old) == new):
            return False
    return True


@dataclass
class _BatchResult:
    """What syncing one batch with the store did (merged into the report by the listing thread)."""

    size: int
    new: int = 0
    updated: int = 0
    reappeared: int = 0
    unchanged: int = 0
    matched_present: int = 0  # listed blobs whose stored document was present (not missing)


def _sync_batch(
    store: Store, uri: str, batch: list[tuple[str, dict[str, Any]]], run_time: dt.datetime, look_up: bool
) -> _BatchResult:
    """Look up one batch's stored documents (one query) and write what is new or changed (one bulk write)."""
    result = _BatchResult(size=len(batch))
    existing: dict[str, dict[str, Any]] = {}
    if look_up:
        by_label: dict[str | None, list[str]] = {}
        for path, fields in batch:
            by_label.setdefault(fields["label"], []).append(path)
        existing = store.stored_images(uri, by_label, _LISTED_FIELDS)
    new: list[dict[str, Any]] = []
    changed: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for path, fields in batch:
        stored = existing.get(path)
        doc = {"source": uri, "path": path, "label": fields["label"]}
        if stored is None:
            result.new += 1
            new.append({**doc, **fields, "first_seen": run_time, "last_seen": run_time})
            continue
        if stored.get("status") == STATUS_MISSING:
            result.reappeared += 1
        else:
            result.matched_present += 1
            if _same(stored, fields):
                result.unchanged += 1
                continue
            result.updated += 1
        changed.append((doc, {"$set": {**fields, "last_seen": run_time}, "$unset": {"missing_since": ""}}))
    if new or changed:
        store.write_images(uri, new, changed)
    return result


def index_source(
    source: ImageSource,
    store: Store,
    *,
    now: dt.datetime | None = None,
    progress: Callable[[int], None] | None = None,
    batch_size: int = 1000,
) -> IndexReport:
    """List ``source`` and bring its documents in ``store.images`` up to date; return what changed.

    ``now`` is the run time written to ``first_seen`` / ``last_seen`` (default: the current UTC
    time). ``progress`` is called after each batch with the number of blobs just processed (an
    increment, as rich's ``advance`` expects). ``batch_size`` blobs are looked up and written per
    round trip. A source with no objects at all raises :class:`SourceError` and changes nothing
    (a wrong prefix must not mark a whole bucket as vanished). Store failures raise :class:`StoreError`.

    The listing and the store's round trips overlap: while one worker thread looks up and writes
    batch k, this thread lists and classifies batch k+1 (at most two batches in flight), so on
    a networked store and bucket the run takes about as long as the slower of the two, not their
    sum. Batches hold distinct paths, so their store work is independent.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    run_time = _bson_time(now or dt.datetime.now(dt.timezone.utc))
    uri = source.uri
    report = IndexReport(source=uri)
    unusable: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    listed_keys = array("Q")
    matched_present = 0

    # No separate source.check(): list() raises the same SourceError for a missing or unreachable
    # source, and a probe would cost one more round trip (on the emulator, a whole listing).
    stored_total = store.count_images(uri)
    present_before = store.count_images(uri, present_only=True) if stored_total else 0

    def merge(done: Future[_BatchResult]) -> None:
        nonlocal matched_present
        result = done.result()  # re-raises the worker's StoreError here
        report.listed += result.size
        report.new += result.new
        report.updated += result.updated
        report.reappeared += result.reappeared
        report.unchanged += result.unchanged
        matched_present += result.matched_present
        if progress is not None:
            progress(result.size)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-store")
    in_flight: deque[Future[_BatchResult]] = deque()
    try:
        for blobs in _batched(source.list(), batch_size):
            batch: list[tuple[str, dict[str, Any]]] = []
            for blob in blobs:
                fields, key = _fields(uri, blob)
                listed_keys.append(key)
                if fields["status"] == STATUS_OK:
                    labels[fields["label"]] += 1
                else:
                    unusable[fields["reason"]] += 1
                batch.append((blob.path, fields))
            # The first run over a source has nothing to look up.
            in_flight.append(pool.submit(_sync_batch, store, uri, batch, run_time, stored_total > 0))
            while len(in_flight) > 1:
                merge(in_flight.popleft())
        while in_flight:
            merge(in_flight.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    if report.listed == 0:
        raise SourceError(f"source {uri} is empty: it holds no objects (check the bucket prefix or folder)")

    if present_before - matched_present > 0:
        report.missing = _mark_vanished(store, uri, listed_keys, run_time, batch_size)

    report.unusable = dict(sorted(unusable.items()))
    report.labels = dict(sorted(labels.items()))
    return report


def _mark_vanished(store: Store, uri: str, listed_keys: array, run_time: dt.datetime, batch_size: int) -> int:
    """Mark stored, present documents of ``uri`` whose path was not listed as missing; return how many."""
    listed = np.frombuffer(listed_keys, dtype=np.uint64)
    vanished: list[dict[str, Any]] = []
    # Read to the end before writing: the store is not changed under a read in progress.
    for chunk in _batched(list(store.present_images(uri)), batch_size):
        keys = np.fromiter((sample_key_int(uri, doc["path"]) for doc in chunk), dtype=np.uint64, count=len(chunk))
        gone = ~np.isin(keys, listed)
        vanished.extend(doc for doc, is_gone in zip(chunk, gone) if is_gone)
    return store.mark_missing(uri, vanished, {"status": STATUS_MISSING, "reason": REASON_VANISHED, "missing_since": run_time})
