"""A day's tasks on different hosts that share only the store and a bucket: nothing is handed over on a local disk.

Each task below runs with its own empty data dir (as a Celery worker on another machine would), the artifacts on
``gs://`` (the GCS emulator), and the one store; the stored result must equal the one-host run's, and no task may
leave a file in its own data dir for the next one to need.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from monitor.core.artifacts import GCSArtifacts
from monitor.core.settings import SHIPPED_MODEL_DIR, Settings
from monitor.store import Store, open_store
from tests.fixtures.sources import build_one_broken_class
from tests.fixtures.store import find

DATE = "2026-11-20"
PER_CLASS = 8


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _stored(store: Store) -> dict[str, Any]:
    docs = {kind: find(store, kind) for kind in ("class_metrics", "class_health", "alerts", "samples", "evaluations")}
    return {
        "metrics": sorted((d["label"], d["n"], d["correct"], d["failed"]) for d in docs["class_metrics"]),
        "health": sorted((d["label"], d["verdict"], round(d["cusum"], 9), d["flagged"]) for d in docs["class_health"]),
        "alerts": sorted((d["label"], d["kind"], d["alert_id"]) for d in docs["alerts"]),
        "samples": [sorted((i["path"], i["label"], i["draw"]) for i in d["items"]) for d in docs["samples"]],
        "evaluations": sorted((d["label"], d["image"], d["correct"]) for d in docs["evaluations"]),
    }


def _comparison(settings: Settings, store: Store, candidate: str) -> dict[str, Any]:
    from monitor.orchestration.compare_stage import compare_with, save

    result = compare_with(settings, store, candidate, until=dt.date.fromisoformat(DATE), engine="pandas")
    save(store, result)
    record = result.to_dict()
    return {k: record[k] for k in ("verdict", "days", "production", "candidate", "classes")}


@pytest.mark.slow
def test_a_day_run_task_by_task_on_hosts_sharing_only_the_store_and_a_bucket_stores_what_one_host_stores(
    spark: Any, gcs_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.orchestration import health_stage
    from monitor.orchestration.context import RunContext
    from monitor.orchestration.demo import build_candidate_model
    from monitor.orchestration.health_stage import health_with
    from monitor.orchestration.index_stage import index_with
    from monitor.orchestration.metrics_stage import metrics_with
    from monitor.orchestration.pipeline import evaluate_with
    from monitor.orchestration.predict_stage import predict_with
    from monitor.orchestration.sample_stage import sample_with

    source = build_one_broken_class(tmp_path / "val", PER_CLASS)
    candidate = build_candidate_model(SHIPPED_MODEL_DIR, tmp_path / "candidate", {"eight": -2.0, "three": 1.5})
    common: dict[str, Any] = {
        "source_uri": str(source),
        "samples_per_class": PER_CLASS,
        "spark_master": "local[2]",
        "candidate_model_dirs": [candidate],
    }

    # One host: everything under one data dir, the artifacts in it (the default). A fresh process: no calibration
    # in memory (another test on this worker may have made it), so this run writes the cache as any first run does.
    monkeypatch.setattr(health_stage, "_KNOWN", {})
    one = Settings(data_dir=tmp_path / "one", **common)
    with open_store(one) as store:
        evaluate_with(RunContext.for_date(one, DATE), store, spark=spark)
        reference = _stored(store)
    local_files = _files(tmp_path / "one")
    assert f"samples/{DATE}.csv" in local_files and f"predictions/{DATE}.parquet" in local_files

    # Many hosts: the store in its own folder (standing for MongoDB), the artifacts in a bucket.
    bucket = f"artifacts-{uuid.uuid4().hex[:10]}"
    gcs_emulator.create_bucket(bucket)
    uri = f"gs://{bucket}/monitor"

    monkeypatch.setattr(health_stage, "_KNOWN", {})  # other processes: no calibration in memory

    def host(name: str) -> Settings:
        return Settings(data_dir=tmp_path / "hosts" / name, artifacts_uri=uri, **common)

    with open_store(Settings(data_dir=tmp_path / "shared", **common)) as store:
        first = host("index-and-sample")
        ctx = RunContext.for_date(first, DATE)
        index_with(first, store, source=ctx.source)
        sample_with(ctx, store)
        predicted = predict_with(RunContext.for_date(host("predict"), DATE), store)
        metrics_with(RunContext.for_date(host("metrics"), DATE), store, spark=spark)
        health_with(RunContext.for_date(host("health"), DATE), store, model_id=predicted["model_id"])
        candidate_id = predicted["candidates"][0]["model_id"]
        many = _stored(store)
        compared = _comparison(host("compare"), store, candidate_id)

    assert many == reference
    assert reference["metrics"] and any(flagged for *_, flagged in reference["health"])  # a day that can differ
    assert _files(tmp_path / "hosts") == []  # no task left a file on its host for another to need
    assert predicted["predictions"] == f"{uri}/predictions/{DATE}.parquet"

    bucket_files = GCSArtifacts(bucket, "monitor")
    assert bucket_files.names("samples", ".csv") == [f"{DATE}.csv"]
    assert bucket_files.names("predictions", ".parquet") == [f"{DATE}.parquet"]
    assert len(bucket_files.folders("predictions/candidates")) == 1
    assert bucket_files.names("cache", ".json") == ["health-designs.json"]  # the calibration, for every worker
    # The bucket holds the same files, byte for byte, as the one host's data dir (the sample names the same source).
    for key in (f"samples/{DATE}.csv", "cache/health-designs.json"):
        assert bucket_files.read(key, what="file") == (tmp_path / "one" / key).read_bytes()
    ours = pd.read_parquet(tmp_path / "one" / "predictions" / f"{DATE}.parquet")
    theirs = pd.read_parquet(io.BytesIO(bucket_files.read(f"predictions/{DATE}.parquet", what="file")))
    pd.testing.assert_frame_equal(ours, theirs)

    with open_store(one) as store:
        assert _comparison(one, store, candidate_id) == compared
    assert compared["days"] == 1 and compared["candidate"] == candidate_id and compared["classes"]

    # The dashboard of the many-host deployment finds the misclassified images in the bucket as the one host does.
    from dashboards.data import DashboardData

    shown = {}
    for name, settings in (
        ("one", one),
        ("many", Settings(data_dir=tmp_path / "shared", artifacts_uri=uri, **common)),
    ):
        data = DashboardData(settings, source=object())
        try:
            shown[name] = (data.prediction_dates(), data.misclassified(DATE, "three").to_dict("records"))
        finally:
            data.close()
    assert shown["many"] == shown["one"] and shown["one"][0] == [DATE] and len(shown["one"][1]) == PER_CLASS
