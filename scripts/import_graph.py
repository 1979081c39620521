"""The floors of the code and the import arrows between its modules and folders, read from the source (no import is executed).

Three floors, each a set of folders; a module's floor is its folder's, so the tree shows the floors. A module may import
from its own floor and the floors below, never from above, and no two folders import each other:

- **foundation** (``monitor/core``, ``monitor/store``): errors, settings, dates, files, secrets, image sources,
  statistics, the verdict type; the store protocol and its engines: what every part of the service stands on;
- **domain** (``monitor/domain``, ``evaluation``, ``dashboards``): what the service does: indexing, sampling, health,
  alerts, candidate comparison, evaluation (model, images, prediction, metrics), the dashboard;
- **orchestration** (``monitor/orchestration``, ``dags``): what runs it: the run context, the pipeline of stages, the CLI,
  the demo, the Airflow DAGs.

    .venv/bin/python scripts/import_graph.py            # print the Mermaid diagram
    .venv/bin/python scripts/import_graph.py --write    # refresh it in docs/ARCHITECTURE.md
    .venv/bin/python scripts/import_graph.py --check    # exit 1 on an arrow that runs back up, or a folder cycle (tests/project/test_layers.py)
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("monitor", "evaluation", "dashboards", "dags")
FLOORS = ("foundation", "domain", "orchestration")
#: The folders of each floor; a module belongs to the floor of the deepest folder listed that holds it.
FOLDERS = {
    "monitor.core": "foundation",
    "monitor.store": "foundation",
    "monitor.domain": "domain",
    "evaluation": "domain",
    "dashboards": "domain",
    "monitor.orchestration": "orchestration",
    "dags": "orchestration",
}
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


def folder(module: str) -> str:
    """The deepest listed folder that holds a module (a package's ``__init__`` belongs to its own folder)."""
    parts = module.split(".")
    for size in range(len(parts), 0, -1):
        if ".".join(parts[:size]) in FOLDERS:
            return ".".join(parts[:size])
    return module


def floor(module: str) -> str:
    """The floor of a module: its folder's. A module in no listed folder (e.g. the root ``monitor`` package) is foundation."""
    return FOLDERS.get(folder(module), "foundation")


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


def folder_cycles(edges: dict[str, set[str]]) -> list[str]:
    """Pairs of folders that import each other (either way through any of their modules)."""
    arrows = {(folder(s), folder(t)) for s, targets in edges.items() for t in targets if folder(s) != folder(t)}
    return sorted(f"{a} <-> {b}" for a, b in arrows if (b, a) in arrows and a < b)


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
        wrong = upward(edges) + folder_cycles(edges)
        for arrow in wrong:
            print(f"upward import or folder cycle: {arrow}", file=sys.stderr)
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
