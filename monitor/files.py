"""Files the service writes: one atomic-write helper (temporary file, fsync, rename) and the clean-up of what a crash left.

Every artifact (sample CSV, predictions Parquet, the embedded store, demo images) is written next to
its destination and renamed over it, so readers see the old file or the new one, never half of one.
The file gets the usual permissions (``0666`` less the umask, as ``open`` would give it), not the
``0600`` of a temporary file, so a dashboard or another service account can read it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from monitor import faults
from monitor.errors import ConfigError, MonitorError

#: A temporary file older than this (seconds) was left by a writer that died: removed at the next write.
STALE_AFTER_S = 600.0


@lru_cache(maxsize=1)
def _file_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_tmp(path: Path, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove the temporary files a killed writer of ``path`` left behind (older than ``older_than_s``); returns how many."""
    removed = 0
    cutoff = time.time() - older_than_s
    try:
        candidates = list(Path(path).parent.glob(f"{_tmp_prefix(Path(path))}*.tmp"))
    except OSError:
        return 0
    for tmp in candidates:
        try:
            if tmp.stat().st_mtime <= cutoff:
                tmp.unlink()
                removed += 1
        except OSError:
            continue  # gone already, or not ours to remove: never a reason to fail a write
    return removed


def remove_leftovers(folder: Path) -> int:
    """Remove every temporary file in ``folder`` now: only for a caller that knows no writer is active (it holds the lock)."""
    removed = 0
    for leftover in Path(folder).glob("*.tmp") if Path(folder).is_dir() else ():
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


def atomic_write(path: Path, write: Callable[[str], object], *, what: str, error: type[MonitorError] = ConfigError) -> Path:
    """Write ``path`` atomically: ``write(tmp_name)`` fills a temporary file beside it, then it is renamed over ``path``.

    ``what`` names the file in errors ("sample file", "predictions file"...); a folder that cannot be
    created or written is one ``error`` naming it. Stale temporary files of ``path`` are removed first.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(path)
        handle, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(handle)
    except OSError as exc:
        raise error(f"cannot write the {what} {path}: {exc.strerror or exc} (is {path.parent} writable?)") from exc
    try:
        write(tmp_name)
        with open(tmp_name, "rb+") as done:
            os.fsync(done.fileno())
        os.chmod(tmp_name, _file_mode())
        faults.point(f"write:{path.suffix.lstrip('.')}")
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise error(f"cannot write the {what} {path}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
