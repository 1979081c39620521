"""Every ``--json`` output is one object with ``schema_version`` that validates against its schema in schemas/, and the
schemas there are the ones the types generate now (a changed type fails here until the files are written again)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from monitor.core.settings import SHIPPED_MODEL_DIR
from monitor.orchestration.cli import app
from monitor.orchestration.schemas import SCHEMA_VERSION, generate, names, schema_path
from tests.fixtures.sources import build_one_broken_class

DATE = "2026-11-20"


def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_path(name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _valid(name: str, document: Any) -> Any:
    errors = sorted(_validator(name).iter_errors(document), key=lambda e: list(e.path))
    assert not errors, f"{name}: " + "; ".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:5])
    assert document["schema_version"] == SCHEMA_VERSION
    return document


def test_the_committed_schemas_are_the_ones_the_types_generate() -> None:
    for name in names():
        assert json.loads(schema_path(name).read_text()) == generate(name), f"run scripts/schemas.py --write ({name})"
    assert sorted(p.name for p in schema_path("x").parent.glob("*.json")) == sorted(
        schema_path(n).name for n in names()
    )  # no schema left behind for an output that is gone


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> Iterator[dict[str, str]]:
    """A data dir with one evaluated day, a candidate predicted beside production, and the env the CLI runs with."""
    from monitor.orchestration.demo import build_candidate_model

    root = tmp_path_factory.mktemp("schemas")
    source = build_one_broken_class(root / "val", 8)
    candidate = build_candidate_model(SHIPPED_MODEL_DIR, root / "candidate", {"three": 1.5})
    env = {
        "MONITOR_CONFIG": None,
        "MONITOR_DATA_DIR": str(root / "data"),
        "MONITOR_SOURCE_URI": str(source),
        "MONITOR_SAMPLES_PER_CLASS": "8",
        "MONITOR_SPARK_MASTER": "local[2]",
        "MONITOR_CANDIDATE_MODEL_DIRS": json.dumps([str(candidate)]),
    }
    world = {**env, "candidate": str(candidate)}
    _json(world, "evaluate", "--date", DATE)  # type: ignore[arg-type]
    yield world  # type: ignore[misc]


def _json(world: dict[str, str], *args: str, code: int = 0) -> Any:
    env = {"MONITOR_CONFIG": None} | {k: v for k, v in world.items() if k.startswith("MONITOR_")}
    result = CliRunner(env=env).invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.stderr
    return json.loads(result.stdout)


def test_every_command_prints_an_object_its_schema_accepts(world: dict[str, str]) -> None:
    seen = {
        "index": _json(world, "index"),
        "sample": _json(world, "sample", "--date", DATE),
        "evaluate": _json(world, "evaluate", "--date", DATE),
        "health": _json(world, "health"),
        "alerts": _json(world, "alerts"),
        "settings": _json(world, "settings"),
        "store-info": _json(world, "store", "info"),
        "candidate-list": _json(world, "candidate", "list"),
        "candidate-add": _json(world, "candidate", "add", world["candidate"]),
        "candidate-remove": _json(world, "candidate", "remove", world["candidate"]),
        "store-restore": _json(world, "store", "restore"),
        "error": _json(world, "health", "--date", "2026-01-01", code=6),
        "demo-source": _json(
            {"MONITOR_DATA_DIR": world["MONITOR_DATA_DIR"] + "-demo", "MONITOR_SOURCE_URI": None},
            "demo",
            "--source-only",
        ),
    }
    model = seen["evaluate"]["model"]
    candidate_id = seen["candidate-add"]["model_id"]
    assert seen["candidate-list"]["candidates"]  # the configured candidate, listed
    seen["compare"] = _json(world, "compare", "--candidate", candidate_id, "--until", DATE)
    for name, document in seen.items():
        _valid(name, document)
    assert seen["health"]["classes"] and seen["alerts"]["alerts"]  # rows, not empty lists, were checked
    assert seen["evaluate"]["flagged"] == ["three"] and model
    assert seen["compare"]["candidate"] == candidate_id and seen["compare"]["classes"]

    from monitor.core.settings import load_settings
    from monitor.orchestration.compare_stage import run_compare

    env = {k.removeprefix("MONITOR_").lower(): v for k, v in world.items() if k.startswith("MONITOR_") and v}
    env["candidate_model_dirs"] = json.loads(env["candidate_model_dirs"])
    _valid(
        "compare-run", {"schema_version": SCHEMA_VERSION, **run_compare(load_settings(**env), DATE, engine="pandas")}
    )
    # Validated elsewhere: demo (tests/orchestration/test_demo.py), api-* (tests/dashboards/test_api.py),
    # evaluate-range (test_backfill.py), predictions-import (test_predictions_import.py).
    elsewhere = {"compare-run", "demo", "evaluate-range", "predictions-import"}
    assert set(seen) | elsewhere == {n for n in names() if not n.startswith("api-")}


def test_a_schema_refuses_what_its_output_could_not_be(world: dict[str, str]) -> None:
    health = _valid("health", _json(world, "health"))
    broken = json.loads(json.dumps(health))
    broken["classes"][0]["pooled_n"] = "many"
    assert list(_validator("health").iter_errors(broken))
    del broken["classes"][0]["pooled_n"]
    assert list(_validator("health").iter_errors(broken))
    assert list(_validator("health").iter_errors({k: v for k, v in health.items() if k != "schema_version"}))
    error = {"schema_version": SCHEMA_VERSION, "error": {"exit_code": 6, "type": "DataError", "message": "m"}}
    assert not list(_validator("error").iter_errors(error))
    assert list(_validator("error").iter_errors({**error, "error": {**error["error"], "exit_code": "6"}}))
    assert list(_validator("error").iter_errors({**error, "schema_version": SCHEMA_VERSION + 1}))


def test_the_readmes_python_block_runs_and_returns_what_the_cli_prints(
    world: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's "From Python" block, run as written (its candidate name swapped for this world's), in this world."""
    import re

    from monitor.core.errors import DataError
    from monitor.orchestration import api

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = [
        b for b in re.findall(r"^```python\n(.*?)^```", readme, flags=re.S | re.M) if "orchestration import api" in b
    ]
    for key, value in world.items():
        if key.startswith("MONITOR_"):
            monkeypatch.delenv(key, raising=False) if value is None else monkeypatch.setenv(key, value)
    candidate = _json(world, "candidate", "add", world["candidate"])["model_id"]
    scope: dict[str, Any] = {}
    exec(compile(block.replace('"digits-candidate"', repr(candidate)), "README.md", "exec"), scope)  # noqa: S102

    cli_health = _json(world, "health")
    assert scope["report"].date == cli_health["date"] == DATE
    assert json.loads(json.dumps(scope["report"].classes, default=str)) == cli_health["classes"]
    assert scope["flagged"] == ["three"] and list(scope["table"]["label"]) == ["one", "three", "zero"]
    assert scope["trend"]["verdict"].tolist() == ["needs_retraining"] and scope["trend"]["n"].tolist() == [8]
    assert scope["day"]["flagged"] == ["three"]
    assert json.loads(json.dumps(scope["pending"], default=str)) == _json(world, "alerts", "--pending")["alerts"]
    assert scope["verdict"] == _json(world, "compare", "--candidate", candidate, "--until", DATE)["verdict"]
    with pytest.raises(
        DataError, match="has no verdicts on 2026-11-19; judged dates run from 2026-11-20 to 2026-11-20"
    ):
        api.health("2026-11-19")
