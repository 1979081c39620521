"""The health test's calibration is kept on disk: a daily run calibrates once per settings change, not every day."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from monitor.core.settings import Settings
from monitor.domain.health.calibration import Design, design
from monitor.orchestration import health_stage

CALIBRATE = design.__wrapped__  # the calibration itself, without the in-process cache


def _fresh_process(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Forget what this process calibrated, and record every calibration from now on."""
    monkeypatch.setattr(health_stage, "_KNOWN", {})
    calls: list[tuple] = []

    def counted(*args):  # noqa: ANN002, ANN202
        calls.append(args)
        return CALIBRATE(*args)

    monkeypatch.setattr(health_stage, "design", counted)
    return calls


def test_a_calibration_is_reused_from_disk_by_the_next_process_and_redone_when_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data", followup_samples=0)
    calls = _fresh_process(monkeypatch)
    first = health_stage.design_for(0.9, settings, classes=3)
    cache = tmp_path / "data" / "cache" / "health-designs.json"
    assert len(calls) == 1 and cache.is_file()

    calls = _fresh_process(monkeypatch)
    assert health_stage.design_for(0.9, settings, classes=3) == first and calls == []  # read back, equal in every field
    health_stage.design_for(0.8, settings, classes=3)
    assert len(calls) == 1 and len(json.loads(cache.read_text())) == 2  # another target: calibrated and added

    cache.write_text("{damaged")
    calls = _fresh_process(monkeypatch)
    assert health_stage.design_for(0.9, settings, classes=3) == first and len(calls) == 1
    assert len(json.loads(cache.read_text())) == 1


def test_a_calibration_that_cannot_be_kept_on_disk_is_used_and_the_reason_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path / "data", followup_samples=0)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cache").write_text("a file where the cache folder should be")
    calibrated = Design(**{f.name: 1 if f.type in ("int", int) else 1.0 for f in dataclasses.fields(Design)})  # type: ignore[arg-type]
    monkeypatch.setattr(health_stage, "_KNOWN", {})
    monkeypatch.setattr(health_stage, "design", lambda *args: calibrated)

    with caplog.at_level("WARNING", logger="monitor.orchestration.health_stage"):
        assert health_stage.design_for(0.9, settings, classes=3) is calibrated

    (record,) = [r for r in caplog.records if r.getMessage().startswith("could not keep the calibration: ")]
    assert "None" not in record.getMessage() and "cache" in record.getMessage()
