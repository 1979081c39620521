"""The walls of the architecture: no import runs back up a floor, and the diagram in docs/ARCHITECTURE.md is the real one."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    assert {"monitor.health", "monitor.sampling", "evaluation.metrics"} <= edges["monitor.pipeline"] | {
        t for s in edges["monitor.pipeline"] for t in edges.get(s, ())
    }
    assert "monitor.storage" in edges["monitor.health"] and graph.floor("monitor.storage") == "foundation"


def test_an_upward_import_is_found_wherever_it_hides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "monitor").mkdir()
    (tmp_path / "monitor" / "__init__.py").write_text("")
    (tmp_path / "monitor" / "settings.py").write_text("def f():\n    from monitor.pipeline import run_index\n    return run_index\n")
    (tmp_path / "monitor" / "pipeline.py").write_text("import monitor.settings\n")
    (tmp_path / "monitor" / "health.py").write_text("from monitor import cli\n")
    (tmp_path / "monitor" / "cli.py").write_text("")
    monkeypatch.setattr(graph, "ROOT", tmp_path)
    monkeypatch.setattr(graph, "PACKAGES", ("monitor",))
    assert graph.upward(graph.imports(graph.modules())) == [
        "monitor.health (domain) -> monitor.cli (orchestration)",
        "monitor.settings (foundation) -> monitor.pipeline (orchestration)",
    ]


def test_the_architecture_document_shows_the_graph_of_the_code() -> None:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert graph.section(graph.imports(graph.modules())) in text, "run: .venv/bin/python scripts/import_graph.py --write"
