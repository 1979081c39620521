"""class_health_daily run by the real scheduler and two Celery workers that share no local file, as the compose stack
runs it: the stored result equals the one-host run's.

The cluster (tests/fixtures/airflow_cluster.py): PostgreSQL (metadata database and Celery results), Redis (broker),
the API server, scheduler, DAG processor and two Celery workers, each a separate process on 127.0.0.1 with the
CeleryExecutor. ``host-a`` serves the ``default`` queue and ``host-b`` the ``gpu`` queue, where the DAG's
``predict_queue`` knob sends predict, as with the compose stack's GPU worker: sample hands its sample to predict
on the other host, and predict its predictions back to metrics, through the artifact store only.

What the workers share: the image source and the artifact store (``MONITOR_ARTIFACTS_URI``), both in a bucket on
the GCS emulator; and the store. The store is the embedded one (no MongoDB server can be installed here): one
folder, linked at ``store/`` in every worker's data dir, where the embedded store lives. It stands for the compose
stack's MongoDB, which every worker reaches by URI. Besides that link each worker starts with an empty working
dir, data dir and ``AIRFLOW_HOME``, and must leave its data dir so.

The one-host reference is the same DAG run by ``airflow dags test`` on SQLite (what tests/dags/test_dag.py does),
with every file in one data dir.

Run it alone (about 5-10 minutes on 2 cores): ``bash scripts/test.sh tests/dags/test_multihost.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.airflow_cluster import CLI_S, DAGS_FOLDER, airflow_cluster
from tests.fixtures.sources import build_one_broken_class
from tests.fixtures.store import find

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.gcs]

DAG_ID = "class_health_daily"
DATE = "2026-11-20"
RUN_ID = f"multihost__{DATE}"
PER_CLASS = 8
#: The images' collection date, in their GCS metadata: the emulator dates every object by its upload (today).
COLLECTED = "2026-01-01"
STAGES = ("index", "sample", "predict", "metrics", "health", "publish_retraining", "compare_candidates")
#: Which worker runs which task: predict goes to the gpu queue, everything else to default.
HOSTS = {"host-a": ("default",), "host-b": ("gpu",)}
#: A run is a few minutes on a quiet machine; a loaded one may be three times slower.
RUN_S = 1800.0
START_S = 600.0


def _stored(data_dir: Path) -> dict[str, Any]:
    """The rows a day's run stores, by natural key (times a run stamps, and the runs log with its seconds, left out)."""
    from monitor.core.settings import Settings
    from monitor.store import open_store

    with open_store(Settings(data_dir=data_dir), read_only=True) as store:
        docs = {
            kind: find(store, kind)
            for kind in ("images", "samples", "class_metrics", "class_health", "alerts", "evaluations", "models")
        }
        comparisons = find(store, "comparisons")
    return {
        "images": sorted((d["source"], d["path"], d["label"], d["status"], d["checksum"]) for d in docs["images"]),
        "samples": sorted(
            (d["date"], sorted((i["path"], i["label"], i["draw"]) for i in d["items"])) for d in docs["samples"]
        ),
        "metrics": sorted(
            (d["model_id"], d["date"], d["label"], d["n"], d["correct"], d["failed"]) for d in docs["class_metrics"]
        ),
        "health": sorted(
            (d["model_id"], d["date"], d["label"], d["verdict"], round(d["cusum"], 9), d["flagged"])
            for d in docs["class_health"]
        ),
        "alerts": sorted((d["model_id"], d["label"], d["date"], d["kind"], d["alert_id"]) for d in docs["alerts"]),
        "evaluations": sorted((d["model_id"], d["label"], d["image"], d["correct"]) for d in docs["evaluations"]),
        "models": sorted(d["model_id"] for d in docs["models"]),
        "comparisons": sorted(
            json.dumps(
                {k: d.get(k) for k in ("candidate", "date", "verdict", "days", "production", "classes")},
                sort_keys=True,
                default=str,
            )
            for d in comparisons
        ),
    }


def _left_files(folder: Path) -> list[str]:
    """Every file or folder under ``folder``, the store link excepted (links are not followed)."""
    left = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if path != folder / "store":
                left.append(str(path.relative_to(folder)))
    return sorted(left)


def _upload_source(gcs_emulator: Any, bucket: str, tmp_path: Path) -> str:
    """The tiny source (``three/`` holds eights: flagged on the first day) in the bucket, dated by its metadata."""
    local = build_one_broken_class(tmp_path / "source", PER_CLASS)
    target = gcs_emulator.client().bucket(bucket)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        blob = target.blob(f"val/{path.relative_to(local).as_posix()}")
        blob.metadata = {"collected": COLLECTED}
        blob.upload_from_filename(str(path))
    return f"gs://{bucket}/val"


def _one_host_run(tmp_path: Path, monitor_env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """The DAG run for DATE by ``airflow dags test`` on SQLite, in one process, every file in one data dir: the data
    dir and the state of each task."""
    home, data = tmp_path / "one" / "airflow", tmp_path / "one" / "data"
    home.mkdir(parents=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MONITOR_"))},
        **monitor_env,
        "MONITOR_DATA_DIR": str(data),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    for argv in (["db", "migrate"], ["dags", "test", DAG_ID, DATE]):
        done = subprocess.run([airflow, *argv], capture_output=True, text=True, env=env, cwd=home, timeout=CLI_S)
        assert done.returncode == 0, f"airflow {' '.join(argv)}:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    with contextlib.closing(sqlite3.connect(home / "airflow.db")) as db:
        (run_state,) = db.execute("SELECT state FROM dag_run WHERE dag_id = ?", (DAG_ID,)).fetchone()
        states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (DAG_ID,)).fetchall())
    assert run_state == "success", f"{states}\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    return data, states


def test_a_day_run_by_the_scheduler_and_two_celery_workers_sharing_no_local_file_stores_what_one_host_stores(
    gcs_emulator: Any, tmp_path: Path
) -> None:
    from monitor.core.artifacts import GCSArtifacts
    from monitor.core.settings import SHIPPED_MODEL_DIR
    from monitor.orchestration.demo import build_candidate_model

    timings: dict[str, float] = {}
    t = time.monotonic()
    bucket = f"multihost-{uuid.uuid4().hex[:10]}"
    gcs_emulator.create_bucket(bucket)
    # Models are part of the image every host runs: a read-only folder both workers see, as the shipped one is.
    candidate = build_candidate_model(
        SHIPPED_MODEL_DIR, tmp_path / "models" / "candidate", {"eight": -2.0, "three": 1.5}
    )
    common = {
        "MONITOR_SOURCE_URI": _upload_source(gcs_emulator, bucket, tmp_path),
        "MONITOR_IMAGE_TIME": "metadata:collected",
        "MONITOR_SAMPLES_PER_CLASS": str(PER_CLASS),
        "MONITOR_SPARK_MASTER": "local[1]",
        "MONITOR_CANDIDATE_MODEL_DIRS": json.dumps([str(candidate)]),
        "STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"],
        "GOOGLE_CLOUD_PROJECT": "test",
    }
    timings["source_and_candidate_s"] = time.monotonic() - t

    t = time.monotonic()
    one_host, one_host_states = _one_host_run(tmp_path, common)
    timings["one_host_dags_test_s"] = time.monotonic() - t
    reference = _stored(one_host)
    assert reference["metrics"] and any(flagged for *_, flagged in reference["health"])  # a day that can differ
    assert [label for _, label, *_ in reference["alerts"]] == ["three"]

    shared = tmp_path / "shared"  # the store every worker reaches: it stands for MongoDB
    (shared / "store").mkdir(parents=True)
    artifacts = f"gs://{bucket}/artifacts"
    cluster_env = {
        **common,
        "MONITOR_ARTIFACTS_URI": artifacts,
        # As the compose stack's GPU profile: predict on the gpu queue's worker, the rest on default's.
        "AIRFLOW__CLASS_HEALTH__PREDICT_QUEUE": "gpu",
    }
    t = time.monotonic()
    with airflow_cluster(
        tmp_path / "cluster", monitor_env=cluster_env, workers=HOSTS, store_dir=shared / "store"
    ) as cluster:
        try:
            timings.update(cluster.timings)
            api = cluster.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].removesuffix("/execution/")
            cluster.wait_until(
                "the API server",
                lambda: urllib.request.urlopen(f"{api}/api/v2/monitor/health", timeout=10).status == 200,
                timeout_s=START_S,
            )
            for name in HOSTS:
                log = next(s.log for s in cluster.services if s.name == f"worker-{name}")
                cluster.wait_until(
                    f"worker {name}", lambda log=log: " ready." in log.read_text(errors="replace"), timeout_s=START_S
                )
            cluster.wait_until(
                f"{DAG_ID} parsed by the DAG processor",
                lambda: cluster.postgres.query("SELECT 1 FROM serialized_dag WHERE dag_id = %s", (DAG_ID,)),
                timeout_s=START_S,
            )
            timings["cluster_ready_s"] = time.monotonic() - t

            t = time.monotonic()
            cluster.airflow("dags", "unpause", DAG_ID)
            cluster.airflow("dags", "trigger", DAG_ID, "--logical-date", f"{DATE}T00:00:00+00:00", "--run-id", RUN_ID)
            timings["trigger_s"] = time.monotonic() - t

            t = time.monotonic()

            def finished() -> str | None:
                troubled = cluster.postgres.query(
                    "SELECT task_id, state FROM task_instance WHERE dag_id = %s AND run_id = %s"
                    " AND state IN ('failed', 'up_for_retry', 'upstream_failed')",
                    (DAG_ID, RUN_ID),
                )
                if troubled:  # a retry waits minutes: report the failure now
                    pytest.fail(f"tasks in trouble: {troubled}\n{cluster.report()}")
                (state,) = cluster.postgres.query(
                    "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (DAG_ID, RUN_ID)
                )[0]
                return state if state in ("success", "failed") else None

            state = cluster.wait_until(f"run {RUN_ID}", finished, timeout_s=RUN_S, every_s=3.0)
            timings["dag_run_s"] = time.monotonic() - t
            assert state == "success", cluster.report()
            tasks = {
                task_id: (state, hostname, queue)
                for task_id, state, hostname, queue in cluster.postgres.query(
                    "SELECT task_id, state, hostname, queue FROM task_instance WHERE dag_id = %s AND run_id = %s",
                    (DAG_ID, RUN_ID),
                )
            }
            durations = cluster.postgres.query(
                "SELECT task_id, EXTRACT(EPOCH FROM end_date - start_date) FROM task_instance"
                " WHERE dag_id = %s AND run_id = %s ORDER BY start_date",
                (DAG_ID, RUN_ID),
            )
            timings.update({f"task_{task_id}_s": float(seconds) for task_id, seconds in durations})
        except BaseException:
            print(cluster.report(120))
            raise
        t = time.monotonic()
    timings["teardown_s"] = time.monotonic() - t
    print("multihost timings:", json.dumps({k: round(v, 1) for k, v in timings.items()}))

    # The run's tasks ran on both workers, each where its queue sends it.
    assert sorted(tasks) == sorted(STAGES)
    assert {task_id: state for task_id, (state, _, _) in tasks.items()} == one_host_states
    assert {one_host_states[task_id] for task_id in STAGES[:-2]} == {"success"}
    assert {task_id: host for task_id, (_, host, _) in tasks.items()} == {
        task_id: "host-b" if task_id == "predict" else "host-a" for task_id in STAGES
    }
    assert tasks["predict"][2] == "gpu"

    # The same stored rows as the one-host run, and each file the one host kept locally is in the bucket instead.
    assert _stored(shared) == reference
    # Nothing for another task on a host's disk: its data dir holds at most the Spark driver JVM's own log
    # (evaluation/spark.py writes it there, for that host's operator; no task reads it), its working dir nothing.
    for name, host in cluster.workers.items():
        assert set(_left_files(host.data_dir)) <= {"logs", "logs/spark-jvm.log"}, f"{name} left files in its data dir"
        assert _left_files(host.workdir) == [], f"{name} left files in its working dir"
    bucket_files = GCSArtifacts(bucket, "artifacts")
    for key in (f"samples/{DATE}.csv", "cache/health-designs.json"):
        assert bucket_files.read(key, what="file") == (one_host / key).read_bytes()
    assert bucket_files.names("predictions", ".parquet") == [f"{DATE}.parquet"]
    assert len(bucket_files.folders("predictions/candidates")) == 1
