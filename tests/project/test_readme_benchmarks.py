"""The README's benchmark blocks work as written (with ``--quick``), on a fresh copy of the repository.

Apart from ``test_readme.py``'s blocks, which they do not depend on, so that two workers run the two at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.readme import ROOT, bash_blocks, is_benchmarks, run_blocks

pytestmark = [pytest.mark.slow]


def test_the_readme_benchmark_blocks_run_as_written(fresh_clone: Path) -> None:
    expected = sum(is_benchmarks(block) for block in bash_blocks((ROOT / "README.md").read_text()))
    assert expected >= 2 and len(run_blocks(fresh_clone, benchmarks=True)) == expected
