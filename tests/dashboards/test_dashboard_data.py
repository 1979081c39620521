"""The dashboard without a browser: its queries, pooling, URL state, figures and pages, on contract-shaped store documents."""

from __future__ import annotations

import datetime as dt
import io
import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from statsmodels.stats.proportion import proportion_confint

from dashboards import ids
from dashboards.components import model_option_label
from dashboards.data import DashboardData
from dashboards.figures import heatmap_figure, timeseries_figure
from dashboards.pages import render_page
from dashboards.pages.overview import PAGE_SIZE
from dashboards.pooling import auto_grain, period_start, pool_by_period
from dashboards.state import ViewState, parse_query, to_query
from dashboards.status import class_status, rank_classes, verdict_changes
from dashboards.thumbnails import make_thumbnail
from dashboards.view import resolve
from monitor.core.errors import DataError
from tests.fixtures.dashboard import END, MODEL, day, find, health_doc, metric_doc, store_snapshot, texts, write_history

# --- pure helpers ---------------------------------------------------------------------------------


def test_pooling_sums_counts_instead_of_averaging_daily_ratios() -> None:
    metrics = pd.DataFrame(
        {
            "date": ["2024-01-01", "2024-01-02", "2024-01-03"],
            "label": ["a", "a", "a"],
            "n": [10, 2, 0],
            "correct": [9, 0, 0],
            "failed": [0, 1, 3],
        }
    )
    pooled = pool_by_period(metrics, "week", 0.95)
    row = pooled.iloc[0]
    assert (row["n"], row["correct"], row["failed"], row["days"]) == (12, 9, 4, 3)
    assert row["accuracy"] == pytest.approx(9 / 12)  # the mean of daily ratios would be 0.45
    low, high = proportion_confint(9, 12, alpha=0.05, method="wilson")
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))


def test_pooling_a_period_without_images_gives_no_accuracy() -> None:
    metrics = pd.DataFrame({"date": ["2024-01-01"], "label": ["a"], "n": [0], "correct": [0], "failed": [2]})
    row = pool_by_period(metrics, "day", 0.9).iloc[0]
    assert np.isnan(row["accuracy"]) and np.isnan(row["ci_low"]) and row["failed"] == 2


@pytest.mark.parametrize("grain,freq", [("week", "W-SUN"), ("month", "M")])
def test_period_start_is_the_first_day_of_the_iso_week_or_month(grain: str, freq: str) -> None:
    dates = pd.Series(pd.date_range("2023-12-20", "2024-03-10", freq="D").strftime("%Y-%m-%d"))
    expected = [pd.Period(d, freq=freq).start_time.strftime("%Y-%m-%d") for d in dates]
    assert list(period_start(dates, grain)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("days,grain", [(1, "day"), (92, "day"), (93, "week"), (731, "week"), (732, "month")])
def test_auto_grain_keeps_the_heatmap_narrow(days: int, grain: str) -> None:
    start = dt.date(2022, 1, 1)
    assert auto_grain(start.isoformat(), (start + dt.timedelta(days=days - 1)).isoformat()) == grain


def test_class_status_reports_the_latest_verdict_and_since_when() -> None:
    health = pd.DataFrame(
        [
            health_doc("a", "2024-01-01", "healthy"),
            health_doc("a", "2024-01-02", "watch"),
            health_doc("a", "2024-01-03", "needs_retraining"),
            health_doc("a", "2024-01-04", "needs_retraining"),
            health_doc("b", "2024-01-01", "watch"),
            health_doc("b", "2024-01-02", "healthy"),
        ]
    )
    status = class_status(health)
    assert status.loc["a", "verdict"] == "needs_retraining"
    assert status.loc["a", "since"] == "2024-01-03"
    assert status.loc["a", "previous_verdict"] == "watch"
    assert (status.loc["b", "verdict"], status.loc["b", "since"]) == ("healthy", "2024-01-02")
    assert class_status(health, as_of="2024-01-02").loc["a", "verdict"] == "watch"


def test_verdict_changes_lists_each_transition_once() -> None:
    verdicts = ["healthy", "healthy", "watch", "needs_retraining", "needs_retraining", "healthy"]
    health = pd.DataFrame([health_doc("a", f"2024-01-0{i + 1}", v) for i, v in enumerate(verdicts)])
    changes = verdict_changes(health)
    assert list(changes["date"]) == ["2024-01-03", "2024-01-04", "2024-01-06"]
    assert list(changes["previous_verdict"]) == ["healthy", "watch", "needs_retraining"]


@pytest.mark.parametrize(
    "order,expected",
    [("worst", ["c", "b", "a", "d"]), ("accuracy", ["b", "c", "a", "d"]), ("name", ["a", "b", "c", "d"])],
)
def test_rank_classes_orders_by_urgency_accuracy_or_name(order: str, expected: list[str]) -> None:
    status = pd.DataFrame(
        {"verdict": ["healthy", "watch", "needs_retraining"], "prob_below_target": [0.01, 0.5, 0.9]},
        index=pd.Index(["a", "b", "c"], name="label"),
    )
    accuracy = pd.Series({"a": 0.95, "b": 0.6, "c": 0.7})
    assert rank_classes(status, accuracy, ["d", "c", "b", "a"], order) == expected


def test_thumbnail_is_a_small_jpeg_and_non_images_are_refused() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (600, 300), (200, 30, 30)).save(buffer, format="PNG")
    thumb = Image.open(io.BytesIO(make_thumbnail(buffer.getvalue(), 128)))
    assert thumb.format == "JPEG" and max(thumb.size) == 128 and thumb.size == (128, 64)
    with pytest.raises(DataError, match="not a readable image"):
        make_thumbnail(b"<html>not an image</html>")
    with pytest.raises(DataError, match="pixel limit"):
        make_thumbnail(buffer.getvalue(), max_pixels=1000)


# --- queries on the store ---------------------------------------------------------------------------


def test_queries_slice_by_range_and_classes(settings, history) -> None:
    data = DashboardData(settings)
    assert [m.model_id for m in data.models()] == [MODEL]
    # The model filter shows when each model was evaluated, so a switch of models is visible there.
    assert model_option_label(data.models()[0]) == f"digits ({MODEL.split('@')[-1]}) · {day(29)} → {day(0)}"
    assert data.date_bounds(MODEL) == (day(29), day(0))
    assert data.labels(MODEL) == ["ant", "bee", "cat"]
    frame = data.metrics(MODEL, day(9), day(0), ["cat"])
    assert sorted(frame["date"]) == [day(k) for k in range(9, -1, -1)]
    assert set(frame["label"]) == {"cat"}
    expected = history["metrics"].query("label == 'cat' and date >= @day(9)")["correct"].sum()
    assert frame["correct"].sum() == expected
    confusions = data.confusions(MODEL, "cat", day(7), day(0))
    wrong = history["metrics"].query("label == 'cat' and date >= @day(7)")
    assert confusions["count"].sum() == (wrong["n"] - wrong["correct"]).sum()
    assert set(confusions["pred"]) <= {"dog"}
    assert list(data.alerts(MODEL, labels=["cat"])["kind"]) == ["needs_retraining"]
    assert data.runs(day(0))[0]["failed"] == {"decode_error": 1}
    with pytest.raises(DataError, match="not a valid"):
        data.runs("2024-13-01")
    with pytest.raises(DataError, match="has no results"):
        data.model("other@000000000000")


def test_a_pipeline_write_shows_up_without_restarting(store, settings, history) -> None:
    data = DashboardData(settings)
    assert data.date_bounds(MODEL) == (day(29), day(0))
    next_day = (END + dt.timedelta(days=1)).isoformat()
    store.replace_day("class_metrics", MODEL, next_day, [metric_doc("ant", next_day, 10, 10)])
    assert data.date_bounds(MODEL) == (day(29), day(0))  # not committed yet: readers see the last commit
    store.commit()
    assert data.date_bounds(MODEL) == (day(29), next_day)
    assert sorted(data.metrics(MODEL, next_day, next_day)["label"]) == ["ant"]


def test_the_served_app_follows_a_commit_and_never_writes_the_store(store, settings, history) -> None:
    reloaded = threading.Event()
    data = DashboardData(settings, background_reload=True, on_reload=reloaded.set)
    before = store_snapshot(settings)
    assert before, "the history fixture committed nothing"
    assert data.date_bounds(MODEL) == (day(29), day(0))
    assert not data.metrics(MODEL).empty and not data.health(MODEL).empty and not data.alerts(MODEL).empty
    data.confusions(MODEL, "cat")
    data.runs(day(0))
    data.labels(MODEL)
    assert store_snapshot(settings) == before  # the dashboard read without locking or writing anything
    next_day = (END + dt.timedelta(days=1)).isoformat()
    store.replace_day("class_metrics", MODEL, next_day, [metric_doc("ant", next_day, 10, 10)])
    store.commit()
    committed = store_snapshot(settings)
    # The first answer after the commit is already on the new data; on_reload (the warm-up) runs on a thread.
    assert data.date_bounds(MODEL) == (day(29), next_day)
    assert reloaded.wait(30), "on_reload never ran after the commit"
    assert store_snapshot(settings) == committed
    data.close()
    assert store_snapshot(settings) == committed


def test_alerts_come_newest_first_then_by_class(store, settings, history) -> None:
    for label, date in (("bee", day(1)), ("ant", day(1)), ("ant", day(5))):
        store.add_alert(
            {
                "model_id": MODEL,
                "label": label,
                "date": date,
                "kind": "watch",
                "message": f"{label} on watch",
                "delivered": False,
            }
        )
    store.commit()
    alerts = DashboardData(settings).alerts(MODEL)
    assert list(zip(alerts["date"], alerts["label"])) == [
        (day(1), "ant"),
        (day(1), "bee"),
        (day(2), "cat"),
        (day(5), "ant"),
    ]


def test_an_empty_store_resolves_to_the_empty_state(settings) -> None:
    data = DashboardData(settings)
    assert data.models() == []
    assert resolve(data, ViewState()) is None
    view, content = render_page(data, ids.PATH_OVERVIEW, ViewState())
    assert view is None
    empty = find(content, ids.EMPTY_STATE)
    assert empty is not None and "monitor demo" in texts(empty)


# --- URL state -----------------------------------------------------------------------------------------


def test_url_state_round_trips_and_keeps_defaults_out_of_the_url() -> None:
    state = ViewState(
        model=MODEL,
        start="2024-01-01",
        end="2024-02-01",
        classes=("a b", "c&d"),
        grain="week",
        color="verdict",
        sort="name",
        page=3,
        date="2024-01-15",
    )
    assert parse_query(to_query(state)) == state
    assert to_query(ViewState()) == ""
    assert to_query(ViewState(classes=("x",))) == "?classes=x"


def test_malformed_url_values_are_ignored_and_named() -> None:
    state = parse_query("?start=2024-02-30&grain=fortnight&page=-2&sort=worst")
    assert (state.start, state.grain, state.page, state.sort) == (None, "auto", 1, "worst")
    assert any("start='2024-02-30'" in p for p in state.problems)
    assert any("grain='fortnight'" in p for p in state.problems)
    assert any("page='-2'" in p for p in state.problems)


def test_controls_write_the_url_and_filter_changes_go_back_to_page_one() -> None:
    from dashboards.state import state_from_controls

    state = ViewState(model=MODEL, page=4, sort="worst")
    assert state_from_controls(state, {ids.Q_PAGE: "5", ids.Q_SORT: "worst"}, None, None).page == 5
    changed = state_from_controls(state, {ids.Q_PAGE: "4", ids.Q_SORT: "name"}, None, None)
    assert (changed.sort, changed.page) == ("name", 1)
    other_model = state_from_controls(
        ViewState(model=MODEL, start="2024-01-01", classes=("a",)), {ids.Q_MODEL: "x@1"}, None, None
    )
    assert (other_model.model, other_model.start, other_model.classes) == ("x@1", None, ())


# --- figures and pages ----------------------------------------------------------------------------------


def test_heatmap_cells_are_pooled_accuracy_per_class_and_period() -> None:
    metrics = pd.DataFrame(
        {
            "date": ["2024-01-01", "2024-01-02", "2024-01-01"],
            "label": ["a", "a", "b"],
            "n": [10, 10, 10],
            "correct": [10, 5, 7],
            "failed": [0, 0, 0],
        }
    )
    cells = pool_by_period(metrics, "week", 0.95)
    figure = heatmap_figure(cells, ["b", "a"], ["2024-01-01"], color="accuracy", grain="week", level=0.95)
    z = np.asarray(figure.data[0].z, dtype=float)
    assert list(figure.data[0].y) == ["b", "a"]
    assert z[:, 0] == pytest.approx([0.7, 0.75])


def test_overview_pages_a_thousand_classes_over_two_years(store, settings) -> None:
    labels = [f"c{i:04d}" for i in range(1000)]
    # Few documents, many classes: one metric per class at both ends of a two-year range.
    docs = [
        metric_doc(label, date, 10, 9 if i != 500 else 2)
        for i, label in enumerate(labels)
        for date in ("2022-04-01", "2024-03-31")
    ]
    write_history(store, "class_metrics", docs)
    store.commit()
    data = DashboardData(settings)
    state = ViewState(start="2022-04-01", end="2024-03-31", sort="accuracy")
    view, content = render_page(data, ids.PATH_OVERVIEW, state)
    assert view is not None
    figure = find(content, ids.OVERVIEW_HEATMAP).figure
    heat = figure.data[0]
    assert len(heat.y) == PAGE_SIZE
    assert heat.y[0] == "c0500"  # lowest accuracy first
    assert len(heat.x) <= 105  # aggregated to weeks, not 731 day columns
    pager = find(content, ids.HEATMAP_PAGER)
    assert f"of {-(-1000 // PAGE_SIZE)}" in str(pager)


def test_overview_shows_the_flagged_class_with_its_evidence(settings, history) -> None:
    data = DashboardData(settings)
    _, content = render_page(data, ids.PATH_OVERVIEW, ViewState())
    flagged = texts(find(content, ids.FLAGGED))
    assert "cat" in flagged and "needs retraining" in flagged
    assert "bee" in flagged and "watch" in flagged
    assert "ant" not in flagged
    assert "cat looks needs_retraining" in flagged  # the reason, as the health step wrote it
    summary = texts(find(content, ids.SUMMARY))
    assert MODEL in summary and f"{day(29)} → {day(0)}" in summary
    assert list(find(content, ids.OVERVIEW_HEATMAP).figure.data[0].y)[:2] == ["cat", "bee"]


def test_class_time_series_has_the_wilson_band_target_and_verdict_changes(settings, history) -> None:
    data = DashboardData(settings)
    _, content = render_page(data, ids.PATH_CLASS, ViewState(classes=("cat",)))
    figure = find(content, f"{ids.CLASS_TIMESERIES}-0").figure
    traces = {trace.name: trace for trace in figure.data}
    daily = history["metrics"].query("label == 'cat'").sort_values("date")
    low, high = proportion_confint(daily["correct"], daily["n"], alpha=0.05, method="wilson")
    band = traces["95% interval (day)"]
    assert band.fill == "tonexty"
    assert np.asarray(band.y, dtype=float) == pytest.approx(np.asarray(low))
    assert np.asarray(traces["95% interval (day) upper"].y, dtype=float) == pytest.approx(np.asarray(high))
    assert np.asarray(traces["accuracy per day"].y, dtype=float) == pytest.approx(
        (daily["correct"] / daily["n"]).to_numpy()
    )
    assert set(traces["target 90%"].y) == {0.9}
    assert "pooled 14-day estimate" in traces
    # One marker trace (and legend entry) per verdict reached, each in that verdict's colour.
    assert list(traces["became watch"].x) == [day(5)] and list(traces["became watch"].text) == ["healthy → watch"]
    reached = traces["became needs retraining"]
    assert list(reached.x) == [day(2)] and list(reached.text) == ["watch → needs retraining"]
    assert reached.marker.color == "#c62828" and traces["became watch"].marker.color == "#f0a202"
    assert {t.legendgroup for t in figure.data if t.name.startswith("became ")} == {"verdict change"}
    assert "needs retraining" in texts(find(content, ids.CLASS_ALERTS)) or "needs retraining" in texts(content)


def test_class_page_without_a_choice_shows_the_most_urgent_class(settings, history) -> None:
    _, content = render_page(DashboardData(settings), ids.PATH_CLASS, ViewState())
    assert find(content, f"{ids.CLASS_TIMESERIES}-0").figure.layout.title.text == "cat"


def test_weekly_time_series_pools_the_week() -> None:
    metrics = pd.DataFrame(
        [metric_doc("a", d, 10, c) for d, c in (("2024-01-01", 10), ("2024-01-02", 4), ("2024-01-08", 9))]
    )
    figure = timeseries_figure(
        "a", metrics, pd.DataFrame(columns=list(health_doc("a", "x", "healthy"))), level=0.95, target=0.9, grain="week"
    )
    traces = {t.name: t for t in figure.data}
    assert np.asarray(traces["accuracy per week"].y, dtype=float) == pytest.approx([0.7, 0.9])


def test_run_detail_lists_classes_skipped_and_failed(settings, history) -> None:
    _, content = render_page(DashboardData(settings), ids.PATH_RUN, ViewState())
    table_text = texts(find(content, ids.RUN_TABLE))
    for label in ("ant", "bee", "cat"):
        assert label in table_text
    assert "zero_bytes" in texts(find(content, ids.RUN_SKIPPED))
    assert "decode_error" in texts(find(content, ids.RUN_FAILED))


def test_errors_page_lists_what_the_class_is_mistaken_for(settings, history) -> None:
    _, content = render_page(DashboardData(settings), ids.PATH_ERRORS, ViewState(classes=("cat",)))
    assert "dog" in texts(find(content, ids.CONFUSION_TABLE))
    chart = find(content, ids.CONFUSION_CHART).figure
    assert [t.name for t in chart.data] == ["as dog"]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("0001-01-01", None, (29, 0)),
        ("1678-01-01", "2262-01-01", (29, 0)),
        (None, "9999-12-31", (29, 0)),
        ("2999-01-01", "2999-02-01", (0, 0)),
    ],
)
def test_a_shared_link_asking_for_dates_outside_the_data_is_clamped_with_a_notice(
    settings, history, start, end, expected
) -> None:
    data = DashboardData(settings)
    view = resolve(data, ViewState(start=start, end=end))
    assert view is not None
    assert (view.start, view.end) == (day(expected[0]), day(expected[1]))
    assert any("outside the evaluated dates" in notice for notice in view.notices)
    # The page renders the clamped range, not centuries of empty columns.
    render_page(data, ids.PATH_OVERVIEW, ViewState(start=start, end=end))


def test_an_unknown_model_in_a_shared_link_is_explained(settings, history) -> None:
    with pytest.raises(DataError, match="has no results"):
        render_page(DashboardData(settings), ids.PATH_OVERVIEW, ViewState(model="gone@000000000000"))


# --- thumbnails through the Flask route --------------------------------------------------------------------


@pytest.fixture
def gallery_day(settings, history) -> str:
    """A source folder with two images and a predictions file naming one of them (wrongly predicted)."""
    source = settings.data_dir / "source"
    for name in ("cat/a.png", "cat/b.png"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (20, 200, 20)).save(source / name)
    (settings.data_dir / "secret.png").write_bytes((source / "cat/a.png").read_bytes())
    settings.predictions_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "date": day(0),
            "image_path": "cat/a.png",
            "label": "cat",
            "pred": "dog",
            "confidence": 0.8,
            "topk_labels": ["dog"],
            "topk_scores": [0.8],
            "model_id": MODEL,
            "status": "ok",
            "error": None,
        },
        {
            "date": day(0),
            "image_path": "cat/gone.png",
            "label": "cat",
            "pred": "dog",
            "confidence": 0.6,
            "topk_labels": ["dog"],
            "topk_scores": [0.6],
            "model_id": MODEL,
            "status": "ok",
            "error": None,
        },
        {
            "date": day(0),
            "image_path": "../secret.png",
            "label": "cat",
            "pred": "dog",
            "confidence": 0.7,
            "topk_labels": ["dog"],
            "topk_scores": [0.7],
            "model_id": MODEL,
            "status": "ok",
            "error": None,
        },
    ]
    pd.DataFrame(rows).to_parquet(settings.predictions_file(day(0)))
    return day(0)


def test_thumbnail_route_serves_sampled_images_and_nothing_else(settings, gallery_day) -> None:
    from dashboards.app import create_app

    client = create_app(settings).server.test_client()
    ok = client.get(ids.PATH_THUMB, query_string={"date": gallery_day, "path": "cat/a.png"})
    assert ok.status_code == 200 and ok.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(ok.data)).size == (64, 48)
    assert (
        client.get(ids.PATH_THUMB, query_string={"date": gallery_day, "path": "cat/b.png"}).status_code == 404
    )  # not sampled
    assert (
        client.get(ids.PATH_THUMB, query_string={"date": gallery_day, "path": "../secret.png"}).status_code == 404
    )  # outside the source
    assert (
        client.get(ids.PATH_THUMB, query_string={"date": gallery_day, "path": "cat/gone.png"}).status_code == 502
    )  # sampled, since deleted
    assert client.get(ids.PATH_THUMB, query_string={"date": "../../etc", "path": "cat/a.png"}).status_code == 404


def test_gallery_shows_the_days_misclassified_images(settings, gallery_day) -> None:
    _, content = render_page(DashboardData(settings), ids.PATH_ERRORS, ViewState(classes=("cat",)))
    gallery = find(content, ids.GALLERY)
    assert "cat%2Fa.png" in str(gallery) and f"date={gallery_day}" in str(gallery)


# --- scale: the array paths give the answers of the groupby they replace ------------------------------------------


def _status_by_groupby(health: pd.DataFrame, as_of: str | None = None) -> pd.DataFrame:
    """:func:`class_status` as it was written first (pandas groupby over runs of equal verdicts): the reference."""
    rows = health if as_of is None else health[health["date"] <= as_of]
    rows = rows.sort_values(["label", "date"], kind="stable")
    changed = rows["verdict"].ne(rows.groupby("label")["verdict"].shift())
    run_id = changed.groupby(rows["label"]).cumsum()
    run_start = rows["date"].where(changed).groupby([rows["label"], run_id]).transform("first")
    before = rows.groupby("label")["verdict"].shift().where(changed)
    previous = before.groupby([rows["label"], run_id]).transform("first")
    rows = rows.assign(since=run_start, previous_verdict=previous)
    return rows.groupby("label", sort=True).tail(1).set_index("label")


def _pool_by_groupby(metrics: pd.DataFrame, grain: str) -> pd.DataFrame:
    """The sums of :func:`pool_by_period` by pandas groupby: the reference."""
    frame = metrics.assign(period=period_start(metrics["date"], grain))  # type: ignore[arg-type]
    return (
        frame.groupby(["label", "period"], sort=True)
        .agg(n=("n", "sum"), correct=("correct", "sum"), failed=("failed", "sum"), days=("date", "nunique"))
        .reset_index()
    )


def _random_health(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    verdicts = ["healthy", "watch", "needs_retraining", "insufficient_data", None, np.nan]
    docs = [
        health_doc(
            f"c{c}",
            (dt.date(2024, 1, 1) + dt.timedelta(days=int(d))).isoformat(),
            verdicts[int(rng.integers(0, 6 if seed % 2 else 4))],
        )
        for c in range(int(rng.integers(1, 6)))
        for d in range(int(rng.integers(1, 25)))
        if rng.random() > 0.2
    ]
    if docs and seed % 3 == 0:
        docs.append({**docs[0], "verdict": "watch"})  # a date given twice
    order = rng.permutation(len(docs)) if seed % 4 else np.arange(len(docs))
    return pd.DataFrame([docs[i] for i in order]) if docs else pd.DataFrame([health_doc("c0", "2024-01-01", "healthy")])


@pytest.mark.parametrize("seed", range(40))
def test_class_status_by_arrays_matches_the_groupby_over_runs(seed: int) -> None:
    health = _random_health(seed)
    for as_of in (None, "2024-01-12"):
        got, expected = class_status(health, as_of=as_of), _status_by_groupby(health, as_of=as_of)
        if expected.empty:
            assert got.empty
            continue
        pd.testing.assert_frame_equal(got, expected)
        for column in ("since", "previous_verdict", "verdict"):  # None and NaN kept apart, as the pages print them
            assert [repr(v) for v in got[column]] == [repr(v) for v in expected[column]], column


@pytest.mark.parametrize("seed", range(20))
def test_pooling_by_codes_matches_the_groupby(seed: int) -> None:
    from dashboards.pooling import range_pooled_accuracy

    rng = np.random.default_rng(100 + seed)
    n = rng.choice([0, 3, 10], size=300)
    metrics = pd.DataFrame(
        {
            "date": [
                (dt.date(2024, 1, 1) + dt.timedelta(days=int(d))).isoformat() for d in rng.integers(0, 120, size=300)
            ],
            "label": [f"c{c}" for c in rng.integers(0, 9, size=300)],
            "n": n,
            "correct": [int(rng.integers(0, k + 1)) for k in n],
            "failed": rng.integers(0, 3, size=300),
        }
    )
    for grain in ("day", "week", "month"):
        pooled = pool_by_period(metrics, grain, 0.9)  # type: ignore[arg-type]
        expected = _pool_by_groupby(metrics, grain)
        pd.testing.assert_frame_equal(pooled[list(expected.columns)], expected)
    totals = metrics.groupby("label")[["n", "correct"]].sum()
    expected_accuracy = (totals["correct"] / totals["n"].where(totals["n"] > 0)).astype(float)
    pd.testing.assert_series_equal(range_pooled_accuracy(metrics), expected_accuracy)
    # Counts that are not whole numbers (a hand-made frame) take pandas' path and still pool.
    loose = metrics.assign(n=metrics["n"].astype(float))
    assert pool_by_period(loose, "week", 0.9)["n"].sum() == metrics["n"].sum()


def test_range_slicing_by_bisection_matches_the_row_mask() -> None:
    from dashboards.records import in_range, sorted_dates

    frame = pd.DataFrame(
        [
            metric_doc(label, (dt.date(2024, 1, 1) + dt.timedelta(days=d)).isoformat(), 10, 9)
            for d in range(40)
            for label in ("a", "b", "c")
        ]
    )
    dates = sorted_dates(frame)
    assert dates is not None and sorted_dates(frame.iloc[::-1]) is None  # only a sorted date column is bisected
    for start, end, labels in [
        (None, None, None),
        ("2024-01-05", "2024-01-09", None),
        (None, "2024-01-03", ["b"]),
        ("2024-03-01", None, None),
        ("2024-01-10", "2024-01-01", ["a", "c"]),
    ]:
        pd.testing.assert_frame_equal(
            in_range(frame, start, end, labels, dates=dates), in_range(frame, start, end, labels)
        )


def test_the_overview_reads_each_history_once_per_commit(store, settings, history, monkeypatch) -> None:
    from monitor.store import EmbeddedStore

    reads: list[str] = []
    rows = EmbeddedStore.rows

    def counted(self: EmbeddedStore, kind: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        reads.append(kind)
        return rows(self, kind, *args, **kwargs)

    monkeypatch.setattr(EmbeddedStore, "rows", counted)
    data = DashboardData(settings)
    for state in (ViewState(), ViewState(color="verdict"), ViewState(sort="name", page=1), ViewState()):
        render_page(data, ids.PATH_OVERVIEW, state)
    # The whole history of each kind once (the class list comes from it too), whatever the page asks for.
    assert sorted(reads) == ["class_health", "class_metrics"]
    next_day = (END + dt.timedelta(days=1)).isoformat()
    store.replace_day("class_metrics", MODEL, next_day, [metric_doc("ant", next_day, 10, 4)])
    store.commit()
    reads.clear()
    _, content = render_page(data, ids.PATH_OVERVIEW, ViewState())
    assert reads == ["class_metrics"]  # only what the commit changed is read again
    assert f"→ {next_day}" in texts(find(content, ids.SUMMARY))  # the new commit is shown


def test_after_a_commit_only_the_changed_dates_are_read_again_and_the_history_equals_a_fresh_read(
    store, settings, history, monkeypatch
) -> None:
    from monitor.store import EmbeddedStore

    reads: list[tuple[str, str | None, str | None]] = []
    rows = EmbeddedStore.rows

    def counted(self: EmbeddedStore, kind: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        reads.append((kind, kwargs.get("start"), kwargs.get("end")))
        return rows(self, kind, *args, **kwargs)

    monkeypatch.setattr(EmbeddedStore, "rows", counted)
    data = DashboardData(settings)
    data.metrics(MODEL), data.health(MODEL)
    assert reads == [("class_metrics", None, None), ("class_health", None, None)]

    # A pipeline day (a new date), a backfill that rewrites an old date, and a date whose rows are removed.
    next_day = (END + dt.timedelta(days=1)).isoformat()
    store.replace_day(
        "class_metrics", MODEL, next_day, [metric_doc("ant", next_day, 10, 4), metric_doc("bee", next_day, 10, 9)]
    )
    store.replace_day("class_metrics", MODEL, day(12), [metric_doc("cat", day(12), 30, 3)])
    store.replace_day("class_metrics", MODEL, day(20), [])
    store.commit()
    reads.clear()
    updated = data.metrics(MODEL)
    health = data.health(MODEL)
    # One read of the changed span of class_metrics; class_health did not change: not read at all.
    assert reads == [("class_metrics", day(12), next_day)]

    fresh = DashboardData(settings)
    expected = fresh.metrics(MODEL)
    pd.testing.assert_frame_equal(updated.reset_index(drop=True), expected.reset_index(drop=True))
    pd.testing.assert_frame_equal(health.reset_index(drop=True), fresh.health(MODEL).reset_index(drop=True))
    assert day(20) not in set(updated["date"])
    assert updated.query("date == @day(12)")[["label", "n", "correct"]].values.tolist() == [["cat", 30, 3]]
    assert sorted(updated.query("date == @next_day")["label"]) == ["ant", "bee"]
    # Slicing by range still works on the merged history (its dates sorted again).
    assert sorted(set(data.metrics(MODEL, day(13), next_day)["date"])) == sorted(
        {day(k) for k in range(14)} | {next_day}
    )


def test_the_heatmap_scale_turns_at_the_target_so_a_moderate_drop_stands_out() -> None:
    from plotly.colors import find_intermediate_color, hex_to_rgb

    from dashboards.figures import accuracy_floor, accuracy_scale

    def colour(value: float, target: float) -> tuple[float, ...]:
        low, scale = accuracy_floor(target), accuracy_scale(target)
        x = (value - low) / (1 - low)
        for (a, ca), (b, cb) in zip(scale, scale[1:]):
            if a <= x <= b:
                return find_intermediate_color(hex_to_rgb(ca), hex_to_rgb(cb), (x - a) / (b - a) if b > a else 0)
        raise AssertionError(x)

    # Target 0.9: a class at 0.80 is red-orange (red well above green), one at 0.95 green (green above red).
    red, green, _ = colour(0.80, 0.9)
    assert red > 150 and green < 100
    red, green, _ = colour(0.95, 0.9)
    assert green > red
    # On the old fixed 50-100% red-yellow-green scale, 0.80 sat past the middle, in the yellow-greens.
    assert accuracy_floor(0.9) == pytest.approx(0.7) and accuracy_floor(0.5) == pytest.approx(0.3)
    assert [x for x, _ in accuracy_scale(0.9)] == sorted(x for x, _ in accuracy_scale(0.9))


def test_the_overview_puts_the_flagged_classes_first_in_plain_words_with_the_next_steps(settings, history) -> None:
    from dashboards.pages.overview import NEXT_STEPS, plain_summary

    data = DashboardData(settings)
    _, content = render_page(data, ids.PATH_OVERVIEW, ViewState())

    def holds(block: Any, id_: str) -> bool:
        try:
            return find(block, id_) is not None
        except (StopIteration, AssertionError, KeyError, LookupError):
            return False

    flagged_at = next(i for i, block in enumerate(content) if holds(block, ids.FLAGGED))
    heatmap_at = next(i for i, block in enumerate(content) if holds(block, ids.OVERVIEW_HEATMAP))
    assert flagged_at < heatmap_at
    said = texts(find(content, ids.NEXT_STEPS))
    last = history["health"].query(f"label == 'cat' and date == '{day(0)}'").iloc[0]
    wrong = int(last["pooled_n"]) - int(last["pooled_correct"])
    assert (
        f"cat: about {last['pooled_accuracy']:.1%} right over the last 14 days ({wrong} of the last 140 images wrong)"
        in said
    )
    assert "almost surely below its target of 90.0%" in said  # P(below) 0.99 in the stored row
    assert all(step in said for step in NEXT_STEPS) and "monitor candidate add" in said
    assert "bee:" not in said  # on watch, not flagged: no retraining advice for it
    assert (
        plain_summary("x", {"prob_below_target": 0.6, "pooled_accuracy": 0.8, "target": 0.9}).count(
            "more likely than not"
        )
        == 1
    )


def test_a_new_buckets_classes_say_when_their_first_verdict_comes() -> None:
    from dashboards.pages.overview import first_verdict_hint

    status = pd.DataFrame(
        {"verdict": ["insufficient_data", "insufficient_data", "healthy"], "pooled_n": [10, 6, 40]},
        index=["a", "b", "c"],
    )
    hint = first_verdict_hint(status, min_samples=20, per_day=4, as_of="2026-12-01")
    assert hint is not None and hint.startswith("2 class(es) have no verdict yet")
    assert "most pooled so far: 10" in hint and "about 3 day(s), around 2026-12-04" in hint  # (20 - 10) / 4 -> 3
    assert first_verdict_hint(status[status["verdict"] == "healthy"], 20, 4, "2026-12-01") is None


def _nodes(tree: Any) -> list[Any]:
    """Every component in a Dash tree, depth first."""
    children = getattr(tree, "children", None)
    below = children if isinstance(children, (list, tuple)) else [children] if children is not None else []
    return [tree] + [node for child in below for node in _nodes(child)]


def test_every_table_downloads_as_csv_with_the_cells_as_they_read(settings, history) -> None:
    import csv as csv_module
    from urllib.parse import unquote

    data = DashboardData(settings)
    _, content = render_page(data, ids.PATH_OVERVIEW, ViewState())
    flagged = find(content, ids.FLAGGED)
    (link,) = [node for node in _nodes(flagged) if getattr(node, "download", None)]
    assert link.download == f"flagged-classes-{day(0)}.csv" and link.href.startswith("data:text/csv;charset=utf-8,")
    rows = list(csv_module.reader(io.StringIO(unquote(link.href.split(",", 1)[1]))))
    assert rows[0][:3] == ["class", "verdict", "since"]
    by_class = {row[0]: row for row in rows[1:]}
    assert by_class["cat"][1] == "needs retraining" and set(by_class) == {"cat", "bee"}


def test_a_long_flagged_list_shows_its_first_rows_counts_the_rest_and_exports_them_all(store, settings) -> None:
    import csv as csv_module
    from urllib.parse import unquote

    from dashboards.pages.overview import FLAGGED_SHOWN

    labels = [f"c{i:03d}" for i in range(FLAGGED_SHOWN + 15)]
    write_history(store, "class_metrics", [metric_doc(label, day(0), 10, 4) for label in labels])
    write_history(store, "class_health", [health_doc(label, day(0), "needs_retraining", prob=0.99) for label in labels])
    store.commit()
    _, content = render_page(DashboardData(settings), ids.PATH_OVERVIEW, ViewState())
    flagged = find(content, ids.FLAGGED)
    (body,) = [node.children for node in _nodes(flagged) if type(node).__name__ == "Tbody"]
    assert len(body) == FLAGGED_SHOWN  # the page stays light
    assert "…and 15 more, all in the table's CSV" in texts(flagged)
    (link,) = [node for node in _nodes(flagged) if getattr(node, "download", None)]
    exported = list(csv_module.reader(io.StringIO(unquote(link.href.split(",", 1)[1]))))[1:]
    assert sorted(row[0] for row in exported) == labels  # the CSV holds every flagged class
    assert {row[1] for row in exported} == {"needs retraining"}
