"""The Spark predict engine gives the single-process engine's predictions, row for row, and the same per-class counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.metrics import class_metrics_pandas, class_metrics_spark
from evaluation.model import load_model
from evaluation.predict import predict_images
from evaluation.predictions import COLUMNS
from evaluation.spark_engine import _Job, _predict_partition, partitions_for, predict_with_spark
from monitor.core.errors import DataError, ModelError
from monitor.core.settings import SHIPPED_MODEL_DIR
from monitor.core.sources import open_source
from monitor.domain.digits import LABELS, build_demo_source, load_digits_images, split_indices

DATE = "2024-05-01"
COUNT_KEYS = ("label", "n", "correct", "failed", "tp", "fp", "fn", "confusions")


@pytest.fixture(scope="module")
def digit_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pd.DataFrame]:
    """A folder of 50 held-out digits (5 per class) plus three bad entries, and its items as pipeline.py builds them."""
    root = tmp_path_factory.mktemp("source")
    _, targets = load_digits_images()
    heldout = split_indices()[1]
    chosen = np.concatenate([heldout[targets[heldout] == d][:5] for d in range(10)])
    build_demo_source(root, chosen)
    (root / "three" / "empty.jpg").write_bytes(b"")
    good = next((root / "seven").iterdir()).read_bytes()
    (root / "seven" / "cut.jpg").write_bytes(good[: len(good) // 2])
    paths = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    paths.insert(7, "two/gone.jpg")  # listed in the sample, deleted from the source since
    items = pd.DataFrame({"image_path": paths, "label": [p.split("/")[0] for p in paths]})
    return open_source(str(root)).uri, items


@pytest.mark.spark
@pytest.mark.slow
def test_spark_engine_matches_predict_images_row_for_row_and_in_per_class_counts(spark, digit_source) -> None:
    source_uri, items_df = digit_source
    loaded = load_model(SHIPPED_MODEL_DIR, "cpu")
    source = open_source(source_uri)
    expected = predict_images(
        list(items_df.itertuples(index=False, name=None)),
        source.read,
        loaded,
        date=DATE,
        batch_size=8,
        fetch_workers=4,
        top_k=3,
        max_pixels=10_000_000,
    )
    seen: list[int] = []

    actual = predict_with_spark(
        spark,
        items_df,
        source_uri=source_uri,
        model_dir=SHIPPED_MODEL_DIR,
        device="cpu",
        date=DATE,
        batch_size=8,
        top_k=3,
        max_pixels=10_000_000,
        fetch_workers=4,
        partitions=2,
        progress=seen.append,
    )

    assert list(actual.columns) == list(COLUMNS)
    assert sum(seen) == len(items_df) == len(actual)
    exact = ["date", "image_path", "label", "pred", "model_id", "status", "error"]
    pd.testing.assert_frame_equal(actual[exact], expected[exact])
    ok = expected["status"] == "ok"
    np.testing.assert_allclose(actual.loc[ok, "confidence"], expected.loc[ok, "confidence"], rtol=0, atol=1e-5)
    # Top-k: same scores position by position; labels too, except where two scores tie within float noise
    # (executors run other thread counts and batch shapes, so 1e-7 apart can swap places).
    for got, want in zip(actual.loc[ok].itertuples(), expected.loc[ok].itertuples()):
        np.testing.assert_allclose(got.topk_scores, want.topk_scores, rtol=0, atol=1e-5)
        for i, (a, b) in enumerate(zip(got.topk_labels, want.topk_labels)):
            neighbours = [want.topk_scores[j] for j in (i - 1, i + 1) if 0 <= j < len(want.topk_scores)]
            assert a == b or any(abs(want.topk_scores[i] - n) < 1e-5 for n in neighbours), (
                got.image_path,
                got.topk_labels,
                want.topk_labels,
            )
    assert actual.loc[~ok, "confidence"].isna().all()
    failures = dict(zip(actual.loc[~ok, "image_path"], actual.loc[~ok, "error"]))
    assert failures == {"three/empty.jpg": "zero_bytes", "seven/cut.jpg": "truncated", "two/gone.jpg": "fetch_failed"}
    # The model is good enough that this comparison is about real predictions, not a constant.
    assert (expected.loc[ok, "pred"] == expected.loc[ok, "label"]).mean() > 0.9

    # Per-class counts: the Spark results through Spark SQL in the same session vs the single-process results through pandas.
    spark_rows = class_metrics_spark(spark, actual, labels=list(LABELS))
    local_rows = class_metrics_pandas(expected, labels=list(LABELS))
    assert [{k: r[k] for k in COUNT_KEYS} for r in spark_rows] == [{k: r[k] for k in COUNT_KEYS} for r in local_rows]
    assert sum(r["failed"] for r in spark_rows) == 3


@pytest.mark.slow
def test_the_mapinpandas_body_predicts_a_pandas_batch_as_predict_images_does(digit_source) -> None:
    # What each executor runs on its pandas batches, called here without a JVM.
    source_uri, items_df = digit_source
    loaded = load_model(SHIPPED_MODEL_DIR, "cpu")
    job = _Job(
        source_uri=source_uri,
        model_dir=str(SHIPPED_MODEL_DIR.resolve()),
        device="cpu",
        model_id=loaded.model_id,
        date=DATE,
        batch_size=4,
        top_k=3,
        max_pixels=10_000_000,
        fetch_workers=2,
        compile_model=False,
    )
    batch = items_df.assign(row=range(len(items_df)))

    got = pd.concat(list(_predict_partition(job, None, iter([batch]))), ignore_index=True)

    expected = predict_images(
        list(items_df.itertuples(index=False, name=None)),
        open_source(source_uri).read,
        loaded,
        date=DATE,
        batch_size=8,
        fetch_workers=4,
        top_k=3,
        max_pixels=10_000_000,
    )
    assert list(got["row"]) == list(range(len(items_df)))
    assert list(got["status"]) == list(expected["status"]) and got.loc[7, "error"] == "fetch_failed"
    assert list(got["pred"]) == list(expected["pred"])


def test_missing_columns_and_missing_model_are_refused_before_any_job(tmp_path: Path) -> None:
    items = pd.DataFrame({"image_path": ["one/a.jpg"], "label": ["one"]})
    common = dict(
        source_uri=str(tmp_path), device="cpu", date=DATE, batch_size=8, top_k=3, max_pixels=100, fetch_workers=1
    )
    # No SparkSession is needed to refuse these: the checks come first.
    with pytest.raises(DataError, match=r"lack the column\(s\) label"):
        predict_with_spark(None, items[["image_path"]], model_dir=SHIPPED_MODEL_DIR, **common)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=f"model directory {tmp_path / 'nowhere'} does not exist"):
        predict_with_spark(None, items, model_dir=tmp_path / "nowhere", **common)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rows", "parallelism", "batch_size", "expected"),
    [(0, 4, 64, 1), (3, 8, 64, 3), (150, 2, 64, 2), (10_000, 2, 64, 20), (1_000_000, 16, 64, 1954)],
)
def test_partitions_keep_every_slot_busy_then_grow_with_the_batches(
    rows: int, parallelism: int, batch_size: int, expected: int
) -> None:
    assert partitions_for(rows, parallelism, batch_size) == expected
