"""The embedded store's files: mongomock collections kept on disk as small BSON files, one per partition, behind a manifest.

One concept: the partitions on disk (loading, commits, backups, restore, the writer's lock); the store's
operations over them are :mod:`monitor.store.embedded_store`.

Why this shape (measured in ``benchmarks/bench_store.py``):

- mongomock scans every document of a collection for every query and every upsert, and copies what it
  returns, so a collection must stay small for its queries to be fast. Each logical collection is therefore
  split into **partitions** by the fields every query of the service names (images by source and label,
  history by model and date, samples by source and date, runs by source, alerts by model:
  :data:`monitor.store.base.COLLECTIONS`); one
  partition is one mongomock collection and one file. A command loads only the partitions its queries
  touch, when they first touch them: ``monitor health`` reads a day's rows, not a year of history, and
  nothing of the image index.
- Files are BSON (what MongoDB itself writes): pymongo's C codec reads 100k documents in about 0.4 s,
  five times faster than extended JSON, and dates, ids and floats round-trip exactly.
- **Commits.** A writer commits at the end of each stage (and after each alert send): every changed
  partition is written to a *new* file (``<partition>.<commit>.bson``), then ``manifest.json``, which names
  the file of every partition, is replaced atomically. A reader reads the manifest, then the files it names,
  so it sees one whole commit or the one before, never a mix; it takes no lock and writes nothing.
- **Backups.** The three previous manifests are kept (``manifest.json.1`` .. ``.3``) with every file they
  name, so the last three commits stay restorable as wholes. An unreadable or wrong-shaped file is one
  :class:`~monitor.core.errors.StoreError` that names it and the backup; ``monitor store restore`` goes back to
  the newest commit whose files all read.
- **Bounded reads.** A reader opens only regular files inside the store folder (never a device, FIFO or
  socket, never a link: :func:`monitor.core.files.read_bounded`), a partition file only under the name the
  writer gives it and no larger than the size the manifest records for it, and the manifest only as
  JSON of bounded size and depth with finite numbers. A damaged store cannot make a reader hang or
  grow: it is refused at once, with the way back.
- **One writer.** A writer holds ``.lock`` for as long as it is open (one command or one Airflow task);
  a second writer waits, and says once what it is waiting for (the holder's pid, command and start).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
import mongomock
from bson.codec_options import CodecOptions
from bson.errors import BSONError
from filelock import FileLock, Timeout
from pymongo.collection import Collection

from monitor.core import faults
from monitor.core.errors import StoreError, first_line
from monitor.core.files import atomic_write, parse_json_bounded, read_bounded, remove_leftovers
from monitor.store.base import COLLECTIONS, Key, partition_key

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
BACKUPS = 3
_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=dt.UTC)
#: The largest manifest a reader reads (about 250,000 partitions); a writer refuses to write a larger one.
MANIFEST_MAX_BYTES = 64 << 20
#: The largest partition file read when the manifest records no size for it (manifests of earlier versions).
PART_MAX_BYTES = 1 << 30
#: The nesting of a manifest: {"parts": [{"key": [...]}]}.
MANIFEST_MAX_DEPTH = 4
#: Decoded documents a store keeps for a second read of their partition (the least recently read dropped first).
#: Bounded by documents, not files: a year of 1,000 classes' history is 730,000 documents, GBs as dicts, and a reader
#: that keeps its own copy (the dashboard's columns) reads each once. A health run's 14-day window (14,000 rows at
#: 1,000 classes) or an image index of 40,000 is read again from memory; 50,000 health rows are about 100 MB.
DECODED_CACHE_DOCS = 50_000
#: The name a writer gives a partition file (see _file_stem): "<kind>/<name>.bson", one plain name in its kind's folder.
_PART_FILE = re.compile(r"(?P<kind>[a-z_]+)/[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.bson")


def _file_stem(kind: str, key: Key) -> str:
    digest = hashlib.sha256("\x1f".join((kind, *key)).encode()).hexdigest()[:20]
    return f"{kind}/{digest}"


def restore_hint(root: Path) -> str:
    return f"run `monitor store restore` to go back to the last commit whose files all read (backups: {root / MANIFEST}.1 .. .{BACKUPS})"


@dataclass
class _Part:
    kind: str
    key: Key
    file: str | None  # relative to root; None: not committed yet
    docs: int = 0
    bytes: int | None = None  # the file's size as written (None: a manifest of an earlier version)


@dataclass
class Manifest:
    commit: int = 0
    committed_at: str | None = None
    parts: dict[tuple[str, Key], _Part] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "commit": self.commit,
                "committed_at": self.committed_at,
                "parts": [
                    {"kind": p.kind, "key": list(p.key), "file": p.file, "docs": p.docs}
                    | ({"bytes": p.bytes} if p.bytes is not None else {})
                    for p in sorted(self.parts.values(), key=lambda p: (p.kind, p.key))
                    if p.file is not None
                ],
            },
            indent=1,
        )

    @classmethod
    def parse(cls, text: str | bytes) -> Manifest:
        """The manifest in ``text``; ``ValueError`` (one line) when it is not JSON of the manifest's shape.

        JSON of bounded depth with finite numbers only (:func:`monitor.core.files.parse_json_bounded`); each
        partition's file a plain name in its kind's folder (never absolute, never ``..``), its counts
        non-negative integers.
        """
        data = parse_json_bounded(text, max_depth=MANIFEST_MAX_DEPTH)
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("parts"), list):
            raise ValueError(f"not a store manifest of format {FORMAT}: expected an object with format and parts")
        commit, committed_at = data.get("commit") or 0, data.get("committed_at")
        if not _count(commit) or not (committed_at is None or isinstance(committed_at, str)):
            raise ValueError("its commit is not a number of commits, or its time not a text")
        manifest = cls(commit=commit, committed_at=committed_at)
        for entry in data["parts"]:
            if not (
                isinstance(entry, dict)
                and entry.get("kind") in COLLECTIONS
                and isinstance(entry.get("key"), list)
                and len(entry["key"]) == len(COLLECTIONS[entry["kind"]].partition)
                and all(isinstance(v, str) for v in entry["key"])
                and isinstance(entry.get("file"), str)
                and (named := _PART_FILE.fullmatch(entry["file"])) is not None
                and named["kind"] == entry["kind"]
                and _count(entry.get("docs") or 0)
                and (entry.get("bytes") is None or _count(entry["bytes"]))
            ):
                raise ValueError(f"a manifest entry is not a partition: {_shown(entry)}")
            key = tuple(entry["key"])
            manifest.parts[(entry["kind"], key)] = _Part(
                entry["kind"], key, entry["file"], entry.get("docs") or 0, entry.get("bytes")
            )
        return manifest


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _shown(entry: Any) -> str:
    """A short, one-line view of a manifest entry for an error message (its own text may be long or odd)."""
    if isinstance(entry, dict):
        text = ", ".join(
            f"{str(k)[:40]}: {v if isinstance(v, (int, float, bool)) or v is None else repr(v)[:80]}"
            for k, v in list(entry.items())[:6]
        )
        return ("{" + text + "}")[:200]
    return type(entry).__name__


def read_manifest_file(path: Path, root: Path) -> Manifest:
    """The manifest in ``path`` (a regular file inside ``root``, at most ``MANIFEST_MAX_BYTES``); ``ValueError``
    (:class:`~monitor.core.files.FileRefused` included) when it is not one, ``OSError`` when it cannot be read."""
    return Manifest.parse(read_bounded(path, max_bytes=MANIFEST_MAX_BYTES, inside=root))


def read_part_file(
    path: Path, kind: str, key: Key, expected: int | None = None, size: int | None = None, root: Path | None = None
) -> list[dict[str, Any]]:
    """The documents of one partition file; ``ValueError`` when it is not BSON, holds another partition's documents,
    or not the ``expected`` number of them (a file cut at a document boundary), or is not ``size`` bytes.

    The file must be a regular file (inside ``root`` when given) no larger than ``size`` (else ``PART_MAX_BYTES``):
    a larger one is refused before a byte of it is read (:class:`~monitor.core.files.FileRefused`, a ``ValueError``).
    """
    data = read_bounded(path, max_bytes=PART_MAX_BYTES, inside=root, size=size)
    try:
        docs = bson.decode_all(data, _CODEC)
    except (BSONError, ValueError, TypeError) as exc:  # truncated or not BSON
        raise ValueError(f"not BSON ({first_line(exc, 120)})") from exc
    # One field at a time over all documents (a set per field, not a tuple per document): every read checks this.
    fields = COLLECTIONS[kind].partition
    for name, value in zip(fields, key):
        if {"" if (v := doc.get(name)) is None else str(v) for doc in docs} - {value}:
            stray = next(doc for doc in docs if partition_key(kind, doc) != key)
            raise ValueError(f"holds a document of another partition ({dict(zip(fields, partition_key(kind, stray)))})")
    if expected is not None and len(docs) != expected:
        raise ValueError(f"holds {len(docs)} documents where the manifest says {expected}")
    if size is not None and len(data) != size:
        raise ValueError(f"is {len(data)} bytes where the manifest says {size}")
    return docs


class EmbeddedDB:
    """The partitions of one embedded database under ``root``, loaded lazily into one mongomock client."""

    def __init__(
        self, root: Path, *, writable: bool, lock_timeout_s: float = 600.0, wait_message_after_s: float = 1.0
    ) -> None:
        self.root = Path(root)
        self.writable = writable
        self._client: Any = mongomock.MongoClient(tz_aware=True)
        self._db = self._client["embedded"]
        self._loaded: dict[tuple[str, Key], Collection] = {}
        self._loaded_file: dict[tuple[str, Key], str | None] = {}
        self._dirty: set[tuple[str, Key]] = set()
        self._decoded: dict[str, list[dict[str, Any]]] = {}  # by file, least recently read first
        self._decoded_docs = 0
        self._committed: dict[tuple[str, Key], list[dict[str, Any]]] = {}
        self._lock: FileLock | None = None
        self._manifest_stamp: tuple[int, int] | None = None
        if writable:
            self._acquire(lock_timeout_s, wait_message_after_s)
        try:
            self.manifest = self._read_manifest()
        except BaseException:
            self.close(commit=False)
            raise

    # --- locking ----------------------------------------------------------------------------------

    def _acquire(self, timeout_s: float, message_after_s: float) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the embedded store folder {self.root}: {exc.strerror or exc}") from exc
        lock = FileLock(str(self.root / ".lock"))
        holder = self.root / ".lock.holder"
        try:
            try:
                lock.acquire(timeout=min(message_after_s, timeout_s))
            except Timeout:
                log.warning(
                    "waiting for the embedded store %s: %s (readers such as `monitor health` do not wait)",
                    self.root,
                    _holder_text(holder),
                )
                lock.acquire(timeout=max(timeout_s - message_after_s, 0.0))
        except Timeout as exc:
            raise StoreError(
                f"the embedded store {self.root} is held by another writer ({_holder_text(holder)}; waited {timeout_s:.0f} s)"
            ) from exc
        except OSError as exc:
            raise StoreError(
                f"cannot lock the embedded store {self.root}: {exc.strerror or exc} (is it writable?)"
            ) from exc
        self._lock = lock
        try:
            holder.write_text(
                json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv[:4])[:200], "since": _now_iso()})
            )
            remove_leftovers(self.root)  # holding the lock: any temporary file here is a killed writer's
            for folder in COLLECTIONS:
                remove_leftovers(self.root / folder)
        except OSError as exc:
            lock.release()
            self._lock = None
            raise StoreError(
                f"cannot write the embedded store {self.root}: {exc.strerror or exc} (is it writable?)"
            ) from exc

    # --- the manifest -----------------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.root / MANIFEST).stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _read_manifest(self) -> Manifest:
        path = self.root / MANIFEST
        stamp = self._stamp()
        try:
            manifest = read_manifest_file(path, self.root)
        except FileNotFoundError:
            self._manifest_stamp = None
            return Manifest()
        except OSError as exc:
            raise StoreError(f"cannot read the embedded store manifest {path}: {exc.strerror or exc}") from exc
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(
                f"the embedded store manifest {path} is unreadable ({first_line(exc, 200)}); {restore_hint(self.root)}"
            ) from exc
        self._manifest_stamp = stamp
        return manifest

    def refresh(self) -> bool:
        """Readers: follow the latest commit (drop partitions whose file changed). Returns whether anything changed."""
        if self.writable or self._stamp() == self._manifest_stamp:
            return False
        manifest = self._read_manifest()
        for ident in list(self._loaded):
            part = manifest.parts.get(ident)
            if part is None or part.file != self._loaded_file.get(ident):
                self._loaded.pop(ident).drop()
                self._loaded_file.pop(ident, None)
        self.manifest = manifest
        return True

    # --- partitions -------------------------------------------------------------------------------

    def keys(self, kind: str, where: Callable[[Key], bool] | None = None) -> list[Key]:
        """The keys of the partitions of ``kind`` that hold documents (as committed, or as written since), those ``where`` accepts, sorted."""
        found = {key for k, key in self.manifest.parts if k == kind}
        for ident in self._dirty:  # changed since the last commit: present while it holds a document
            if ident[0] == kind:
                if self._loaded[ident].find_one({}, {"_id": 1}) is None:
                    found.discard(ident[1])
                else:
                    found.add(ident[1])
        return sorted(key for key in found if where is None or where(key))

    def file_of(self, kind: str, key: Key) -> str | None:
        """The committed file of a partition: it changes whenever the partition does (None: not committed, or changed since)."""
        if (kind, key) in self._dirty:
            return None
        part = self.manifest.parts.get((kind, key))
        return part.file if part is not None else None

    def collection(self, kind: str, key: Key) -> Collection:
        """The partition's mongomock collection, loaded from its file on first use (empty when it does not exist yet)."""
        ident = (kind, key)
        loaded = self._loaded.get(ident)
        if loaded is not None:
            return loaded
        part = self.manifest.parts.get(ident)
        docs: list[dict[str, Any]] = []
        if part is not None and part.file is not None:
            docs = self._read_part(part)
        coll = self._db[f"{kind}.{len(self._loaded)}.{hashlib.sha256(repr(ident).encode()).hexdigest()[:8]}"]
        if docs:
            coll.insert_many(docs)
        self._loaded[ident] = coll
        self._loaded_file[ident] = part.file if part else None
        return coll

    def documents(self, kind: str, key: Key) -> list[dict[str, Any]]:
        """The partition's documents, for reading only: straight from its file (cached per file) unless it is loaded.

        A reader that only filters whole partitions (history for the dashboard and health) skips mongomock,
        which would copy every document on insert and again on every query.
        """
        ident = (kind, key)
        loaded = self._loaded.get(ident)
        if loaded is not None:
            if ident not in self._dirty and ident in self._committed:
                return self._committed[ident]  # what the last commit wrote: no copy through mongomock
            return list(loaded.find({}))
        part = self.manifest.parts.get(ident)
        if part is None or part.file is None:
            return []
        cached = self._decoded.pop(part.file, None)
        if cached is None:
            cached = self._read_part(part)
            self._decoded_docs += len(cached)
        self._decoded[part.file] = cached  # now the most recently read
        while self._decoded_docs > DECODED_CACHE_DOCS:
            self._decoded_docs -= len(self._decoded.pop(next(iter(self._decoded))))
        return cached

    def count(self, kind: str, key: Key) -> int:
        """How many documents the partition holds (from the manifest unless it is loaded)."""
        ident = (kind, key)
        if ident in self._loaded:
            return int(self._loaded[ident].count_documents({}))
        part = self.manifest.parts.get(ident)
        return part.docs if part is not None else 0

    def _read_part(self, part: _Part) -> list[dict[str, Any]]:
        assert part.file is not None
        path = self.root / part.file
        for attempt in range(3):
            try:
                return read_part_file(path, part.kind, part.key, part.docs, part.bytes, self.root)
            except FileNotFoundError:
                # A reader behind three commits: its files were cleaned up; follow the latest commit.
                if self.writable or attempt == 2 or not self.refresh():
                    raise StoreError(f"the embedded store file {path} is missing; {restore_hint(self.root)}") from None
                newer = self.manifest.parts.get((part.kind, part.key))
                if newer is None or newer.file is None:
                    return []
                part, path = newer, self.root / newer.file
            except OSError as exc:
                raise StoreError(f"cannot read the embedded store file {path}: {exc.strerror or exc}") from exc
            except ValueError as exc:
                raise StoreError(
                    f"the embedded store file {path} ({part.kind} {'/'.join(part.key)}) is unreadable: {first_line(exc, 200)}; {restore_hint(self.root)}"
                ) from exc
        raise AssertionError("unreachable")

    def touched(self, kind: str, key: Key) -> None:
        """Mark a partition as changed: written at the next :meth:`commit`."""
        if not self.writable:
            raise StoreError(f"the embedded store {self.root} was opened read-only")
        self._dirty.add((kind, key))
        self._committed.pop((kind, key), None)

    # --- commits ----------------------------------------------------------------------------------

    def commit(self) -> int:
        """Write every changed partition to a new file, then the manifest; returns how many partitions were written."""
        if not self.writable or not self._dirty:
            return 0
        number = self.manifest.commit + 1
        new_parts = dict(self.manifest.parts)
        written = 0
        for ident in sorted(self._dirty):
            kind, key = ident
            docs = list(self._loaded[ident].find({}))
            stem = _file_stem(kind, key)
            if not docs:
                new_parts.pop(ident, None)
                continue
            data = b"".join(bson.encode(doc, codec_options=_CODEC) for doc in docs)
            rel = f"{stem}.{number}.bson"
            atomic_write(self.root / rel, _writer(data), what="embedded store file", error=StoreError)
            new_parts[ident] = _Part(kind, key, rel, len(docs), len(data))
            self._committed[ident] = docs
            written += 1
        faults.point("store:before_manifest")
        manifest = Manifest(commit=number, committed_at=_now_iso(), parts=new_parts)
        self._write_manifest(manifest)
        self.manifest = manifest
        for ident in self._dirty:
            self._loaded_file[ident] = new_parts[ident].file if ident in new_parts else None
        self._dirty.clear()
        self._collect_garbage()
        return written

    def _write_manifest(self, manifest: Manifest) -> None:
        current = self.root / MANIFEST
        try:
            if current.exists():
                for n in range(BACKUPS - 1, 0, -1):
                    older = self.root / f"{MANIFEST}.{n}"
                    if older.exists():
                        os.replace(older, self.root / f"{MANIFEST}.{n + 1}")
                previous = current.read_bytes()
                atomic_write(
                    self.root / f"{MANIFEST}.1",
                    lambda tmp: Path(tmp).write_bytes(previous),
                    what="store manifest backup",
                    error=StoreError,
                )
        except OSError as exc:
            raise StoreError(
                f"cannot keep a backup of the embedded store manifest {current}: {exc.strerror or exc}"
            ) from exc
        text = manifest.to_json()
        if len(text) > MANIFEST_MAX_BYTES:  # readers refuse a larger one: never write a store they cannot open
            raise StoreError(
                f"the embedded store {self.root} has grown past {MANIFEST_MAX_BYTES >> 20} MiB of manifest ({len(manifest.parts)} partitions); "
                "use a MongoDB (MONITOR_MONGO_URI) for a store this size"
            )
        atomic_write(
            current,
            lambda tmp: Path(tmp).write_text(text, encoding="utf-8"),
            what="embedded store manifest",
            error=StoreError,
        )

    def _collect_garbage(self) -> None:
        """Remove partition files that neither the manifest nor its backups name."""
        keep: set[str] = set()
        for name in [MANIFEST, *(f"{MANIFEST}.{n}" for n in range(1, BACKUPS + 1))]:
            try:
                keep |= {p.file for p in read_manifest_file(self.root / name, self.root).parts.values() if p.file}
            except FileNotFoundError:
                continue
            except (OSError, ValueError, TypeError, KeyError):
                return  # an unreadable backup: keep every file, a restore may need them
        for folder in COLLECTIONS:
            for path in (self.root / folder).glob("*.bson") if (self.root / folder).is_dir() else ():
                if f"{folder}/{path.name}" not in keep:
                    path.unlink(missing_ok=True)

    def info(self) -> dict[str, Any]:
        files = [self.root / p.file for p in self.manifest.parts.values() if p.file]
        return {
            "root": str(self.root),
            "commit": self.manifest.commit,
            "committed_at": self.manifest.committed_at,
            "partitions": len(files),
            "bytes": sum(f.stat().st_size for f in files if f.exists()),
            "backups": [
                name for name in (f"{MANIFEST}.{n}" for n in range(1, BACKUPS + 1)) if (self.root / name).exists()
            ],
        }

    # --- life cycle -------------------------------------------------------------------------------

    def close(self, *, commit: bool = True) -> None:
        try:
            if commit:
                self.commit()
        finally:
            if self._lock is not None:
                try:
                    (self.root / ".lock.holder").unlink(missing_ok=True)
                except OSError:
                    pass
                self._lock.release()
                self._lock = None
            self._client.close()


def restore(root: Path) -> dict[str, Any]:
    """Point the manifest back at the newest commit (current, then the backups) whose every file reads; returns what was done.

    Takes the writer's lock (a writer must not commit over a restore). The manifest it replaces is kept as
    ``manifest.json.bad``; a partition no commit can read is reported and the store left as it is. A folder
    that holds no manifest (nor backup) is no store: refused, and nothing is written in it (not even the lock).
    A store that cannot be written (a read-only data dir) is one :class:`StoreError`.
    """
    root = Path(root)
    names = [MANIFEST, *(f"{MANIFEST}.{n}" for n in range(1, BACKUPS + 1))]
    if not root.is_dir() or not any(os.path.lexists(root / name) for name in names):
        raise StoreError(
            f"there is no embedded store at {root} (no {MANIFEST} nor backups {MANIFEST}.1 .. .{BACKUPS}): nothing to restore; "
            "check MONITOR_DATA_DIR (a new store is made by the first `monitor evaluate`)"
        )
    lock = FileLock(str(root / ".lock"))
    try:
        lock.acquire(timeout=30)
    except Timeout as exc:
        raise StoreError(
            f"the embedded store {root} is held by a writer ({_holder_text(root / '.lock.holder')}); restore when it has finished"
        ) from exc
    except OSError as exc:
        raise StoreError(
            f"cannot lock the embedded store {root} to restore it: {exc.strerror or exc} (is it writable?)"
        ) from exc
    try:
        tried: list[str] = []
        for name in names:
            path = root / name
            if not os.path.lexists(path):
                continue
            try:
                text = read_bounded(path, max_bytes=MANIFEST_MAX_BYTES, inside=root)
                manifest = Manifest.parse(text)
            except (OSError, ValueError, TypeError, KeyError) as exc:  # FileRefused is a ValueError
                tried.append(f"{name}: {first_line(exc, 200)}")
                continue
            try:
                for part in manifest.parts.values():
                    assert part.file is not None
                    read_part_file(root / part.file, part.kind, part.key, part.docs, part.bytes, root)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                tried.append(f"{name}: its file {part.file} {first_line(exc, 200)}")
                continue
            if name != MANIFEST:
                bad = root / f"{MANIFEST}.bad"
                try:
                    if os.path.lexists(root / MANIFEST):
                        if os.path.lexists(bad) and not bad.is_dir():
                            os.unlink(bad)
                        try:
                            # A second name for the damaged manifest, never opened (it may be a FIFO or a link): the
                            # new one then replaces it in one rename, so a failed write leaves the store as it was.
                            os.link(root / MANIFEST, bad, follow_symlinks=False)
                        except OSError:  # no hard links on this file system, or a folder: move it aside
                            os.replace(root / MANIFEST, bad)
                except OSError as exc:
                    raise StoreError(
                        f"cannot restore the embedded store {root}: {exc.strerror or exc} (is it writable?)"
                    ) from exc
                atomic_write(root / MANIFEST, _writer(text), what="embedded store manifest", error=StoreError)
            return {
                "store": str(root),
                "restored_from": name,
                "commit": manifest.commit,
                "committed_at": manifest.committed_at,
                "skipped": tried,
            }
        raise StoreError(
            f"no commit of the embedded store {root} reads ({'; '.join(tried) or 'no manifest'}); move {root} aside to start a new store "
            f"(`monitor evaluate` re-indexes the source; the history is lost)"
        )
    finally:
        lock.release()


def store_files(root: Path) -> Iterator[Path]:
    """Every file of the embedded store (for tests and tools that check a reader changed nothing)."""
    if root.is_dir():
        yield from sorted(p for p in root.rglob("*") if p.is_file())


def _writer(data: bytes) -> Callable[[str], object]:
    return lambda tmp: Path(tmp).write_bytes(data)


def _holder_text(holder: Path) -> str:
    try:
        info = parse_json_bounded(read_bounded(holder, max_bytes=4096), max_depth=2)
    except (OSError, ValueError):
        return "holder unknown"
    if not isinstance(info, dict):
        return "holder unknown"
    return f"pid {info.get('pid')}, `{str(info.get('command'))[:200]}`, since {str(info.get('since'))[:40]}"


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
