"""Stratified daily samples: N per class, reproducible per date, point in time, uniform, and the CSV/document they leave."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pymongo
import pytest
from scipy import stats

from monitor.core.dates import end_of_day
from monitor.core.errors import ConfigError, DataError, StoreError
from monitor.core.sources import LocalSource
from monitor.domain.indexing import index_source, sample_key, sample_key_int
from monitor.domain.sampling import (
    CSV_COLUMNS,
    LEGACY_CSV_COLUMNS,
    Sample,
    _followup_priority,
    _priority,
    draw_sample,
    pivot,
    read_sample_csv,
    record_sample,
    sample_cost,
    write_sample_csv,
)
from monitor.store import MongoStore, Store
from tests.fixtures.store import find, remove

SOURCE = "gs://bucket/val"
UTC = dt.UTC
DAY = dt.date(2026, 3, 10)
BEFORE = dt.datetime(2026, 3, 1, tzinfo=UTC)


def _add(
    store: Store,
    label: str,
    count: int,
    created: dt.datetime,
    *,
    status: str = "ok",
    source: str = SOURCE,
    start: int = 0,
) -> list[str]:
    """Insert ``count`` image documents of ``label`` shaped as the indexer writes them."""
    paths = [f"{label}/img_{i:05d}.jpg" for i in range(start, start + count)]
    store.write_images(
        source,
        [
            {
                "source": source,
                "path": path,
                "label": label,
                "size": 100,
                "checksum": f"100-{i}",
                "created": created,
                "updated": created,
                "first_seen": created,
                "last_seen": created,
                "sample_key": sample_key(path),
                "status": status,
                "reason": None if status == "ok" else "vanished",
            }
            for i, path in enumerate(paths)
        ],
        [],
    )
    return paths


def _dates(count: int, first: dt.date = dt.date(2026, 3, 10)) -> list[dt.date]:
    return [first + dt.timedelta(days=k) for k in range(count)]


def _paths(sample: Sample, label: str | None = None) -> list[str]:
    return [item.image_path for item in sample.items if label is None or item.label == label]


def test_each_class_gets_n_usable_images_sorted_by_label_then_path(store: Store) -> None:
    for label in ("cat", "dog", "bird"):
        _add(store, label, 40, BEFORE)
    _add(store, "cat", 30, BEFORE, status="missing", start=100)
    store.write_images(
        SOURCE,
        [
            {
                "source": SOURCE,
                "path": "cat/x.txt",
                "label": "cat",
                "status": "unusable",
                "sample_key": 0.5,
                "created": BEFORE,
            }
        ],
        [],
    )

    sample = draw_sample(store, SOURCE, DAY, 5, seed=0)

    assert sample.classes == {"bird": 5, "cat": 5, "dog": 5}
    assert sample.short_classes == {}
    assert [(i.label, i.image_path) for i in sample.items] == sorted((i.label, i.image_path) for i in sample.items)
    ok_paths = {d["path"] for d in find(store, "images", {"status": "ok"})}
    assert set(_paths(sample)) <= ok_paths
    assert len(set(_paths(sample))) == 15
    assert all(item.sample_key == sample_key(item.image_path) for item in sample.items)


def test_same_date_and_seed_give_the_same_sample_and_other_dates_or_seeds_differ(store: Store) -> None:
    _add(store, "cat", 200, BEFORE)
    _add(store, "dog", 200, BEFORE)

    first = draw_sample(store, SOURCE, DAY, 10, seed=7)
    again = draw_sample(store, SOURCE, DAY, 10, seed=7)
    next_day = draw_sample(store, SOURCE, dt.date(2026, 3, 11), 10, seed=7)
    other_seed = draw_sample(store, SOURCE, DAY, 10, seed=8)

    assert first == again
    assert set(_paths(first)) != set(_paths(next_day))
    assert set(_paths(first)) != set(_paths(other_seed))


def test_classes_with_fewer_than_n_images_give_all_and_are_reported_short(store: Store) -> None:
    _add(store, "cat", 50, BEFORE)
    rare = _add(store, "rare", 3, BEFORE)

    sample = draw_sample(store, SOURCE, DAY, 10, seed=0)

    assert sorted(_paths(sample, "rare")) == rare
    assert sample.classes == {"cat": 10, "rare": 3}
    assert sample.short_classes == {"rare": 3}


def test_a_class_that_appears_after_the_date_is_not_a_class_of_that_date(store: Store) -> None:
    _add(store, "cat", 20, BEFORE)
    _add(store, "late", 20, dt.datetime(2026, 4, 1, tzinfo=UTC))

    sample = draw_sample(store, SOURCE, DAY, 5, seed=0)

    # A backfill of DAY sees the classes DAY had: "late" did not exist yet.
    assert sample.classes == {"cat": 5}
    assert sample.short_classes == {}


def test_a_class_with_no_fresh_image_at_the_date_is_reported_with_zero(store: Store) -> None:
    _add(store, "cat", 20, BEFORE)
    _add(store, "stale", 20, BEFORE - dt.timedelta(days=30))

    sample = draw_sample(store, SOURCE, DAY, 5, seed=0, fresh_days=30)

    assert sample.classes["stale"] == 0 and sample.short_classes == {"stale": 0}


def test_requested_labels_without_images_are_reported_not_dropped(store: Store) -> None:
    _add(store, "cat", 20, BEFORE)
    sample = draw_sample(store, SOURCE, DAY, 5, seed=0, labels=["cat", "zebra"])
    assert sample.classes == {"cat": 5, "zebra": 0}
    assert sample.short_classes == {"zebra": 0}


def test_images_created_after_the_date_are_never_drawn_for_it(store: Store) -> None:
    day = dt.date(2026, 3, 10)
    # one image per class per day from Feb 20 to Mar 30, the last one of each day at 23:59:59.999
    for offset in range(-18, 21):
        when = dt.datetime.combine(day + dt.timedelta(days=offset), dt.time(23, 59, 59, 999000), tzinfo=UTC)
        for label in ("cat", "dog"):
            _add(store, label, 1, when, start=offset + 100)

    for date in _dates(15, dt.date(2026, 3, 1)):
        sample = draw_sample(store, SOURCE, date, 8, seed=3)
        assert sample.items and all(item.created <= end_of_day(date) for item in sample.items)
        assert max(item.created for item in sample.items) <= end_of_day(date)
    # the image created in the very last millisecond of the date is eligible for it
    last_of_day = draw_sample(store, SOURCE, dt.date(2026, 2, 20), 8, seed=3)
    assert sorted(_paths(last_of_day)) == ["cat/img_00082.jpg", "dog/img_00082.jpg"]


def test_fresh_days_keeps_only_images_created_in_the_window_ending_on_the_date(store: Store) -> None:
    for offset in range(10):
        _add(store, "cat", 5, dt.datetime(2026, 3, 1 + offset, 8, tzinfo=UTC), start=offset * 5)

    today_only = draw_sample(store, SOURCE, DAY, 20, seed=0, fresh_days=1)
    three_days = draw_sample(store, SOURCE, DAY, 20, seed=0, fresh_days=3)

    assert {item.created.date() for item in today_only.items} == {dt.date(2026, 3, 10)}
    assert today_only.short_classes == {"cat": 5}
    assert {item.created.date() for item in three_days.items} == {
        dt.date(2026, 3, 8),
        dt.date(2026, 3, 9),
        dt.date(2026, 3, 10),
    }
    assert three_days.fresh_days == 3


def test_fresh_days_window_runs_from_the_first_instant_of_d_minus_k_plus_1_to_the_last_of_d(store: Store) -> None:
    ms = dt.timedelta(milliseconds=1)
    window_start = dt.datetime(2026, 3, 8, tzinfo=UTC)  # D = Mar 10, k = 3
    inside = _add(store, "cat", 1, window_start, start=0) + _add(
        store, "cat", 1, end_of_day(DAY) - dt.timedelta(microseconds=999), start=1
    )
    _add(store, "cat", 1, window_start - ms, start=2)  # last millisecond of D-k
    _add(store, "cat", 1, end_of_day(DAY) + dt.timedelta(microseconds=1), start=3)  # first instant of D+1

    sample = draw_sample(store, SOURCE, DAY, 10, seed=0, fresh_days=3)

    assert sorted(_paths(sample)) == inside


def test_images_arriving_after_the_date_leave_its_sample_unchanged(store: Store) -> None:
    """A backfill of D after new images arrived draws exactly what D drew before (point in time)."""
    for label in ("cat", "dog"):
        _add(store, label, 150, BEFORE)
    before = [draw_sample(store, SOURCE, date, 10, seed=4) for date in _dates(5)]

    later = dt.datetime(2026, 3, 20, tzinfo=UTC)
    for label in ("cat", "dog"):
        _add(store, label, 600, later, start=1000)  # 4x as many new images, their keys interleave with the old ones
    after = [draw_sample(store, SOURCE, date, 10, seed=4) for date in _dates(5)]

    assert [s.items for s in after] == [s.items for s in before]
    assert draw_sample(store, SOURCE, dt.date(2026, 3, 21), 10, seed=4).items != after[0].items


def test_a_small_class_is_drawn_uniformly_across_dates(store: Store) -> None:
    """Each image of a 24-image class is drawn about equally often over 360 dates (chi-square, scipy)."""
    paths = _add(store, "cat", 24, BEFORE)
    counts = Counter(p for date in _dates(360) for p in _paths(draw_sample(store, SOURCE, date, 6, seed=1)))

    observed = [counts[p] for p in paths]
    assert sum(observed) == 360 * 6
    # Draws without replacement make the statistic conservative, so a rejection is a real defect.
    assert stats.chisquare(observed).pvalue > 0.001


def test_a_single_run_after_the_pivot_would_not_be_uniform_which_is_why_runs_are_oversampled(store: Store) -> None:
    """With oversample=1 (just the N keys after the pivot) images behind wide key gaps are drawn far more often."""
    paths = _add(store, "cat", 24, BEFORE)
    counts = Counter(
        p for date in _dates(360) for p in _paths(draw_sample(store, SOURCE, date, 6, seed=1, oversample=1))
    )

    assert stats.chisquare([counts[p] for p in paths]).pvalue < 1e-4


def test_any_image_of_a_large_class_is_equally_likely_over_key_assignments(store: Store) -> None:
    """For a class larger than the walked run, every image is equally likely on a day, over the random keys.

    Each trial names the class's 60 images anew (new keys, as another bucket's images would have) and draws the
    same date; image ``i`` of a trial is the ``i``-th it names.
    """
    counts: Counter[int] = Counter()
    trials = 240
    for trial in range(trials):
        remove(store, "images", {})
        _add(store, "cat", 60, BEFORE, start=60 * trial)
        sample = draw_sample(store, SOURCE, DAY, 2, seed=0, oversample=4)  # walks 8 of 60
        counts.update(int(path[-9:-4]) - 60 * trial for path in _paths(sample))

    observed = [counts[i] for i in range(60)]
    assert sum(observed) == trials * 2
    assert stats.chisquare(observed).pvalue > 0.001


def test_the_documents_examined_do_not_grow_with_the_collection(store: Store) -> None:
    classes, n, oversample = 3, 4, 5
    costs = []
    for size in (100, 1000):
        remove(store, "images", {})
        for k in range(classes):
            _add(store, f"c{k}", size, BEFORE)
        costs.append(sample_cost(store, SOURCE, DAY, n, seed=0, oversample=oversample))

    assert [cost.docs_examined for cost in costs] == [classes * n * oversample] * 2
    assert costs[0].method == "query-shape" and costs[0].classes == classes


def test_documents_rejected_by_the_date_filter_count_as_examined(store: Store) -> None:
    _add(store, "cat", 50, BEFORE)
    _add(store, "cat", 50, dt.datetime(2026, 4, 1, tzinfo=UTC), start=50)

    cost = sample_cost(store, SOURCE, DAY, 5, seed=0, oversample=2)

    # 10 eligible images are needed; about as many newer ones sit between them in key order
    assert 10 < cost.docs_examined <= 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_per_class": 0}, "at least 1"), ({"fresh_days": 0}, "fresh_days"), ({"oversample": 0}, "oversample")],
)
def test_invalid_sampling_arguments_are_config_errors(store: Store, kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"n_per_class": 5, "fresh_days": None, "oversample": 4} | kwargs
    with pytest.raises(ConfigError, match=message):
        draw_sample(
            store, SOURCE, DAY, args["n_per_class"], 0, fresh_days=args["fresh_days"], oversample=args["oversample"]
        )


def test_an_unreachable_store_is_a_store_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client: pymongo.MongoClient = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=200, connect=False
    )
    try:
        with pytest.raises(StoreError, match=f"could not read the classes of {SOURCE} on dead"):
            draw_sample(MongoStore(db=client["db"], description="dead"), SOURCE, DAY, 5, 0)
    finally:
        client.close()


# --- from an indexed folder to the CSV and the samples document ------------------------------------------


def _indexed_folder(root: Path, store: Store) -> LocalSource:
    when = BEFORE.timestamp()
    for label in ("A", "B"):
        for i in range(12):
            path = root / label / f"{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"png")
            os.utime(path, (when, when))
    source = LocalSource(root)
    index_source(source, store)
    return source


def test_unusable_and_vanished_files_of_an_indexed_folder_are_never_sampled(tmp_path: Path, store: Store) -> None:
    root = tmp_path / "src"
    when = BEFORE.timestamp()
    layout = {f"A/{i:02d}.png": b"png" for i in range(6)} | {f"B/{i:02d}.jpg": b"jpg" for i in range(4)}
    layout |= {"A/notes.txt": b"text", "A/empty.png": b"", "B/sub/deep.jpg": b"jpg", "top.jpg": b"jpg"}
    for rel, data in layout.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (when, when))
    source = LocalSource(root)
    index_source(source, store)
    (root / "A" / "03.png").unlink()
    index_source(source, store)

    sample = draw_sample(store, source.uri, DAY, 50, seed=0)

    expected = {f"A/{i:02d}.png" for i in range(6) if i != 3} | {f"B/{i:02d}.jpg" for i in range(4)}
    assert set(_paths(sample)) == expected
    assert sample.classes == {"A": 5, "B": 4}


def test_sample_csv_round_trips_with_the_contract_columns_sorted(tmp_path: Path, store: Store) -> None:
    source = _indexed_folder(tmp_path / "src", store)
    sample = draw_sample(store, source.uri, DAY, 4, seed=0)
    csv_path = tmp_path / "samples" / f"{DAY}.csv"

    write_sample_csv(sample, csv_path)
    back = read_sample_csv(csv_path)

    lines = csv_path.read_text().splitlines()
    assert tuple(lines[0].split(",")) == CSV_COLUMNS
    assert len(lines) == 1 + 8
    assert (back.date, back.source, back.items, back.classes) == (DAY, source.uri, sample.items, {"A": 4, "B": 4})
    assert [(i.label, i.image_path) for i in back.items] == sorted((i.label, i.image_path) for i in back.items)
    assert [p.name for p in csv_path.parent.iterdir()] == [csv_path.name], "no temporary file is left behind"


def test_rewriting_a_sample_csv_replaces_it(tmp_path: Path, store: Store) -> None:
    source = _indexed_folder(tmp_path / "src", store)
    csv_path = tmp_path / f"{DAY}.csv"
    write_sample_csv(draw_sample(store, source.uri, DAY, 4, seed=0), csv_path)
    write_sample_csv(draw_sample(store, source.uri, DAY, 2, seed=0), csv_path)
    assert len(read_sample_csv(csv_path).items) == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("", "not a sample CSV"),
        ("path,label\nA/1.png,A\n", "not a sample CSV"),
        (",".join(CSV_COLUMNS) + "\n", "has no rows"),
        (
            ",".join(LEGACY_CSV_COLUMNS) + "\n2026-03-10,file:///s,A/1.png,A,zero,2026-03-01T00:00:00+00:00\n",
            "line 2: bad sample_key",
        ),
        (",".join(LEGACY_CSV_COLUMNS) + "\n2026-03-10,file:///s,A/1.png,A,0.5\n", "line 2: 5 fields"),
        (
            ",".join(LEGACY_CSV_COLUMNS) + "\n2026-03-10,file:///s,A/1.png,A,1.5,2026-03-01T00:00:00+00:00\n",
            r"outside \[0, 1\)",
        ),
        (
            ",".join(CSV_COLUMNS) + "\n2026-03-10,file:///s,A/1.png,A,0.5,2026-03-01T00:00:00+00:00\n",
            "line 2: 6 fields, expected 8",
        ),
        (
            ",".join(CSV_COLUMNS) + "\n2026-03-10,file:///s,A/1.png,A,0.5,2026-03-01T00:00:00+00:00,extra,x\n",
            "draw 'extra' is not one of",
        ),
        (
            ",".join(LEGACY_CSV_COLUMNS)
            + "\n2026-03-10,file:///s,A/1.png,A,0.5,2026-03-01T00:00:00+00:00\n2026-03-11,file:///s,A/2.png,A,0.6,2026-03-01T00:00:00+00:00\n",
            "mixes dates",
        ),
    ],
)
def test_missing_or_malformed_sample_files_are_data_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "sample.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_sample_csv(path)


def test_recording_a_sample_twice_keeps_one_document_per_source_and_date(tmp_path: Path, store: Store) -> None:
    source = _indexed_folder(tmp_path / "src", store)
    csv_path = tmp_path / f"{DAY}.csv"
    record_sample(store, draw_sample(store, source.uri, DAY, 4, seed=0), csv_path)
    record_sample(store, draw_sample(store, source.uri, DAY, 20, seed=0), csv_path)
    record_sample(store, draw_sample(store, source.uri, dt.date(2026, 3, 11), 4, seed=0), csv_path)

    docs = find(store, "samples", {"source": source.uri, "date": DAY.isoformat()})
    assert len(docs) == 1
    doc = docs[0]
    assert doc["n_per_class"] == 20 and doc["seed"] == 0 and doc["fresh_days"] is None
    assert doc["classes"] == {"A": 12, "B": 12} and doc["short_classes"] == {"A": 12, "B": 12}
    assert (
        len(doc["items"]) == 24 and set(doc["items"][0]) == {"path", "label", "draw", "image"} and doc["followup"] == {}
    )
    assert doc["csv"] == str(csv_path)
    assert len(find(store, "samples", {"source": source.uri})) == 2


# --- follow-up draws ----------------------------------------------------------------------------


def test_followup_images_are_extra_disjoint_and_leave_the_base_draw_unchanged(store: Store) -> None:
    for label in ("cat", "dog"):
        _add(store, label, 400, BEFORE)
    plain = draw_sample(store, SOURCE, DAY, 10, seed=0)
    followed = draw_sample(store, SOURCE, DAY, 10, seed=0, followup={"cat": 25, "unknown": 5})
    base = [item.image_path for item in followed.items if item.draw == "base"]
    extra = [item.image_path for item in followed.items if item.draw == "followup"]
    assert sorted(base) == sorted(_paths(plain))
    assert len(extra) == 25 and {path.split("/")[0] for path in extra} == {"cat"}
    assert not set(extra) & set(base)
    assert followed.classes == {"cat": 35, "dog": 10} and followed.followup == {"cat": 25}


def test_followup_draws_are_reproducible_for_the_date_and_differ_across_dates(store: Store) -> None:
    _add(store, "cat", 400, BEFORE)

    def extra(date: str, seed: int = 0) -> list[str]:
        return [
            i.image_path
            for i in draw_sample(store, SOURCE, date, 10, seed=seed, followup={"cat": 30}).items
            if i.draw == "followup"
        ]

    assert extra(DAY) == extra(DAY)
    assert extra(DAY) != extra(dt.date(2026, 3, 11))
    assert extra(DAY) != extra(DAY, seed=1)


def test_followup_draws_are_point_in_time(store: Store) -> None:
    _add(store, "cat", 30, BEFORE)
    _add(store, "cat", 300, dt.datetime(2026, 3, 11, 8, tzinfo=UTC), start=1000)  # arrive the day after
    sample = draw_sample(store, SOURCE, DAY, 10, seed=0, followup={"cat": 100})
    # Only the 30 images that existed on the date can be drawn: 10 base and the 20 others as follow-up.
    assert sample.classes == {"cat": 30} and sample.followup == {"cat": 20}
    assert all(int(item.image_path.split("_")[1].split(".")[0]) < 1000 for item in sample.items)


def test_followup_images_are_a_uniform_draw_of_the_class(store: Store) -> None:
    paths = _add(store, "cat", 60, BEFORE)
    counts: Counter[str] = Counter()
    days = _dates(400)
    for date in days:
        counts.update(
            i.image_path
            for i in draw_sample(store, SOURCE, date, 5, seed=0, followup={"cat": 10}).items
            if i.draw == "followup"
        )
    observed = [counts[path] for path in paths]
    assert sum(observed) == 10 * len(days)
    assert stats.chisquare(observed).pvalue > 0.001


def test_the_followup_mark_round_trips_through_the_csv(tmp_path: Path, store: Store) -> None:
    _add(store, "cat", 100, BEFORE)
    sample = draw_sample(store, SOURCE, DAY, 5, seed=0, followup={"cat": 7})
    back = read_sample_csv(write_sample_csv(sample, tmp_path / f"{DAY}.csv"))
    assert [(i.image_path, i.draw) for i in back.items] == [(i.image_path, i.draw) for i in sample.items]
    assert back.followup == {"cat": 7}


def test_a_class_short_of_followup_images_gives_whole_grant_units(store: Store) -> None:
    _add(store, "cat", 33, BEFORE)  # 10 base + 23 others
    sample = draw_sample(store, SOURCE, DAY, 10, seed=0, followup={"cat": 30}, followup_unit=5)
    assert sample.followup == {"cat": 20} and sample.classes == {"cat": 30}


# --- reproducibility: keys, pivots and priorities are fixed functions of their documented inputs ----------
#
# A stored sample (samples/D.csv, the samples document) can be redrawn, audited or extended only if
# ``sample_key``, ``pivot`` and the priorities are the same functions of their inputs in every process
# and every version, and on every machine: none of them takes the source's URI, so a copy of a bucket or a
# folder under another path draws the same. The expectations below are computed here from the definitions
# (blake2b with an 8-byte digest, read big-endian as an integer, over 2**64), never with the functions under test.


def _blake2b_u64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def _expected_unit(*parts: object) -> float:
    """H(parts...): the parts as text joined by the unit separator U+001F, as a 64-bit blake2b over 2**64."""
    return _blake2b_u64("\x1f".join(str(part) for part in parts)) / 2**64


KEY_CASES = ["cat/img_00000.jpg", "dog/img_00000.jpg", "A/00.png", "Ünïcode/ä ö.jpeg"]
PIVOT_CASES = [
    (DAY, 0, "cat"),
    (DAY, 7, "cat"),
    (dt.date(2026, 3, 11), 7, "cat"),
    (DAY, 7, "dog"),
    (dt.date(2027, 1, 1), -3, "Ünïcode"),
    (DAY, 2**40 + 1, "cat"),
]
PRIORITY_CASES = [
    (DAY, 0, "cat/img_00000.jpg"),
    (DAY, 7, "cat/img_00000.jpg"),
    (dt.date(2026, 3, 11), 7, "cat/img_00000.jpg"),
    (DAY, 7, "A/00.png"),
    (dt.date(2027, 1, 1), -3, "Ünïcode/ä ö.jpeg"),
]


def _expected_key(path: str) -> int:
    """H("key", path) as a 64-bit integer: the tag ``key``, U+001F, the path inside the source (no source URI)."""
    return _blake2b_u64(f"key\x1f{path}")


@pytest.mark.parametrize("path", KEY_CASES)
def test_sample_key_is_the_blake2b_of_the_key_tag_and_the_path(path: str) -> None:
    expected = _expected_key(path)
    assert expected / 2**64 == _expected_unit("key", path)
    assert sample_key_int(path) == expected
    assert sample_key(path) == expected / 2**64
    assert 0.0 <= sample_key(path) < 1.0


@pytest.mark.parametrize(("date", "seed", "label"), PIVOT_CASES)
def test_pivot_is_the_blake2b_of_date_seed_and_label(date: str, seed: int, label: str) -> None:
    assert pivot(date, seed, label) == _expected_unit("pivot", date, seed, label)


@pytest.mark.parametrize(("date", "seed", "path"), PRIORITY_CASES)
def test_priorities_are_the_blake2b_of_date_seed_and_path(date: dt.date, seed: int, path: str) -> None:
    assert _priority(date, seed, path) == _expected_unit("pick", date, seed, path)
    assert _followup_priority(date, seed, path) == _expected_unit("followup", date, seed, path)
    assert _priority(date, seed, path) != _followup_priority(date, seed, path)


def test_the_indexer_stores_the_documented_sample_key(tmp_path: Path, store: Store) -> None:
    """The keys ``index_source`` writes (however it batches the hashing) are blake2b of ``"key\\x1f<path>"``."""
    source = _indexed_folder(tmp_path / "src", store)
    docs = find(store, "images", {"source": source.uri})
    assert len(docs) == 24
    for doc in docs:
        assert doc["sample_key"] == _expected_key(doc["path"]) / 2**64


def test_sampling_hashes_keep_their_pinned_values() -> None:
    """Literal values, computed once by ``_blake2b_u64`` / ``_expected_unit`` above and pasted here.

    They pin the definitions so that a stored sample stays reproducible across versions and
    processes: a change to any of them changes every image's key or every date's draw, which is a
    breaking change of all stored samples, not a refactoring.
    """
    path = "cat/img_00000.jpg"
    assert sample_key_int(path) == 17609755816720129349
    assert sample_key(path) == 0.9546267756713607
    assert pivot(DAY, 7, "cat") == 0.7862082255478647
    assert _priority(DAY, 7, path) == 0.9545993117231268
    assert _followup_priority(DAY, 7, path) == 0.7581758678527368
    # ... and the independent definitions used by the other tests agree with the pinned values.
    assert _expected_key(path) == 17609755816720129349
    assert _expected_unit("pivot", DAY, 7, "cat") == 0.7862082255478647
    assert _expected_unit("pick", DAY, 7, path) == 0.9545993117231268
    assert _expected_unit("followup", DAY, 7, path) == 0.7581758678527368


def test_a_different_seed_changes_the_pivot_and_both_priorities() -> None:
    seeds = range(50)
    assert pivot(DAY, 7, "cat") != pivot(DAY, 8, "cat")
    assert len({pivot(DAY, seed, "cat") for seed in seeds}) == len(seeds)
    path = "cat/img_00000.jpg"
    for priority in (_priority, _followup_priority):
        assert priority(DAY, 7, path) != priority(DAY, 8, path)
        assert len({priority(DAY, seed, path) for seed in seeds}) == len(seeds)


def _walk_after(paths: list[str], start: float, size: int) -> list[str]:
    """The ``size`` paths following ``start`` in sample-key order, wrapping around (the documented walk)."""
    ordered = sorted(paths, key=_expected_key)
    first = next((i for i, path in enumerate(ordered) if _expected_key(path) / 2**64 >= start), len(ordered))
    return (ordered[first:] + ordered[:first])[:size]


def test_the_seed_moves_the_walk_of_a_large_class_through_the_pivot(store: Store) -> None:
    """With ``oversample=1`` the sample is the N keys after the pivot: only the pivot (and so its seed) decides it."""
    paths = _add(store, "cat", 200, BEFORE)

    drawn = {seed: sorted(_paths(draw_sample(store, SOURCE, DAY, 10, seed=seed, oversample=1))) for seed in (7, 8, 9)}

    for seed, sample in drawn.items():
        assert sample == sorted(_walk_after(paths, _expected_unit("pivot", DAY, seed, "cat"), 10))
    assert len({tuple(sample) for sample in drawn.values()}) == 3


def test_the_seed_changes_the_picks_of_a_class_read_whole_through_the_priorities(store: Store) -> None:
    """A class of 20 is read whole (L = 10 N >= 20): only the priorities (and so their seed) decide the draw."""
    paths = _add(store, "cat", 20, BEFORE)

    def expected(seed: int) -> tuple[list[str], list[str]]:
        base = sorted(paths, key=lambda path: _expected_unit("pick", DAY, seed, path))[:5]
        rest = sorted((p for p in paths if p not in base), key=lambda path: _expected_unit("followup", DAY, seed, path))
        return sorted(base), sorted(rest[:4])

    draws = {}
    for seed in (7, 8, 9):
        sample = draw_sample(store, SOURCE, DAY, 5, seed=seed, followup={"cat": 4})
        draws[seed] = (
            sorted(item.image_path for item in sample.items if item.draw == "base"),
            sorted(item.image_path for item in sample.items if item.draw == "followup"),
        )
        assert draws[seed] == expected(seed)
    assert len({tuple(base) for base, _ in draws.values()}) == 3
    assert len({tuple(extra) for _, extra in draws.values()}) == 3


def _reproducibility_values(store: Store) -> dict[str, Any]:
    """Keys, pivots, priorities and a drawn sample of a fixed store: what another process must reproduce exactly."""
    _add(store, "cat", 200, BEFORE)
    _add(store, "dog", 30, BEFORE)
    sample = draw_sample(store, SOURCE, DAY, 5, seed=11, followup={"cat": 4})
    return {
        "sample_key_int": [sample_key_int(path) for path in KEY_CASES],
        "sample_key": [sample_key(path) for path in KEY_CASES],
        "pivot": [pivot(*case) for case in PIVOT_CASES],
        "priority": [_priority(*case) for case in PRIORITY_CASES],
        "followup_priority": [_followup_priority(*case) for case in PRIORITY_CASES],
        "sample": [[item.image_path, item.label, item.draw, item.sample_key] for item in sample.items],
    }


_CHILD = """
import json, sys
from pathlib import Path
from monitor.core.settings import load_settings
from monitor.store import open_store
from tests.domain.test_sampling import _reproducibility_values
with open_store(load_settings(data_dir=Path(sys.argv[1]))) as store:
    print(json.dumps(_reproducibility_values(store)))
"""


def test_another_process_computes_the_same_keys_pivots_priorities_and_sample(tmp_path: Path, store: Store) -> None:
    """A fresh interpreter (another pid, another ``hash()`` seed) draws exactly what this one draws."""
    here = _reproducibility_values(store)
    child_dir = tmp_path / "child"
    child_dir.mkdir()
    env = dict(os.environ)
    # str hashes are salted per process; force a salt that differs from this process's.
    env["PYTHONHASHSEED"] = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(child_dir)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    there = json.loads(done.stdout.strip().splitlines()[-1])

    assert there == json.loads(json.dumps(here))
    assert len(there["sample"]) == 5 + 4 + 5


@pytest.mark.parametrize("function", ["pivot", "priority", "followup_priority"])
@pytest.mark.parametrize("vary", ["seed", "date"])
def test_pivots_and_priorities_are_uniform_over_seeds_and_dates(function: str, vary: str) -> None:
    """2,000 seeds (date fixed) or 2,000 dates (seed fixed) give pivots / priorities uniform on [0, 1) (Kolmogorov-Smirnov)."""
    inputs = (
        [(DAY, seed) for seed in range(2000)]
        if vary == "seed"
        else [(date, 7) for date in _dates(2000, dt.date(2020, 1, 1))]
    )
    path = "cat/img_00000.jpg"
    values = [
        pivot(date, seed, "cat")
        if function == "pivot"
        else (_priority if function == "priority" else _followup_priority)(date, seed, path)
        for date, seed in inputs
    ]
    assert all(0.0 <= value < 1.0 for value in values)
    assert stats.kstest(values, "uniform").pvalue > 0.001


@pytest.mark.parametrize("vary", ["seed", "date"])
def test_the_rank_of_the_chosen_image_is_uniform_over_seeds_and_dates(store: Store, vary: str) -> None:
    """Drawing 1 of a class of 20 (read whole), the chosen image's rank in key order is uniform over 1,000 seeds or dates (chi-square)."""
    paths = _add(store, "cat", 20, BEFORE)
    rank = {path: r for r, path in enumerate(sorted(paths, key=sample_key))}
    draws = (
        [(DAY, seed) for seed in range(1000)] if vary == "seed" else [(date, 7) for date in _dates(1000)]
    )  # all after BEFORE
    counts: Counter[int] = Counter()
    for date, seed in draws:
        (chosen,) = _paths(draw_sample(store, SOURCE, date, 1, seed=seed, labels=["cat"], oversample=20))
        counts[rank[chosen]] += 1

    observed = [counts[r] for r in range(20)]
    assert sum(observed) == len(draws)
    assert stats.chisquare(observed).pvalue > 0.001


# --- created times and the cost walk, pinned independently (closing mutants that survived scripts/mutation.sh) ---


def test_drawn_items_carry_each_images_created_time_in_utc_even_from_a_store_that_returns_naive_times() -> None:
    import mongomock

    # A MongoClient without tz_aware hands datetimes back naive (BSON stores UTC): the sample reads them as UTC.
    with MongoStore(
        db=mongomock.MongoClient(tz_aware=False)["monitor_naive"], description="mongomock, naive datetimes"
    ) as naive:
        _add(naive, "cat", 3, dt.datetime(2026, 3, 1, 12, 30, tzinfo=UTC))
        sample = draw_sample(naive, SOURCE, DAY, 3, seed=0)

    assert [item.created for item in sample.items] == [dt.datetime(2026, 3, 1, 12, 30, tzinfo=UTC)] * 3


def test_the_walk_cost_counts_from_each_classs_own_pivot_until_enough_images_pass_the_date(store: Store) -> None:
    created = {}
    for label, start in (("cat", 0), ("dog", 0)):
        for path in _add(store, label, 40, BEFORE, start=start):
            created[path] = BEFORE
        for path in _add(store, label, 40, dt.datetime(2026, 4, 1, tzinfo=UTC), start=40):
            created[path] = dt.datetime(2026, 4, 1, tzinfo=UTC)
    seed, n, oversample = 3, 2, 3

    expected = 0
    for label in ("cat", "dog"):
        # The documented walk, by an independent blake2b: sample-key order from H("pivot", D, seed, label), wrapping
        # around, every document fetched counted until n * oversample of them were created by the end of D.
        start = _expected_unit("pivot", DAY, seed, label)
        ordered = _walk_after([p for p in created if p.startswith(f"{label}/")], start, 80)
        eligible = 0
        for path in ordered:
            expected += 1
            eligible += created[path] <= end_of_day(DAY)
            if eligible == n * oversample:
                break

    cost = sample_cost(store, SOURCE, DAY, n, seed=seed, oversample=oversample)
    assert cost.docs_examined == expected
    assert cost.docs_examined > 2 * n * oversample, "the date filter rejected some documents on the way"


def test_the_csv_writes_created_times_in_utc_whatever_the_machines_time_zone(tmp_path: Path) -> None:
    import time

    from monitor.domain.sampling import SampleItem

    kolkata = dt.timezone(dt.timedelta(hours=5, minutes=30))
    item = SampleItem(
        image_path="cat/a.jpg",
        label="cat",
        sample_key=0.25,
        created=dt.datetime(2026, 3, 1, 5, 30, tzinfo=kolkata),
        draw="base",
    )
    sample = Sample(
        date=DAY,
        source=SOURCE,
        seed=0,
        n_per_class=1,
        fresh_days=None,
        items=[item],
        classes={"cat": 1},
        short_classes={},
        followup={},
    )
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        write_sample_csv(sample, tmp_path / "s.csv")
    finally:
        if old is None:
            os.environ.pop("TZ")
        else:
            os.environ["TZ"] = old
        time.tzset()

    row = (tmp_path / "s.csv").read_text().splitlines()[1].split(",")
    assert row[CSV_COLUMNS.index("created")] == "2026-03-01T00:00:00+00:00"


def test_a_sample_csv_with_naive_created_times_reads_them_as_utc(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(",".join(CSV_COLUMNS) + f"\n{DAY},{SOURCE},cat/a.jpg,cat,0.25,2026-03-01T12:00:00,base,\n")

    (item,) = read_sample_csv(path).items

    assert item.created == dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC) and item.created.tzinfo is not None


def test_on_mongodb_the_cost_is_the_sum_of_each_querys_explained_execution_stats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mongomock

    # mongomock has no explain(): this one answers as MongoDB's executionStats would, the same for every query.
    stats_of_each_query = {"executionStats": {"totalDocsExamined": 7, "totalKeysExamined": 9, "nReturned": 3}}
    monkeypatch.setattr(mongomock.collection.Cursor, "explain", lambda self: stats_of_each_query, raising=False)
    with MongoStore(
        db=mongomock.MongoClient(tz_aware=True)["monitor_explain"], description="mongomock with explain"
    ) as mongo:
        mongo.ensure_indexes()
        for label in ("cat", "dog"):
            _add(mongo, label, 5, BEFORE)

        cost = sample_cost(mongo, SOURCE, DAY, 2, seed=0, oversample=2)

    # Each class needs 4: the first query returns 3, so the wrapped-around second one runs too (2 queries a class).
    assert (cost.docs_examined, cost.keys_examined, cost.queries, cost.classes, cost.method) == (
        28,
        36,
        4,
        2,
        "explain",
    )


# --- each image once per model: the draw of unseen images, newest first -------------------------------


def _seen(sample: Sample) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for item in sample.items:
        assert item.image is not None
        out.setdefault(item.label, set()).add(item.image)
    return out


def _merge(into: dict[str, set[str]], more: dict[str, set[str]]) -> dict[str, set[str]]:
    for label, images in more.items():
        into.setdefault(label, set()).update(images)
    return into


def test_a_model_never_draws_an_image_it_evaluated_until_the_class_is_exhausted(store: Store) -> None:
    paths = _add(store, "cat", 95, BEFORE)
    seen: dict[str, set[str]] = {}
    drawn: list[str] = []
    for date in _dates(12):
        sample = draw_sample(store, SOURCE, date, 10, seed=0, seen=seen, followup={"cat": 5})
        drawn += _paths(sample)
        assert sample.unseen["cat"] == 95 - len(set(drawn) - set(_paths(sample)))
        assert sample.unseen_left["cat"] == 95 - len(drawn)
        _merge(seen, _seen(sample))

    assert len(drawn) == len(set(drawn)) == 95  # each image once, then nothing
    assert set(drawn) == set(paths)
    last = draw_sample(store, SOURCE, _dates(13)[-1], 10, seed=0, seen=seen)
    assert (
        last.items == [] and last.classes == {"cat": 0} and last.unseen == {"cat": 0} and last.unseen_left == {"cat": 0}
    )


def test_the_unseen_draw_is_reproducible_for_the_date_and_point_in_time(store: Store) -> None:
    _add(store, "cat", 300, BEFORE)
    seen = {"cat": {f"path:cat/img_{i:05d}.jpg#100-{i}" for i in range(0, 300, 3)}}
    first = draw_sample(store, SOURCE, DAY, 10, seed=2, seen=seen, followup={"cat": 20})
    _add(store, "cat", 50, dt.datetime(2026, 3, 11, 9, tzinfo=UTC), start=1000)  # arrive the day after
    again = draw_sample(store, SOURCE, DAY, 10, seed=2, seen=seen, followup={"cat": 20})

    assert first == again
    assert not {item.image for item in first.items} & seen["cat"]
    assert draw_sample(store, SOURCE, dt.date(2026, 3, 11), 10, seed=2, seen=seen).items != first.items


@pytest.mark.slow
def test_the_newest_arrivals_are_drawn_first_and_a_day_of_arrivals_uniformly(store: Store) -> None:
    """Base draws take the newest unseen arrivals first; among one day's arrivals every image is equally likely."""
    old = _add(store, "cat", 200, BEFORE)
    new = _add(store, "cat", 6, dt.datetime(2026, 3, 9, 12, tzinfo=UTC), start=500)
    sample = draw_sample(store, SOURCE, DAY, 10, seed=0, seen={"cat": set()} | {"dog": set()}, first_draw=0)
    assert set(new) <= set(_paths(sample)) and len(set(_paths(sample)) & set(old)) == 4

    counts = Counter(
        p
        for date in _dates(400)
        for p in _paths(draw_sample(store, SOURCE, date, 10, seed=0, seen={"cat": {"x"}}))
        if p in old
    )
    observed = [counts[p] for p in old]
    assert sum(observed) == 400 * 4
    assert stats.chisquare(observed).pvalue > 0.001


def test_a_class_the_model_never_evaluated_gets_the_first_draw_and_others_the_base_draw(store: Store) -> None:
    _add(store, "cat", 500, BEFORE)
    _add(store, "dog", 500, BEFORE)
    _add(store, "owl", 30, BEFORE)
    sample = draw_sample(store, SOURCE, DAY, 10, seed=0, seen={"dog": {"path:dog/img_00001.jpg#100-1"}}, first_draw=200)

    assert sample.classes == {"cat": 200, "dog": 10, "owl": 30}
    assert sample.short_classes == {} and {item.draw for item in sample.items} == {"base"}
    assert sample.unseen_left == {"cat": 300, "dog": 489, "owl": 0}


def test_copies_of_one_image_under_two_paths_are_one_image(store: Store) -> None:
    """On GCS the identity is the content checksum without its generation: a copy or re-upload is the same image."""
    for i, path in enumerate(("cat/a.jpg", "cat/copy-of-a.jpg", "cat/b.jpg")):
        checksum = "md5AAA@1" if "a.jpg" in path else f"md5BBB@{i}"
        store.write_images(
            SOURCE,
            [
                {
                    "source": SOURCE,
                    "path": path,
                    "label": "cat",
                    "size": 1,
                    "checksum": checksum,
                    "created": BEFORE,
                    "updated": BEFORE,
                    "sample_key": sample_key(path),
                    "status": "ok",
                    "reason": None,
                }
            ],
            [],
        )
    sample = draw_sample(store, SOURCE, DAY, 10, seed=0, seen={})
    assert sorted(_paths(sample)) == ["cat/a.jpg", "cat/b.jpg"] and sample.unseen == {"cat": 2}
    later = draw_sample(store, SOURCE, dt.date(2026, 3, 11), 10, seed=0, seen={"cat": {"content:md5AAA"}})
    assert _paths(later) == ["cat/b.jpg"]


def test_the_image_identity_is_the_content_on_gcs_and_the_path_elsewhere() -> None:
    from monitor.domain.sampling import image_identity

    assert image_identity("0a1b@1712", "cat/x.jpg") == image_identity("0a1b@99", "cat/renamed.jpg") == "content:0a1b"
    assert (
        image_identity("100-1712", "cat/x.jpg") == "path:cat/x.jpg#100-1712" != image_identity("100-1712", "cat/y.jpg")
    )
    assert image_identity("100-1713", "cat/x.jpg") != image_identity("100-1712", "cat/x.jpg")  # rewritten: a new image
    assert image_identity(None, "cat/x.jpg") == "path:cat/x.jpg"
