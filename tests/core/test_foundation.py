"""Settings, dates, errors and the store: the pieces every stage stands on."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import bson
import mongomock
import pytest
from pymongo.errors import DuplicateKeyError

from monitor.core.dates import day_span, days_after, days_before, end_of_day, is_iso_day, iso_day, parse_run_date
from monitor.core.errors import ConfigError, StoreError, redact
from monitor.core.settings import SHIPPED_MODEL_DIR, load_settings
from monitor.core.sources import LocalSource
from monitor.domain.indexing import index_source
from monitor.store import MongoStore, open_store
from tests.fixtures.store import find

TODAY = dt.date(2026, 11, 22)


@pytest.mark.parametrize("text", ["2026-13-40", "2026-02-30", "20261120", "yesterday", "", "2026-11-2"])
def test_malformed_dates_are_refused_with_the_bad_value_named(text: str) -> None:
    with pytest.raises(ConfigError, match="date"):
        parse_run_date(text, today=TODAY)


def test_future_dates_are_refused_and_today_is_accepted() -> None:
    with pytest.raises(ConfigError, match="2026-11-23 is in the future"):
        parse_run_date("2026-11-23", today=TODAY)
    assert parse_run_date("2026-11-22", today=TODAY) == dt.date(2026, 11, 22)
    assert parse_run_date(" 2026-11-22\n", today=TODAY) == dt.date(2026, 11, 22)
    assert parse_run_date(dt.date(2026, 1, 5), today=TODAY) == dt.date(2026, 1, 5)
    assert parse_run_date(dt.datetime(2026, 1, 5, 23, 59), today=TODAY) == dt.date(2026, 1, 5)


@pytest.mark.parametrize("text", ["2026-11-22", "1970-01-01"])
def test_a_day_named_in_iso_form_is_read_and_other_forms_are_not(text: str) -> None:
    assert iso_day(text).isoformat() == text and is_iso_day(text)
    assert not is_iso_day(text.replace("-", "")) and not is_iso_day(text + "T00:00") and not is_iso_day(" " + text)


def test_day_arithmetic_is_on_dates() -> None:
    day = dt.date(2024, 2, 28)
    assert days_after(day) == dt.date(2024, 2, 29) and days_after(day, 2) == dt.date(2024, 3, 1)
    assert days_before(dt.date(2024, 3, 1), 2) == day
    assert day_span(day, dt.date(2024, 3, 1)) == 3 and day_span(day, day) == 1
    with pytest.raises(ConfigError, match="after the last representable date"):
        days_after(dt.date.max)


def test_end_of_day_is_the_last_instant_of_the_utc_day() -> None:
    end = end_of_day(dt.date(2026, 11, 20))
    assert end.tzinfo is not None
    assert end < dt.datetime(2026, 11, 21, tzinfo=dt.UTC) <= end + dt.timedelta(microseconds=1)


def test_defaults_need_no_server(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.mongo_uri == ""
    assert settings.source_uri == str(tmp_path / "source")
    assert settings.model_dir == SHIPPED_MODEL_DIR
    assert settings.samples_per_class == 10
    assert settings.spark_master == "local[*]"
    assert settings.sample_csv("2026-11-20") == tmp_path / "samples" / "2026-11-20.csv"


def test_environment_then_config_file_then_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text("samples_per_class = 7\nseed = 3\ntarget_overrides = { eight = 0.8 }\n")
    monkeypatch.setenv("MONITOR_CONFIG", str(config))
    monkeypatch.setenv("MONITOR_SEED", "11")
    settings = load_settings(data_dir=tmp_path)
    assert settings.samples_per_class == 7  # from the file
    assert settings.seed == 11  # the environment wins over the file
    assert settings.target_for("eight") == 0.8 and settings.target_for("one") == settings.target_accuracy


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("MONITOR_SAMPLES_PER_CLASS", "0", "MONITOR_SAMPLES_PER_CLASS"),
        ("MONITOR_DEVICE", "tpu", "MONITOR_DEVICE"),
        ("MONITOR_ALERT_URLS", "not json", "MONITOR_ALERT_URLS"),
    ],
)
def test_invalid_settings_raise_one_config_error_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=named):
        load_settings(data_dir=tmp_path)


def test_passwords_in_uris_are_redacted() -> None:
    text = "MongoDB at mongodb://admin:s3cret@db.example:27017/x is down; also mongodb+srv://u:p@h"
    shown = redact(text)
    assert "s3cret" not in shown and ":p@" not in shown
    assert "mongodb://***@db.example:27017/x" in shown  # the whole user-info: user names can be tokens too


def test_embedded_store_persists_between_opens_with_tz_aware_times(settings) -> None:
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with open_store(settings) as store:
        store.write_images("s", [{"source": "s", "path": "a/1.jpg", "label": "a", "created": created}], [])
    with open_store(settings) as store:
        (doc,) = find(store, "images", {"path": "a/1.jpg"})
        assert doc["created"] == created and doc["created"].tzinfo is not None
    root = settings.store_dir / settings.mongo_db
    (part,) = json.loads((root / "manifest.json").read_text())["parts"]
    assert (part["kind"], part["key"], part["docs"]) == ("images", ["s", "a"], 1)
    assert [d["path"] for d in bson.decode_all((root / part["file"]).read_bytes())] == ["a/1.jpg"]


def test_a_blob_is_stored_once_per_source_and_path(settings, tmp_path: Path) -> None:
    # The embedded store has no unique index: indexing keeps (source, path) unique, across opens too.
    folder = tmp_path / "src" / "a"
    folder.mkdir(parents=True)
    (folder / "1.jpg").write_bytes(b"jpg")
    source = LocalSource(tmp_path / "src")
    for day in (1, 2):
        with open_store(settings) as store:
            index_source(source, store, now=dt.datetime(2026, 1, day, tzinfo=dt.UTC))
    with open_store(settings, read_only=True) as store:
        assert [d["path"] for d in find(store, "images", {"source": source.uri})] == ["a/1.jpg"]

    # On MongoDB the unique (source, path) index refuses a second document; write_images keeps the first.
    db: Any = mongomock.MongoClient(tz_aware=True)["monitor"]
    mongo = MongoStore(db=db, description="mongomock")
    mongo.ensure_indexes()
    doc = {"source": "s", "path": "a/1.jpg", "label": "a"}
    mongo.write_images("s", [dict(doc)], [])
    with pytest.raises(DuplicateKeyError):
        db["images"].insert_one(dict(doc))
    mongo.write_images("s", [dict(doc)], [])
    assert find(mongo, "images") == [doc]


def test_a_second_writer_waits_for_the_lock_then_gives_a_clear_error(settings) -> None:
    with open_store(settings):
        with pytest.raises(StoreError, match="held by another writer"):
            open_store(settings, lock_timeout_s=0.2)
        # a reader (the dashboard) needs no lock
        with open_store(settings, read_only=True) as reader:
            assert reader.counts()["images"] == 0


def test_unreachable_mongodb_fails_fast_with_the_password_redacted(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, mongo_uri="mongodb://admin:hunter2@127.0.0.1:1/?directConnection=true", mongo_timeout_ms=300
    )
    with pytest.raises(StoreError, match=r"MongoDB at mongodb://\*\*\*@127\.0\.0\.1:1/.* is unreachable") as info:
        open_store(settings)
    assert "hunter2" not in str(info.value)


def test_an_errors_first_line_is_its_first_non_blank_line_cut_to_the_limit() -> None:
    from monitor.core.errors import first_line

    assert first_line(RuntimeError("\n\n  boom: the JVM  \n at org.apache.spark...\n")) == "boom: the JVM"
    assert first_line(ValueError("x" * 500)) == "x" * 300 and first_line(ValueError("x" * 500), 120) == "x" * 120
    assert first_line(KeyError()) == "KeyError" and first_line(OSError("  \n ")) == "OSError"
