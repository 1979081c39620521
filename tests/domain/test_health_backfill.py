"""Backfills after a settings change, and follow-up requests when two models were judged on the same date (issue 22).

A date filled in late recomputes the days stored after it (``monitor.orchestration.health_stage.health_with``), each under the
settings and target it was judged under (``compute_health(..., as_stored=True)``): the history must equal the one
an in-order run under the same settings would have written, whatever today's settings say. And the follow-up a
class gets is the largest any model judged on the latest date asked for, granted most urgent first.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from monitor.core.settings import Settings
from monitor.orchestration.context import RunContext
from monitor.orchestration.health_stage import compute_health, followup_requests, health_with
from tests.fixtures.store import find

START = dt.date(2024, 3, 1)
DAYS = 14
LATE = 3  # the date whose metrics arrive after the later days were judged
CHANGED_FROM = 5  # the later days from here on were judged under the changed settings

#: Two classes: "a" drifts down, is flagged, and partly comes back; "b" makes a few mistakes.
SERIES = {
    "a": [
        (10, 10),
        (10, 9),
        (10, 10),
        (10, 5),
        (10, 4),
        (10, 6),
        (10, 5),
        (10, 8),
        (10, 10),
        (10, 9),
        (10, 10),
        (10, 10),
        (10, 9),
        (10, 10),
    ],
    "b": [
        (10, 9),
        (10, 10),
        (10, 10),
        (10, 8),
        (10, 10),
        (10, 9),
        (10, 10),
        (10, 10),
        (10, 9),
        (10, 10),
        (10, 10),
        (10, 8),
        (10, 10),
        (10, 10),
    ],
}


def day(offset: int) -> str:
    return (START + dt.timedelta(days=offset)).isoformat()


def _store_metrics(store, model_id: str, days: list[int]) -> None:
    for i in days:
        docs = [
            {"label": label, "n": series[i][0], "correct": series[i][1], "failed": 0}
            for label, series in SERIES.items()
        ]
        store.replace_day("class_metrics", model_id, day(i), docs)


def _history(store, model_id: str) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """Every class_health row of ``model_id`` (without ids) and its alerts, in date and label order."""
    rows = sorted(
        (
            {k: v for k, v in row.items() if k not in ("_id", "model_id")}
            for row in find(store, "class_health", {"model_id": model_id})
        ),
        key=lambda row: (row["date"], row["label"]),
    )
    alerts = sorted((a["date"], a["label"], a["kind"]) for a in find(store, "alerts", {"model_id": model_id}))
    return rows, alerts


#: (the settings of the backfill and of the days before the change, the update the later days were judged under)
CHANGES = {
    "target of one class raised": ({}, {"target_overrides": {"a": 0.85}}),
    "target of one class lowered": ({"target_overrides": {"a": 0.85}}, {"target_overrides": {}}),
    "window narrowed": ({}, {"window_days": 4}),
    "window widened": ({"window_days": 4}, {"window_days": 14}),
    "window and target together": ({"window_days": 6}, {"window_days": 11, "target_overrides": {"b": 0.85}}),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_backfill_after_a_target_or_window_change_leaves_the_history_an_in_order_run_writes(
    store, settings: Settings, change: str
) -> None:
    before, after = CHANGES[change]
    old = settings.model_copy(update=before)
    new = old.model_copy(update=after)
    judged_with = {i: (old if i < CHANGED_FROM else new) for i in range(DAYS)}

    # In order: every date judged on time, each under the settings of its day.
    _store_metrics(store, "order@1", list(range(DAYS)))
    for i in range(DAYS):
        health_with(RunContext.for_date(judged_with[i], day(i)), store, model_id="order@1")
    # Late: LATE's metrics arrive after every later day was judged; its run (under the old settings, as a re-run
    # of an old date today would be) recomputes the later days.
    _store_metrics(store, "late@1", [i for i in range(DAYS) if i != LATE])
    for i in range(DAYS):
        if i != LATE:
            health_with(RunContext.for_date(judged_with[i], day(i)), store, model_id="late@1")
    before_backfill = {(r["date"], r["label"]): r for r in _history(store, "late@1")[0]}
    _store_metrics(store, "late@1", [LATE])
    health_with(RunContext.for_date(old, day(LATE)), store, model_id="late@1")

    rows, alerts = _history(store, "late@1")
    expected_rows, expected_alerts = _history(store, "order@1")
    assert rows == expected_rows
    assert alerts == expected_alerts
    # The later days kept their own target and window (the backfill's settings did not leak into them) ...
    for row in rows:
        kept = judged_with[int((dt.date.fromisoformat(row["date"]) - START).days)]
        assert (row["target"], row["window_days"]) == (kept.target_for(row["label"]), kept.window_days), row["date"]
        assert row["judged_under"]["window_days"] == kept.window_days
    # ... and the backfill did change them (the late day's counts moved the statistics), or this test shows nothing.
    moved = [
        key
        for key, row in before_backfill.items()
        if key[0] > day(LATE) and row["cusum"] != next(r for r in rows if (r["date"], r["label"]) == key)["cusum"]
    ]
    assert moved
    verdicts = {row["verdict"] for row in rows}
    assert "needs_retraining" in verdicts and len(verdicts) >= 3


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_later_day_recomputed_as_stored_equals_its_row_judged_on_time(store, settings: Settings, change: str) -> None:
    before, after = CHANGES[change]
    old = settings.model_copy(update=before)
    new = old.model_copy(update=after)
    _store_metrics(store, "m@1", list(range(DAYS)))
    for i in range(DAYS):
        compute_health(store, "m@1", day(i), old if i < CHANGED_FROM else new)
    on_time = _history(store, "m@1")[0]

    # Each later day recomputed in order under today's (old) settings, as_stored: nothing changes.
    for i in range(CHANGED_FROM, DAYS):
        compute_health(store, "m@1", day(i), old, as_stored=True)
    assert _history(store, "m@1")[0] == on_time
    # Without as_stored the same recomputation would rewrite them: the settings differ in what a row shows.
    compute_health(store, "m@1", day(DAYS - 1), old)
    assert _history(store, "m@1")[0] != on_time


# --- follow-up requests of two models judged on the same date ---------------------------------------------------


def _health_rows(store, model_id: str, date: str, rows: dict[str, tuple[int, float, bool]]) -> None:
    """class_health rows of (model, date): label -> (follow-up asked, cusum against a threshold of 10, flagged)."""
    store.replace_day(
        "class_health",
        model_id,
        date,
        [
            {"label": label, "followup": extra, "cusum": s, "cusum_threshold": 10.0, "flagged": flagged}
            for label, (extra, s, flagged) in rows.items()
        ],
    )


@pytest.mark.parametrize("larger", ["first model", "second model"])
def test_a_class_judged_by_two_models_on_the_same_date_gets_the_larger_request(store, larger: str) -> None:
    small = {"a": (30, 2.0, False), "b": (60, 4.0, False), "c": (0, 0.0, False), "d": (40, 12.0, True)}
    big = {"a": (90, 4.5, False), "c": (30, 1.8, False), "d": (180, 6.0, False)}
    first, second = (big, small) if larger == "first model" else (small, big)
    _health_rows(store, "m1@1", day(1), first)
    _health_rows(store, "m2@1", day(1), second)
    _health_rows(store, "m3@1", day(0), {"a": (600, 9.0, False), "e": (30, 2.0, False)})  # an older date: not asked for

    # a: 90 over 30; b and c: the one model that asks; d: 180 over a flagged 40 (the larger request, as documented).
    assert followup_requests(store, day(2), cap=10_000) == {"a": 90, "b": 60, "c": 30, "d": 180}


@pytest.mark.parametrize("larger", ["first model", "second model"])
def test_over_the_cap_two_models_requests_are_granted_most_urgent_first(store, larger: str) -> None:
    # a: model one 30 at S/h 0.15, model two 90 at 0.45 -> 90 at 0.45; b: 60 at 0.35 (one model); c: flagged, 40.
    one = {"a": (30, 1.5, False), "b": (60, 3.5, False)}
    two = {"a": (90, 4.5, False), "c": (40, 11.0, True)}
    first, second = (two, one) if larger == "first model" else (one, two)
    _health_rows(store, "m1@1", day(1), first)
    _health_rows(store, "m2@1", day(1), second)

    # c (flagged) first, then a (0.45), then b (0.35): 40 + 90 fill 130 of 150, b gets the 20 left.
    assert followup_requests(store, day(2), cap=150) == {"c": 40, "a": 90, "b": 20}
    # Short of a's 90: a gets what c left, in whole grant units (10) when asked; b nothing.
    assert followup_requests(store, day(2), cap=125) == {"c": 40, "a": 85}
    assert followup_requests(store, day(2), cap=125, unit=10) == {"c": 40, "a": 80}
