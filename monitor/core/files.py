"""Files the service writes and reads back: atomic writes, the clean-up of what a crash left, and bounded reads.

Every artifact (sample CSV, predictions Parquet, the embedded store, demo images) is written next to
its destination and renamed over it, so readers see the old file or the new one, never half of one.
The file gets the usual permissions (``0666`` less the umask, as ``open`` would give it), not the
``0600`` of a temporary file, so a dashboard or another service account can read it.

Files read back (the store's manifest and partitions, the calibration cache) go through
:func:`read_bounded` / :func:`read_json_file`: a regular file only (never a device, FIFO or socket,
which could make a reader hang or read without end), of bounded size, and JSON of bounded depth
with finite numbers, or one error line naming the file and the remedy.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from monitor.core import faults
from monitor.core.errors import ConfigError, DataError, MonitorError, first_line

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


def atomic_write(
    path: Path, write: Callable[[str], object], *, what: str, error: type[MonitorError] = ConfigError
) -> Path:
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


# --- reading files back: regular files only, bounded in size, JSON bounded in depth -----------------------

#: Nesting any JSON state file of the service may have (the store manifest needs 4, the calibration cache 2).
JSON_MAX_DEPTH = 32
#: The largest integer a JSON state file may hold: what BSON (and MongoDB) can store.
_INT_LIMIT = 2**63
_READ_CHUNK = 1 << 20


class FileRefused(ValueError):
    """A file that is not read: not a regular file, outside its folder, larger than its bound, or not bounded JSON.

    The message is the reason only (``"is a FIFO"``); the caller names the file and the remedy.
    """


def _kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_bounded(path: Path, *, max_bytes: int, inside: Path | None = None, size: int | None = None) -> bytes:
    """The bytes of ``path`` if it is a regular file (inside the folder ``inside``, when given) of at most ``max_bytes``.

    Never opens a device, FIFO or socket (checked with ``lstat`` first, then opened non-blocking and
    without following a link, then checked again with ``fstat``), so a reader cannot be made to hang
    or to read without end; never reads more than ``max_bytes`` (or ``size``, the size recorded for
    the file: a larger file is refused before a byte is read). Raises :class:`FileRefused` (the reason),
    ``FileNotFoundError`` when there is no file, other ``OSError`` as the system gives them.
    """
    path = Path(path)
    if inside is not None:
        # Below ``inside`` (the trust anchor, which may itself be reached through a link), every folder on the
        # way must be a real folder, not a link, and the file itself not a link (below): it cannot lead outside.
        try:
            parts = path.relative_to(inside).parts
        except ValueError:
            raise FileRefused(f"lies outside {inside}") from None
        folder = Path(inside)
        for part in parts[:-1]:
            folder = folder / part
            if part == ".." or not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise FileRefused(f"lies outside {inside} ({folder} is not a folder of it)")
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"is {_kind_of(st.st_mode)}, not a regular file")
    limit = max_bytes if size is None else min(size, max_bytes)
    if st.st_size > limit:
        raise FileRefused(_too_big(st.st_size, max_bytes, size))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)  # what was opened: a file swapped for a FIFO since the lstat is refused here
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"is {_kind_of(st.st_mode)}, not a regular file")
        # The whole file in one read as a rule (one buffer, no copy); one byte more than allowed tells a file
        # that grew since the fstat.
        chunks = [os.read(fd, min(st.st_size, limit) + 1)]
        left = limit + 1 - len(chunks[0])
        while left > 0 and chunks[-1] and (chunk := os.read(fd, min(left, _READ_CHUNK))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if len(data) > limit:
        raise FileRefused(_too_big(len(data), max_bytes, size))
    return data


def _too_big(actual: int, max_bytes: int, size: int | None) -> str:
    if size is not None and size <= max_bytes:
        return f"is {actual} bytes where {size} were recorded"
    return f"is {actual} bytes, more than the {max_bytes} a file of its kind may have"


def _refuse_constant(name: str) -> Any:
    raise FileRefused(f"holds the number {name}, which JSON state files never do")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FileRefused(f"holds the number {text[:40]}, out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > 20 or not -_INT_LIMIT <= (value := int(text)) < _INT_LIMIT:
        raise FileRefused(f"holds the integer {text[:40]}{'...' if len(text) > 40 else ''}, out of range")
    return value


def _depth_over(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests containers more than ``max_depth`` levels below it (level by level: no recursion)."""
    level = [value]
    for _ in range(max_depth + 1):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return False
    return True


def parse_json_bounded(data: bytes | str, *, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """JSON text as Python values: finite numbers, integers that fit 64 bits, at most ``max_depth`` nested containers.

    Raises :class:`FileRefused` (one line, the reason) for anything else, including text that is not JSON.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except FileRefused:
        raise
    except RecursionError:
        raise FileRefused(f"nests deeper than the {max_depth} levels allowed") from None
    except UnicodeDecodeError as exc:
        raise FileRefused(f"is not UTF-8 text (byte {exc.start})") from None
    except ValueError as exc:  # JSONDecodeError, and int() beyond Python's digit limit
        raise FileRefused(f"is not JSON ({first_line(exc, 120)})") from None
    if isinstance(value, (dict, list)) and _depth_over(value, max_depth - 1):
        raise FileRefused(f"nests deeper than the {max_depth} levels allowed")
    return value


def read_json_file(
    path: Path,
    *,
    what: str,
    max_bytes: int,
    max_depth: int = JSON_MAX_DEPTH,
    error: type[MonitorError] = DataError,
    remedy: str = "",
    inside: Path | None = None,
    missing_ok: bool = False,
) -> Any:
    """The JSON value of the state file ``path`` (the store manifest, the calibration cache...), read safely.

    The file must be a regular file of at most ``max_bytes`` (see :func:`read_bounded`) holding JSON
    with at most ``max_depth`` nested containers, finite numbers and integers that fit 64 bits.
    Anything else is one ``error`` naming the ``what``, the file, the reason and the ``remedy``.
    A missing file is ``None`` when ``missing_ok``, else an ``error`` too.
    """
    path = Path(path)
    tail = f"; {remedy}" if remedy else ""
    try:
        return parse_json_bounded(read_bounded(path, max_bytes=max_bytes, inside=inside), max_depth=max_depth)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise error(f"the {what} {path} does not exist{tail}") from None
    except FileRefused as exc:
        raise error(f"the {what} {path} is unreadable: it {exc}{tail}") from None
    except OSError as exc:
        raise error(f"cannot read the {what} {path}: {exc.strerror or exc}{tail}") from exc


def read_text_file(path: Path, *, what: str, max_bytes: int) -> str:
    """The UTF-8 text (a BOM dropped) of a small configuration file the user names (a label map, a manifest), read
    as :func:`read_bounded` reads; any fault is one :class:`ConfigError` naming ``what``."""
    try:
        return read_bounded(Path(path), max_bytes=max_bytes).decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{what} does not exist") from None
    except FileRefused as exc:
        raise ConfigError(f"{what} is unreadable: it {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what}: {exc}") from None
