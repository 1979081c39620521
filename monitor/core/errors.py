"""The one root exception of the service and its small, documented subclasses.

The CLI catches only :class:`MonitorError` and prints its message as one line; anything
else is a bug and keeps its traceback. Foreign errors are re-raised as one of these with
``raise ... from exc`` so the cause stays attached for ``--debug``.
"""

from __future__ import annotations


class MonitorError(Exception):
    """Root of every error the service raises on purpose. Exit code 1 unless a subclass says."""

    exit_code: int = 1


class ConfigError(MonitorError):
    """A setting or command-line value is invalid (bad date, bad URI, bad number)."""

    exit_code = 2


class SourceError(MonitorError):
    """The image source (bucket or folder) is unreachable, missing or empty."""

    exit_code = 3


class StoreError(MonitorError):
    """The store (MongoDB or the embedded store) is unreachable or refused an operation."""

    exit_code = 4


class ModelError(MonitorError):
    """The model directory does not load, or its labels do not cover the source's labels."""

    exit_code = 5


class DataError(MonitorError):
    """A stage's input is missing or inconsistent (no sample for the date, no predictions...)."""

    exit_code = 6


class SparkError(MonitorError):
    """Spark could not start, or a Spark job failed (bad master URL, no Java, a worker crashed)."""

    exit_code = 7


def redact(text: str) -> str:
    """Hide passwords, tokens and registered secrets in ``text`` (see :mod:`monitor.core.secrets`)."""
    from monitor.core.secrets import redact as _redact

    return _redact(text)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-blank line of ``exc``'s message, cut to ``limit`` characters; its type's name when it has none.

    What an error message quotes of a library's exception: Spark's and the cloud clients' run to pages.
    """
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0].strip()[:limit] if lines else type(exc).__name__
