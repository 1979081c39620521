"""Per-class metrics over many predictions: Spark SQL vs the pandas/scikit-learn reference, timed in one run.

The SparkSession is started first and its start-up is reported on its own line; then each engine
runs on the same predictions (for Spark, the Parquet file read by Spark itself and the same rows
as a pandas frame, as the pipeline hands them over; for pandas, the frame) and the results are
checked to hold identical counts.

    .venv/bin/python benchmarks/bench_metrics.py --quick      # 200k predictions, < 1 minute
    .venv/bin/python benchmarks/bench_metrics.py              # 1M predictions
    MONITOR_SPARK_MASTER=spark://host:7077 .venv/bin/python benchmarks/bench_metrics.py --rows 10000000
    .venv/bin/python benchmarks/bench_metrics.py --quick --json   # the figures as one JSON object (the table on stderr)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluation.metrics import class_metrics_pandas, class_metrics_spark  # noqa: E402
from evaluation.predictions import DRAW_BASE, write_predictions  # noqa: E402
from evaluation.spark import spark_for  # noqa: E402
from monitor.core.settings import load_settings  # noqa: E402

COUNT_KEYS = ("label", "n", "correct", "failed", "tp", "fp", "fn", "confusions")


def make_predictions(rows: int, classes: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` predictions of one model and date: ~85% right, 2% failed, the wrong ones spread over all classes."""
    rng = np.random.default_rng(seed)
    names = np.array([f"class_{i:03d}" for i in range(classes)], dtype=object)
    truth = names[rng.integers(0, classes, size=rows)]
    wrong = names[rng.integers(0, classes, size=rows)]
    pred = np.where(rng.random(rows) < 0.85, truth, wrong).astype(object)
    failed = rng.random(rows) < 0.02
    pred[failed] = None
    confidence = np.where(failed, np.nan, rng.uniform(0.3, 1.0, size=rows))
    return pd.DataFrame(
        {
            "date": "2024-05-01",
            "image_path": [f"{t}/{i}.jpg" for i, t in enumerate(truth)],
            "label": truth,
            "pred": pred,
            "confidence": confidence,
            "topk_labels": [[p] if p is not None else [] for p in pred],
            "topk_scores": [[c] if not np.isnan(c) else [] for c in confidence],
            "model_id": "bench@000000000000",
            "status": np.where(failed, "failed", "ok"),
            "error": np.where(failed, "truncated", None),
            "draw": DRAW_BASE,
        }
    )


def timed(run: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return times, result


def counts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: row[key] for key in COUNT_KEYS} for row in rows]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200k predictions instead of 1M")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object of the figures (the table goes to stderr)"
    )
    args = parser.parse_args(argv)
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    settings = load_settings()
    out = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say(f"bench_metrics  {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC  {rows:,} predictions, {args.classes} classes")
    say(
        f"host: {os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; Spark master {settings.spark_master}"
    )
    frame = make_predictions(rows, args.classes)
    labels = sorted(frame["label"].unique())

    start = time.perf_counter()
    spark = spark_for(settings)
    spark.range(1).count()  # the first job starts the executors
    session_s = time.perf_counter() - start
    say(f"Spark session start (incl. first job): {session_s:6.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "2024-05-01.parquet"
        write_predictions(frame, path)
        spark_file_times, spark_rows = timed(lambda: class_metrics_spark(spark, path, labels=labels), args.repeats)
        spark_frame_times, spark_frame_rows = timed(
            lambda: class_metrics_spark(spark, frame, labels=labels), args.repeats
        )
    pandas_times, pandas_rows = timed(lambda: class_metrics_pandas(frame, labels=labels), args.repeats)

    same = counts(spark_rows) == counts(pandas_rows) == counts(spark_frame_rows)
    say(f"{'engine':44} {'first s':>8} {'best s':>8} {'rows/s (best)':>14}")
    engines = {}
    for key, name, times in [
        ("spark_parquet", "Spark SQL, from the Parquet file", spark_file_times),
        ("spark_frame", "Spark SQL, from the pandas frame (Arrow)", spark_frame_times),
        ("pandas", "pandas + scikit-learn reference", pandas_times),
    ]:
        say(f"{name:44} {times[0]:8.2f} {min(times):8.2f} {rows / min(times):14,.0f}")
        engines[key] = {"first_s": times[0], "best_s": min(times), "rows_per_s": rows / min(times)}
    ratio = min(spark_file_times) / min(pandas_times)
    say(f"Spark (Parquet) / pandas time, best of {args.repeats}: {ratio:.1f}x")
    say(f"identical per-class counts (n, correct, failed, tp, fp, fn, confusions) for {len(labels)} classes: {same}")
    spark.stop()
    result = {
        "rows": rows,
        "classes": len(labels),
        "repeats": args.repeats,
        "spark_master": settings.spark_master,
        "spark_session_s": session_s,
        "engines": engines,
        "spark_parquet_over_pandas": ratio,
        "identical_counts": same,
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    if not same:
        raise SystemExit("the engines disagree")
    return result


if __name__ == "__main__":
    main()
