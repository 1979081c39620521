"""The docs' command blocks that the README's test does not run itself are the README's, command for command, and the
versions the docs name are the ones the project requires."""

from __future__ import annotations

import re
from pathlib import Path

from tests.fixtures.readme import bash_blocks

ROOT = Path(__file__).resolve().parents[2]


def _commands(block: list[str]) -> list[str]:
    """A block's commands, without comments and alignment (what a shell runs)."""
    lines = [line.split("  #", 1)[0] if not line.lstrip().startswith("#") else "" for line in block]
    return [" ".join(line.split()) for line in lines if line.strip()]


def _block_starting(path: Path, first: str) -> list[str]:
    (block,) = [b for b in bash_blocks(path.read_text()) if b and b[0].startswith(first)]
    return block


def test_the_airflow_guide_runs_the_readmes_airflow_block_which_the_readme_test_runs() -> None:
    start = "export AIRFLOW_HOME="
    guide = _commands(_block_starting(ROOT / "docs" / "AIRFLOW.md", start))
    readme = _commands(_block_starting(ROOT / "README.md", start))
    assert guide == readme
    assert "export MONITOR_FRESH_DAYS=2" in guide  # the demo's sampling, without which the DAG refuses its sample


def test_the_airflow_floor_is_the_release_that_has_what_the_dag_imports() -> None:
    floor = re.search(r'"apache-airflow(?:\[[a-z,]+\])?>=(\d+\.\d+)', (ROOT / "pyproject.toml").read_text())
    assert floor is not None
    dag = (ROOT / "dags" / "class_health_daily.py").read_text()
    assert "ExceptionRetryPolicy" in dag  # first released in Airflow 3.3
    assert floor[1] == "3.3"
    assert f"Airflow {floor[1]} or later" in (ROOT / "docs" / "AIRFLOW.md").read_text()
