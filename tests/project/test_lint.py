"""The code is formatted and linted by ruff (pinned in the test extra; configured in pyproject.toml)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing_to_lint() -> None:
    done = ruff("check", "--no-cache", ".")
    assert done.returncode == 0, f"ruff check (fix with: .venv/bin/ruff check --fix .):\n{done.stdout[-4000:]}"


def test_ruff_finds_nothing_to_format() -> None:
    done = ruff("format", "--check", "--no-cache", ".")
    assert done.returncode == 0, f"ruff format --check (fix with: .venv/bin/ruff format .):\n{done.stdout[-4000:]}"


def test_the_linter_is_the_pinned_one_and_sees_the_rules_of_pyproject(tmp_path: Path) -> None:
    # A file with an unused import and unsorted imports, checked under the project's settings: both are reported.
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n")
    done = ruff("check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad))
    assert done.returncode == 1 and "F401" in done.stdout and "I001" in done.stdout, done.stdout
    pinned = re.search(r'"ruff==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned and ruff("--version").stdout.strip() == f"ruff {pinned.group(1)}"  # the installed one is the pin
