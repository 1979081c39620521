"""A run killed in the middle of writing a file (CSV, Parquet, BSON, the manifest, JSON) is repaired by a re-run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.faults import kill_and_repair
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
    kill_and_repair(point, source, data_dir, webhook, uninterrupted)
