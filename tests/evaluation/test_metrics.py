"""Per-class metrics: Spark SQL against the pandas/scikit-learn reference, Wilson intervals, storing rows."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from evaluation.metrics import METRIC_KEYS, class_metrics_pandas, class_metrics_spark
from evaluation.spark import get_spark
from monitor.core.errors import ConfigError, DataError
from monitor.core.stats import wilson_interval, wilson_intervals
from tests.fixtures.predictions import random_predictions
from tests.fixtures.store import find

FLOAT_KEYS = ("accuracy", "ci_low", "ci_high", "precision", "recall", "f1")


def assert_same_rows(actual: list[dict], expected: list[dict]) -> None:
    assert [(r.get("model_id"), r.get("date"), r["label"]) for r in actual] == [
        (r.get("model_id"), r.get("date"), r["label"]) for r in expected
    ]
    for got, want in zip(actual, expected):
        assert got.keys() == want.keys()
        for key in got:
            if key in FLOAT_KEYS and want[key] is not None:
                assert got[key] == pytest.approx(want[key], rel=1e-12), (got["label"], key)
            else:
                assert got[key] == want[key], (got["label"], key)


@pytest.mark.spark
@pytest.mark.parametrize("seed, runs", [(0, 1), (1, 1), (2, 2)])
def test_spark_sql_metrics_equal_the_sklearn_reference_on_random_predictions(spark, seed: int, runs: int) -> None:
    frame, labels = random_predictions(seed, runs=runs)
    # The data must hold the cases this test is about, or it proves nothing.
    assert set(labels) - set(frame["label"]) and set(frame["pred"].dropna()) - set(labels)
    assert (frame["status"] == "failed").any()

    expected = class_metrics_pandas(frame, labels=labels)
    actual = class_metrics_spark(spark, frame, labels=labels)

    assert_same_rows(actual, expected)
    assert len(actual) == runs * len(labels)
    by_label = {(r["date"], r["label"]): r for r in actual}
    assert by_label[("2024-03-01", "empty_a")]["n"] == 0
    assert by_label[("2024-03-01", "empty_a")]["accuracy"] is None
    assert by_label[("2024-03-01", "class_00")]["n"] == 0 and by_label[("2024-03-01", "class_00")]["failed"] > 0


@pytest.mark.spark
def test_counts_add_up_to_the_input_rows(spark) -> None:
    frame, labels = random_predictions(3)
    rows = class_metrics_spark(spark, frame, labels=labels)

    ok = frame[frame["status"] == "ok"]
    assert sum(r["n"] for r in rows) == len(ok)
    assert sum(r["failed"] for r in rows) == int((frame["status"] == "failed").sum())
    assert sum(r["correct"] for r in rows) == int((ok["label"] == ok["pred"]).sum())
    for row in rows:
        assert row["tp"] + row["fn"] == row["n"]
        assert sum(c["count"] for c in row["confusions"]) == row["fn"]
        counts = [(-c["count"], c["pred"]) for c in row["confusions"]]
        assert counts == sorted(counts)
    # Every wrong prediction is some class's false positive, except those of labels that are never true.
    ghost_wrong = int(ok["pred"].str.startswith("ghost_").sum())
    assert sum(r["fp"] for r in rows) + ghost_wrong == sum(r["fn"] for r in rows)


@pytest.mark.spark
@pytest.mark.parametrize("engine", ["spark", "pandas"])
def test_small_hand_computed_example(spark, engine: str) -> None:
    frame = pd.DataFrame(
        {
            "label": ["cat", "cat", "cat", "cat", "dog", "dog", "dog", "cat"],
            "pred": ["cat", "cat", "dog", "fox", "dog", "cat", "cat", None],
            "status": ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "failed"],
        }
    )
    run = (lambda f, **kw: class_metrics_spark(spark, f, **kw)) if engine == "spark" else class_metrics_pandas
    rows = {r["label"]: r for r in run(frame, labels=["cat", "dog", "eel"])}

    cat, dog, eel = rows["cat"], rows["dog"], rows["eel"]
    assert set(rows) == {"cat", "dog", "eel"} and "model_id" not in cat and "date" not in cat
    assert (cat["n"], cat["correct"], cat["failed"], cat["tp"], cat["fp"], cat["fn"]) == (4, 2, 1, 2, 2, 2)
    assert cat["accuracy"] == 0.5 and cat["precision"] == 0.5 and cat["recall"] == 0.5 and cat["f1"] == 0.5
    # Ties ordered by label: dog and fox were each predicted once for a cat.
    assert cat["confusions"] == [{"pred": "dog", "count": 1}, {"pred": "fox", "count": 1}]
    assert (dog["n"], dog["correct"], dog["fp"], dog["fn"]) == (3, 1, 1, 2)
    assert dog["precision"] == 0.5 and dog["recall"] == pytest.approx(1 / 3) and dog["f1"] == pytest.approx(0.4)
    assert dog["confusions"] == [{"pred": "cat", "count": 2}]
    assert (eel["n"], eel["fp"], eel["accuracy"], eel["precision"], eel["recall"], eel["f1"], eel["ci_low"]) == (
        0,
        0,
        None,
        None,
        None,
        None,
        None,
    )
    assert list(cat) == list(METRIC_KEYS)


@pytest.mark.spark
def test_parquet_path_gives_the_same_rows_as_the_frame(spark, tmp_path: Path) -> None:
    frame, labels = random_predictions(4, rows=500, classes=12)
    frame["topk_labels"] = [[label, "class_01"] for label in frame["label"]]
    frame["topk_scores"] = [[0.7, 0.2]] * len(frame)
    path = tmp_path / "2024-03-01.parquet"
    frame.to_parquet(path)

    from_file = class_metrics_spark(spark, path, labels=labels)

    assert_same_rows(from_file, class_metrics_pandas(frame, labels=labels))
    assert from_file[0]["model_id"] == "digits@abc123" and from_file[0]["date"] == "2024-03-01"


@pytest.mark.spark
@pytest.mark.parametrize(
    "change, message",
    [
        ({"status": ["ok", "maybe"]}, "status is not 'ok'/'failed'"),
        ({"pred": ["cat", None]}, "without a pred"),
        ({"label": ["cat", None]}, "without a truth label"),
    ],
)
def test_inconsistent_predictions_are_refused(spark, change: dict, message: str) -> None:
    frame = pd.DataFrame({"label": ["cat", "dog"], "pred": ["cat", "dog"], "status": ["ok", "ok"]})
    for column, values in change.items():
        frame[column] = values
    with pytest.raises(DataError, match=message):
        class_metrics_spark(spark, frame)
    with pytest.raises(DataError, match=message):
        class_metrics_pandas(frame)


@pytest.mark.parametrize(
    "frame, labels, message",
    [
        (pd.DataFrame({"label": ["cat"], "status": ["ok"]}), None, "lack the column.*pred"),
        (pd.DataFrame({"label": [1], "pred": [1], "status": ["ok"]}), None, "column 'label' holds integer"),
        (pd.DataFrame({"label": ["cat"], "pred": ["cat"], "status": ["ok"]}), "cat", "not the string 'cat'"),
    ],
)
def test_malformed_input_is_refused_before_any_work(frame: pd.DataFrame, labels, message: str) -> None:
    with pytest.raises(DataError, match=message):
        class_metrics_pandas(frame, labels=labels)


@pytest.mark.spark
def test_missing_parquet_file_is_a_data_error(spark, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read predictions from .*nowhere.parquet"):
        class_metrics_spark(spark, tmp_path / "nowhere.parquet")


# --- Wilson -------------------------------------------------------------------------------------


def wilson_by_hand(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson (1927) score interval, written out from the formula."""
    z = norm.ppf(1 - (1 - confidence) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(
    "k, n, low, high",
    # 7/10: R's prop.test(7, 10, correct = FALSE)$conf.int. k = 0 and k = n have closed forms:
    # upper z^2 / (n + z^2) and lower n / (n + z^2), with z = 1.959964 (1.96^2 = 3.8415).
    [
        (7, 10, 0.3968, 0.8922),
        (0, 10, 0.0, 3.8415 / 13.8415),
        (10, 10, 10 / 13.8415, 1.0),
        (0, 1, 0.0, 3.8415 / 4.8415),
    ],
)
def test_wilson_matches_published_values(k: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(k, n, 0.95)
    assert got == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_matches_the_closed_form_everywhere(confidence: float) -> None:
    ks, ns = zip(*[(k, n) for n in (1, 2, 5, 10, 37, 500) for k in range(n + 1)])
    low, high = wilson_intervals(np.array(ks), np.array(ns), confidence)
    for k, n, lo, hi in zip(ks, ns, low, high):
        assert (lo, hi) == pytest.approx(wilson_by_hand(k, n, confidence), abs=1e-12)
        assert wilson_interval(k, n, confidence) == (lo, hi)


def test_wilson_of_no_observation_is_undefined() -> None:
    low, high = wilson_interval(0, 0)
    assert math.isnan(low) and math.isnan(high)
    lows, highs = wilson_intervals([0, 3], [0, 4])
    assert math.isnan(lows[0]) and not math.isnan(lows[1]) and highs[1] > 0.75


@pytest.mark.parametrize(
    "k, n, confidence, error, message",
    [
        (11, 10, 0.95, DataError, "11 correct out of 10"),
        (-1, 10, 0.95, DataError, "-1 correct out of 10"),
        (5, 10, 1.5, ConfigError, "confidence level 1.5"),
    ],
)
def test_wilson_refuses_impossible_counts(k: int, n: int, confidence: float, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        wilson_interval(k, n, confidence)


# --- both engines against a plain-Python count and scikit-learn (no code shared with evaluation.metrics) ---


def plain_python_metrics(frame: pd.DataFrame, labels: list[str], confidence: float) -> dict[tuple, dict]:
    """Every class_metrics field per (model_id, date, label), by walking the rows as dicts: the module docstring's
    definitions written out with counters, and the Wilson bounds from the formula (:func:`wilson_by_hand`)."""
    runs: dict[tuple, list[dict]] = {}
    for record in frame.to_dict("records"):
        runs.setdefault((record.get("model_id"), record.get("date")), []).append(record)
    expected: dict[tuple, dict] = {}
    for (model_id, date), records in runs.items():
        for label in {r["label"] for r in records} | set(labels):
            ok_truth = [r for r in records if r["status"] == "ok" and r["label"] == label]
            n = len(ok_truth)
            correct = sum(1 for r in ok_truth if r["pred"] == label)
            fp = sum(1 for r in records if r["status"] == "ok" and r["pred"] == label and r["label"] != label)
            fn = n - correct
            wrong: dict[str, int] = {}
            for r in ok_truth:
                if r["pred"] != label:
                    wrong[r["pred"]] = wrong.get(r["pred"], 0) + 1
            low, high = (max(0.0, min(1.0, x)) for x in wilson_by_hand(correct, n, confidence)) if n else (None, None)
            expected[(model_id, date, label)] = {
                "n": n,
                "correct": correct,
                "failed": sum(1 for r in records if r["status"] == "failed" and r["label"] == label),
                "accuracy": correct / n if n else None,
                "ci_low": low,
                "ci_high": high,
                "tp": correct,
                "fp": fp,
                "fn": fn,
                "precision": correct / (correct + fp) if correct + fp else None,
                "recall": correct / n if n else None,
                "f1": 2 * correct / (2 * correct + fp + fn) if correct + fp + fn else None,
                "confusions": [
                    {"pred": p, "count": k} for p, k in sorted(wrong.items(), key=lambda item: (-item[1], item[0]))
                ],
            }
    return expected


def _two_runs() -> tuple[pd.DataFrame, list[str]]:
    return random_predictions(6, rows=600, classes=10, runs=2)


def _no_run_key() -> tuple[pd.DataFrame, list[str]]:
    frame, labels = random_predictions(7, rows=300, classes=6)
    return frame.drop(columns=["model_id", "date"]), labels


@pytest.mark.parametrize("engine", [pytest.param("spark", marks=pytest.mark.spark), "pandas"])
@pytest.mark.parametrize("make", [_two_runs, _no_run_key], ids=["two-runs", "no-run-key"])
def test_each_engine_equals_a_plain_python_count_of_the_same_predictions(request, engine: str, make) -> None:
    frame, labels = make()
    confidence = 0.9  # not the default: the level must reach the bounds
    if engine == "spark":
        rows = class_metrics_spark(request.getfixturevalue("spark"), frame, labels=labels, confidence=confidence)
    else:
        rows = class_metrics_pandas(frame, labels=labels, confidence=confidence)
    expected = plain_python_metrics(frame, labels, confidence)

    keys = [(r.get("model_id"), r.get("date"), r["label"]) for r in rows]
    assert keys == sorted(expected, key=lambda k: (k[0] or "", k[1] or "", k[2]))  # one row per run and class, in order
    # The cases that matter are present: failed rows, an all-failed class, a class with no row, labels never true.
    assert any(e["failed"] and not e["n"] for e in expected.values()) and any(
        not e["n"] and not e["failed"] for e in expected.values()
    )
    assert any(c["pred"].startswith("ghost_") for e in expected.values() for c in e["confusions"])
    for row, key in zip(rows, keys):
        want = expected[key]
        assert {k: row[k] for k in ("model_id", "date") if k in row} == {
            k: v for k, v in zip(("model_id", "date"), key) if v is not None
        }
        assert list(row)[-len(METRIC_KEYS) :] == list(METRIC_KEYS)
        for name, value in want.items():
            if isinstance(value, float):
                assert row[name] == pytest.approx(value, rel=1e-12, abs=1e-12), (key, name)
            else:
                assert row[name] == value, (key, name)


@pytest.mark.parametrize("engine", [pytest.param("spark", marks=pytest.mark.spark), "pandas"])
def test_each_engine_agrees_with_sklearn_confusion_matrix_and_recall(request, engine: str) -> None:
    from sklearn.metrics import confusion_matrix, recall_score

    frame, labels = _two_runs()
    if engine == "spark":
        rows = class_metrics_spark(request.getfixturevalue("spark"), frame, labels=labels)
    else:
        rows = class_metrics_pandas(frame, labels=labels)
    for (model_id, date), run in frame.groupby(["model_id", "date"]):
        ok = run[run["status"] == "ok"]
        universe = sorted(set(run["label"]) | set(ok["pred"]) | set(labels))
        matrix = confusion_matrix(ok["label"].tolist(), ok["pred"].tolist(), labels=universe)
        mine = {r["label"]: r for r in rows if (r["model_id"], r["date"]) == (model_id, date)}
        assert set(mine) == set(run["label"]) | set(labels)
        seen = [label for label in sorted(mine) if matrix[universe.index(label)].sum() > 0]
        recalls = dict(zip(seen, recall_score(ok["label"].tolist(), ok["pred"].tolist(), labels=seen, average=None)))
        for label, row in mine.items():
            i = universe.index(label)
            assert (row["n"], row["correct"], row["fp"]) == (
                matrix[i].sum(),
                matrix[i, i],
                matrix[:, i].sum() - matrix[i, i],
            ), label
            assert row["failed"] == int(((run["status"] == "failed") & (run["label"] == label)).sum()), label
            assert {c["pred"]: c["count"] for c in row["confusions"]} == {
                universe[k]: int(matrix[i, k]) for k in range(len(universe)) if k != i and matrix[i, k]
            }, label
            if label in recalls:
                assert row["recall"] == pytest.approx(recalls[label], rel=1e-12) and row["accuracy"] == row["recall"]
            else:
                assert row["n"] == 0 and row["recall"] is None and row["accuracy"] is None


# --- storing ------------------------------------------------------------------------------------


def test_replace_day_replaces_the_class_metrics_rows_of_its_model_and_date(store) -> None:
    frame, labels = random_predictions(5, rows=200, classes=6)
    first = class_metrics_pandas(frame, labels=labels)
    other_day = [{**row, "date": "2024-02-29"} for row in first]
    assert store.replace_day("class_metrics", "digits@abc123", "2024-02-29", other_day) == len(first)
    assert store.replace_day("class_metrics", "digits@abc123", "2024-03-01", first) == len(first)

    # The re-run lost two classes (e.g. the source dropped them) and counts changed.
    second = [dict(row, n=row["n"] + 1) for row in first if row["label"] not in ("class_01", "empty_a")]
    written = store.replace_day("class_metrics", "digits@abc123", "2024-03-01", second)

    docs = find(store, "class_metrics", {"model_id": "digits@abc123", "date": "2024-03-01"})
    assert written == len(second) == len(docs)
    assert sorted(d["label"] for d in docs) == sorted(r["label"] for r in second)
    assert {d["label"]: d["n"] for d in docs} == {r["label"]: r["n"] for r in second}
    assert len(find(store, "class_metrics", {"date": "2024-02-29"})) == len(first)


def test_replace_day_refuses_class_metrics_rows_of_another_date(store) -> None:
    rows = [{"label": "cat", "n": 1, "date": "2024-03-02"}]
    with pytest.raises(DataError, match="label 'cat' has date '2024-03-02', not '2024-03-01'"):
        store.replace_day("class_metrics", "m@1", "2024-03-01", rows)
    assert find(store, "class_metrics", {}) == []


# --- the session --------------------------------------------------------------------------------


@pytest.mark.spark
def test_get_spark_returns_the_one_session_with_arrow_on(spark) -> None:
    again = get_spark("local[2]")
    assert again is spark
    assert spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "4"
    assert spark.sparkContext.getConf().get("spark.driver.host") == "127.0.0.1"


def test_get_spark_refuses_an_empty_master() -> None:
    with pytest.raises(ConfigError, match="master URL is empty"):
        get_spark("  ")


@pytest.mark.spark
def test_spark_that_cannot_start_is_a_spark_error(tmp_path: Path) -> None:
    # A fresh interpreter: this process's session is already up, and getOrCreate would return it.
    script = (
        "from evaluation.spark import get_spark\nfrom monitor.core.errors import SparkError\n"
        "try:\n    get_spark('local[1]')\nexcept SparkError as exc:\n    print('SparkError:', exc)\n"
    )
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java"), "SPARK_HOME": ""}
    env.pop("SPARK_HOME")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert "SparkError: could not start Spark with master 'local[1]'" in done.stdout, done.stderr[-2000:]


def test_a_jvm_that_cannot_start_with_its_output_in_a_log_is_a_spark_error_quoting_that_output(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "spark-jvm.log"
    script = (
        "import sys; from pathlib import Path\nfrom evaluation.spark import get_spark\n"
        "from monitor.core.errors import SparkError\n"
        "try:\n    get_spark('local[1]', jvm_log=Path(sys.argv[1]))\nexcept SparkError as exc:\n    print('SparkError:', exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SPARK_HOME"} | {"JAVA_HOME": str(tmp_path / "no-java")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(log)], env=env, capture_output=True, text=True, timeout=120
    )
    assert "SparkError: could not start Spark's JVM with master 'local[1]'" in done.stdout, done.stderr[-2000:]
    # What the launcher said went to the log, not to stderr, and the error quotes it.
    assert f"{tmp_path / 'no-java'}/bin/java" in log.read_text()
    assert "its output: " in done.stdout and f"{tmp_path / 'no-java'}/bin/java" in done.stdout
    assert "no-java" not in done.stderr


# --- the pandas path at its edges, without Spark (closing mutants that survived scripts/mutation.sh) ---------


def test_a_run_in_which_every_prediction_failed_has_counts_and_no_ratios() -> None:
    frame = pd.DataFrame({"label": ["cat", "cat", "dog"], "pred": [None, None, None], "status": ["failed"] * 3})
    rows = class_metrics_pandas(frame, labels=["cat", "dog", "eel"])
    expected = plain_python_metrics(frame, ["cat", "dog", "eel"], 0.95)

    assert [r["label"] for r in rows] == ["cat", "dog", "eel"]
    for row in rows:
        want = expected[(None, None, row["label"])]
        assert {name: row[name] for name in want} == want
        assert (row["n"], row["accuracy"], row["precision"], row["recall"], row["f1"], row["ci_low"]) == (
            0,
            None,
            None,
            None,
            None,
            None,
        )
    assert [r["failed"] for r in rows] == [2, 1, 0]


def test_the_pandas_reference_does_not_depend_on_the_frames_index() -> None:
    frame, labels = _two_runs()
    plain = class_metrics_pandas(frame, labels=labels)
    # A frame indexed by one of its own columns (kept as a column too), as set_index(..., drop=False) leaves it.
    assert class_metrics_pandas(frame.set_index("label", drop=False), labels=labels) == plain
    assert class_metrics_pandas(frame.set_index(frame.index * 7 + 3), labels=labels) == plain


def test_inconsistent_rows_are_refused_with_their_count_per_label() -> None:
    frame = pd.DataFrame(
        {
            "label": ["cat", "cat", "cat", "dog"],
            "pred": ["cat", "cat", "cat", None],
            "status": ["ok", "maybe", "maybe", "ok"],
        }
    )
    with pytest.raises(DataError, match=r"per label: \{'cat': 2, 'dog': 1\}"):
        class_metrics_pandas(frame)
