"""The table scripts/mutation.sh prints: per module, mutants, killed, survived, equivalent, timeout, not run, score.

Reads ``mutmut results --all true`` of each module's run, and the reviewed list of equivalent mutants
(``scripts/mutation-equivalent.txt``: one ``mutant-name  reason`` a line). An equivalent mutant behaves
exactly like the original (no test can tell them apart), so it leaves the score's denominator; every
other mutant that survives, or that no test of the module runs ("no tests"), counts against the score.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

KILLED = {"killed", "caught by type check"}
NOT_RUN = {"not checked", "check was interrupted by user", "skipped"}


def read_equivalent(path: Path) -> dict[str, str]:
    reasons: dict[str, str] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, reason = line.partition(" ")
            reasons[name] = reason.strip()
    return reasons


def read_results(path: Path) -> dict[str, str]:
    found = re.findall(r"^\s+(\S+__mutmut_\d+): (.+)$", path.read_text() if path.exists() else "", flags=re.M)
    return dict(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--equivalent", type=Path, required=True)
    parser.add_argument("reports", nargs="+", help="MODULE=path/to/results.txt")
    args = parser.parse_args()
    equivalent = read_equivalent(args.equivalent)
    rows, survivors, equivalents = [], [], []
    for item in args.reports:
        module, _, path = item.partition("=")
        results = read_results(Path(path))
        counts: Counter[str] = Counter()
        for name, status in results.items():
            if status in NOT_RUN:
                counts["not run"] += 1
            elif name in equivalent:
                counts["equivalent"] += 1
                equivalents.append(f"  {name} ({status}): {equivalent[name]}")
            elif status in KILLED:
                counts["killed"] += 1
            elif status == "timeout":
                counts["timeout"] += 1
            else:
                counts["survived"] += 1
                survivors.append(f"  {name}: {status}")
        run = len(results) - counts["not run"]
        judged = run - counts["equivalent"]
        # A timeout is not counted as a kill: on a busy machine a slow clean run can look like a hung mutant.
        score = f"{100 * counts['killed'] / judged:.1f}%" if judged else "-"
        rows.append(
            (
                module,
                len(results),
                counts["killed"],
                counts["survived"],
                counts["equivalent"],
                counts["timeout"],
                counts["not run"],
                score,
            )
        )
    header = ("module", "mutants", "killed", "survived", "equivalent", "timeout", "not run", "score")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths))))
    print("score = killed / (mutants - not run - equivalent); 'survived' includes mutants no test of the module runs")
    if equivalents:
        print("equivalent (reviewed, scripts/mutation-equivalent.txt):")
        print("\n".join(equivalents))
    if survivors:
        print("survived:")
        print("\n".join(survivors))


if __name__ == "__main__":
    main()
