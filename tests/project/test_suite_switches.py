"""The suite's own switches reach the tests they switch: a check that cannot fail is a defect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a pytest in a subprocess, waiting for a server that is not there
def test_the_real_mongodb_switch_reaches_the_store_tests_and_fails_them_with_no_server() -> None:
    # Nothing listens on port 1: with the switch set, the MongoDB half of the store tests must fail, not pass on mongomock.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env["MONITOR_TEST_MONGO_URI"] = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"
    test = "tests/store/test_store.py::test_the_walk_starts_at_an_image_whose_key_equals_the_pivot_on_both"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", f"{test}[mongodb]"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stdout[-2000:]
    assert "1 error" in done.stdout or "1 failed" in done.stdout, done.stdout[-2000:]
    assert "ServerSelectionTimeoutError" in done.stdout or "127.0.0.1:1" in done.stdout, done.stdout[-2000:]


# Two tests in file order (one worker runs a whole file): what the first registers must not mask the second's text.
def test_a_secret_that_a_test_registers_is_masked_in_that_test() -> None:
    from monitor.core.secrets import redact, register

    register(["Zq1LeakWord"])
    assert redact("a Zq1LeakWord here") == "a *** here"


def test_and_is_no_secret_in_the_next_test() -> None:
    from monitor.core.secrets import redact

    assert redact("a Zq1LeakWord here") == "a Zq1LeakWord here"


def test_a_fast_lane_test_that_asks_for_spark_fails_naming_the_marker(tmp_path: Path) -> None:
    # This test is in the fast lane (not slow): tests/conftest.py's guard must stop it before a JVM starts.
    from evaluation.spark import spark_for
    from monitor.core.settings import load_settings

    with pytest.raises(pytest.fail.Exception, match="is not marked spark"):
        spark_for(load_settings(data_dir=tmp_path))


def test_a_test_that_uses_a_spark_or_airflow_fixture_carries_the_marker_and_leaves_the_fast_lane() -> None:
    from tests.conftest import pytest_collection_modifyitems

    class Item:  # what the hook reads and writes of a collected test
        def __init__(self, *fixtures: str) -> None:
            self.fixturenames = list(fixtures)
            self.markers: list[str] = []

        def get_closest_marker(self, name: str) -> object:
            return name if name in self.markers else None

        def add_marker(self, marker: pytest.MarkDecorator) -> None:
            self.markers.append(marker.name)

    spark, airflow, plain = Item("tmp_path", "spark"), Item("dagbag"), Item("tmp_path", "settings")
    pytest_collection_modifyitems(None, [spark, airflow, plain])  # type: ignore[arg-type, list-item]
    assert sorted(spark.markers) == ["slow", "spark"]
    assert sorted(airflow.markers) == ["airflow", "slow"]
    assert plain.markers == []
