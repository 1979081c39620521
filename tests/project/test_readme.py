"""The README's command blocks work as written, in order, on a fresh copy of the repository.

Every ```bash block of README.md runs, top to bottom, in a copy of the tracked files (the set-up's
``.venv`` linked in, so nothing is installed twice), each block in its own shell, with no ``MONITOR_``
variable set. Only these are adapted, and the test says so:

- ``bash scripts/test.sh`` is this test suite itself: not run again from inside it;
- ``monitor dashboard`` blocks the shell: it is started in the background on a free port
  (``MONITOR_DASHBOARD_PORT``), the page is fetched once it answers, then it is stopped;
- benchmark lines run with ``--quick`` (their figures are the benchmarks' business, not a test's).

Blocks that need what this machine has not got are listed in :data:`NOT_RUN` with the reason; any
other block, a new one included, runs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.airflow]

ROOT = Path(__file__).resolve().parents[2]
#: The first line of each block that is not run here, and why.
NOT_RUN = {
    "export MONITOR_SOURCE_URI=gs://my-bucket/validation": "needs your bucket, model directory and MongoDB (placeholders)",
    "bash docker/start.sh": "needs a Docker engine; tests/project/test_docker.py runs it up to docker compose config",
    "export MONITOR_ENGINE=spark": "needs your Spark cluster (placeholders); tests/evaluation/test_spark_cluster.py runs evaluate on a loopback standalone cluster",
    "SPARK_HOME=$(.venv/bin/python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')": (
        "starts long-running daemons; tests/fixtures/spark_cluster.py does the same and stops them"
    ),
    ".venv/bin/pip install -e '.[dev]'": "the mutation run takes tens of minutes a module; it is measured by hand, not in the suite",
    "MONITOR_TEST_MONGO_URI='mongodb://127.0.0.1:27017/?directConnection=true' .venv/bin/python -m pytest tests/store/test_store.py": (
        "needs the compose stack's MongoDB; tests/store/test_store.py runs the same tests on mongomock in this suite"
    ),
}


def bash_blocks(text: str) -> list[list[str]]:
    """The lines of every ```bash block, in order."""
    return [block.strip("\n").splitlines() for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def adapt(line: str) -> str:
    """A README line as this test runs it (see the module docstring)."""
    command = line.split("#", 1)[0].strip() if not line.lstrip().startswith("export") else line
    if command == "bash scripts/test.sh":
        return "true  # the test suite itself"
    if command.startswith(".venv/bin/monitor dashboard"):
        return (
            f"{command} & server=$!; "
            'for _ in $(seq 90); do curl -sf "http://127.0.0.1:$MONITOR_DASHBOARD_PORT/" -o dashboard.html && break; sleep 1; done; '
            'kill $server; wait $server || true; grep -q "Class health" dashboard.html'
        )
    if "benchmarks/" in command and "--quick" not in command:
        return f"{command} --quick"
    return line


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tracked files of the repository, as a clone has them, with the set-up's .venv linked in."""
    target = tmp_path_factory.mktemp("clone") / "repo"
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    )
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    # The linked .venv is the real one: the clone's set-up must find it complete (the stamp of this
    # pyproject), or it would reinstall the project from the clone into it.
    stamp = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    assert list((ROOT / ".venv").glob(f".installed-{stamp}-*")), (
        "run bash scripts/setup.sh first: .venv is not set up for this pyproject.toml"
    )
    (target / ".venv").symlink_to(ROOT / ".venv")
    return target


def test_every_readme_block_that_is_not_run_says_why() -> None:
    blocks = bash_blocks((ROOT / "README.md").read_text())
    first_lines = {block[0].split("#", 1)[0].strip() for block in blocks}
    assert set(NOT_RUN) <= first_lines, "a block listed as not run is no longer in the README"


def test_the_readme_command_blocks_work_as_written_in_order(fresh_clone: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "AIRFLOW"))}
    env.update(MONITOR_DASHBOARD_PORT=str(free_port()), SKIP_APT="1", PYTHONUNBUFFERED="1")
    ran = 0
    for block in bash_blocks((ROOT / "README.md").read_text()):
        if block[0].split("#", 1)[0].strip() in NOT_RUN:
            continue
        script = "set -euo pipefail\n" + "\n".join(adapt(line) for line in block)
        done = subprocess.run(
            ["bash", "-c", script], cwd=fresh_clone, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, (
            f"README block failed:\n{script}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
        )
        ran += 1
    assert ran >= 5
    # What the blocks promise: the demo flagged eight, the Airflow run of today succeeded on the demo's store.
    alerts = subprocess.run(
        [".venv/bin/monitor", "alerts", "--json"], cwd=fresh_clone, env=env, capture_output=True, text=True
    )
    assert '"label": "eight"' in alerts.stdout
