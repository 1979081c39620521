"""``monitor evaluate --engine spark`` against a real standalone cluster (a master and one worker on 127.0.0.1),
not ``local[*]``: the same day evaluated by the local engine and by the cluster gives the same per-class counts,
predictions and verdicts, and the cluster's executor, not the driver, ran the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.fixtures.sources import build_one_broken_class
from tests.fixtures.spark_cluster import QUICK_JVM, SparkCluster

pytestmark = [pytest.mark.slow, pytest.mark.spark]

DATE = "2026-11-20"
PER_CLASS = 6
BROKEN = "three"  # its folder holds eights: every image wrong, so one class is flagged on the first day
APP_NAME = "class-health-monitor"  # evaluation.spark.get_spark's default application name
CLI_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def cluster_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Held-out digits: ``zero/`` and ``one/`` as they are, ``three/`` holding eights; PER_CLASS each."""
    return build_one_broken_class(tmp_path_factory.mktemp("cluster_bucket") / "val", PER_CLASS, BROKEN)


class Evaluation:
    """``monitor evaluate --date DATE --json`` running in a subprocess on its own data dir."""

    def __init__(self, data_dir: Path, source: Path, env: dict[str, str]) -> None:
        self.data_dir, self.engine = data_dir, env.get("MONITOR_ENGINE", "default")
        data_dir.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "SPARK_", "PYSPARK_"))}
        base.update(
            MONITOR_DATA_DIR=str(data_dir),
            MONITOR_SOURCE_URI=str(source),
            MONITOR_SAMPLES_PER_CLASS=str(PER_CLASS),
            # No follow-up sampling: the health test's calibration then takes ~2 s of CPU instead of ~12 s per run.
            MONITOR_FOLLOWUP_SAMPLES="0",
            PYTHONUNBUFFERED="1",
            JAVA_TOOL_OPTIONS=QUICK_JVM,
            **env,
        )
        # Output to files, not pipes: nobody reads while it runs.
        self.stdout, self.stderr = data_dir.parent / f"{data_dir.name}.out", data_dir.parent / f"{data_dir.name}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            command = [sys.executable, "-m", "monitor.orchestration.cli", "evaluate", "--date", DATE, "--json"]
            self.proc = subprocess.Popen(command, env=base, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.started = time.monotonic()
        self.seconds = 0.0

    def result(self) -> dict[str, Any]:
        """Wait for the run (CLI_TIMEOUT_S from its start) and return its JSON; fail with its stderr otherwise."""
        try:
            self.proc.wait(timeout=max(1.0, CLI_TIMEOUT_S - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"monitor evaluate ({self.engine}) did not finish within {CLI_TIMEOUT_S} s:\n{self._stderr()}")
        self.seconds = time.monotonic() - self.started
        assert self.proc.returncode == 0, (
            f"monitor evaluate ({self.engine}) exited with {self.proc.returncode}:\n{self._stderr()}"
        )
        return json.loads(self.stdout.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _stderr(self) -> str:
        return self.stderr.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="session")
def local_evaluation(cluster_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Evaluation]:
    """The reference run with the local engine, started before the cluster so that the two overlap (the 10-20 s of its start-up)."""
    run = Evaluation(
        tmp_path_factory.mktemp("engines") / "local",
        cluster_source,
        {"MONITOR_ENGINE": "local", "MONITOR_SPARK_MASTER": "local[1]"},
    )
    try:
        yield run
    finally:
        run.stop()


def per_class(result: dict[str, Any]) -> list[tuple[str, int, int, int, str]]:
    return sorted((c["label"], c["n"], c["correct"], c["failed"], c["verdict"]) for c in result["classes"])


def predictions(result: dict[str, Any]) -> pd.DataFrame:
    frame = pd.read_parquet(result["predictions"])
    return frame.sort_values("image_path").reset_index(drop=True)


def finished_app(cluster: SparkCluster, known: set[str], timeout: float = 30.0) -> dict[str, Any]:
    """The master's record of the one application that completed since ``known`` (the driver just exited)."""
    deadline = time.monotonic() + timeout
    while True:
        state = cluster.state()
        new = [app for app in state.get("completedapps", []) if app["id"] not in known]
        if new or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(new) == 1, (
        f"expected one application completed on the cluster, got {new}; active: {state.get('activeapps')}"
    )
    return new[0]


# local_evaluation before spark_cluster: the reference run starts first and runs while the cluster comes up.
def test_evaluate_on_a_standalone_cluster_matches_the_local_engine(
    local_evaluation: Evaluation, spark_cluster: SparkCluster, cluster_source: Path
) -> None:
    local = local_evaluation.result()

    known = {app["id"] for app in spark_cluster.state().get("completedapps", [])}
    run = Evaluation(
        local_evaluation.data_dir.parent / "cluster",
        cluster_source,
        {
            "MONITOR_ENGINE": "spark",
            "MONITOR_SPARK_MASTER": spark_cluster.master_url,
            "MONITOR_SPARK_CONF": json.dumps(
                {
                    # The executors' Python workers need an interpreter with this project and its dependencies.
                    "spark.pyspark.python": sys.executable,
                    # The metrics' few rows need few shuffle partitions (Spark's 200 are ~1,400 tasks on one core).
                    "spark.sql.shuffle.partitions": "2",
                }
            ),
            "SPARK_LOCAL_IP": spark_cluster.client_env["SPARK_LOCAL_IP"],
        },
    )
    try:
        clustered = run.result()
    finally:
        run.stop()
    print(f"local engine run {local_evaluation.seconds:.1f} s (from its start), cluster run {run.seconds:.1f} s")

    # Same day, same model, same sample: the same answer whichever engine and master computed it.
    assert local["sampled"] == clustered["sampled"] == 3 * PER_CLASS
    assert per_class(clustered) == per_class(local)
    assert per_class(local) == [
        ("one", PER_CLASS, PER_CLASS, 0, "insufficient_data"),
        (BROKEN, PER_CLASS, 0, 0, "needs_retraining"),
        ("zero", PER_CLASS, PER_CLASS, 0, "insufficient_data"),
    ]
    assert clustered["flagged"] == local["flagged"] == [BROKEN]
    a, b = predictions(local), predictions(clustered)
    columns = ["image_path", "label", "pred", "status", "draw"]
    pd.testing.assert_frame_equal(b[columns], a[columns])
    assert (b["confidence"] - a["confidence"]).abs().max() < 1e-4

    # The cluster ran it: the master lists the application as completed, and the worker's executor ran its tasks.
    app = finished_app(spark_cluster, known)
    assert app["name"] == APP_NAME and app["cores"] >= 1, app
    logs = spark_cluster.executor_logs(app["id"])
    stderr = "\n".join(text for name, text in logs.items() if name.endswith("stderr"))
    assert "Finished task" in stderr, f"no task finished on an executor of {app['id']}: {sorted(logs)}"
