"""The JSON Schemas of what the service prints and serves: every ``--json`` output and every API response.

Each output is one JSON object with ``schema_version`` (:data:`monitor.core.outputs.SCHEMA_VERSION`) and the fields of its typed
definition (:mod:`monitor.orchestration.results`, :class:`monitor.domain.compare.ComparisonRecord`, the
settings model). The schemas are generated from those types with pydantic and kept in the repository under
``schemas/<name>.v<version>.json`` (``scripts/schemas.py --write``), so that a change of a type that would
change a schema shows in review, and a test fails until the files are written again. Within one version a field
may be added; removing, renaming or retyping one raises :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monitor.core.outputs import SCHEMA_VERSION, versioned
from monitor.core.settings import PROJECT_ROOT

__all__ = ["SCHEMA_DIR", "SCHEMA_VERSION", "generate", "names", "schema_path", "versioned"]
SCHEMA_DIR = PROJECT_ROOT / "schemas"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _types() -> dict[str, Any]:
    from monitor.core.settings import Settings
    from monitor.domain.compare import ComparisonRecord
    from monitor.orchestration import results as r
    from monitor.orchestration.compare_stage import CompareRun

    return {
        "index": r.IndexResult,
        "sample": r.SampleResult,
        "evaluate": r.EvaluateResult,
        "evaluate-range": r.RangeResult,
        "predictions-import": r.ImportResult,
        "health": r.HealthOutput,
        "alerts": r.AlertsOutput,
        "compare": ComparisonRecord,
        "compare-run": CompareRun,
        "candidate-add": r.CandidateAdded,
        "candidate-remove": r.CandidateRemoved,
        "candidate-list": r.CandidateList,
        "settings": Settings,
        "store-info": r.StoreInfo,
        "store-restore": r.StoreRestored,
        "demo": r.DemoResult,
        "demo-source": r.SourceBuilt,
        "error": r.ErrorOutput,
        "api-models": r.ApiModels,
        "api-health": r.ApiHealth,
        "api-history": r.ApiHistory,
        "api-alerts": r.ApiAlerts,
        "api-comparison": ComparisonRecord,
        "api-runs": r.ApiRuns,
        "api-error": r.ApiError,
    }


def names() -> list[str]:
    """Every output that has a schema: the ``--json`` of each command, the error object, the API's responses."""
    return list(_types())


def generate(name: str) -> dict[str, Any]:
    """The JSON Schema of output ``name`` as generated from its type now."""
    from pydantic import BaseModel, TypeAdapter

    kind = _types()[name]
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        body = kind.model_json_schema(mode="serialization")
        body["required"] = sorted(body.get("properties", {}))  # every setting is shown
        # A default is a value, not the shape (and some depend on where the project lies, e.g. the shipped model).
        for field in body.get("properties", {}).values():
            field.pop("default", None)
    else:
        body = TypeAdapter(kind).json_schema(mode="serialization")
    body.setdefault("properties", {})["schema_version"] = {"const": SCHEMA_VERSION, "title": "Schema Version"}
    body["required"] = sorted({*body.get("required", []), "schema_version"})
    return {
        "$schema": _DIALECT,
        "$id": f"https://class-health.invalid/schemas/{name}.v{SCHEMA_VERSION}.json",
        **body,
        "title": f"{name} (schema v{SCHEMA_VERSION})",
    }


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.v{SCHEMA_VERSION}.json"
