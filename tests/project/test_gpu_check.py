"""benchmarks/gpu_check.sh, the GPU run, as far as a machine without a GPU can check it.

- the script parses, and without a CUDA device (or with ``--dry-run``) says so in one line and
  stops before installing anything;
- ``bench_predict.py`` runs on the CPU with the options the script passes (labels, batch sizes,
  dtype) and prints the JSON keys the script reads;
- the whole GPU path of the script, with stand-ins for ``nvidia-smi`` and for the interpreter
  (which runs the real ``bench_predict.py`` on the CPU, small), writes the summary it promises.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
BENCH = ROOT / "benchmarks" / "bench_predict.py"


def run_script(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_script_parses() -> None:
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_without_a_gpu_it_says_so_in_one_line_and_installs_nothing() -> None:
    # A missing interpreter: had the script gone on to the set-up, it would have stopped there with 3.
    done = run_script("--python", "/nonexistent/python", env={"GPU_CHECK_NO_GPU": "1"})
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no CUDA device" in lines[0] and "nothing installed" in lines[0] and "not measured" in lines[0]


def test_a_dry_run_says_what_it_would_run_and_exits_0() -> None:
    done = run_script("--dry-run", "--python", "/nonexistent/python", env={"GPU_CHECK_NO_GPU": "1"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("gpu_check: dry run, nothing installed or run")
    assert "batch sizes 64,256" in lines[0] and "1000 labels" in lines[0]


@pytest.mark.parametrize("args", [["--bogus"], ["--batch-sizes", "64,x"], ["--images", "0"], ["--out"]])
def test_a_bad_option_is_refused_with_64(args: list[str]) -> None:
    done = run_script(*args, env={"GPU_CHECK_NO_GPU": "1"})
    assert done.returncode == 64
    assert done.stderr.startswith("gpu_check: ")


BENCH_KEYS = {"check", "device", "torch", "cuda", "torchvision", "batch_sizes", "dtype", "labels", "results", "seconds"}
RESULT_KEYS = {
    "model",
    "labels",
    "batch_size",
    "path",
    "decode",
    "dtype",
    "images",
    "model_only",
    "end_to_end",
    "ratio",
}


@pytest.mark.slow
def test_bench_predict_runs_on_the_cpu_with_the_gpu_runs_options_and_prints_the_keys_the_script_reads() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--json",
            "--device",
            "cpu",
            "--labels",
            "1000",
            "--batch-sizes",
            "4,8",
            "--dtype",
            "bf16",
            "--images",
            "8",
            "--repeats",
            "1",
            "--tiny-resnet",
            "--skip-shipped",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert BENCH_KEYS <= set(result)
    assert result["batch_sizes"] == [4, 8] and result["labels"] == 1000 and result["dtype"] == "bf16"
    assert [r["batch_size"] for r in result["results"]] == [4, 8]
    for row in result["results"]:
        assert RESULT_KEYS <= set(row)
        assert row["labels"] == 1000 and row["dtype"] == "bf16" and row["decode"] == "pillow"
        assert row["model_only"] > 0 and row["end_to_end"] > 0
    assert "model-only img/s" in done.stderr  # the table goes to stderr under --json


FAKE_NVIDIA_SMI = """#!/usr/bin/env bash
case "$*" in
  *name,driver_version*) echo "Stand-in GPU, 000.00, 1 MiB" ;;
  *) echo "Stand-in GPU" ;;
esac
"""

# The interpreter the script is given: torch "is" a CUDA build that works, and bench_predict.py runs
# for real on the CPU with small counts (cuda -> cpu; later options win in argparse).
FAKE_PYTHON = """#!/usr/bin/env bash
real={python}
if [[ ${{1:-}} == -c ]]; then
  case $2 in
    *torch.version.cuda*) echo "2.13.0 12.8"; exit 0 ;;
    *'device="cuda"'*) echo ok; exit 0 ;;
  esac
fi
if [[ ${{1:-}} == benchmarks/bench_predict.py ]]; then
  shift
  args=()
  for a in "$@"; do [[ $a == cuda ]] && a=cpu; args+=("$a"); done
  if [[ " ${{args[*]}} " == *" --equivalence "* ]]; then
    exec "$real" benchmarks/bench_predict.py "${{args[@]}}" --path tensor --dtype bf16 --images 32
  fi
  exec "$real" benchmarks/bench_predict.py "${{args[@]}}" --images 8 --repeats 1 --tiny-resnet --skip-shipped
fi
exec "$real" "$@"
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.mark.slow
def test_the_gpu_path_with_stand_ins_runs_both_checks_and_writes_one_summary(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "nvidia-smi", FAKE_NVIDIA_SMI)
    python = executable(tmp_path / "python", FAKE_PYTHON.format(python=sys.executable))
    out = tmp_path / "summary.json"
    done = run_script(
        "--python",
        str(python),
        "--out",
        str(out),
        "--batch-sizes",
        "4,8",
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "GPU_CHECK_NO_GPU": "0"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout)
    assert json.loads(out.read_text()) == summary
    meta = summary["gpu_check"]
    assert meta["passed"] and meta["problems"] == [] and meta["gpu"] == "Stand-in GPU, 000.00, 1 MiB"
    assert meta["steps"]["equivalence"]["exit"] == 0 and meta["steps"]["benchmark"]["exit"] == 0
    assert meta["checks_s"] <= meta["budget_s"] == 480
    equivalence = summary["equivalence"]
    assert equivalence["passed"] and equivalence["images"] == 32
    assert [c["dtype"] for c in equivalence["candidates"]] == ["bf16", "fp32"]
    assert all(c["label_mismatches"] == 0 and c["path"] == "tensor" for c in equivalence["candidates"])
    assert set(summary["headline"]) == {"batch_4", "batch_8"}
    assert summary["headline"]["batch_8"]["labels"] == 1000 and summary["headline"]["batch_8"]["dtype"] == "bf16"
    assert "[gpu_check] passed" in done.stderr
