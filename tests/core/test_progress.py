"""Progress written to a pipe or a file: a few log lines (start, every so often, end), never a screen of bar redraws."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from monitor.core.progress import log_progress, rich_progress


def test_a_step_logs_its_start_at_most_one_line_per_period_and_its_end(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    with caplog.at_level(logging.INFO, logger="monitor.progress"):
        with log_progress("predict 2026-11-20", 300, every_s=30.0, clock=lambda: now[0]) as advance:
            for _ in range(300):
                now[0] += 0.5  # 150 s in all: 300 items at 2 a second
                advance(1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "predict 2026-11-20: started (300 to do)"
    assert lines[-1] == "predict 2026-11-20: 300/300 done (2/s, 150 s)"
    assert len(lines) == 2 + 5  # one "so far" line per 30 s, not one per item
    assert lines[1] == "predict 2026-11-20: 60/300 so far (2/s, 30 s)"


def test_on_a_pipe_the_rich_factory_logs_lines_and_draws_nothing(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    factory = rich_progress(Console(file=stream, force_terminal=False))
    with caplog.at_level(logging.INFO, logger="monitor.progress"):
        with factory("index", None) as advance:
            advance(5)
    assert stream.getvalue() == ""
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["index: started", "index: 5 done"]
