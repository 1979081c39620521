"""The walls of the architecture: no import runs back up a floor, and the diagram in docs/ARCHITECTURE.md is the real one."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _graph() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    return module


graph = _graph()


def test_no_import_runs_back_up_a_floor() -> None:
    edges = graph.imports(graph.modules())
    assert graph.upward(edges) == []
    # The graph is real: the orchestration reaches every domain area, the domain stands on the foundation.
    assert {"monitor.domain.health.judge", "monitor.domain.sampling", "evaluation.metrics"} <= edges[
        "monitor.orchestration.pipeline"
    ] | {t for s in edges["monitor.orchestration.pipeline"] for t in edges.get(s, ())}
    assert "monitor.store" in edges["monitor.domain.sampling"] and graph.floor("monitor.store") == "foundation"
    # The health calculators are pure: the store, the settings and the files are their stage's (NannyML's runner).
    health = set().union(*(targets for name, targets in edges.items() if name.startswith("monitor.domain.health")))
    assert "monitor.domain.health.detector" in health and not health & {
        "monitor.store",
        "monitor.core.settings",
        "monitor.core.files",
    }
    assert "monitor.store" in edges["monitor.orchestration.health_stage"]


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_an_upward_import_is_found_wherever_it_hides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(
        tmp_path,
        {
            "monitor/__init__.py": "",
            "monitor/core/__init__.py": "",
            "monitor/core/settings.py": "def f():\n    from monitor.orchestration.pipeline import run_index\n    return run_index\n",
            "monitor/domain/__init__.py": "",
            "monitor/domain/health.py": "from monitor.orchestration import cli\n",
            "monitor/orchestration/__init__.py": "",
            "monitor/orchestration/pipeline.py": "import monitor.core.settings\n",
            "monitor/orchestration/cli.py": "",
        },
    )
    monkeypatch.setattr(graph, "ROOT", tmp_path)
    monkeypatch.setattr(graph, "PACKAGES", ("monitor",))
    edges = graph.imports(graph.modules())
    assert graph.upward(edges) == [
        "monitor.core.settings (foundation) -> monitor.orchestration.pipeline (orchestration)",
        "monitor.domain.health (domain) -> monitor.orchestration.cli (orchestration)",
    ]
    # The floor comes from the folder: a module moved up a floor is judged by its new folder.
    assert graph.floor("monitor.orchestration.cli") == "orchestration" and graph.floor("monitor.core") == "foundation"


def test_two_folders_of_one_floor_that_import_each_other_are_a_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(
        tmp_path,
        {
            "monitor/__init__.py": "",
            "monitor/core/__init__.py": "",
            "monitor/core/context.py": "from monitor.store import Store\n",
            "monitor/store/__init__.py": "from monitor.core.errors import StoreError\n",
            "monitor/core/errors.py": "",
        },
    )
    monkeypatch.setattr(graph, "ROOT", tmp_path)
    monkeypatch.setattr(graph, "PACKAGES", ("monitor",))
    edges = graph.imports(graph.modules())
    assert graph.upward(edges) == []
    assert graph.folder_cycles(edges) == ["monitor.core <-> monitor.store"]


def test_the_real_tree_has_no_folder_cycle() -> None:
    edges = graph.imports(graph.modules())
    assert graph.folder_cycles(edges) == []
    # Every module of the service sits in a floor folder: none is left at the top of monitor/.
    assert sorted(path.name for path in (ROOT / "monitor").glob("*.py")) == ["__init__.py"]
    assert {graph.folder(name) for name in edges if name.startswith("monitor.")} == {
        f for f in graph.FOLDERS if f.startswith("monitor.")
    }


def test_the_architecture_document_shows_the_graph_of_the_code() -> None:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert graph.section(graph.imports(graph.modules())) in text, (
        "run: .venv/bin/python scripts/import_graph.py --write"
    )
