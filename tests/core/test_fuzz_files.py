"""Property-based fuzzing of the files the service reads back: the store manifest, the calibration cache, sample CSVs
and predictions Parquet files.

Whatever a file holds, reading it
- succeeds (and what it returns keeps the file's contract), or raises a :class:`~monitor.core.errors.MonitorError`
  whose message is one line; never any other exception, never a hang;
- changes nothing on disk it did not mean to: a store reader changes nothing, a refused ``store restore``
  nothing either; the calibration cache may be rewritten (a damaged one is calibrated again), nothing else.

The budget is fixed and the search derandomized (the same examples on every run, no example database), so CI
is reproducible: ``FUZZ_EXAMPLES`` (default 40 per property) raises it, e.g.
``FUZZ_EXAMPLES=2000 pytest tests/core/test_fuzz_files.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from evaluation.predictions import (
    COLUMNS,
    PREDICTIONS_SCHEMA,
    STATUS_FAILED,
    STATUS_OK,
    read_predictions,
    write_predictions,
)
from monitor.core.artifacts import LocalArtifacts
from monitor.core.errors import MonitorError
from monitor.core.settings import Settings
from monitor.domain.sampling import CSV_COLUMNS, read_sample_csv
from monitor.orchestration import health_stage as health
from monitor.store import COLLECTIONS, open_store
from monitor.store.embedded import restore
from tests.fixtures.fuzz import fuzz_settings
from tests.fixtures.store import find

FUZZ = fuzz_settings(40, [HealthCheck.large_base_example])
DATE = "2026-11-20"


@contextmanager
def _sandbox() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="fuzz-files-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _tree(root: Path) -> dict[str, Any]:
    """Every path under ``root``: a folder, or a file's digest (what a read must leave as it found it)."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def _assert_refused_in_one_line(exc: BaseException) -> None:
    assert isinstance(exc, MonitorError), f"{type(exc).__name__}: {exc}"
    assert str(exc) and "\n" not in str(exc) and "\r" not in str(exc), repr(str(exc))


# --- JSON values of every kind ----------------------------------------------------------------------------

ODD_NUMBERS = [
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "-Infinity",
    str(2**63),
    str(-(2**63) - 1),
    "9" * 5000,
    "-0",
    "1.5",
    "0",
    "-1",
    "1e-400",
]
ODD_TEXTS = [
    "",
    "/dev/zero",
    "/etc/passwd",
    "..",
    "../x",
    "class_health/../../x.bson",
    "class_health/x.1.bson",
    "images/x.1.bson",
    "class_health/",
    "class_health/.x.bson",
    "class_health\\x.bson",
    "\x00",
    "caf\u00e9",
    "\ud800",
    "x" * 300,
    "[red]x",
]
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(ODD_TEXTS),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _inject(text: str, data: st.DataObject) -> str:
    """Replace one token of ``text`` (a number, a string, a bracket) by something odd: how hand edits go wrong."""
    choice = data.draw(st.sampled_from(["number", "text", "nest", "cut", "none"]))
    if choice == "number":
        import re

        spots = [m.span() for m in re.finditer(r"-?\d+(\.\d+)?", text)]
        if spots:
            start, end = data.draw(st.sampled_from(spots))
            return text[:start] + data.draw(st.sampled_from(ODD_NUMBERS)) + text[end:]
    if choice == "text":
        import re

        spots = [m.span() for m in re.finditer(r'"[^"\\]*"', text)]
        if spots:
            start, end = data.draw(st.sampled_from(spots))
            return text[:start] + json.dumps(data.draw(st.sampled_from(ODD_TEXTS))) + text[end:]
    if choice == "nest":
        depth = data.draw(st.sampled_from([5, 50, 900, 5000, 100_000]))
        return (
            text.replace("[", "[" * depth + "1" + "]" * (depth - 1) + ",", 1)
            if "[" in text
            else "[" * depth + "]" * depth
        )
    if choice == "cut":
        return text[: data.draw(st.integers(min_value=0, max_value=len(text)))]
    return text


# --- the store manifest -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose store has two commits of two kinds (images, class_health): fuzzed copies start from it."""
    data = tmp_path_factory.mktemp("fuzz_store") / "data"
    settings_ = Settings(data_dir=data)
    with open_store(settings_) as store:
        for version in (1, 2):
            store.replace_day("class_health", "m@1", DATE, [{"label": "a", "verdict": f"v{version}", "n": version}])
            store.write_images(
                "file:///src",
                [{"source": "file:///src", "path": f"cat/{version}.png", "label": "cat", "status": "ok"}],
                [],
            )
            store.commit()
    return data


def _read_everything(data: Path) -> None:
    with open_store(Settings(data_dir=data), read_only=True) as store:
        for kind in COLLECTIONS:
            find(store, kind)


def _manifest_text(template: Path, data: st.DataObject) -> str | bytes:
    root = template / "store" / "class_health"
    valid = json.loads((root / "manifest.json").read_text())
    shape = data.draw(st.sampled_from(["edited", "entry", "any json", "bytes"]))
    if shape == "edited":
        return _inject(json.dumps(valid, indent=1), data)
    if shape == "entry":
        entry = data.draw(st.sampled_from(valid["parts"]))
        changed = dict(entry) | data.draw(
            st.dictionaries(st.sampled_from(["kind", "key", "file", "docs", "bytes", "extra"]), json_values, max_size=3)
        )
        return _dumps(valid | {"parts": [changed if p is entry else p for p in valid["parts"]]})
    if shape == "any json":
        return _dumps(data.draw(json_values | st.fixed_dictionaries({"format": st.just(1), "parts": json_values})))
    return data.draw(st.binary(max_size=200))


@FUZZ
@given(data=st.data())
def test_fuzz_a_store_reader_and_restore_over_any_manifest(template_store: Path, data: st.DataObject) -> None:
    with _sandbox() as sandbox:
        copy = sandbox / "data"
        shutil.copytree(template_store, copy)
        manifest = copy / "store" / "class_health" / "manifest.json"
        text = _manifest_text(template_store, data)
        manifest.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        before = _tree(copy)
        try:
            _read_everything(copy)
        except Exception as exc:  # noqa: BLE001 (the property: which exceptions may come out)
            _assert_refused_in_one_line(exc)
        assert _tree(copy) == before  # a reader writes nothing, not even a lock file
        try:
            done = restore(copy / "store" / "class_health")
        except Exception as exc:  # noqa: BLE001
            _assert_refused_in_one_line(exc)
            assert _tree(copy) == before  # a refused restore changes nothing
            return
        assert done["restored_from"] in ("manifest.json", "manifest.json.1", "manifest.json.2", "manifest.json.3")
        _read_everything(copy)  # what a restore leaves, reads


# --- the calibration cache --------------------------------------------------------------------------------

ARGS = (0.9, 0.1, 10, 0, 5475.0, 36.5)
CALIBRATED = health.Design(
    **{f.name: 40 if f.type in ("int", int) else 0.25 for f in dataclasses.fields(health.Design)}  # type: ignore[arg-type]
    | dict(zip(("target", "drop", "n", "followup", "arl", "recovery_arl"), ARGS))
)


def _cache_text(data: st.DataObject) -> str | bytes:
    key = json.dumps([health._code_version(), *ARGS])
    valid = {key: dataclasses.asdict(CALIBRATED), json.dumps(["old", *ARGS]): {"h": 1}}
    shape = data.draw(st.sampled_from(["edited", "entry", "any json", "bytes"]))
    if shape == "edited":
        return _inject(json.dumps(valid, indent=1), data)
    if shape == "entry":
        fields = st.sampled_from([f.name for f in dataclasses.fields(health.Design)] + ["extra"])
        return _dumps(
            {key: dataclasses.asdict(CALIBRATED) | data.draw(st.dictionaries(fields, json_values, max_size=3))}
        )
    if shape == "any json":
        return _dumps(data.draw(json_values))
    return data.draw(st.binary(max_size=200))


@FUZZ
@given(data=st.data())
def test_fuzz_the_calibration_cache_is_used_when_sound_and_calibrated_again_otherwise(data: st.DataObject) -> None:
    text = _cache_text(data)
    with _sandbox() as sandbox:
        file = sandbox / "cache" / "health-designs.json"
        file.parent.mkdir()
        (sandbox / "beside.txt").write_text("not the cache's")
        file.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        calls: list[tuple[Any, ...]] = []
        saved = health._KNOWN, health.design
        health._KNOWN, health.design = {}, lambda *args: calls.append(args) or CALIBRATED  # type: ignore[assignment]
        try:
            result = health._cached_design(
                LocalArtifacts(file.parent), file.name, ARGS
            )  # the property: no exception at all
        finally:
            health._KNOWN, health.design = saved  # type: ignore[assignment]
        assert isinstance(result, health.Design) and len(calls) <= 1
        values = dataclasses.asdict(result)
        assert all(math.isfinite(v) and v >= 0 for v in values.values()) and (result == CALIBRATED or not calls)
        assert tuple(values[name] for name in ("target", "drop", "n", "followup", "arl", "recovery_arl")) == ARGS
        assert (sandbox / "beside.txt").read_text() == "not the cache's" and sorted(
            p.name for p in sandbox.rglob("*")
        ) == ["beside.txt", "cache", "health-designs.json"]
        if calls:  # calibrated again: kept, and read back by the next process without calibrating
            assert json.loads(file.read_text())[json.dumps([health._code_version(), *ARGS])] == dataclasses.asdict(
                CALIBRATED
            )


# --- sample CSVs ------------------------------------------------------------------------------------------

CSV_FIELDS = [
    DATE,
    "2026-13-01",
    "",
    " ",
    "file:///src",
    "gs://b/p",
    "cat/a.png",
    "../x",
    "/etc/passwd",
    "cat",
    "dog",
    "base",
    "followup",
    "other",
    "0.5",
    "0",
    "1",
    "-0",
    "0.9999999999999999",
    "1e999",
    "nan",
    "inf",
    "-1e-400",
    "2026-11-01T00:00:00+00:00",
    "2026-11-01",
    "0001-01-01T00:00:00-23:59",
    "9999-12-31T23:59:59+23:59",
    "2026-11-01T25:00:00",
    "x" * 300,
    "caf\u00e9",
    '"',
    "a,b",
    "a\nb",
    "\r",
    "[red]x",
    "\x00",
]
csv_fields = st.one_of(st.sampled_from(CSV_FIELDS), st.text(max_size=10))


def _good_row(i: int) -> list[str]:
    return [DATE, "file:///src", f"cat/{i}.png", "cat", f"0.{i + 1}", "2026-11-01T00:00:00+00:00", "base", f"sha:{i}"]


def _csv_text(data: st.DataObject) -> str:
    import csv
    import io

    header = data.draw(
        st.sampled_from([list(CSV_COLUMNS), list(CSV_COLUMNS[:-1]), list(CSV_COLUMNS[:-2]), ["date", "path"], []])
    )
    rows = [_good_row(i)[: len(header) or 8] for i in range(data.draw(st.integers(min_value=0, max_value=4)))]
    for _ in range(data.draw(st.integers(min_value=0, max_value=4))):
        filled = [row for row in rows if row]
        if filled and data.draw(st.booleans()):
            row = data.draw(st.sampled_from(filled))
            row[data.draw(st.integers(min_value=0, max_value=len(row) - 1))] = data.draw(csv_fields)
        else:
            rows.append(data.draw(st.lists(csv_fields, max_size=9)))
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    text = out.getvalue()
    return _inject_raw(text, data)


def _inject_raw(text: str, data: st.DataObject) -> str:
    if data.draw(st.integers(min_value=0, max_value=4)) == 0:  # now and then a cut or a stray byte
        at = data.draw(st.integers(min_value=0, max_value=len(text)))
        return text[:at] + data.draw(st.sampled_from(["", "\x00", '"', "\ufeff", "\udcff"]))
    return text


@FUZZ
@given(data=st.data())
def test_fuzz_a_sample_csv_reads_as_a_sample_or_is_one_data_error(data: st.DataObject) -> None:
    text = _csv_text(data)
    named = data.draw(st.booleans())
    with _sandbox() as sandbox:
        path = sandbox / f"{DATE}.csv"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        before = _tree(sandbox)
        try:
            sample = read_sample_csv(
                path, date=dt.date(2026, 11, 20) if named else None, source="file:///src" if named else None
            )
        except Exception as exc:  # noqa: BLE001 (the property: which exceptions may come out)
            _assert_refused_in_one_line(exc)
        else:
            for item in sample.items:
                assert (
                    item.image_path and item.label and 0.0 <= item.sample_key < 1.0 and item.created.tzinfo is not None
                )
        assert _tree(sandbox) == before


# --- predictions files --------------------------------------------------------------------------------------

_TYPES = {
    "string": (
        pa.string(),
        st.one_of(
            st.none(), st.sampled_from([DATE, "ok", "failed", "cat", "", "base", "followup"]), st.text(max_size=6)
        ),
    ),
    "int": (pa.int64(), st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1))),
    "float": (pa.float64(), st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))),
    "bool": (pa.bool_(), st.one_of(st.none(), st.booleans())),
    "strings": (pa.list_(pa.string()), st.one_of(st.none(), st.lists(st.text(max_size=4), max_size=3))),
    "floats": (pa.list_(pa.float64()), st.one_of(st.none(), st.lists(st.floats(), max_size=3))),
}


def _valid_frame() -> pd.DataFrame:
    rows = [
        [DATE, "cat/a.png", "cat", "cat", 0.9, ["cat", "dog"], [0.9, 0.1], "m@1", STATUS_OK, None, "base"],
        [DATE, "dog/b.png", "dog", None, None, [], [], "m@1", STATUS_FAILED, "truncated", "followup"],
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _predictions_file(path: Path, data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from(["columns", "bytes of a valid file", "any bytes"]))
    if shape == "any bytes":
        path.write_bytes(data.draw(st.binary(max_size=300)))
        return
    if shape == "bytes of a valid file":
        write_predictions(_valid_frame(), path)
        raw = bytearray(path.read_bytes())
        for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
            at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
            raw[at] = data.draw(st.integers(min_value=0, max_value=255))
        path.write_bytes(
            bytes(raw[: data.draw(st.integers(min_value=0, max_value=len(raw)))] if data.draw(st.booleans()) else raw)
        )
        return
    table = pa.Table.from_pandas(_valid_frame(), schema=PREDICTIONS_SCHEMA, preserve_index=False)
    for name in data.draw(st.lists(st.sampled_from(list(COLUMNS)), max_size=3, unique=True)):
        at = table.schema.get_field_index(name)
        if data.draw(st.integers(min_value=0, max_value=5)) == 0:
            table = table.remove_column(at)
            continue
        kind, values = _TYPES[data.draw(st.sampled_from(sorted(_TYPES)))]
        column = pa.array([data.draw(values) for _ in range(table.num_rows)], type=kind, from_pandas=False)
        table = table.set_column(at, name, column)
    pq.write_table(table, path)


@FUZZ
@given(data=st.data())
def test_fuzz_a_predictions_file_reads_as_the_schema_or_is_one_data_error(data: st.DataObject) -> None:
    with _sandbox() as sandbox:
        path = sandbox / "predictions" / f"{DATE}.parquet"
        path.parent.mkdir()
        _predictions_file(path, data)
        before = _tree(sandbox)
        try:
            frame = read_predictions(path)
        except Exception as exc:  # noqa: BLE001 (the property: which exceptions may come out)
            _assert_refused_in_one_line(exc)
            assert f"monitor evaluate --date {DATE} --force" in str(
                exc
            )  # every refusal says how to predict the date again
        else:
            assert list(frame.columns) == list(COLUMNS)
            assert frame["status"].isin([STATUS_OK, STATUS_FAILED]).all() and (frame["date"] == DATE).all()
            ok = frame[frame["status"] == STATUS_OK]
            assert ok["pred"].notna().all() and ok["confidence"].between(0.0, 1.0).all()
            assert all(isinstance(v, list) for v in frame["topk_labels"]) and all(
                isinstance(v, list) for v in frame["topk_scores"]
            )
        assert _tree(sandbox) == before
