"""Predict as a Spark job: the sample's rows spread over partitions, ``mapInPandas`` on the executors, one model per worker.

Each Python worker process loads the model once (from ``model_dir``, which executors must be
able to read: a shared path or the same image on every node) and keeps it for every later task
it runs; it reads the image bytes itself through ``open_source(source_uri).read`` and runs
:func:`evaluation.predict.predict_images` on its rows, so the results are the single-process
engine's, row for row. On GPU executors (``device="auto"``) the GPU path of ``predict_images``
applies. The driver only ships paths and collects the predictions table; the metrics can then
run in the same SparkSession.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from evaluation.predictions import COLUMNS, DRAW_BASE, predictions_frame
from monitor.core.errors import ConfigError, DataError, ModelError, MonitorError, SourceError, SparkError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from evaluation.model import LoadedModel
    from monitor.core.sources import ImageSource

#: The predictions table as Spark sees it, plus ``row`` (the item's position, to restore the order).
SPARK_SCHEMA = (
    "row long, date string, image_path string, label string, pred string, confidence double, "
    "topk_labels array<string>, topk_scores array<double>, model_id string, status string, error string"
)
#: Rows per partition aim at this many batches: enough work to amortise a task, small enough to spread.
BATCHES_PER_PARTITION = 8

# Per Python worker process: models and sources survive between tasks (Spark reuses its workers).
_MODELS: dict[tuple[str, str], LoadedModel] = {}
_SOURCES: dict[str, ImageSource] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Job:
    """What every task needs, pickled once into the job's closure."""

    source_uri: str
    model_dir: str
    device: str
    model_id: str
    date: str
    batch_size: int
    top_k: int
    max_pixels: int
    fetch_workers: int
    compile_model: bool


def worker_model(model_dir: str, device: str) -> LoadedModel:
    """The model of ``model_dir`` in this process, loaded on first use and cached (one per worker process)."""
    import torch

    from evaluation.model import load_model

    key = (model_dir, device)
    with _CACHE_LOCK:
        loaded = _MODELS.get(key)
        if loaded is None:
            loaded = load_model(Path(model_dir), device)
            if loaded.device.type == "cpu":
                # Spark runs several tasks per executor at once, each in its own worker: give each the
                # task's share of cores instead of letting every worker take them all.
                torch.set_num_threads(_task_cpus())
            _MODELS[key] = loaded
    return loaded


def _task_cpus() -> int:
    import torch
    from pyspark import TaskContext

    context = TaskContext.get()
    return max(1, int(context.cpus())) if context is not None else int(torch.get_num_threads())


def _worker_source(uri: str) -> ImageSource:
    from monitor.core.sources import open_source

    with _CACHE_LOCK:
        source = _SOURCES.get(uri)
        if source is None:
            source = _SOURCES[uri] = open_source(uri)
    return source


def _predict_partition(job: _Job, progress: Any, frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body: predictions for each incoming batch of (row, image_path, label)."""
    from evaluation.predict import predict_images

    loaded: LoadedModel | None = None
    for frame in frames:
        if loaded is None:  # on the first rows: a partition the hash left empty loads nothing
            loaded = worker_model(job.model_dir, job.device)
            if loaded.model_id != job.model_id:
                raise ModelError(
                    f"this executor's model {job.model_dir} is {loaded.model_id}, the driver's is {job.model_id}: "
                    "executors must read the same model files"
                )
            source = _worker_source(job.source_uri)
        items = list(zip(frame["image_path"].astype(str), frame["label"].astype(str)))
        out = predict_images(
            items,
            source.read,
            loaded,
            date=job.date,
            batch_size=job.batch_size,
            fetch_workers=job.fetch_workers,
            top_k=job.top_k,
            max_pixels=job.max_pixels,
            compile_model=job.compile_model,
        )
        out = out.drop(columns="draw")  # not in SPARK_SCHEMA: the driver sets it
        out.insert(0, "row", frame["row"].to_numpy(dtype="int64"))
        if progress is not None:
            progress.add(len(out))
        yield out


def partitions_for(rows: int, parallelism: int, batch_size: int) -> int:
    """How many partitions ``rows`` items get: every task slot busy, then about BATCHES_PER_PARTITION batches each."""
    if rows <= 0:
        return 1
    return max(1, min(rows, max(parallelism, math.ceil(rows / (batch_size * BATCHES_PER_PARTITION)))))


def predict_with_spark(
    spark: SparkSession,
    items_df: pd.DataFrame,
    *,
    source_uri: str,
    model_dir: Path | str,
    device: str,
    date: str,
    batch_size: int,
    top_k: int,
    max_pixels: int,
    fetch_workers: int,
    compile_model: bool = False,
    partitions: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Predict every row of ``items_df`` (columns ``image_path``, ``label``) as a Spark job; same table as ``predict_images``.

    The rows are spread over ``partitions`` partitions (default: :func:`partitions_for`); each
    task reads its images from ``source_uri`` and predicts them with the worker's cached model.
    Rows come back in ``items_df``'s order, failed rows included (``status="failed"``, ``error``
    the reason). ``progress(n)`` is called on the driver as tasks finish (n items each).

    Raises :class:`ModelError` (model directory unusable, or executors see other weights),
    :class:`DataError` (columns missing), :class:`SparkError` (the job failed).
    """
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    from evaluation.model import model_identity

    missing = {"image_path", "label"} - set(items_df.columns)
    if missing:
        raise DataError(
            f"the items to predict lack the column(s) {', '.join(sorted(missing))}; got {list(items_df.columns)}"
        )
    if batch_size < 1 or fetch_workers < 1 or top_k < 1:
        raise ConfigError(
            f"batch_size, fetch_workers and top_k must be >= 1, got {batch_size}, {fetch_workers}, {top_k}"
        )
    model_path = Path(model_dir).expanduser().resolve()
    if not model_path.is_dir():
        raise ModelError(
            f"model directory {model_path} does not exist (set MONITOR_MODEL_DIR to a Hugging Face model directory)"
        )
    # The driver fixes the identity; each executor checks that its copy of the weights is the same.
    model_id = model_identity(model_path)
    rows = len(items_df)
    if rows == 0:
        return predictions_frame([])
    job = _Job(
        source_uri=source_uri,
        model_dir=str(model_path),
        device=device,
        model_id=model_id,
        date=date,
        batch_size=batch_size,
        top_k=top_k,
        max_pixels=max_pixels,
        fetch_workers=fetch_workers,
        compile_model=compile_model,
    )
    count = partitions or partitions_for(rows, spark.sparkContext.defaultParallelism, batch_size)
    items = pd.DataFrame(
        {
            "row": range(rows),
            "image_path": items_df["image_path"].astype(str).to_numpy(),
            "label": items_df["label"].astype(str).to_numpy(),
        }
    )
    accumulator = spark.sparkContext.accumulator(0) if progress is not None else None
    try:
        frame = spark.createDataFrame(items, "row long, image_path string, label string").repartition(count, "row")
        job_frame = frame.mapInPandas(functools.partial(_predict_partition, job, accumulator), SPARK_SCHEMA)
        result = _collect(job_frame, accumulator, progress)
    except (PySparkException, Py4JError) as exc:
        raise _translate(str(exc)) from exc
    result = result.sort_values("row", kind="stable").drop(columns="row").reset_index(drop=True)
    for column in ("topk_labels", "topk_scores"):
        result[column] = [list(value) if value is not None else [] for value in result[column]]
    for column in ("pred", "error"):
        result[column] = result[column].astype(object).where(result[column].notna(), None)
    result["confidence"] = result["confidence"].astype("float64")
    result["draw"] = DRAW_BASE  # the caller marks the follow-up rows of its sample
    return result[list(COLUMNS)]


def _collect(job_frame: Any, accumulator: Any, progress: Callable[[int], None] | None) -> pd.DataFrame:
    """``toPandas()``, reporting the accumulator's growth to ``progress`` from a polling thread meanwhile."""
    if accumulator is None or progress is None:
        return job_frame.toPandas()
    done = threading.Event()
    reported = 0

    def poll() -> None:
        nonlocal reported
        while not done.wait(0.5):
            value = int(accumulator.value)
            if value > reported:
                progress(value - reported)
                reported = value

    watcher = threading.Thread(target=poll, name="spark-progress", daemon=True)
    watcher.start()
    try:
        return job_frame.toPandas()
    finally:
        done.set()
        watcher.join()
        final = int(accumulator.value)
        if final > reported:
            progress(final - reported)


# Exceptions raised in a worker reach the driver as text; keep the service's own error types.
_WORKER_ERROR = re.compile(
    r"(?:monitor\.errors\.|evaluation\.\w+\.)?(ModelError|SourceError|DataError|ConfigError|SparkError): (.+)"
)
_ERROR_TYPES: dict[str, type[MonitorError]] = {
    "ModelError": ModelError,
    "SourceError": SourceError,
    "DataError": DataError,
    "ConfigError": ConfigError,
    "SparkError": SparkError,
}


def _translate(text: str) -> MonitorError:
    """The service error a failed job's text names (the last one raised in a worker), else a :class:`SparkError`."""
    found = _WORKER_ERROR.findall(text)
    if found:
        name, message = found[-1]
        return _ERROR_TYPES[name](message.strip())
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return SparkError(f"the Spark predict job failed: {(lines[-1] if lines else 'no message')[:300]}")
