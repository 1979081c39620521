"""Per-class metrics of a predictions table: the Spark SQL computation and its pandas/scikit-learn reference.

Definitions (per ``model_id``, ``date`` and truth label ``c``; only rows with ``status == "ok"``
count towards the scores, failed rows are counted apart):

- ``n``: ok rows whose truth is ``c``; ``correct`` (= ``tp``): those predicted ``c``; ``fn = n - correct``;
- ``fp``: ok rows predicted ``c`` whose truth is another label (predictions *of* ``c`` that were wrong);
- ``failed``: failed rows whose truth is ``c``;
- ``followup_n``/``followup_correct``: the part of ``n``/``correct`` drawn as follow-up (``draw == "followup"``),
  so that health can tell the day's base draw from the images its verdict asked for;
- ``accuracy = recall = correct / n``; ``precision = tp / (tp + fp)``; ``f1 = 2 tp / (2 tp + fp + fn)``;
- ``ci_low``/``ci_high``: the Wilson interval of ``correct / n`` at the requested confidence level
  (:func:`monitor.core.stats.wilson_intervals`);
- ``confusions``: ``[{pred, count}]`` of the wrong predictions, most frequent first, ties by label.

A ratio whose denominator is zero is undefined and stored as ``None`` (null), never as 0 or NaN:
an empty class (``n == 0``) has no accuracy and no interval, a class never predicted has no precision,
and ``f1`` is ``None`` only when ``tp + fp + fn == 0``.

Rows are produced for every truth label present, plus every label in ``labels`` (the classes the
source holds), so a class the sample could not fill still reports ``n == 0``. A label that is only
ever predicted, and is not in ``labels``, gets no row of its own: it shows up in the confusions
(and ``fn``) of the classes it was wrongly predicted for.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evaluation.predictions import STATUS_FAILED, STATUS_OK, read_predictions_spark
from monitor.core.errors import DataError, SparkError, first_line
from monitor.core.stats import wilson_intervals

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession

#: Predictions columns the metrics read; ``model_id`` and ``date`` are optional (null when absent).
METRIC_INPUT_COLUMNS = ("model_id", "date", "label", "pred", "status", "draw")
_REQUIRED_COLUMNS = ("label", "pred", "status")
_KEY_COLUMNS = ("model_id", "date")
_INPUT_SCHEMA = "model_id string, date string, label string, pred string, status string, draw string"

#: Keys of one class_metrics row, in the order of docs/ARCHITECTURE.md (``model_id``/``date`` only when known).
METRIC_KEYS = (
    "label",
    "n",
    "correct",
    "failed",
    "accuracy",
    "ci_low",
    "ci_high",
    "tp",
    "fp",
    "fn",
    "precision",
    "recall",
    "f1",
    "confusions",
    "followup_n",
    "followup_correct",
)


# --- Spark SQL --------------------------------------------------------------------------------

# Pass 1 reads the predictions once and builds the small confusion "cells" table
# (run key x truth x pred x status -> rows): at most runs x classes^2 x 2 rows, whatever the input size.
CELLS_SQL = """
SELECT model_id, date, label, pred, status, draw = 'followup' AS followup, COUNT(*) AS rows
FROM IDENTIFIER(:predictions_view)
GROUP BY model_id, date, label, pred, status, draw = 'followup'
"""

# Pass 2 derives every per-class figure from the cells. The cells are materialised between the two
# passes: Spark inlines CTEs and pushes each aggregate down to the source, so one query would scan
# the predictions once per branch (four times).
CLASS_METRICS_SQL = """
WITH cells AS (
    SELECT * FROM IDENTIFIER(:cells_view)
),
truth AS (
    SELECT model_id, date, label,
           SUM(CASE WHEN status = :ok THEN rows ELSE 0 END) AS n,
           SUM(CASE WHEN status = :ok AND pred = label THEN rows ELSE 0 END) AS correct,
           SUM(CASE WHEN status = :ok AND followup THEN rows ELSE 0 END) AS followup_n,
           SUM(CASE WHEN status = :ok AND followup AND pred = label THEN rows ELSE 0 END) AS followup_correct,
           SUM(CASE WHEN status = :failed THEN rows ELSE 0 END) AS failed,
           SUM(CASE WHEN status IS NULL OR status NOT IN (:ok, :failed) OR (status = :ok AND pred IS NULL)
                    THEN rows ELSE 0 END) AS invalid
    FROM cells
    GROUP BY model_id, date, label
),
wrong AS (
    SELECT model_id, date, label, pred, SUM(rows) AS count
    FROM cells
    WHERE status = :ok AND pred IS NOT NULL AND label IS NOT NULL AND pred <> label
    GROUP BY model_id, date, label, pred
),
false_positives AS (
    SELECT model_id, date, pred AS label, SUM(count) AS fp
    FROM wrong
    GROUP BY model_id, date, pred
),
confusions AS (
    -- Sorting structs orders by their first field: (-count, pred) is "most frequent first, ties by label".
    SELECT model_id, date, label,
           transform(sort_array(collect_list(struct(-count AS neg_count, pred))),
                     c -> named_struct('pred', c.pred, 'count', -c.neg_count)) AS confusions
    FROM wrong
    GROUP BY model_id, date, label
),
run_keys AS (
    SELECT DISTINCT model_id, date FROM truth
),
classes AS (
    SELECT model_id, date, label FROM truth
    UNION
    SELECT k.model_id, k.date, l.label FROM run_keys k CROSS JOIN IDENTIFIER(:labels_view) l
),
counts AS (
    SELECT c.model_id, c.date, c.label,
           COALESCE(t.n, 0) AS n,
           COALESCE(t.correct, 0) AS correct,
           COALESCE(t.followup_n, 0) AS followup_n,
           COALESCE(t.followup_correct, 0) AS followup_correct,
           COALESCE(t.failed, 0) AS failed,
           COALESCE(t.invalid, 0) AS invalid,
           COALESCE(p.fp, 0) AS fp,
           COALESCE(x.confusions, array()) AS confusions
    FROM classes c
    LEFT JOIN truth t ON t.model_id <=> c.model_id AND t.date <=> c.date AND t.label <=> c.label
    LEFT JOIN false_positives p ON p.model_id <=> c.model_id AND p.date <=> c.date AND p.label <=> c.label
    LEFT JOIN confusions x ON x.model_id <=> c.model_id AND x.date <=> c.date AND x.label <=> c.label
)
SELECT model_id, date, label, n, correct, followup_n, followup_correct, failed, invalid,
       CASE WHEN n > 0 THEN correct / n END AS accuracy,
       correct AS tp,
       fp,
       n - correct AS fn,
       CASE WHEN correct + fp > 0 THEN correct / (correct + fp) END AS precision,
       CASE WHEN n > 0 THEN correct / n END AS recall,
       CASE WHEN correct + fp + n > 0 THEN 2 * correct / (2 * correct + fp + (n - correct)) END AS f1,
       confusions
FROM counts
ORDER BY model_id, date, label
"""


def class_metrics_spark(
    spark: SparkSession,
    predictions: pd.DataFrame | str | Path,
    *,
    labels: Sequence[str] | None = None,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """Per-class metrics of ``predictions`` computed with Spark SQL (see the module docstring for definitions).

    ``predictions`` is a pandas DataFrame or the path of a predictions Parquet file (columns of
    docs/ARCHITECTURE.md; only label, pred, status and, when present, model_id and date are read).
    ``labels`` adds classes that must get a row even with no prediction. A frame holding several
    (model_id, date) pairs gets a full set of rows for each pair.

    Returns one dict per class, sorted by (model_id, date, label), keyed as the class_metrics
    contract; ``model_id``/``date`` are included when the predictions carry them. Raises
    :class:`DataError` on missing columns, null labels, unknown statuses or ok rows without a pred.
    """
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    frame = _spark_input(spark, predictions)
    wanted = _label_list(labels)
    # Unique view names: two calls in one session (threads, tests) never see each other's data.
    tag = uuid.uuid4().hex
    predictions_view, cells_view, labels_view = (f"chm_{name}_{tag}" for name in ("predictions", "cells", "labels"))
    frame.createOrReplaceTempView(predictions_view)
    _labels_frame(spark, wanted).createOrReplaceTempView(labels_view)
    cells: SparkDataFrame | None = None
    try:
        cells = spark.sql(CELLS_SQL, args={"predictions_view": predictions_view}).cache()
        cells.count()  # materialise now: the one pass over the predictions
        cells.createOrReplaceTempView(cells_view)
        result = spark.sql(
            CLASS_METRICS_SQL,
            args={"cells_view": cells_view, "labels_view": labels_view, "ok": STATUS_OK, "failed": STATUS_FAILED},
        ).collect()
    except (PySparkException, Py4JError) as exc:
        raise SparkError(f"the Spark metrics query failed: {first_line(exc)}") from exc
    finally:
        # Unpersist first: a Spark Connect client re-analyses the plan, which names the views.
        if cells is not None:
            cells.unpersist()
        for view in (predictions_view, cells_view, labels_view):
            spark.catalog.dropTempView(view)
    records = [row.asDict(recursive=True) for row in result]
    for record in records:
        record["confusions"] = [{"pred": c["pred"], "count": int(c["count"])} for c in record["confusions"]]
    return _finish(
        records, confidence, source=str(predictions) if isinstance(predictions, (str, Path)) else "the predictions"
    )


def _spark_input(spark: SparkSession, predictions: pd.DataFrame | str | Path) -> SparkDataFrame:
    """The predictions as a Spark DataFrame with exactly the METRIC_INPUT_COLUMNS, all strings."""
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        return spark.createDataFrame(_pandas_input(predictions), _INPUT_SCHEMA)
    return read_predictions_spark(spark, predictions, METRIC_INPUT_COLUMNS, required=_REQUIRED_COLUMNS)


def _pandas_input(predictions: pd.DataFrame) -> pd.DataFrame:
    """The METRIC_INPUT_COLUMNS of a pandas frame, checked to hold strings (or nulls)."""
    import pandas as pd

    missing = [c for c in _REQUIRED_COLUMNS if c not in predictions.columns]
    if missing:
        raise DataError(f"the predictions lack the column(s) {', '.join(missing)}")
    out = pd.DataFrame(index=predictions.index)
    for column in METRIC_INPUT_COLUMNS:
        if column not in predictions.columns:
            out[column] = None
            continue
        values = predictions[column]
        kind = pd.api.types.infer_dtype(values, skipna=True)
        if kind not in ("string", "empty"):
            raise DataError(f"predictions column {column!r} holds {kind} values, not strings")
        out[column] = values.astype(object).where(values.notna(), None)
    return out.reset_index(drop=True)


def _labels_frame(spark: SparkSession, labels: list[str]) -> SparkDataFrame:
    """A one-column (``label``) Spark DataFrame of ``labels``, built through Arrow in the driver's JVM.

    Not from a Python list: that goes through a Python RDD, which starts Python workers on the executors, and a
    cluster whose executors run another Python than the driver (the official Spark image's, say) fails the query
    (tests/project/test_compose_spark.py runs the metrics on executors with no usable Python).
    """
    import pandas as pd

    return spark.createDataFrame(pd.DataFrame({"label": pd.Series(labels, dtype=object)}), "label string")


def _label_list(labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return []
    if isinstance(labels, str):
        raise DataError(f"labels must be a sequence of labels, not the string {labels!r}")
    bad = [label for label in labels if not isinstance(label, str) or not label]
    if bad:
        raise DataError(f"labels must be non-empty strings, got {bad[:5]!r}")
    return sorted(set(labels))


def _finish(records: list[dict[str, Any]], confidence: float, *, source: str) -> list[dict[str, Any]]:
    """Check the counts' sanity flags, add the Wilson bounds and shape each row as the contract."""
    if any(r["label"] is None for r in records):
        raise DataError(f"{source} hold rows without a truth label")
    invalid = {r["label"]: r["invalid"] for r in records if r["invalid"]}
    if invalid:
        raise DataError(
            f"{source} hold rows whose status is not {STATUS_OK!r}/{STATUS_FAILED!r} or that are {STATUS_OK!r} without a pred"
            f" (per label: {dict(sorted(invalid.items())[:5])})"
        )
    low, high = wilson_intervals([r["correct"] for r in records], [r["n"] for r in records], confidence)
    rows: list[dict[str, Any]] = []
    for record, lo, hi in zip(records, low, high):
        row: dict[str, Any] = {key: record[key] for key in _KEY_COLUMNS if record.get(key) is not None}
        for key in METRIC_KEYS:
            if key == "ci_low":
                row[key] = _float_or_none(lo)
            elif key == "ci_high":
                row[key] = _float_or_none(hi)
            elif key in ("accuracy", "precision", "recall", "f1"):
                row[key] = _float_or_none(record[key])
            elif key in ("label", "confusions"):
                row[key] = record[key]
            else:
                row[key] = int(record[key])
        rows.append(row)
    return rows


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


# --- pandas / scikit-learn reference ----------------------------------------------------------


def class_metrics_pandas(
    predictions: pd.DataFrame,
    *,
    labels: Sequence[str] | None = None,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """Reference implementation of :func:`class_metrics_spark` with pandas and scikit-learn.

    Written independently of the SQL (confusion matrix and ``precision_recall_fscore_support``), so
    a test comparing the two checks both; also the fast path for small frames without a JVM.
    """
    import pandas as pd
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    frame = _pandas_input(predictions)
    wanted = _label_list(labels)
    records: list[dict[str, Any]] = []
    # dropna=False keeps the runs whose model_id/date are absent (null) as one group.
    # An empty frame is one run with no images: every class in ``labels`` reports n = 0.
    groups = list(frame.groupby(list(_KEY_COLUMNS), dropna=False, sort=False)) or (
        [((None, None), frame)] if wanted else []
    )
    for key, group in groups:
        model_id, date = (None if pd.isna(k) else k for k in key)
        truth = group["label"]
        if truth.isna().any():
            raise DataError("the predictions hold rows without a truth label")
        ok_mask = group["status"] == STATUS_OK
        failed_mask = group["status"] == STATUS_FAILED
        invalid_mask = ~(ok_mask | failed_mask) | (ok_mask & group["pred"].isna())
        ok = group[ok_mask & ~invalid_mask]
        classes = sorted(set(truth) | set(wanted))
        # The matrix needs every label seen on either axis; rows/columns beyond `classes` are predicted-only labels.
        universe = sorted(set(classes) | set(ok["pred"]))
        if len(ok):
            # Integer codes over the label universe: sklearn's string label encoding is ~50x slower on big frames.
            truth_codes = pd.Categorical(ok["label"], categories=universe).codes
            pred_codes = pd.Categorical(ok["pred"], categories=universe).codes
            class_codes = [universe.index(label) for label in classes]
            matrix = confusion_matrix(truth_codes, pred_codes, labels=range(len(universe)))
            precision, recall, f1, support = precision_recall_fscore_support(
                truth_codes, pred_codes, labels=class_codes, average=None, zero_division=np.nan
            )
        else:
            matrix = np.zeros((len(universe), len(universe)), dtype=np.int64)
            precision = recall = f1 = np.full(len(classes), np.nan)
            support = np.zeros(len(classes), dtype=np.int64)
        position = {label: i for i, label in enumerate(universe)}
        followup_ok = ok[ok["draw"] == "followup"]
        followup_n = followup_ok["label"].value_counts()
        followup_correct = followup_ok.loc[followup_ok["pred"] == followup_ok["label"], "label"].value_counts()
        failed_counts = group.loc[failed_mask, "label"].value_counts()
        invalid_counts = group.loc[invalid_mask, "label"].value_counts()
        for j, label in enumerate(classes):
            i = position[label]
            tp = int(matrix[i, i])
            n = int(matrix[i, :].sum())
            assert n == int(support[j])
            wrong = [(universe[k], int(count)) for k, count in enumerate(matrix[i, :]) if k != i and count > 0]
            wrong.sort(key=lambda item: (-item[1], item[0]))
            records.append(
                {
                    "model_id": model_id,
                    "date": date,
                    "label": label,
                    "n": n,
                    "correct": tp,
                    "failed": int(failed_counts.get(label, 0)),
                    "invalid": int(invalid_counts.get(label, 0)),
                    "accuracy": tp / n if n else None,
                    "tp": tp,
                    "fp": int(matrix[:, i].sum()) - tp,
                    "fn": n - tp,
                    "precision": precision[j],
                    "recall": recall[j],
                    "f1": f1[j],
                    "confusions": [{"pred": pred, "count": count} for pred, count in wrong],
                    "followup_n": int(followup_n.get(label, 0)),
                    "followup_correct": int(followup_correct.get(label, 0)),
                }
            )
    records.sort(key=lambda r: (r["model_id"] or "", r["date"] or "", r["label"]))
    return _finish(records, confidence, source="the predictions")


# --- paired counts: production and a candidate on the same images ------------------------------

#: Columns the paired counts read from each model's predictions.
PAIRED_INPUT_COLUMNS = ("date", "image_path", "label", "pred", "status")
_PAIRED_SCHEMA = "date string, image_path string, label string, pred string, status string"
#: Keys of one paired-count row: the label, the four cells of the 2x2 table (production first), and the
#: images only one model could predict (a fetch or decode failure is shared; only a crash between the two differs).
PAIRED_KEYS = ("label", "both_right", "only_production", "only_candidate", "both_wrong", "unpaired")

# One row per image predicted ok by both models (joined on date and path); the truth is production's,
# and a pair whose truths disagree is counted apart so the caller can refuse it.
PAIRED_COUNTS_SQL = """
WITH pairs AS (
    SELECT p.label AS label,
           p.pred = p.label AS production_right,
           c.pred = c.label AS candidate_right,
           p.label <> c.label AS mismatch
    FROM IDENTIFIER(:production_view) p
    JOIN IDENTIFIER(:candidate_view) c ON p.date = c.date AND p.image_path = c.image_path
    WHERE p.status = :ok AND c.status = :ok
),
paired AS (
    SELECT label,
           SUM(CASE WHEN production_right AND candidate_right THEN 1 ELSE 0 END) AS both_right,
           SUM(CASE WHEN production_right AND NOT candidate_right THEN 1 ELSE 0 END) AS only_production,
           SUM(CASE WHEN NOT production_right AND candidate_right THEN 1 ELSE 0 END) AS only_candidate,
           SUM(CASE WHEN NOT production_right AND NOT candidate_right THEN 1 ELSE 0 END) AS both_wrong,
           SUM(CASE WHEN mismatch THEN 1 ELSE 0 END) AS mismatched
    FROM pairs
    GROUP BY label
),
ok_rows AS (
    SELECT date, image_path, label FROM IDENTIFIER(:production_view) WHERE status = :ok
    UNION ALL
    SELECT date, image_path, label FROM IDENTIFIER(:candidate_view) WHERE status = :ok
),
singles AS (
    -- An image predicted ok by one model only: it appears once among both models' ok rows.
    SELECT label, COUNT(*) AS unpaired FROM (
        SELECT date, image_path, first(label) AS label FROM ok_rows GROUP BY date, image_path HAVING COUNT(*) = 1
    ) GROUP BY label
),
classes AS (
    SELECT label FROM paired UNION SELECT label FROM singles UNION SELECT label FROM IDENTIFIER(:labels_view)
)
SELECT k.label,
       COALESCE(p.both_right, 0) AS both_right,
       COALESCE(p.only_production, 0) AS only_production,
       COALESCE(p.only_candidate, 0) AS only_candidate,
       COALESCE(p.both_wrong, 0) AS both_wrong,
       COALESCE(s.unpaired, 0) AS unpaired,
       COALESCE(p.mismatched, 0) AS mismatched
FROM classes k
LEFT JOIN paired p ON p.label = k.label
LEFT JOIN singles s ON s.label = k.label
ORDER BY k.label
"""


def _paired_input(frame: pd.DataFrame, which: str) -> pd.DataFrame:
    """The :data:`PAIRED_INPUT_COLUMNS` of one model's predictions, checked: strings, one row per (date, image)."""
    import pandas as pd

    missing = [c for c in PAIRED_INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"the {which} predictions lack the column(s) {', '.join(missing)}")
    out = pd.DataFrame(
        {c: frame[c].astype(object).where(frame[c].notna(), None) for c in PAIRED_INPUT_COLUMNS}
    ).reset_index(drop=True)
    duplicated = out.duplicated(["date", "image_path"])
    if duplicated.any():
        first = out[duplicated].iloc[0]
        raise DataError(f"the {which} predictions hold {first['image_path']} twice on {first['date']}")
    return out


def _paired_finish(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    mismatched = {r["label"]: r["mismatched"] for r in records if r.get("mismatched")}
    if mismatched:
        raise DataError(
            f"production and candidate predictions disagree on the truth label of some images (per label: {dict(sorted(mismatched.items())[:5])})"
        )
    return [{key: (record[key] if key == "label" else int(record[key])) for key in PAIRED_KEYS} for record in records]


def paired_counts_spark(
    spark: SparkSession, production: pd.DataFrame, candidate: pd.DataFrame, *, labels: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Per class, the paired 2x2 counts of two models on the same images, with Spark SQL.

    ``production`` and ``candidate`` are predictions tables (any dates); rows pair on ``(date, image_path)``
    and count only when both are ``ok``. Returns one dict per class (every truth label seen, plus ``labels``),
    sorted by label, keyed :data:`PAIRED_KEYS`. :class:`DataError` when an image repeats within one model's
    rows or the two tables disagree on an image's truth label.
    """
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    left, right = _paired_input(production, "production"), _paired_input(candidate, "candidate")
    tag = uuid.uuid4().hex
    production_view, candidate_view, labels_view = (
        f"chm_{name}_{tag}" for name in ("production", "candidate", "labels")
    )
    spark.createDataFrame(left, _PAIRED_SCHEMA).createOrReplaceTempView(production_view)
    spark.createDataFrame(right, _PAIRED_SCHEMA).createOrReplaceTempView(candidate_view)
    _labels_frame(spark, _label_list(labels)).createOrReplaceTempView(labels_view)
    try:
        result = spark.sql(
            PAIRED_COUNTS_SQL,
            args={
                "production_view": production_view,
                "candidate_view": candidate_view,
                "labels_view": labels_view,
                "ok": STATUS_OK,
            },
        ).collect()
    except (PySparkException, Py4JError) as exc:
        raise SparkError(f"the Spark paired-counts query failed: {first_line(exc)}") from exc
    finally:
        for view in (production_view, candidate_view, labels_view):
            spark.catalog.dropTempView(view)
    return _paired_finish([row.asDict() for row in result])


def paired_counts_pandas(
    production: pd.DataFrame, candidate: pd.DataFrame, *, labels: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Reference implementation of :func:`paired_counts_spark` with a pandas merge and crosstab (also the path without a JVM)."""
    import pandas as pd

    left, right = _paired_input(production, "production"), _paired_input(candidate, "candidate")
    left, right = left[left["status"] == STATUS_OK], right[right["status"] == STATUS_OK]
    merged = left.merge(right, on=["date", "image_path"], how="outer", suffixes=("_p", "_c"), indicator=True)
    both = merged[merged["_merge"] == "both"]
    singles = merged[merged["_merge"] != "both"]
    single_labels = singles["label_p"].where(singles["label_p"].notna(), singles["label_c"])
    classes = sorted(set(both["label_p"]) | set(single_labels) | set(_label_list(labels)))
    production_right = (both["pred_p"] == both["label_p"]).to_numpy()
    candidate_right = (both["pred_c"] == both["label_c"]).to_numpy()
    table = pd.crosstab(
        pd.Categorical(both["label_p"], categories=classes),
        [
            pd.Categorical(production_right, categories=[True, False]),
            pd.Categorical(candidate_right, categories=[True, False]),
        ],
        dropna=False,
    )
    unpaired = single_labels.value_counts()
    mismatched = both.loc[both["label_p"] != both["label_c"], "label_p"].value_counts()
    records = []
    for label in classes:
        row = table.loc[label] if label in table.index else None
        cell = lambda p, c, row=row: int(row[(p, c)]) if row is not None else 0  # noqa: E731
        records.append(
            {
                "label": label,
                "both_right": cell(True, True),
                "only_production": cell(True, False),
                "only_candidate": cell(False, True),
                "both_wrong": cell(False, False),
                "unpaired": int(unpaired.get(label, 0)),
                "mismatched": int(mismatched.get(label, 0)),
            }
        )
    return _paired_finish(records)
