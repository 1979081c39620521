"""Seed fake-gcs-server's data folder with the demo images, laid out as ``<root>/<bucket>/<prefix>/<Label>/<file>``.

fake-gcs-server (``-data <root>``) loads every file under ``<root>/<bucket>/`` as an object of
that bucket, named by its path below the bucket folder. The bucket and prefix are taken from
``MONITOR_SOURCE_URI`` (``gs://demo-bucket/val`` in docker/compose.yaml), so the emulator serves
exactly the source the service is configured to read. Idempotent: files that already hold the
same bytes are left alone.

    python docker/seed_gcs.py --root /seed            # what the compose "seed-gcs" service runs
    python docker/seed_gcs.py --root ./gcs-data --per-class 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monitor.errors import ConfigError, MonitorError


def seed_folder(root: Path, source_uri: str) -> Path:
    """The folder under ``root`` that fake-gcs-server serves as ``source_uri`` (``gs://bucket/prefix``)."""
    if not source_uri.startswith("gs://"):
        raise ConfigError(f"MONITOR_SOURCE_URI must be a gs:// URI to seed a GCS emulator, got {source_uri!r}")
    bucket, _, prefix = source_uri[len("gs://") :].partition("/")
    if not bucket:
        raise ConfigError(f"MONITOR_SOURCE_URI {source_uri!r} names no bucket")
    return root.joinpath(bucket, *[part for part in prefix.split("/") if part])


def held_out_indices(per_class: int | None) -> list[int]:
    """Held-out digits (never seen by the shipped model): all of them, or the first ``per_class`` of each class."""
    from monitor.digits import load_digits_images, split_indices

    heldout = split_indices()[1]
    if per_class is None:
        return [int(i) for i in heldout]
    _, targets = load_digits_images()
    chosen: list[int] = []
    for digit in sorted(set(targets.tolist())):
        chosen.extend(int(i) for i in heldout[targets[heldout] == digit][:per_class])
    return sorted(chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="fake-gcs-server's -data folder")
    parser.add_argument("--per-class", type=int, default=None, help="images per class (default: every held-out digit, ~90 per class)")
    args = parser.parse_args(argv)
    if args.per_class is not None and args.per_class < 1:
        parser.error("--per-class must be at least 1")

    from monitor.digits import build_demo_source
    from monitor.settings import load_settings

    try:
        settings = load_settings()
        dest = seed_folder(args.root, settings.source_uri)
        written = build_demo_source(dest, indices=held_out_indices(args.per_class))
    except MonitorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    total = sum(1 for path in dest.rglob("*") if path.is_file())
    print(f"{settings.source_uri}: {written} images written, {total} in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
