"""Each stage's note in ``runs`` says how long the stage took: from the previous stage's end in the same process, or
from the run's start for the first stage of a process (one task of the DAG)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pytest

from monitor.core.settings import Settings
from monitor.orchestration import runs
from monitor.orchestration.context import RunContext
from monitor.store import open_store


def test_each_stage_note_carries_its_own_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path / "data", source_uri=str(tmp_path / "src"))
    clock = iter([102.5, 104.0, 110.25])
    ctx = RunContext.for_date(settings, "2026-11-20")
    object.__setattr__(ctx, "started", 100.0)  # the run began at t = 100 s
    # Only this thread's clock is faked: runs.time is the time module, and other threads (pymongo's cursor killer, left
    # by an earlier test of the worker) read it too and would use up the fake ticks.
    real, this_thread = time.monotonic, threading.get_ident()
    monkeypatch.setattr(runs.time, "monotonic", lambda: next(clock) if threading.get_ident() == this_thread else real())
    other = RunContext.for_date(settings, "2026-11-20")  # another task of the same day, in another process
    object.__setattr__(other, "started", 109.0)
    with open_store(settings) as store:
        runs.record_stage(store, ctx, "index", {"listed": 3})
        runs.record_stage(store, ctx, "sample", {})
        runs.record_stage(store, other, "predict", {})
        (run,) = store.runs_on("2026-11-20")
    stages = run["stages"]
    assert [stages[s]["seconds"] for s in ("index", "sample", "predict")] == [2.5, 1.5, 1.25]
    assert stages["index"]["listed"] == 3 and isinstance(stages["index"]["finished_at"], dt.datetime | str)
