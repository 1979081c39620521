"""MONITOR_LABEL_MAP: a bucket whose folders are not named as the model's labels is evaluated through a map, and a
folder the model does not know is named with the nearest labels and how to map it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from monitor.core.errors import ConfigError
from monitor.core.labels import load_label_map, unmapped_hint
from monitor.core.settings import Settings
from monitor.orchestration.cli import app
from tests.fixtures.sources import build_one_broken_class

DATE = "2026-11-20"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("folder,label\n0,zero\nn01,one\n", {"0": "zero", "n01": "one"}),
        ("0,zero\r\n\r\nn01 , one\r\n", {"0": "zero", "n01": "one"}),
        ('{"0": "zero", "n01": "one"}', {"0": "zero", "n01": "one"}),
        ("\ufeff0,zero\n", {"0": "zero"}),
    ],
)
def test_a_map_reads_as_csv_or_json(tmp_path: Path, text: str, expected: dict[str, str]) -> None:
    path = tmp_path / "map.txt"
    path.write_text(text, encoding="utf-8")
    assert load_label_map(path) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("0,zero,extra\n", "line 1: 3 fields, expected 2"),
        ("0,zero\n0,one\n", "line 2: folder '0' is mapped twice ('zero' and 'one')"),
        ("a/b,zero\n", "line 1: a folder name (no '/')"),
        ("folder,label\n", "maps no folder"),
        ('["0", "zero"]', "not a JSON object of folder -> label"),
        ('{"0": 1}', "not a JSON object of folder -> label"),
        ('{"0": ' * 50 + "1" + "}" * 50, "nests deeper"),
    ],
)
def test_a_bad_map_is_one_line_naming_the_file_and_the_row(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "map.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_label_map(path)
    assert words in str(caught.value) and str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_map_stops_the_settings_at_load(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="label map .* does not exist"):
        Settings(data_dir=tmp_path, label_map=tmp_path / "missing.csv")


def test_the_hint_names_the_nearest_labels_and_how_to_map() -> None:
    hint = unmapped_hint(["fuor", "n01440764"], ["zero", "one", "four", "five"], None)
    assert "'fuor' (nearest: four)" in hint and "'n01440764'" in hint and "MONITOR_LABEL_MAP=" in hint
    assert "add them to MONITOR_LABEL_MAP" in unmapped_hint(["x"], ["y"], {"a": "b"})


@pytest.fixture(scope="module")
def renamed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits with two folders named otherwise than the model's labels: 0/ holds zeros, n01/ holds ones."""
    root = build_one_broken_class(tmp_path_factory.mktemp("renamed") / "val", 8)
    shutil.move(root / "zero", root / "0")
    shutil.move(root / "one", root / "n01")
    return root


def _evaluate(env: dict[str, str | None], *more: str) -> Any:
    base: dict[str, str | None] = {
        "MONITOR_CONFIG": None,
        "MONITOR_SAMPLES_PER_CLASS": "8",
        "MONITOR_SPARK_MASTER": "local[2]",
    }
    return CliRunner(env=base | env).invoke(app, ["evaluate", "--date", DATE, "--json", *more])


def test_folders_named_otherwise_are_evaluated_through_the_map(renamed: Path, tmp_path: Path, spark: Any) -> None:
    env: dict[str, str | None] = {"MONITOR_DATA_DIR": str(tmp_path / "data"), "MONITOR_SOURCE_URI": str(renamed)}
    refused = _evaluate(env)
    assert refused.exit_code == 5
    message = json.loads(refused.stdout)["error"]["message"]
    assert "'0'" in message and "'n01'" in message and "MONITOR_LABEL_MAP=" in message
    assert f"monitor evaluate --date {DATE} --force" in message

    mapping = tmp_path / "map.csv"
    mapping.write_text("folder,label\n0,zero\nn01,one\n")
    done = _evaluate({**env, "MONITOR_LABEL_MAP": str(mapping)}, "--force")  # as the refusal said: re-index, redraw
    assert done.exit_code == 0, done.stderr
    result = json.loads(done.stdout)
    assert sorted(row["label"] for row in result["classes"]) == ["one", "three", "zero"]
    counts = {row["label"]: (row["n"], row["correct"]) for row in result["classes"]}
    assert counts["zero"] == (8, 8) and counts["one"][0] == 8 and result["flagged"] == ["three"]
    sample = (tmp_path / "data" / "samples" / f"{DATE}.csv").read_text()
    assert "0/" in sample and ",zero," in sample and "n01/" in sample  # paths keep the folder, rows the label

    shown = CliRunner(env={"MONITOR_CONFIG": None, "MONITOR_LABEL_MAP": str(mapping)}).invoke(
        app, ["settings", "--json"]
    )
    assert json.loads(shown.stdout)["label_map"] == str(mapping)


def test_a_map_to_a_label_the_model_lacks_stops_the_command_before_anything_runs(renamed: Path, tmp_path: Path) -> None:
    mapping = tmp_path / "map.csv"
    mapping.write_text("0,zer0\nn01,one\n")
    env: dict[str, str | None] = {
        "MONITOR_DATA_DIR": str(tmp_path / "data"),
        "MONITOR_SOURCE_URI": str(renamed),
        "MONITOR_LABEL_MAP": str(mapping),
    }
    refused = _evaluate(env)
    assert refused.exit_code == 2
    message = json.loads(refused.stdout)["error"]["message"]
    assert "maps folders to labels the model in" in message and "'zer0' (nearest: zero)" in message
    assert not (tmp_path / "data").exists()  # refused at load: nothing written


def test_a_changed_map_relabels_the_index_once_and_a_stable_one_changes_nothing(tmp_path: Path) -> None:
    from monitor.core.sources import LocalSource
    from monitor.domain.indexing import REASON_RELABELLED, index_source
    from monitor.store import open_store
    from tests.fixtures.store import find

    root = tmp_path / "val"
    for folder in ("0", "n01"):
        (root / folder).mkdir(parents=True)
        (root / folder / "a.png").write_bytes(b"not empty")
    (root / "0" / "README.txt").write_text("an unusable file in a mapped folder")
    source = LocalSource(root)
    mapping = {"0": "zero", "n01": "one"}
    with open_store(Settings(data_dir=tmp_path / "data")) as store:
        first = index_source(source, store, label_map=mapping)
        assert first.new == 3 and first.labels == {"one": 1, "zero": 1}
        again = index_source(source, store, label_map=mapping)
        assert (again.new, again.updated, again.missing, again.unchanged) == (0, 0, 0, 3)  # no churn
        assert sorted(store.usable_labels(source.uri)) == ["one", "zero"]

        unmapped = index_source(source, store)  # the map dropped: the folders are the labels again
        assert unmapped.new == 3 and unmapped.labels == {"0": 1, "n01": 1}
        assert sorted(store.usable_labels(source.uri)) == ["0", "n01"]
        stale = [d for d in find(store, "images") if d.get("reason") == REASON_RELABELLED]
        assert sorted(d["label"] for d in stale) == ["one", "zero", "zero"]
        settled = index_source(source, store)
        assert (settled.new, settled.updated, settled.missing) == (0, 0, 0)


def test_a_map_to_labels_the_model_lacks_is_refused_at_load_with_the_nearest(tmp_path: Path) -> None:
    mapping = tmp_path / "map.csv"
    mapping.write_text("0,zer0\nn01,one\n")
    with pytest.raises(ValidationError, match=r"does not have: 'zer0' \(nearest: zero\)"):
        Settings(data_dir=tmp_path, label_map=mapping)
    mapping.write_text("0,zero\nn01,one\n")
    assert Settings(data_dir=tmp_path, label_map=mapping).label_map == mapping
