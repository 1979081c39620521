"""The README's command blocks work as written, in order, on a fresh copy of the repository.

Every ```bash block of README.md runs, top to bottom, in a copy of the tracked files (the set-up's
``.venv`` linked in, so nothing is installed twice), each block in its own shell, with no ``MONITOR_``
variable set. Only these are adapted, and the test says so:

- ``bash scripts/test.sh`` is this test suite itself: not run again from inside it;
- ``monitor dashboard`` blocks the shell: it is started in the background on a free port
  (``MONITOR_DASHBOARD_PORT``), the page is fetched once it answers, then it is stopped;
- benchmark lines run with ``--quick`` (their figures are the benchmarks' business, not a test's), and the blocks
  made only of benchmark lines run in a test of their own, on a clone of their own (they read nothing the other
  blocks leave), so that the suite's workers can run the two at once.

Blocks that need what this machine has not got are listed in :data:`NOT_RUN` with the reason; any
other block, a new one included, runs.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.readme import NOT_RUN, ROOT, bash_blocks, run_blocks

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.airflow]


def test_every_readme_block_that_is_not_run_says_why() -> None:
    blocks = bash_blocks((ROOT / "README.md").read_text())
    first_lines = {block[0].split("#", 1)[0].strip() for block in blocks}
    assert set(NOT_RUN) <= first_lines, "a block listed as not run is no longer in the README"


def test_the_readme_command_blocks_work_as_written_in_order(fresh_clone: Path) -> None:
    printed = run_blocks(fresh_clone, benchmarks=False)
    assert len(printed) >= 5
    # The first command's demo says when `eight` was flagged; the README's sentence about it says the same.
    said = " ".join(printed[0].split())
    ran = re.search(r"eight: needs retraining since (\d{4}-\d{2}-\d{2}) \(day (\d+) of the drop", said)
    assert ran is not None, said[-2000:]
    readme = " ".join((ROOT / "README.md").read_text().split())
    claimed = re.search(r"is flagged \*needs_retraining\* from (\d{4}-\d{2}-\d{2}), day (\d+) of the drop", readme)
    assert claimed is not None and claimed.groups() == ran.groups(), (claimed, ran.groups())
    # What the blocks promise: the demo flagged eight, the Airflow run of the demo's last day succeeded on its store.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "AIRFLOW"))}
    alerts = subprocess.run(
        [".venv/bin/monitor", "alerts", "--json"], cwd=fresh_clone, env=env, capture_output=True, text=True
    )
    assert '"label": "eight"' in alerts.stdout
