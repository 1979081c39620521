"""MONITOR_IMAGE_TIME: a bucket copied today, its images dated by a manifest, is backfilled day by day as if the
images had arrived on their dates; a GCS object's metadata can date it too; a bad setting stops at load."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from monitor.core.image_times import ImageTime, load_manifest, parse_time
from monitor.core.settings import Settings
from monitor.orchestration.cli import app
from tests.fixtures.sources import build_one_broken_class

START = dt.date(2026, 11, 1)
DAYS = 30


def test_a_bucket_copied_today_and_dated_by_a_manifest_backfills_30_days(tmp_path: Path, spark: Any) -> None:
    source = build_one_broken_class(tmp_path / "val", DAYS)
    now = time.time()
    images = sorted(p for p in source.rglob("*") if p.is_file())
    for path in images:
        os.utime(path, (now, now))  # a copy made today
    env: dict[str, str | None] = {
        "MONITOR_CONFIG": None,
        "MONITOR_DATA_DIR": str(tmp_path / "data"),
        "MONITOR_SOURCE_URI": str(source),
        "MONITOR_SAMPLES_PER_CLASS": "1",
        "MONITOR_FIRST_DRAW": "0",
        "MONITOR_SPARK_MASTER": "local[2]",
    }
    before = CliRunner(env=env).invoke(app, ["evaluate", "--date", "2026-11-15"])
    assert before.exit_code == 6
    said = " ".join(before.stderr.split())
    assert "created on or before 2026-11-15" in said and "MONITOR_IMAGE_TIME=manifest:" in said

    # The manifest dates each class's k-th image (by name) on day k of November: one new image a class a day.
    manifest = tmp_path / "collected.csv"
    rows = ["path,date"]
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        for k, path in enumerate(sorted(folder.iterdir())):
            rows.append(f"{path.relative_to(source).as_posix()},{START + dt.timedelta(days=k)}")
    manifest.write_text("\n".join(rows) + "\n")
    env["MONITOR_IMAGE_TIME"] = f"manifest:{manifest}"
    last = START + dt.timedelta(days=DAYS - 1)
    done = CliRunner(env=env).invoke(
        app, ["evaluate", "--from", START.isoformat(), "--to", last.isoformat(), "--force", "--json"]
    )
    assert done.exit_code == 0, done.stderr
    result = json.loads(done.stdout)
    assert len(result["dates"]) == DAYS and {d["status"] for d in result["dates"]} == {"evaluated"}
    # Each date drew exactly the image dated that day in each class (point in time: nothing from later days).
    assert [d["sampled"] for d in result["dates"]] == [3] * DAYS
    sample = (tmp_path / "data" / "samples" / "2026-11-10.csv").read_text().splitlines()[1:]
    assert all(row.split(",")[5].startswith("2026-11-10") for row in sample)  # created: the manifest's date
    assert "three" in result["dates"][-1]["flagged"]


def test_a_manifest_and_a_mode_are_checked_at_load(tmp_path: Path) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("path,date\nzero/a.jpg,yesterday\n")
    with pytest.raises(ValidationError, match="line 2: 'yesterday' is not an ISO date"):
        Settings(data_dir=tmp_path, image_time=f"manifest:{bad}")
    with pytest.raises(ValidationError, match="is not one of: object, metadata:KEY, manifest:"):
        Settings(data_dir=tmp_path, image_time="mtime")
    good = tmp_path / "ok.csv"
    good.write_text("zero/a.jpg,2026-11-02\nzero/b.jpg,2026-11-03T12:00:00+02:00\n")
    assert load_manifest(good) == {
        "zero/a.jpg": dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
        "zero/b.jpg": dt.datetime(2026, 11, 3, 10, tzinfo=dt.UTC),
    }
    assert Settings(data_dir=tmp_path, image_time=f"manifest:{good}").image_time == f"manifest:{good}"
    assert parse_time("2026-11-02T08:00:00") == dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC)


def test_a_gcs_objects_metadata_dates_it(gcs_emulator: Any, tmp_path: Path) -> None:
    from monitor.core.sources import GCSSource
    from monitor.domain.indexing import index_source
    from monitor.store import open_store
    from tests.fixtures.store import find

    bucket = f"meta-{uuid.uuid4().hex[:10]}"
    target = gcs_emulator.create_bucket(bucket)
    for name, collected in (("zero/a.png", "2026-10-05"), ("zero/b.png", None)):
        blob = target.blob(f"val/{name}")
        if collected:
            blob.metadata = {"collected": collected}
        blob.upload_from_string(b"png bytes")
    source = GCSSource(bucket, "val", client=gcs_emulator.client())
    with open_store(Settings(data_dir=tmp_path / "data")) as store:
        index_source(source, store, image_time=ImageTime.parse("metadata:collected"))
        created = {d["path"]: d["created"] for d in find(store, "images")}
    assert created["zero/a.png"].date() == dt.date(2026, 10, 5)
    assert created["zero/b.png"].date() >= dt.date(2026, 12, 1)  # no metadata: the object's own time
