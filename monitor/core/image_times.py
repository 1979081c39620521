"""When each image was collected (``MONITOR_IMAGE_TIME``): the object's own time, a metadata key, or a manifest.

Point-in-time sampling, the fresh window and backfills go by each image's ``created`` time. By default that is
the object's creation (GCS) or modification (a folder) time, which a copy resets: a bucket copied today holds no
image "created" before today. Two other sources of the date, read at indexing:

- ``metadata:KEY``: the object's custom metadata ``KEY`` (GCS), an ISO date or date-time;
- ``manifest:/path/file.csv``: a CSV of ``path,date`` rows (paths relative to the source, as listed), an ISO date
  (midnight UTC) or date-time.

An image the chosen source does not date keeps its object time. Faults are one :class:`ConfigError` naming the
file and row, or the object and key.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from monitor.core.errors import ConfigError
from monitor.core.files import read_text_file
from monitor.core.sources import BlobInfo

MAX_MANIFEST_BYTES = 1 << 30


def parse_time(text: str) -> dt.datetime:
    """An ISO date (midnight UTC) or date-time (UTC when it names no zone) as a tz-aware UTC time; ValueError else."""
    value = text.strip()
    parsed = (
        dt.datetime.fromisoformat(value)
        if len(value) > 10
        else dt.datetime.combine(dt.date.fromisoformat(value), dt.time())
    )
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


@dataclass(frozen=True)
class ImageTime:
    """Where images' dates come from: ``object`` (default), ``metadata`` (with ``key``) or ``manifest`` (with ``path``)."""

    mode: str = "object"
    key: str = ""
    path: Path | None = None

    @classmethod
    def parse(cls, setting: str) -> ImageTime:
        text = (setting or "object").strip()
        if text == "object":
            return cls()
        kind, sep, rest = text.partition(":")
        if kind == "metadata" and sep and rest.strip():
            return cls("metadata", key=rest.strip())
        if kind == "manifest" and sep and rest.strip():
            return cls("manifest", path=Path(rest.strip()).expanduser().resolve())
        raise ConfigError(
            f"MONITOR_IMAGE_TIME {text[:120]!r} is not one of: object, metadata:KEY, manifest:/path/to/file.csv"
        )

    def describe(self) -> str:
        return {
            "object": "the objects' own creation times (a copy resets them)",
            "metadata": f"the objects' metadata key {self.key!r}",
            "manifest": f"the manifest {self.path}",
        }[self.mode]


def load_manifest(path: Path) -> dict[str, dt.datetime]:
    """``path,date`` rows of a manifest (a header row ``path,date`` is skipped) as path -> UTC time."""
    where = f"the image-time manifest {path} (MONITOR_IMAGE_TIME)"
    text = read_text_file(path, what=where, max_bytes=MAX_MANIFEST_BYTES)
    dates: dict[str, dt.datetime] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if number == 1 and [cell.strip().lower() for cell in row] == ["path", "date"]:
            continue
        if len(row) != 2 or not row[0].strip():
            raise ConfigError(f"{where} line {number}: expected 2 fields, path,date")
        try:
            dates[row[0].strip()] = parse_time(row[1])
        except ValueError:
            raise ConfigError(f"{where} line {number}: {row[1][:40]!r} is not an ISO date or date-time") from None
    return dates


def retimed(blobs: Iterable[BlobInfo], image_time: ImageTime) -> Iterator[BlobInfo]:
    """``blobs`` with ``created`` taken from ``image_time`` where it dates them (the object's time otherwise)."""
    if image_time.mode == "object":
        yield from blobs
        return
    manifest = load_manifest(image_time.path) if image_time.mode == "manifest" and image_time.path else {}
    for blob in blobs:
        if image_time.mode == "manifest":
            when = manifest.get(blob.path)
        else:
            if blob.metadata is None:
                raise ConfigError(
                    f"MONITOR_IMAGE_TIME=metadata:{image_time.key} needs objects with metadata (a gs:// source); "
                    "date a folder's images with a manifest instead (manifest:/path/file.csv)"
                )
            raw = blob.metadata.get(image_time.key)
            try:
                when = parse_time(raw) if raw else None
            except ValueError:
                raise ConfigError(
                    f"{blob.path}: metadata {image_time.key}={str(raw)[:40]!r} is not an ISO date or date-time"
                ) from None
        yield dataclasses.replace(blob, created=when) if when is not None else blob
