"""A run killed in the middle of writing a file (CSV, Parquet, BSON, the manifest, JSON) is repaired by a re-run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitor.core.faults import VARIABLE as KILL_AT
from tests.fixtures.faults import DATE, leftovers, monitor, snapshot
from tests.fixtures.webhook import Endpoint

pytestmark = [pytest.mark.slow, pytest.mark.spark]


@pytest.fixture
def source(fault_source: Path) -> Path:
    return fault_source


POINTS = ["write:csv", "write:parquet", "write:bson", "store:before_manifest", "write:json"]


@pytest.mark.parametrize("point", POINTS)
def test_a_run_killed_while_writing_a_file_is_repaired_by_a_rerun_with_no_alert_sent_twice(
    point: str, source: Path, tmp_path: Path, webhook: Endpoint, uninterrupted: dict[str, Any]
) -> None:
    data_dir = tmp_path / "data"
    urls = {"MONITOR_ALERT_URLS": json.dumps([webhook.url])}
    killed = monitor(data_dir, source, "evaluate", "--date", DATE, env={**urls, KILL_AT: point})
    assert killed.returncode == -9, f"{point} was never reached: {killed.stderr[-2000:]}"
    again = monitor(data_dir, source, "evaluate", "--date", DATE, env=urls)
    assert again.returncode == 0, again.stderr[-2000:]
    assert snapshot(data_dir) == uninterrupted["snapshot"]
    assert len(webhook.bodies) == 1  # sent once, whether the kill came before the send or right after it
    assert leftovers(data_dir) == []
