"""The artifact store: the files one task of a day hands to the next (samples, predictions, the calibration cache).

``MONITOR_ARTIFACTS_URI`` names it: a local folder (the default, the data dir) or ``gs://bucket/prefix``, so
that the tasks of a day may run on different hosts that share nothing but the store and this URI. Files
are addressed by key (``samples/2026-12-07.csv``, ``predictions/candidates/<id>/2026-12-07.parquet``) and
written whole before anyone can see them: a local file is written beside its place and renamed over it
(:func:`monitor.core.files.atomic_write`); a GCS object becomes visible only when its upload has finished,
so a reader sees the old content or the new, never half. Reads are bounded in size and never block on
what is not a regular file (:func:`monitor.core.files.read_bounded`; on GCS the object's recorded size is
checked before its bytes are fetched), and every failure is one :class:`DataError` naming the file, or a
:class:`SourceError` when the bucket cannot be reached.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from monitor.core.errors import ConfigError, DataError
from monitor.core.files import FileRefused, atomic_write, read_bounded

if TYPE_CHECKING:
    from monitor.core.settings import Settings

#: The largest artifact read back (a predictions file of 1,000 classes × 10 images is about 1 MB).
MAX_ARTIFACT_BYTES = 1 << 30


class ArtifactMissing(DataError):
    """The artifact asked for does not exist (a caller may say which step makes it)."""


def checked_key(key: str) -> str:
    """``key`` if it is a relative path of plain names (no ``..``, no empty part, no backslash), else ConfigError."""
    if "\\" in key or "\x00" in key or any(part in ("", ".", "..") for part in key.split("/")):
        raise ConfigError(f"artifact key {key[:200]!r} is not a relative path of plain names")
    return key


class Artifacts(ABC):
    """Files by key under one root (:mod:`monitor.core.artifacts`): read, written whole, listed, stamped."""

    uri: str

    @abstractmethod
    def location(self, key: str) -> str:
        """Where ``key`` lives, as a user would name it (a path, or ``gs://bucket/name``)."""

    @abstractmethod
    def read(self, key: str, *, what: str, max_bytes: int = MAX_ARTIFACT_BYTES) -> bytes:
        """The bytes of ``key``; :class:`ArtifactMissing` when it does not exist, DataError when it cannot be read."""

    @abstractmethod
    def write(self, key: str, data: bytes, *, what: str) -> str:
        """Publish ``data`` as ``key`` whole (a reader never sees part of it); returns its location."""

    @abstractmethod
    def stamp(self, key: str) -> str | None:
        """A text that changes whenever ``key`` is rewritten (None: no such file); for caches of what was read."""

    @abstractmethod
    def names(self, folder: str, suffix: str) -> list[str]:
        """The file names directly in ``folder`` that end with ``suffix``, sorted."""

    @abstractmethod
    def folders(self, folder: str) -> list[str]:
        """The names of the folders directly in ``folder``, sorted (on GCS: the prefixes that hold an object)."""

    def exists(self, key: str) -> bool:
        return self.stamp(key) is not None

    def local_path(self, key: str) -> Path | None:
        """The local file of ``key``, when the store is a local folder."""
        return None


class LocalArtifacts(Artifacts):
    """A local folder (the default: the data dir). Writes are :func:`atomic_write`; reads :func:`read_bounded`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.uri = str(self.root)

    def __repr__(self) -> str:
        return f"LocalArtifacts({self.uri!r})"

    def local_path(self, key: str) -> Path:
        return self.root / checked_key(key)

    def location(self, key: str) -> str:
        return str(self.local_path(key))

    def read(self, key: str, *, what: str, max_bytes: int = MAX_ARTIFACT_BYTES) -> bytes:
        path = self.local_path(key)
        try:
            return read_bounded(path, max_bytes=max_bytes)
        except FileNotFoundError:
            raise ArtifactMissing(f"{what} {path} does not exist") from None
        except FileRefused as exc:
            raise DataError(f"cannot read the {what} {path}: it {exc}") from exc
        except OSError as exc:
            raise DataError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc

    def write(self, key: str, data: bytes, *, what: str) -> str:
        path = self.local_path(key)
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), what=what)
        return str(path)

    def stamp(self, key: str) -> str | None:
        try:
            st = os.stat(self.local_path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise DataError(f"cannot look at {self.location(key)}: {exc.strerror or exc}") from exc
        return f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"

    def names(self, folder: str, suffix: str) -> list[str]:
        path = self.root / checked_key(folder)
        if not path.is_dir():
            return []
        return sorted(p.name for p in path.iterdir() if p.name.endswith(suffix) and not p.name.startswith("."))

    def folders(self, folder: str) -> list[str]:
        path = self.root / checked_key(folder)
        if not path.is_dir():
            return []
        return sorted(p.name for p in path.iterdir() if p.is_dir())


class GCSArtifacts(Artifacts):
    """Objects under ``gs://bucket/prefix/``, through the client, retries and timeouts of :class:`GCSSource`.

    An object is published by one upload (visible only once complete); a read first fetches the object's
    metadata (its size, refused above the bound) and then its bytes, checked by the client against the
    object's hash. The bucket must exist: it is never created here.
    """

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        from monitor.core.sources import GCSSource

        self._gcs = GCSSource(bucket, prefix, client)
        self.bucket = bucket
        self.prefix = self._gcs.prefix
        self.uri = self._gcs.uri

    def __repr__(self) -> str:
        return f"GCSArtifacts({self.uri!r})"

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{checked_key(key)}" if self.prefix else checked_key(key)

    def location(self, key: str) -> str:
        return f"gs://{self.bucket}/{self._name(key)}"

    def _blob_info(self, key: str, doing: str) -> Any:
        gcs = self._gcs
        try:
            return (
                gcs._get_client()
                .bucket(self.bucket)
                .get_blob(self._name(key), retry=gcs._retry(gcs.retry_timeout_s), timeout=gcs._timeout)
            )
        except gcs._foreign_errors() as exc:
            raise gcs._error(exc, doing) from exc

    def read(self, key: str, *, what: str, max_bytes: int = MAX_ARTIFACT_BYTES) -> bytes:
        from google.api_core import exceptions as gexc

        gcs, where = self._gcs, self.location(key)
        blob = self._blob_info(key, f"reading {where}")
        if blob is None:
            raise ArtifactMissing(f"{what} {where} does not exist")
        if blob.size is not None and blob.size > max_bytes:
            raise DataError(f"cannot read the {what} {where}: it is {blob.size} bytes, more than {max_bytes}")
        try:
            data: bytes = blob.download_as_bytes(retry=gcs._retry(gcs.retry_timeout_s), timeout=gcs._timeout)
        except gexc.NotFound:
            raise ArtifactMissing(f"{what} {where} does not exist") from None
        except gcs._foreign_errors() as exc:
            raise gcs._error(exc, f"reading {where}") from exc
        if len(data) > max_bytes:
            raise DataError(f"cannot read the {what} {where}: it is more than {max_bytes} bytes")
        return data

    def write(self, key: str, data: bytes, *, what: str) -> str:
        gcs, where = self._gcs, self.location(key)
        blob = gcs._get_client().bucket(self.bucket).blob(self._name(key))
        try:
            # Rewriting an artifact with the same bytes is harmless, so every upload may be retried.
            blob.upload_from_string(
                data,
                content_type="application/octet-stream",
                retry=gcs._retry(gcs.retry_timeout_s),
                timeout=gcs._timeout,
            )
        except gcs._foreign_errors() as exc:
            raise gcs._error(exc, f"writing the {what} {where}") from exc
        return where

    def stamp(self, key: str) -> str | None:
        blob = self._blob_info(key, f"looking at {self.location(key)}")
        return None if blob is None else f"{blob.generation}:{blob.size}"

    def _children(self, folder: str) -> tuple[set[str], set[str]]:
        """(files, folders) directly in ``folder``, from one listing of everything below it (no delimiter needed)."""
        gcs = self._gcs
        start = self._name(folder) + "/"
        files, folders = set(), set()
        try:
            for blob in gcs._get_client().list_blobs(
                self.bucket, prefix=start, retry=gcs._retry(gcs.retry_timeout_s), timeout=gcs._timeout
            ):
                rest = blob.name[len(start) :]
                head, sep, _ = rest.partition("/")
                if sep:
                    folders.add(head)
                elif rest:
                    files.add(rest)
        except gcs._foreign_errors() as exc:
            raise gcs._error(exc, f"listing gs://{self.bucket}/{start}") from exc
        return files, folders

    def names(self, folder: str, suffix: str) -> list[str]:
        return sorted(n for n in self._children(folder)[0] if n.endswith(suffix) and not n.startswith("."))

    def folders(self, folder: str) -> list[str]:
        return sorted(self._children(folder)[1])


def open_artifacts(uri: str) -> Artifacts:
    """The artifact store at ``uri``: ``gs://bucket[/prefix]``, ``file:///abs/path`` or a folder path. Contacts nothing."""
    text = (uri or "").strip()
    if not text:
        raise ConfigError("the artifacts URI is empty")
    if "://" not in text:
        return LocalArtifacts(text)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise ConfigError(f"artifacts URI {uri!r} must not carry a query or fragment")
    if scheme == "gs":
        if not parts.netloc:
            raise ConfigError(f"artifacts URI {uri!r} names no bucket (expected gs://bucket/prefix)")
        return GCSArtifacts(parts.netloc, parts.path.strip("/"))
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"artifacts URI {uri!r} names a host; use file:///absolute/path")
        return LocalArtifacts(parts.path)
    raise ConfigError(
        f"artifacts URI {uri!r}: scheme {scheme!r} is not supported (use gs://, file:// or a folder path)"
    )


def artifacts_for(settings: Settings) -> Artifacts:
    """The artifact store the settings name (``MONITOR_ARTIFACTS_URI``; the data dir when empty)."""
    return open_artifacts(settings.artifacts_uri)
