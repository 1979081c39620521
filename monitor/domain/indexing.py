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
  of this run's listing, then mark them ``missing`` / ``vanished`` with one ``update_many`` per batch.

The run's memory does not grow with the listing: at most two batches are in flight, and the
listing's path hashes (8 bytes per blob, kept only for the check above) go to an unnamed
temporary file once they pass 256 KiB; the check sorts that file in place through a memory map
and looks each stored path up in it. Only the vanished documents themselves are held.

The per-blob work is one tight loop per batch in the listing thread (hash, classify, one tuple
per blob); the 64-bit keys become sampling keys for the whole batch at once (numpy), document
dicts are built only for blobs that are new or changed, and an unchanged blob costs one tuple
comparison with its stored document.

A blob that comes back is restored (``reappeared``). Bytes are never read here: decoding
problems are found at predict time.

The sample key hashes the path inside the source only (:func:`sample_key`), never the source's URI, so a copy
of a source elsewhere draws the same samples. Documents stored when the key hashed the URI too are re-keyed by
the next run: each is an update of its ``sample_key`` (counted in ``updated``, and logged), nothing else changes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from operator import itemgetter
from typing import Any, BinaryIO, TypeVar, cast

import numpy as np

from monitor.core.errors import SourceError
from monitor.core.image_times import ImageTime, retimed
from monitor.core.sources import SKIP_NOT_UTF8, SKIP_SPECIAL, BlobInfo, ImageSource
from monitor.store import STATUS_MISSING, STATUS_OK, STATUS_UNUSABLE, Store

log = logging.getLogger(__name__)

#: File extensions accepted as images (compared lower-cased).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})

REASON_WRONG_DEPTH = "wrong_depth"
REASON_NOT_AN_IMAGE = "not_an_image_extension"
REASON_ZERO_BYTES = "zero_bytes"
REASON_VANISHED = "vanished"
#: A stored image listed under another label now (MONITOR_LABEL_MAP changed): its new label's document replaces it.
REASON_RELABELLED = "relabelled"
REASON_SYMLINK = "symlink"
#: A name that is not UTF-8 (no store can keep it): recorded under its ``\x..``-escaped path.
REASON_NOT_UTF8 = SKIP_NOT_UTF8
#: A FIFO, socket or device in a local folder: never opened.
REASON_NOT_A_FILE = SKIP_SPECIAL

T = TypeVar("T")

# Fields that the listing determines; a stored document differing in any of them is rewritten.
_LISTED_FIELDS = ("label", "size", "checksum", "created", "updated", "status", "reason", "sample_key")
# A listed blob's row: the listed fields but ``sample_key``, which comes per batch (see _Listed).
_ROW_FIELDS = _LISTED_FIELDS[:-1]
_stored_row = itemgetter(*_ROW_FIELDS)

_UTC = dt.UTC
_TWO_TO_64 = float(2**64)
#: Bytes of listed path hashes kept in memory before they go to the temporary file (32,768 blobs).
_SPILL_BYTES = 1 << 18


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


#: The domain tag of the sampling key: the key is ``H("key", path)`` in :mod:`monitor.domain.sampling`'s notation.
_KEY_TAG = "key\x1f"


def sample_key_int(path: str) -> int:
    """A stable 64-bit hash of the image's path inside its source: the identity used for sampling and vanished-blob
    detection (within one source). It does not depend on where the source lives (a bucket's copy, another clone's
    folder), so the same images draw the same samples wherever they are."""
    digest = hashlib.blake2b(f"{_KEY_TAG}{path}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def sample_key(path: str) -> float:
    """The image's sampling key: a float in [0, 1), uniform and independent of the image's content.

    ``blake2b`` behaves as a random function, so keys of distinct paths are (pseudo-)independent
    uniforms; the key never changes while the path exists, so the sample of a date is reproducible.
    """
    return sample_key_int(path) / 2**64


def _path_hasher() -> Any:
    """A blake2b state fed with the key's tag: ``copy()`` + ``update(path)`` hashes as :func:`sample_key_int` does,
    without parsing the constructor's keywords per blob (about half the cost)."""
    return hashlib.blake2b(_KEY_TAG.encode(), digest_size=8)


def _path_keys(hasher: Any, paths: Iterable[str]) -> np.ndarray:
    """:func:`sample_key_int` of each path (native uint64), from a :func:`_path_hasher`."""
    copy = hasher.copy
    digests = []
    for path in paths:
        h = copy()
        h.update(path.encode())
        digests.append(h.digest())
    return _keys_of(digests)


def _keys_of(digests: list[bytes]) -> np.ndarray:
    """The 8-byte big-endian digests as native uint64 keys."""
    return np.frombuffer(b"".join(digests), dtype=">u8").astype(np.uint64)


def _unit_floats(keys: np.ndarray) -> list[float]:
    """``key / 2**64`` for each uint64 key, as Python floats, equal to :func:`sample_key`'s.

    Converting a uint64 to float64 rounds to nearest (ties to even), as Python's exact ``int / int`` does,
    and dividing by a power of two is exact, so both give the same float (the tests check the ties).
    """
    return (keys / _TWO_TO_64).tolist()  # type: ignore[no-any-return]


def classify(
    path: str, size: int, symlink: bool = False, skip: str | None = None
) -> tuple[str | None, str, str | None]:
    """``(label, status, reason)`` for a listed blob: the rules that make an image usable.

    A symbolic link (local folders) is ``symlink``: never followed, so never read. An object the listing
    already knows is none (``skip``: a FIFO or device, a name not UTF-8, a folder too deep) has that reason;
    both keep their folder as label only when well placed. The label is
    the first path segment when the path is exactly ``<Label>/<file>``; any other depth is
    ``wrong_depth`` (no label). Then the extension must be an image's, and the blob must not be empty.

    This is the reference; the indexer applies the same rules inline per batch (:func:`_listed`).
    """
    parts = path.split("/")
    if symlink or skip:
        return (
            (parts[0] if len(parts) == 2 and parts[0] else None),
            STATUS_UNUSABLE,
            REASON_SYMLINK if symlink else skip,
        )
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
    if value.tzinfo is not dt.UTC:
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    extra = value.microsecond % 1000
    return value.replace(microsecond=value.microsecond - extra) if extra else value


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


Row = tuple[Any, ...]  # the values of _ROW_FIELDS, in that order


@dataclass
class _Listed:
    """One batch as listed: parallel lists, one entry per blob (no dict per blob)."""

    paths: list[str]
    rows: list[Row]
    digests: list[bytes]  # sample_key_int of each path: the sampling key and the vanished-detection identity
    usable_labels: list[str]  # the label of each usable blob (counted per batch)
    unusable_reasons: list[str]  # the reason of each unusable blob

    @property
    def labels(self) -> list[str | None]:
        return [row[0] for row in self.rows]


def _listed(blobs: Iterable[BlobInfo], hasher: Any, label_map: Mapping[str, str] | None = None) -> _Listed:
    """Hash and classify one batch in one loop: the per-blob work of a run, kept to what cannot be shared.

    Same rules as :func:`classify` (inlined: a call per blob costs as much as the rules) and :func:`_bson_time`
    (called only for the timestamps that need it); ``tests/domain/test_indexing.py`` checks both agree on odd paths.
    """
    paths: list[str] = []
    rows: list[Row] = []
    digests: list[bytes] = []
    usable: list[str] = []
    unusable: list[str] = []
    copy, extensions = hasher.copy, IMAGE_EXTENSIONS
    for blob in blobs:
        path, size = blob.path, blob.size
        if type(size) is not int:
            size = int(size)
        h = copy()
        skip = blob.skip
        try:
            h.update(path.encode())
        except UnicodeEncodeError:  # a source that hands over an OS name as it came (surrogate escapes)
            path, skip = _escaped(path), REASON_NOT_UTF8
            h.update(path.encode())
        digests.append(h.digest())
        label: str | None
        label, slash, name = path.partition("/")
        if blob.symlink or skip:
            label, status, reason = classify(path, size, blob.symlink, skip)
            unusable.append(cast(str, reason))
        elif not label or not name or "/" in name:  # no slash leaves name empty
            label, status, reason = None, STATUS_UNUSABLE, REASON_WRONG_DEPTH
            unusable.append(REASON_WRONG_DEPTH)
        else:
            # A name ending in its only dot has the suffix ".", which is no image's: no length test needed.
            dot = name.rfind(".")
            if dot <= 0 or ((suffix := name[dot:]) not in extensions and suffix.lower() not in extensions):
                status, reason = STATUS_UNUSABLE, REASON_NOT_AN_IMAGE
                unusable.append(REASON_NOT_AN_IMAGE)
            elif size == 0:
                status, reason = STATUS_UNUSABLE, REASON_ZERO_BYTES
                unusable.append(REASON_ZERO_BYTES)
            else:
                status, reason = STATUS_OK, None
                usable.append(label_map.get(label, label) if label_map else label)
        if label_map and label is not None:
            # The model's name for this folder (MONITOR_LABEL_MAP), usable or not; unmapped folders keep theirs.
            label = label_map.get(label, label)
        created = listed_created = blob.created
        if created.microsecond % 1000 or created.tzinfo is not _UTC:
            created = _bson_time(created)
        updated = blob.updated
        if updated is listed_created:
            updated = created
        elif updated.microsecond % 1000 or updated.tzinfo is not _UTC:
            updated = _bson_time(updated)
        paths.append(path)
        rows.append((label, size, blob.checksum, created, updated, status, reason))
    return _Listed(paths, rows, digests, usable, unusable)


def _escaped(path: str) -> str:
    """``path`` with what is not UTF-8 as ``\\x..`` escapes (the bytes of an OS name), so it can be stored and shown."""
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = path.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def _fields(row: Row, key: float) -> dict[str, Any]:
    """The listed fields of a blob as a document's fields (in _LISTED_FIELDS order)."""
    label, size, checksum, created, updated, status, reason = row
    return {
        "label": label,
        "size": size,
        "checksum": checksum,
        "created": created,
        "updated": updated,
        "status": status,
        "reason": reason,
        "sample_key": key,
    }


def _document(uri: str, path: str, row: Row, key: float, run_time: dt.datetime) -> dict[str, Any]:
    """A new blob's document (fields in the order they are stored)."""
    label, size, checksum, created, updated, status, reason = row
    return {
        "source": uri,
        "path": path,
        "label": label,
        "size": size,
        "checksum": checksum,
        "created": created,
        "updated": updated,
        "status": status,
        "reason": reason,
        "sample_key": key,
        "first_seen": run_time,
        "last_seen": run_time,
    }


def _same(stored: dict[str, Any], fields: dict[str, Any]) -> bool:
    for name in _LISTED_FIELDS:
        old, new = stored.get(name), fields[name]
        # Stores without tz_aware hand back naive UTC datetimes: normalise only when they differ.
        if old != new and not (isinstance(old, dt.datetime) and _bson_time(old) == new):
            return False
    return True


def _unchanged(stored: dict[str, Any], row: Row, key: float) -> bool:
    """True when the stored document holds the listed values: one tuple comparison, else :func:`_same`'s rules."""
    try:
        if stored["sample_key"] == key and _stored_row(stored) == row:
            return True
    except KeyError:
        pass
    return _same(stored, _fields(row, key))


class _ListedKeys:
    """The 64-bit path hashes of this run's listing, for vanished-blob detection, in bounded memory.

    Keys gather in memory up to ``_SPILL_BYTES`` and then go to an unnamed temporary file (removed when
    closed, or by the OS if the process dies), 8 bytes per blob on disk. :meth:`contains` sorts the file
    in place through a memory map (pages the OS may drop, not the process's heap) and binary-searches it.
    Where the temporary folder cannot be written, the keys stay in memory instead (with a warning).
    """

    def __init__(self) -> None:
        self._memory = bytearray()  # keys not in the file
        self._file: BinaryIO | None = None
        self._on_file = 0  # keys in the file
        self._spill = True  # False once writing the file failed
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, keys: np.ndarray) -> None:
        self._memory += keys.tobytes()
        if self._spill and len(self._memory) >= _SPILL_BYTES:
            self._write()

    def _write(self) -> None:
        try:
            if self._file is None:
                self._file = cast(BinaryIO, tempfile.TemporaryFile(prefix="monitor-index-keys-", buffering=0))
            data, written = self._memory, 0
            while written < len(data):  # unbuffered: what write() returns is on disk
                count = self._file.write(data[written:] if written else data)
                if not count:
                    raise OSError(f"wrote nothing to {self._file.name!r}")
                written += count
            self._on_file += len(data) // 8
            self._memory = bytearray()
        except OSError as exc:
            log.warning("cannot write the listing's path hashes to a temporary file (%s): keeping them in memory", exc)
            self._spill = False
            # Whole keys that reached the file count there; this chunk stays in memory too (a key in both is harmless).
            self._on_file = self._file_size() // 8

    def _file_size(self) -> int:
        try:
            return os.fstat(self._file.fileno()).st_size if self._file is not None else 0
        except OSError:
            return 0

    def _sorted_keys(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sorted is None:
            on_file = np.zeros(0, dtype=np.uint64)
            if self._file is not None and self._on_file:
                on_file = np.memmap(self._file, dtype=np.uint64, mode="r+", shape=(self._on_file,))
                on_file.sort()  # in place, in the file's pages
            in_memory = np.frombuffer(self._memory, dtype=np.uint64).copy()
            self._memory = bytearray()
            in_memory.sort()
            self._sorted = (on_file, in_memory)
        return self._sorted

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """A boolean per key: was it listed?"""
        found = np.zeros(len(keys), dtype=bool)
        for listed in self._sorted_keys():
            if len(listed):
                at = np.searchsorted(listed, keys)
                np.minimum(at, len(listed) - 1, out=at)
                found |= listed[at] == keys
        return found

    def close(self) -> None:
        self._sorted = None  # the last reference to the memory map: unmapped here
        self._memory = bytearray()
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class _BatchResult:
    """What syncing one batch with the store did (merged into the report by the listing thread)."""

    size: int
    new: int = 0
    updated: int = 0
    reappeared: int = 0
    unchanged: int = 0
    matched_present: int = 0  # listed blobs whose stored document was present (not missing)
    rekeyed: int = 0  # of ``updated``: only the sample key changed (a document keyed with the source's location)


def _sync_batch(
    store: Store, uri: str, batch: _Listed, run_time: dt.datetime, look_up: bool, listed_keys: _ListedKeys
) -> _BatchResult:
    """Look up one batch's stored documents (one query) and write what is new or changed (one bulk write)."""
    paths, rows = batch.paths, batch.rows
    result = _BatchResult(size=len(paths))
    keys = _keys_of(batch.digests)
    listed_keys.add(keys)
    sample_keys = _unit_floats(keys)
    if not look_up:  # the first run over a source: everything is new (_document, inlined: this is the hot path)
        result.new = len(paths)
        store.write_images(
            uri,
            [
                {
                    "source": uri,
                    "path": path,
                    "label": label,
                    "size": size,
                    "checksum": checksum,
                    "created": created,
                    "updated": updated,
                    "status": status,
                    "reason": reason,
                    "sample_key": key,
                    "first_seen": run_time,
                    "last_seen": run_time,
                }
                for path, (label, size, checksum, created, updated, status, reason), key in zip(
                    paths, rows, sample_keys
                )
            ],
            [],
        )
        return result

    labels = batch.labels
    distinct = set(labels)
    by_label: dict[str | None, list[str]]
    if len(distinct) == 1:  # sources list in order, so a batch is mostly one class
        by_label = {labels[0]: paths}
    else:
        by_label = {}
        for path, label in zip(paths, labels):
            by_label.setdefault(label, []).append(path)
    existing = store.stored_images(uri, by_label, _LISTED_FIELDS).get
    new: list[dict[str, Any]] = []
    changed: list[tuple[dict[str, Any], dict[str, Any]]] = []
    matched = 0
    for path, row, key in zip(paths, rows, sample_keys):
        stored = existing(path)
        if stored is None:
            new.append(_document(uri, path, row, key, run_time))
            continue
        if stored.get("status") == STATUS_MISSING:
            result.reappeared += 1
        else:
            matched += 1
            if _unchanged(stored, row, key):
                continue
            result.updated += 1
            result.rekeyed += _same(stored, _fields(row, stored.get("sample_key", key)))
        changed.append(
            (
                {"source": uri, "path": path, "label": row[0]},
                {"$set": {**_fields(row, key), "last_seen": run_time}, "$unset": {"missing_since": ""}},
            )
        )
    result.new = len(new)
    result.matched_present = matched
    result.unchanged = matched - result.updated
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
    label_map: Mapping[str, str] | None = None,
    image_time: ImageTime | None = None,
) -> IndexReport:
    """List ``source`` and bring its documents in ``store.images`` up to date; return what changed.

    ``image_time`` (:mod:`monitor.core.image_times`) dates the images where their object time does not tell when
    they were collected. ``label_map`` (folder -> model label, :mod:`monitor.core.labels`) names the class of each usable image; a
    changed map relabels the images it moves at the next run (their listed fields changed).

    ``now`` is the run time written to ``first_seen`` / ``last_seen`` (default: the current UTC
    time). ``progress`` is called after each batch with the number of blobs just processed (an
    increment, as rich's ``advance`` expects). ``batch_size`` blobs are looked up and written per
    round trip. A source with no objects at all raises :class:`SourceError` and changes nothing
    (a wrong prefix must not mark a whole bucket as vanished). Store failures raise :class:`StoreError`.

    The listing and the store's round trips overlap: while one worker thread looks up and writes
    batch k, this thread lists and classifies batch k+1 (at most two batches in flight), so on
    a networked store and bucket the run takes about as long as the slower of the two, not their
    sum. Batches hold distinct paths, so their store work is independent. Memory stays flat in
    the size of the listing (see the module's docstring).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    run_time = _bson_time(now or dt.datetime.now(dt.UTC))
    uri = source.uri
    report = IndexReport(source=uri)
    unusable: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    matched_present = rekeyed = 0

    # No separate source.check(): list() raises the same SourceError for a missing or unreachable
    # source, and a probe would cost one more round trip (on the emulator, a whole listing).
    stored_total = store.count_images(uri)
    present_before = store.count_images(uri, present_only=True) if stored_total else 0

    def merge(done: Future[_BatchResult]) -> None:
        nonlocal matched_present, rekeyed
        result = done.result()  # re-raises the worker's StoreError here
        report.listed += result.size
        report.new += result.new
        report.updated += result.updated
        report.reappeared += result.reappeared
        report.unchanged += result.unchanged
        matched_present += result.matched_present
        rekeyed += result.rekeyed
        if progress is not None:
            progress(result.size)

    hasher = _path_hasher()
    listed_keys = _ListedKeys()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-store")
    in_flight: deque[Future[_BatchResult]] = deque()
    try:
        try:
            # The date each image was collected (MONITOR_IMAGE_TIME), where not the object's own time.
            listing = iter(retimed(source.list(), image_time) if image_time else source.list())
            # Each blob is used as it is listed and dropped at once: a batch of live BlobInfo objects would
            # be walked, and promoted, by every collection of the cyclic garbage collector meanwhile.
            while (batch := _listed(islice(listing, batch_size), hasher, label_map)).paths:
                labels.update(batch.usable_labels)
                unusable.update(batch.unusable_reasons)
                # The first run over a source has nothing to look up.
                in_flight.append(pool.submit(_sync_batch, store, uri, batch, run_time, stored_total > 0, listed_keys))
                del batch  # two batches in flight at most: this thread holds none of them while it waits
                while len(in_flight) > 1:
                    merge(in_flight.popleft())
            while in_flight:
                merge(in_flight.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

        if report.listed == 0:
            raise SourceError(f"source {uri} is empty: it holds no objects (check the bucket prefix or folder)")

        if present_before - matched_present > 0:
            report.missing = _mark_vanished(store, uri, listed_keys, run_time, batch_size, label_map)
    finally:
        listed_keys.close()

    if rekeyed:
        # Keys once hashed the source's location too; a store written then is re-keyed once, counted as updated.
        log.info(
            "%s: %d of the %d updated documents got only a new sample key (location-independent)",
            uri,
            rekeyed,
            report.updated,
        )
    report.unusable = dict(sorted(unusable.items()))
    report.labels = dict(sorted(labels.items()))
    return report


def _mark_vanished(
    store: Store,
    uri: str,
    listed_keys: _ListedKeys,
    run_time: dt.datetime,
    batch_size: int,
    label_map: Mapping[str, str] | None = None,
) -> int:
    """Mark stored, present documents of ``uri`` whose path was not listed as missing; return how many.

    A document whose path was listed but under another label than it is stored with (the label map changed since)
    is marked missing as ``relabelled``: this run wrote the image under its new label. Streams the stored paths a
    batch at a time and keeps only those; they are written once the read is over (the store is not changed under
    a read in progress).
    """
    hasher = _path_hasher()
    vanished: list[dict[str, Any]] = []
    relabelled: list[dict[str, Any]] = []
    mapping = label_map or {}
    for chunk in _batched(store.present_images(uri), batch_size):
        gone = ~listed_keys.contains(_path_keys(hasher, (doc["path"] for doc in chunk)))
        for doc, lost in zip(chunk, gone.tolist()):
            if lost:
                vanished.append(doc)
                continue
            label = doc.get("label")
            folder = str(doc["path"]).partition("/")[0]
            if label is not None and label != mapping.get(folder, folder):
                relabelled.append(doc)
    missing = store.mark_missing(
        uri, vanished, {"status": STATUS_MISSING, "reason": REASON_VANISHED, "missing_since": run_time}
    )
    if relabelled:
        store.mark_missing(
            uri, relabelled, {"status": STATUS_MISSING, "reason": REASON_RELABELLED, "missing_since": run_time}
        )
    return missing
