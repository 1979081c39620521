"""Shared fixtures. Fixture modules under tests/fixtures/ are loaded as plugins, one per area."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Keep every test off the network and off the user's own config. The suite's own switch for a real MongoDB
# (the store tests run on it as well as on mongomock) is not a setting and stays.
SUITE_SWITCHES = ("MONITOR_TEST_MONGO_URI",)
os.environ.pop("MONITOR_CONFIG", None)
for _name in [n for n in os.environ if n.startswith("MONITOR_") and n not in SUITE_SWITCHES]:
    del os.environ[_name]

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py") if not p.name.startswith("_")
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def settings(data_dir: Path):
    """Settings on a fresh data dir with the embedded store; tests override fields with model_copy(update=...)."""
    from monitor.core.settings import load_settings

    return load_settings(data_dir=data_dir)


@pytest.fixture
def store(settings) -> Iterator:
    from monitor.store import open_store

    with open_store(settings) as s:
        yield s


#: Markers that make a test slow whatever it does: a JVM, Airflow's scheduler machinery, a browser.
SLOW_BY_NATURE = ("spark", "airflow", "browser")
#: Fixtures that start what those markers stand for: a test that uses one carries its marker, written or not.
MARKER_OF_FIXTURE = {
    "spark": "spark",
    "spark_connect": "spark",
    "spark_cluster": "spark",
    "airflow_env": "airflow",
    "airflow_db": "airflow",
    "dagbag": "airflow",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that starts Spark, Airflow or Chromium, so ``scripts/test.sh --fast`` leaves it out."""
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            marker = MARKER_OF_FIXTURE.get(fixture)
            if marker is not None and not item.get_closest_marker(marker):
                item.add_marker(getattr(pytest.mark, marker))
        if not item.get_closest_marker("slow") and any(item.get_closest_marker(name) for name in SLOW_BY_NATURE):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _no_spark_in_the_fast_lane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test left in the fast lane (not ``slow``) that asks for a Spark session fails, naming the marker it lacks:
    the lane's promise (no JVM) is checked, not assumed. ``slow`` tests start Spark as they need."""
    if request.node.get_closest_marker("slow") is not None:
        return
    import evaluation.spark

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail(f"{request.node.nodeid} starts a Spark session but is not marked spark (or slow)", pytrace=False)

    monkeypatch.setattr(evaluation.spark, "get_spark", refuse)


@pytest.fixture(autouse=True)
def _secrets_registered_per_test() -> Iterator[None]:
    """The secrets a test's settings register are masked for that test only: a password one test uses (``secret``,
    ``admin``) must not mask the words of another test's output in the same worker."""
    from monitor.core import secrets

    before = set(secrets.registered())
    yield
    with secrets._lock:
        secrets._registered.intersection_update(before)
