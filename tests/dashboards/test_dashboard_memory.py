"""The dashboard holds a long history as columns, never as its documents (issue 25): read a few weeks at a time,
with repeated text (dates, classes, verdicts) one string per value, and the same frames as one read gives."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from dashboards import data as data_module
from dashboards.data import DashboardData
from tests.fixtures.dashboard import MODEL, day


def history_of(data: DashboardData) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return data.metrics(MODEL), data.health(MODEL), data.confusions(MODEL, "cat")


def test_a_history_read_in_spans_of_days_is_the_one_read_gives_with_its_repeated_text_shared(
    settings, history, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.store import EmbeddedStore

    whole = history_of(DashboardData(settings))

    reads: list[tuple[str, str | None, str | None]] = []
    rows = EmbeddedStore.rows

    def counted(self: EmbeddedStore, kind: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        reads.append((kind, kwargs.get("start"), kwargs.get("end")))
        return rows(self, kind, *args, **kwargs)

    monkeypatch.setattr(EmbeddedStore, "rows", counted)
    # The model has 4 classes: 7 days a read, so the 30 days take 5 reads, the first and last open-ended.
    monkeypatch.setattr(data_module, "ROWS_PER_READ", 28)
    spans = history_of(DashboardData(settings))
    expected = [(None, day(23)), (day(22), day(16)), (day(15), day(9)), (day(8), day(2)), (day(1), None)]
    assert reads == [(kind, *span) for kind in ("class_metrics", "class_health", "class_metrics") for span in expected]
    for part, one in zip(spans, whole, strict=True):
        pd.testing.assert_frame_equal(part, one)

    metrics, health, _ = spans
    assert len(health) == 90 and len(metrics) == 90
    for frame, column, values in [
        (metrics, "date", 30),
        (metrics, "label", 3),
        (health, "date", 30),
        (health, "label", 3),
        (health, "verdict", 3),
        (health, "method", 1),
    ]:
        # One string object per distinct value, not one per row as the store decodes them.
        assert frame[column].nunique() == values and len({id(text) for text in frame[column]}) == values
    assert len({id(text) for text in health["reason"]}) == 90  # text that does not repeat is left as it is


def test_without_a_class_list_the_history_is_one_read(store, settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.store import EmbeddedStore
    from tests.fixtures.dashboard import metric_doc, write_history

    # No model registered: how many rows a day holds is unknown, so the history is read whole, as before.
    write_history(store, "class_metrics", [metric_doc(c, day(k), 10, 9) for k in range(10) for c in "ab"])
    store.commit()
    reads: list[tuple[str | None, str | None]] = []
    rows = EmbeddedStore.rows

    def counted(self: EmbeddedStore, kind: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        reads.append((kwargs.get("start"), kwargs.get("end")))
        return rows(self, kind, *args, **kwargs)

    monkeypatch.setattr(EmbeddedStore, "rows", counted)
    monkeypatch.setattr(data_module, "ROWS_PER_READ", 2)
    assert len(DashboardData(settings).metrics(MODEL)) == 20
    assert reads == [(None, None)]
