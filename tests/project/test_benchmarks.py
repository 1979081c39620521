"""Every benchmark runs: ``--quick --json`` exits 0 and prints one JSON object (figures are the benchmarks' business).

A benchmark drives the functions production uses, so a change to them can break it; before this test,
``bench_store.py`` failed for days unnoticed (its synthetic history made the model look new, and the sample drew the
first day's 200 images a class). ``bench_health.py`` and ``bench_compare.py`` run as the README's benchmark blocks
(``tests/project/test_readme_benchmarks.py``), ``bench_predict.py`` in ``tests/project/test_gpu_check.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RUN_HERE = ["bench_dashboard", "bench_fetch", "bench_index", "bench_metrics", "bench_sample", "bench_store"]
RUN_ELSEWHERE = ["bench_compare", "bench_health", "bench_predict"]


def test_every_benchmark_is_run_by_a_test() -> None:
    assert sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py")) == sorted(RUN_HERE + RUN_ELSEWHERE)


@pytest.mark.parametrize("name", RUN_HERE)
def test_the_benchmark_runs_quick_and_prints_one_json_object(name: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick", "--json"],
        cwd=tmp_path,
        env={**env, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert isinstance(result, dict) and result, done.stdout[-2000:]
