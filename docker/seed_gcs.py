"""Seed the bucket of ``MONITOR_SOURCE_URI`` with the held-out demo digits, once, through the google-cloud-storage client.

Uploads ``<prefix>/<Label>/digit_NNNNN.jpg`` objects (``STORAGE_EMULATOR_HOST`` points the client at the
compose stack's emulator, anonymously; without it the client uses Google credentials). Objects that
exist already are left alone, so their creation times survive a second run of the seeding job; the
emulator keeps its objects on a volume, so they also survive a restart of the emulator. That matters:
the service samples a date only from images created on or before it, so re-stamped objects would
leave every earlier date with nothing to sample (the scheduler's catch-up runs included).

    python docker/seed_gcs.py                 # what the compose "seed-gcs" service runs
    python docker/seed_gcs.py --per-class 20
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from monitor.core.errors import ConfigError, MonitorError, SourceError

#: The project the emulator's buckets are created in (any name does; the emulator ignores it).
EMULATOR_PROJECT = "class-health-demo"


def bucket_and_prefix(source_uri: str) -> tuple[str, str]:
    """``("bucket", "prefix")`` of ``gs://bucket/prefix``; anything else is a :class:`ConfigError`."""
    if not source_uri.startswith("gs://"):
        raise ConfigError(f"MONITOR_SOURCE_URI must be a gs:// URI to seed a GCS bucket, got {source_uri!r}")
    bucket, _, prefix = source_uri[len("gs://") :].partition("/")
    if not bucket:
        raise ConfigError(f"MONITOR_SOURCE_URI {source_uri!r} names no bucket")
    return bucket, prefix.strip("/")


def held_out_indices(per_class: int | None) -> list[int]:
    """Held-out digits (never seen by the shipped model): all of them, or the first ``per_class`` of each class."""
    from monitor.domain.digits import load_digits_images, split_indices

    heldout = split_indices()[1]
    if per_class is None:
        return [int(i) for i in heldout]
    _, targets = load_digits_images()
    chosen: list[int] = []
    for digit in sorted(set(targets.tolist())):
        chosen.extend(int(i) for i in heldout[targets[heldout] == digit][:per_class])
    return sorted(chosen)


def client_from_environment() -> Any:
    """The storage client: anonymous against ``STORAGE_EMULATOR_HOST`` when it is set, else Google's default credentials."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client(
            project=os.environ.get("GOOGLE_CLOUD_PROJECT") or EMULATOR_PROJECT, credentials=AnonymousCredentials()
        )
    return storage.Client()


def seed_bucket(client: Any, source_uri: str, indices: list[int]) -> tuple[int, int]:
    """Upload the digits ``indices`` under ``source_uri`` that are not there yet; returns (uploaded, objects under the prefix)."""
    from google.api_core import exceptions

    from monitor.domain.digits import LABELS, digit_file_name, encode_digit, load_digits_images

    bucket_name, prefix = bucket_and_prefix(source_uri)
    images, targets = load_digits_images()
    try:
        bucket = client.lookup_bucket(bucket_name) or client.create_bucket(bucket_name)
        existing = {blob.name for blob in client.list_blobs(bucket_name, prefix=f"{prefix}/" if prefix else None)}
        uploaded = 0
        for index in indices:
            name = "/".join(part for part in (prefix, LABELS[int(targets[index])], digit_file_name(index)) if part)
            if name in existing:
                continue  # never rewritten: its creation time is what the service samples by
            bucket.blob(name).upload_from_string(encode_digit(images[index]), content_type="image/jpeg")
            existing.add(name)
            uploaded += 1
    except exceptions.GoogleAPIError as exc:
        raise SourceError(f"cannot seed {source_uri}: {exc}") from exc
    return uploaded, len(existing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--per-class", type=int, default=None, help="images per class (default: every held-out digit, ~90 per class)"
    )
    args = parser.parse_args(argv)
    if args.per_class is not None and args.per_class < 1:
        parser.error("--per-class must be at least 1")

    from monitor.core.settings import load_settings

    try:
        settings = load_settings()
        bucket_and_prefix(settings.source_uri)  # a folder source is refused before any client is made
        uploaded, total = seed_bucket(client_from_environment(), settings.source_uri, held_out_indices(args.per_class))
    except MonitorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{settings.source_uri}: {uploaded} images uploaded, {total} there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
