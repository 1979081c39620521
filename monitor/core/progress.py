"""Progress reporting for long steps: rich progress bars with rates on stderr, or nothing. Descriptions are literal text."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

Advance = Callable[[int], None]


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
        with Progress(*columns, console=out, transient=False, disable=not out.is_terminal) as bar:
            task = bar.add_task(description, total=total, rate="")

            def advance(n: int = 1) -> None:
                bar.advance(task, n)

            yield advance

    return factory
