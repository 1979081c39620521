"""Fail points for the fault-injection tests: ``MONITOR_TEST_KILL_AT=<name>`` makes the process SIGKILL itself there.

A test harness only (like the fail points of etcd or TiKV): production code calls :func:`point` at the
moments a crash matters most (between stages, inside an atomic write, right after an alert left), so
that ``tests/orchestration/test_faults_kill_*.py`` can kill a real ``monitor evaluate`` exactly there and check that a re-run
repairs everything. Unset (always, outside those tests), a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

#: The environment variable naming the point to die at (a test-only knob, deliberately not a setting).
VARIABLE = "MONITOR_TEST_KILL_AT"


def point(name: str) -> None:
    """SIGKILL this process if ``MONITOR_TEST_KILL_AT`` names ``name`` (no clean-up, no flush: a real crash)."""
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
