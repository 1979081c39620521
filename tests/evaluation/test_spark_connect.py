"""Spark Connect (``MONITOR_SPARK_MASTER=sc://host:port``): the same metrics and the same stored run as a local
session, a clear error within seconds for a server that is not there, and its token never shown.

A process holds either a local session or a Connect client, not both (pyspark refuses the second), so the
Connect side of each comparison runs in a subprocess and the local side in this one (the ``spark`` fixture).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from evaluation.metrics import class_metrics_pandas, class_metrics_spark, paired_counts_pandas
from monitor.core.errors import ConfigError
from monitor.core.settings import load_settings
from monitor.orchestration.cli import app
from tests.fixtures.faults import DATE, PER_CLASS, snapshot
from tests.fixtures.predictions import random_predictions
from tests.fixtures.webhook import Endpoint

pytestmark = [pytest.mark.slow, pytest.mark.spark]
ROOT = Path(__file__).resolve().parents[2]

# Run in a subprocess: the metrics and paired counts of the frames in the Parquet files, on the Connect server.
_CONNECT_SCRIPT = """
import json, sys
import pandas as pd
from evaluation.metrics import class_metrics_spark, paired_counts_spark
from evaluation.spark import get_spark, is_connect_session

url, predictions, production, candidate, labels = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
session = get_spark(url)
assert is_connect_session(session), type(session)
print(json.dumps({
    "metrics": class_metrics_spark(session, pd.read_parquet(predictions), labels=labels),
    "paired": paired_counts_spark(session, pd.read_parquet(production), pd.read_parquet(candidate), labels=labels),
    "partitions": session.conf.get("spark.sql.shuffle.partitions"),
}))
"""


def _python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")} | {"PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], env=base | (env or {}), cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def _paired_frames(frame: Any) -> tuple[Any, Any]:
    """Production and a candidate on the same images: the candidate is right where production failed, and wrong on a few."""
    production = frame[frame["model_id"] == frame["model_id"].iloc[0]].copy()
    candidate = production.copy()
    candidate["pred"] = candidate["label"].where(candidate.index % 7 != 0, "class_01")
    candidate["status"] = "ok"
    return production, candidate


def test_metrics_and_paired_counts_on_spark_connect_equal_a_local_session_and_the_reference(
    spark, spark_connect, tmp_path: Path
) -> None:
    frame, labels = random_predictions(7, rows=2000, runs=2)
    production, candidate = _paired_frames(frame)
    paths = [tmp_path / f"{name}.parquet" for name in ("predictions", "production", "candidate")]
    for data, path in zip((frame, production, candidate), paths):
        data.to_parquet(path)

    done = _python("-c", _CONNECT_SCRIPT, spark_connect.url, *map(str, paths), json.dumps(labels))
    assert done.returncode == 0, done.stderr[-3000:]
    remote = json.loads(done.stdout)

    local = class_metrics_spark(spark, frame, labels=labels)
    assert remote["metrics"] == local  # every row, every key, the floats to the last bit
    assert local == class_metrics_pandas(frame, labels=labels)
    assert remote["paired"] == paired_counts_pandas(production, candidate, labels=labels)
    assert sum(r["only_production"] for r in remote["paired"]) > 0  # the candidate differs, so the check can fail
    assert remote["partitions"] == "4"  # the session's own settings reached the server's session


def test_a_day_evaluated_on_spark_connect_stores_what_a_local_session_stores(
    spark, fault_source: Path, uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    """``uninterrupted`` is ``monitor evaluate`` run on the Connect server (as every fault test's run); here the same
    day runs in this process on the local session: the same sample, predictions, metrics, verdicts and alert."""
    server = Endpoint()
    try:
        env = {
            "MONITOR_DATA_DIR": str(tmp_path / "data"),
            "MONITOR_SOURCE_URI": str(fault_source),
            "MONITOR_SAMPLES_PER_CLASS": str(PER_CLASS),
            "MONITOR_ALERT_URLS": json.dumps([server.url]),
        }
        result = CliRunner(env=env).invoke(app, ["evaluate", "--date", DATE])
        assert result.exit_code == 0, result.stderr
    finally:
        server.server.shutdown()
        server.server.server_close()
    local = snapshot(tmp_path / "data")
    assert local == uninterrupted["snapshot"]
    assert local["metrics"] and any(flagged for *_, flagged in local["health"])  # a day with something to compare


def test_an_unreachable_server_is_an_error_naming_it_without_its_token_and_nothing_retries_at_exit() -> None:
    url = "sc://127.0.0.1:1/;user_id=ops;token=Sc0nnTok"
    done = _python("-c", "import sys; from evaluation.spark import get_spark; get_spark(sys.argv[1])", url)
    assert done.returncode != 0
    assert "SparkError: could not use the Spark Connect server sc://127.0.0.1:1/;user_id=ops;token=***" in done.stderr
    assert "Connection refused" in done.stderr and "Sc0nnTok" not in done.stderr
    # Nothing left retrying at exit: the client was closed (its default policy retries for 10 minutes).
    assert "RETRIES_EXCEEDED" not in done.stderr

    shown = _python("-m", "monitor.orchestration.cli", "settings", "--json", env={"MONITOR_SPARK_MASTER": url})
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["spark_master"] == "sc://127.0.0.1:1/;user_id=ops;token=***"
    assert "Sc0nnTok" not in shown.stdout + shown.stderr


def test_the_spark_predict_engine_with_a_connect_server_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match="set MONITOR_ENGINE=local") as refused:
        load_settings(engine="spark", spark_master="sc://spark:15002/;token=EngTok1")
    assert "EngTok1" not in str(refused.value)
