"""The floors of the code and the import arrows between its modules, read from the source (no import is executed).

Three floors; a module may import from its own floor and the floors below, never from above:

- **foundation**: errors, settings, dates, files, secrets, the store layer, image sources, statistics, the verdict type,
  the run context: what every part of the service stands on;
- **domain**: what the service does: indexing, sampling, health, alerts, candidate comparison, evaluation (model, images, prediction,
  metrics), the dashboard's read model and pages;
- **orchestration**: what runs it: the pipeline of stages, the CLI, the demo, the Airflow DAGs, the Dash app's wiring.

    .venv/bin/python scripts/import_graph.py            # print the Mermaid diagram
    .venv/bin/python scripts/import_graph.py --write    # refresh it in docs/ARCHITECTURE.md
    .venv/bin/python scripts/import_graph.py --check    # exit 1 on an arrow that runs back up (tests/test_layers.py runs this)
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("monitor", "evaluation", "dashboards", "dags")
FLOORS = ("foundation", "domain", "orchestration")
#: Modules above the foundation, by floor; every other module of ``monitor`` is foundation.
DOMAIN_MONITOR = {"monitor.indexing", "monitor.sampling", "monitor.health", "monitor.alerts", "monitor.digits", "monitor.compare"}
ORCHESTRATION = {"monitor.pipeline", "monitor.cli", "monitor.demo", "dashboards.app", "dashboards.callbacks"}
BEGIN, END = "<!-- import-graph:begin (scripts/import_graph.py --write) -->", "<!-- import-graph:end -->"


def modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name (packages as their ``__init__``)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def floor(module: str) -> str:
    if module in ORCHESTRATION or module.startswith("dags"):
        return "orchestration"
    if module.startswith(("evaluation", "dashboards")) or module in DOMAIN_MONITOR:
        return "domain"
    return "foundation"


def imports(known: dict[str, Path]) -> dict[str, set[str]]:
    """The project modules each module imports (module level or inside functions), resolved to known names."""
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            candidates: list[str] = []
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            for candidate in candidates:
                while candidate and candidate not in known:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name and candidate.split(".")[0] in PACKAGES:
                    targets.add(candidate)
                    break
        edges[name] = targets
    return edges


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Arrows from a floor to a floor above it."""
    rank = {name: index for index, name in enumerate(FLOORS)}
    return sorted(
        f"{source} ({floor(source)}) -> {target} ({floor(target)})"
        for source, targets in edges.items()
        for target in targets
        if rank[floor(target)] > rank[floor(source)]
    )


def mermaid(edges: dict[str, set[str]]) -> str:
    """The import graph as a Mermaid flowchart, one subgraph per floor (packages' ``__init__`` left out)."""
    shown = {name for name in edges if name not in PACKAGES}
    lines = ["```mermaid", "flowchart BT"]
    for level in FLOORS:
        lines.append(f"  subgraph {level}")
        lines += [f"    {_node(name)}[{name}]" for name in sorted(shown) if floor(name) == level]
        lines.append("  end")
    lines += [f"  {_node(s)} --> {_node(t)}" for s in sorted(shown) for t in sorted(edges[s]) if t in shown]
    lines.append("```")
    return "\n".join(lines)


def _node(name: str) -> str:
    return name.replace(".", "_")


def section(edges: dict[str, set[str]]) -> str:
    return f"{BEGIN}\n{mermaid(edges)}\n{END}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="refresh the diagram in docs/ARCHITECTURE.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when an import runs back up a floor")
    args = parser.parse_args()
    edges = imports(modules())
    if args.check:
        wrong = upward(edges)
        for arrow in wrong:
            print(f"upward import: {arrow}", file=sys.stderr)
        return 1 if wrong else 0
    if args.write:
        doc = ROOT / "docs" / "ARCHITECTURE.md"
        text = doc.read_text(encoding="utf-8")
        start, stop = text.index(BEGIN), text.index(END) + len(END)
        doc.write_text(text[:start] + section(edges) + text[stop:], encoding="utf-8")
        return 0
    print(mermaid(edges))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
