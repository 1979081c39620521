"""Progress reporting for long steps: rich progress bars with rates on a terminal, log lines otherwise, or nothing.

Descriptions are literal text. Written to a pipe or a file (a scheduler's log, ``2> run.log``), a bar would be
either nothing or a screen of redraws: there each step logs ``description: done/total (rate/s)`` at INFO
(``monitor -v``) when it starts, at most every :data:`LOG_EVERY_S` seconds while it runs, and when it ends.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

Advance = Callable[[int], None]
#: How often a step written to a pipe or a file logs its progress, at most (seconds).
LOG_EVERY_S = 30.0
log = logging.getLogger("monitor.progress")


class ProgressFactory(Protocol):
    """Opens one progress task; the context yields a function advancing it by N items."""

    def __call__(self, description: str, total: int | None = None) -> contextlib.AbstractContextManager[Advance]: ...


@contextlib.contextmanager
def no_progress(description: str, total: int | None = None) -> Iterator[Advance]:
    """The silent factory: library calls and tests use it."""

    def advance(n: int = 1) -> None:
        return None

    yield advance


class _RateColumn(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[no-untyped-def]
        speed = task.finished_speed or task.speed
        return TextColumn("{task.fields[rate]}", markup=False).render(task) if speed is None else f"{speed:,.0f}/s"


def rich_progress(console: Console | None = None) -> ProgressFactory:
    """A factory drawing rich bars (count, total, rate, elapsed) on ``console`` (stderr by default)."""
    out = console or Console(stderr=True)

    @contextlib.contextmanager
    def factory(description: str, total: int | None = None) -> Iterator[Advance]:
        columns = [
            # A description may name a model or a class: shown literally, never read as markup.
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(),
            MofNCompleteColumn() if total else TextColumn("{task.completed:,.0f}"),
            TaskProgressColumn() if total else TextColumn(""),
            _RateColumn(),
            TimeElapsedColumn(),
        ]
        if not out.is_terminal:
            with log_progress(description, total) as advance:
                yield advance
            return
        with Progress(*columns, console=out, transient=False) as bar:
            task = bar.add_task(description, total=total, rate="")

            def advance(n: int = 1) -> None:
                bar.advance(task, n)

            yield advance

    return factory


@contextlib.contextmanager
def log_progress(
    description: str,
    total: int | None = None,
    *,
    every_s: float = LOG_EVERY_S,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Advance]:
    """Progress as INFO log lines: at the start, at most every ``every_s`` seconds, and at the end (with the rate)."""
    started = last = clock()
    done = 0

    def line(state: str) -> None:
        elapsed = max(clock() - started, 1e-9)
        counted = f"{done:,}/{total:,}" if total else f"{done:,}"
        log.info("%s: %s %s (%.0f/s, %.0f s)", description, counted, state, done / elapsed, elapsed)

    log.info("%s: started%s", description, f" ({total:,} to do)" if total else "")

    def advance(n: int = 1) -> None:
        nonlocal done, last
        done += n
        if clock() - last >= every_s:
            last = clock()
            line("so far")

    yield advance
    line("done")
