"""Batched inference, the run loop: ``(image_path, label)`` items -> fetched bytes -> model -> the predictions table.

:func:`predict_images` fetches image bytes on a thread pool with many reads in flight (object-store
latency, not bandwidth, bounds one read; :func:`fetching`, bounded by :func:`in_flight_limit`), decodes
them (:mod:`evaluation.imaging`) and turns them into pixel values (:mod:`evaluation.preprocessing`, the
processor or the tensor path) on a background thread while the model runs on the previous batch
(:func:`forward_probs`: on the model's device, channels_last and autocast on CUDA). An image that
cannot be fetched or decoded becomes a failed row (:mod:`evaluation.predictions`) and the run goes
on. The Spark engine (:mod:`evaluation.spark_engine`) runs this same loop on each partition.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from evaluation.imaging import ImageDecodeError, decode_to_images, decode_to_tensors
from evaluation.model import LoadedModel
from evaluation.predictions import FETCH_FAILED, failed_row, ok_row, predictions_frame
from evaluation.preprocessing import PathChoice, TensorPreprocess, processor_pixel_values, resolve_path, to_device
from monitor.core.errors import ConfigError, MonitorError

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]


# --- one batch: pixel values -> probabilities ---------------------------------------------------


def autocast_dtype(device: torch.device, precision: Precision = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``auto`` is bf16 (else fp16) on CUDA and fp32 on CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def forward_probs(
    loaded: LoadedModel,
    pixel_values: torch.Tensor,
    *,
    precision: Precision = "auto",
    model: Callable[..., Any] | None = None,
    pad_to: int | None = None,
) -> torch.Tensor:
    """Softmax probabilities (float32, CPU, shape N x labels) for a batch of pixel values.

    Runs under ``torch.inference_mode``, channels_last on CUDA, autocast per ``precision``.
    ``model`` overrides ``loaded.model`` (e.g. its ``torch.compile`` form); ``pad_to`` pads a short
    last batch so a compiled model sees one shape.
    """
    network = model if model is not None else loaded.model
    count = pixel_values.shape[0]
    dtype = autocast_dtype(loaded.device, precision)
    with torch.inference_mode():
        inputs = to_device(pixel_values, loaded.device)
        if pad_to is not None and count < pad_to:
            inputs = torch.cat([inputs, inputs[-1:].expand(pad_to - count, -1, -1, -1)])
        if loaded.device.type == "cuda":
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=loaded.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = network(pixel_values=inputs).logits
        return logits[:count].float().softmax(dim=-1).cpu()


# --- one batch: bytes -> pixel values, failures per image --------------------------------------


@dataclass
class _Decoded:
    """One batch after fetch and decode: failures per position and the decoded images of the rest."""

    failures: dict[int, str]  # position in the batch -> reason
    ok_positions: list[int]
    images: list[Any]  # RGB PIL images (processor path) or uint8 CHW tensors (tensor path), one per ok position


def _fetch(read: Callable[[str], bytes], image_path: str) -> bytes | str:
    try:
        return read(image_path)
    except (MonitorError, OSError) as exc:
        log.warning("could not read %s: %s", image_path, exc)
        return FETCH_FAILED


def decode_batch(
    contents: Sequence[bytes | str],
    paths: Sequence[str],
    *,
    chosen: Literal["processor", "tensor"],
    max_pixels: int,
    device: torch.device,
    pool: ThreadPoolExecutor | None,
) -> _Decoded:
    """Decode one batch's bytes (on ``pool``'s threads); a failure reason (``str``) in ``contents`` stays that row's failure."""
    failures: dict[int, str] = {}
    ok_positions: list[int] = []
    images: list[Any] = []
    readable = [(i, c) for i, c in enumerate(contents) if isinstance(c, (bytes, bytearray))]
    for i, content in enumerate(contents):
        if not isinstance(content, (bytes, bytearray)):
            failures[i] = content if isinstance(content, str) else FETCH_FAILED
    blobs = [bytes(c) for _, c in readable]
    decoded: Sequence[Any]
    if chosen == "tensor":
        decoded = decode_to_tensors(blobs, max_pixels=max_pixels, device=device, pool=pool)
    elif pool is not None and len(blobs) > 1:
        # One task per decode thread, not per image: with dozens of fetch threads about, each task
        # handed over is a wait for the GIL.
        parts = min(len(blobs), decode_workers())
        cuts = [len(blobs) * k // parts for k in range(parts + 1)]
        chunks = [blobs[cuts[k] : cuts[k + 1]] for k in range(parts)]
        decoded = [
            image
            for chunk in pool.map(functools.partial(decode_to_images, max_pixels=max_pixels), chunks)
            for image in chunk
        ]
    else:
        decoded = decode_to_images(blobs, max_pixels=max_pixels)
    for (position, _), result in zip(readable, decoded):
        if isinstance(result, ImageDecodeError):
            log.warning("could not decode %s: %s", paths[position], result)
            failures[position] = result.reason
        else:
            ok_positions.append(position)
            images.append(result)
    return _Decoded(failures, ok_positions, images)


def _chunks(count: int, size: int) -> Iterator[range]:
    for start in range(0, count, size):
        yield range(start, min(start + size, count))


# --- fetching: many reads in flight, in order, bounded -----------------------------------------


def in_flight_limit(batch_size: int, fetch_workers: int) -> int:
    """Reads submitted and not yet handed to the decoder, at most: two batches, or twice the workers if that is more.

    When a batch is handed over, ``limit - batch_size`` reads are still under way, never fewer than
    ``fetch_workers``: every fetch thread stays busy while the batch is decoded and the model runs.
    Memory: this many images' bytes, plus the batches being decoded and run (a few batches in all,
    never the whole sample).
    """
    return max(2 * batch_size, 2 * fetch_workers)


def decode_workers() -> int:
    """Threads decoding images (Pillow releases the GIL while it decodes): one per CPU this process may use."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return max(1, len(usable) if usable else (os.cpu_count() or 1))


def fetch_batches(
    paths: Sequence[str], read: Callable[[str], bytes], pool: ThreadPoolExecutor, *, batch_size: int, limit: int
) -> Generator[list[bytes | str], None, None]:
    """Each batch of ``batch_size`` paths (the last one shorter) as its bytes or ``fetch_failed``, in order, read on ``pool``.

    At most ``limit`` reads (never fewer than one batch) are submitted and not yet handed over.
    As a batch is handed over, reads for as many next paths are submitted: the next ones run while
    the consumer works on it, and a slow consumer stops the fetching instead of filling memory
    (back-pressure). The consumer's thread wakes once per batch, not once per read (with dozens of
    fetch threads, every wake-up is a wait for the GIL). Closing the iterator cancels the reads
    not yet started.
    """
    if limit < 1 or batch_size < 1:
        raise ConfigError(f"batch_size and the in-flight limit must be >= 1, got {batch_size}, {limit}")
    limit = max(limit, batch_size)
    pending: deque[Future[bytes | str]] = deque()
    upcoming = iter(paths)

    def top_up() -> None:
        for path in itertools.islice(upcoming, limit - len(pending)):
            pending.append(pool.submit(_fetch, read, path))

    try:
        top_up()
        for batch in _chunks(len(paths), batch_size):
            futures = [pending.popleft() for _ in batch]
            wait(futures)
            top_up()  # the batch is handed over: as many next reads start while the consumer works on it
            yield [future.result() for future in futures]
    finally:
        for future in pending:
            future.cancel()


@contextlib.contextmanager
def fetching(
    paths: Sequence[str], read: Callable[[str], bytes], *, batch_size: int, fetch_workers: int
) -> Iterator[tuple[Iterator[list[bytes | str]], ThreadPoolExecutor]]:
    """The fetch stage of :func:`predict_images`: ``(batches of contents, decode pool)``.

    ``fetch_workers`` threads run ``read``; at most :func:`in_flight_limit` reads are ahead of the
    consumer; the decode pool (:func:`decode_workers` threads) is for :func:`decode_batch`. On exit
    the reads not yet started are cancelled.
    """
    fetch_pool = ThreadPoolExecutor(fetch_workers, thread_name_prefix="fetch")
    decode_pool = ThreadPoolExecutor(decode_workers(), thread_name_prefix="decode")
    batches = fetch_batches(
        paths, read, fetch_pool, batch_size=batch_size, limit=in_flight_limit(batch_size, fetch_workers)
    )
    try:
        yield batches, decode_pool
    finally:
        batches.close()
        fetch_pool.shutdown(wait=True, cancel_futures=True)
        decode_pool.shutdown(wait=True, cancel_futures=True)


# --- whole runs ---------------------------------------------------------------------------------


def predict_images(
    items: Sequence[tuple[str, str]],
    read: Callable[[str], bytes],
    loaded: LoadedModel,
    *,
    date: str,
    batch_size: int,
    fetch_workers: int,
    top_k: int,
    max_pixels: int,
    progress: Callable[[int], None] | None = None,
    path: PathChoice = "auto",
    precision: Precision = "auto",
    compile_model: bool = False,
) -> pd.DataFrame:
    """Predict every ``(image_path, label)`` in ``items`` and return the predictions table (:data:`evaluation.predictions.COLUMNS`).

    ``read(image_path) -> bytes`` fetches an image (a source's ``read``); ``fetch_workers``
    threads call it concurrently, continuously, at most :func:`in_flight_limit` reads ahead of the
    decoder (:func:`fetching`), so memory holds a few batches' bytes, never the sample's. Batches of
    ``batch_size`` are decoded (one thread per CPU) and preprocessed on a background thread while
    the model runs on the previous one.
    A fetch failure (``MonitorError``/``OSError`` from ``read``) or a decode failure gives a row
    with ``status="failed"``, ``error`` = the reason (``fetch_failed`` or one of
    :data:`evaluation.imaging.DECODE_REASONS`) and no prediction; the run goes on. Rows come in
    the order of ``items``. ``progress(n)`` is called after each batch with the number of items
    it finished. ``path``/``precision``: see :func:`evaluation.preprocessing.resolve_path`,
    :func:`autocast_dtype`; ``compile_model`` runs the network through ``torch.compile`` (worth it
    on GPU hosts only).
    """
    return predict_images_multi(
        items,
        read,
        [loaded],
        date=date,
        batch_size=batch_size,
        fetch_workers=fetch_workers,
        top_k=top_k,
        max_pixels=max_pixels,
        progress=progress,
        path=path,
        precision=precision,
        compile_model=compile_model,
    )[0]


def preprocessing_key(loaded: LoadedModel, chosen: str) -> str:
    """What decides a model's pixel values: the preprocessing path and its image processor's configuration.

    Models with equal keys (production and a retrained candidate usually) share one preprocessing per batch.
    """
    processor = loaded.processor
    config = processor.to_dict() if hasattr(processor, "to_dict") else repr(processor)
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k not in ("processor_class", "_processor_class")}
    return chosen + ":" + json.dumps(config, sort_keys=True, default=str)


def predict_images_multi(
    items: Sequence[tuple[str, str]],
    read: Callable[[str], bytes],
    models: Sequence[LoadedModel],
    *,
    date: str,
    batch_size: int,
    fetch_workers: int,
    top_k: int,
    max_pixels: int,
    progress: Callable[[int], None] | None = None,
    path: PathChoice = "auto",
    precision: Precision = "auto",
    compile_model: bool = False,
) -> list[pd.DataFrame]:
    """:func:`predict_images` for several models on the same images: one predictions table per model, in ``models`` order.

    The images are fetched and decoded once; each batch is preprocessed once per distinct image
    processor configuration (:func:`preprocessing_key`; a candidate with another input size or
    normalisation gets its own pixel values from the same decoded images) and run through every model.
    Every table lists the same paths in the same order, and a fetch or decode failure fails that
    image for every model. Every model must be on the same device.
    """
    if batch_size < 1 or fetch_workers < 1 or top_k < 1:
        raise ConfigError(
            f"batch_size, fetch_workers and top_k must be >= 1, got {batch_size}, {fetch_workers}, {top_k}"
        )
    if not models:
        raise ConfigError("predict_images_multi needs at least one model")
    devices = {str(m.device) for m in models}
    if len(devices) > 1:
        raise ConfigError(f"models {[m.model_id for m in models]} sit on different devices {sorted(devices)}")
    choices = [resolve_path(m, path) for m in models]
    # One decode for all: tensors only when every model takes the tensor path, else PIL images for all.
    chosen: Literal["processor", "tensor"] = "tensor" if all(c == "tensor" for c in choices) else "processor"
    lead = models[0]
    keys = [preprocessing_key(m, chosen) for m in models]
    first_of_key = {key: models[keys.index(key)] for key in dict.fromkeys(keys)}
    specs = {
        key: (TensorPreprocess.from_processor(m.processor) if chosen == "tensor" else None)
        for key, m in first_of_key.items()
    }
    networks: list[Callable[..., Any] | None] = [
        torch.compile(m.model, dynamic=False) if compile_model else None for m in models
    ]
    rows: list[list[dict[str, Any]]] = [[] for _ in models]
    paths = [image_path for image_path, _ in items]
    batches = list(_chunks(len(items), batch_size))
    with (
        fetching(paths, read, batch_size=batch_size, fetch_workers=fetch_workers) as (contents, decode_pool),
        ThreadPoolExecutor(1, thread_name_prefix="prepare") as prepare_pool,
    ):

        def prepare(batch: range) -> tuple[_Decoded, dict[str, torch.Tensor | None]]:
            # Runs on the one prepare thread: the fetch stream is only ever advanced from there.
            decoded = decode_batch(
                next(contents),
                paths[batch.start : batch.stop],
                chosen=chosen,
                max_pixels=max_pixels,
                device=lead.device,
                pool=decode_pool,
            )
            pixels: dict[str, torch.Tensor | None] = {}
            for key, model in first_of_key.items():
                if not decoded.images:
                    pixels[key] = None
                elif chosen == "tensor":
                    spec = specs[key]
                    assert spec is not None
                    pixels[key] = spec(decoded.images, model.device)
                else:
                    pixels[key] = processor_pixel_values(model, decoded.images)
            return decoded, pixels

        pending = prepare_pool.submit(prepare, batches[0]) if batches else None
        for number, batch in enumerate(batches):
            assert pending is not None
            decoded, pixels = pending.result()
            # Decode and preprocess the next batch (its bytes are already arriving) during this one's forward passes.
            pending = prepare_pool.submit(prepare, batches[number + 1]) if number + 1 < len(batches) else None
            for m, (loaded, key, network) in enumerate(zip(models, keys, networks)):
                pixel_values = pixels[key]
                probs = (
                    forward_probs(
                        loaded,
                        pixel_values,
                        precision=precision,
                        model=network,
                        pad_to=batch_size if compile_model else None,
                    ).numpy()
                    if pixel_values is not None
                    else np.zeros((0, len(loaded.labels)))
                )
                by_position = dict(zip(decoded.ok_positions, probs))
                for position, index in enumerate(batch):
                    image_path, label = items[index]
                    if position in by_position:
                        rows[m].append(
                            ok_row(
                                date, image_path, label, by_position[position], loaded.labels, loaded.model_id, top_k
                            )
                        )
                    else:
                        rows[m].append(failed_row(date, image_path, label, loaded.model_id, decoded.failures[position]))
            if progress is not None:
                progress(len(batch))
    return [predictions_frame(model_rows) for model_rows in rows]
