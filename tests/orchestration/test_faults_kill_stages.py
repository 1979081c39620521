"""A run killed between its stages (or right after an alert's send) is repaired by a re-run, with no alert sent twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.faults import BROKEN, kill_and_repair, monitor
from tests.fixtures.webhook import Endpoint

pytestmark = [pytest.mark.slow, pytest.mark.spark]


@pytest.fixture
def source(fault_source: Path) -> Path:
    return fault_source


def test_the_reference_run_flags_the_broken_class_and_sends_its_alert_once_with_a_stable_id(uninterrupted) -> None:
    reference = uninterrupted["snapshot"]
    assert [(label, verdict) for label, verdict, _, _ in reference["health"] if verdict == "needs_retraining"] == [
        (BROKEN, "needs_retraining")
    ]
    ((label, kind, ident, delivered),) = reference["alerts"]
    assert (label, kind, delivered) == (BROKEN, "needs_retraining", True)
    assert uninterrupted["posts"] == 1 and f"alert id {ident}" in uninterrupted["bodies"][0]["json"]["message"]


POINTS = [
    "after_stage:index",
    "after_stage:sample",
    "after_stage:predict",
    "after_stage:metrics",
    "after_alert_send",
    "after_stage:health",
]


@pytest.mark.parametrize("point", POINTS)
def test_a_run_killed_between_stages_is_repaired_by_a_rerun_with_no_alert_sent_twice(
    point: str, source: Path, tmp_path: Path, webhook: Endpoint, uninterrupted: dict[str, Any]
) -> None:
    data_dir = tmp_path / "data"
    kill_and_repair(point, source, data_dir, webhook, uninterrupted)
    if point == "after_alert_send":  # the send was cut short: not resent, and the alert says it is uncertain
        (alert,) = json.loads(monitor(data_dir, source, "alerts", "--json").stdout)["alerts"]
        assert alert["delivered"] and "may or may not have received alert id" in alert["last_error"]
