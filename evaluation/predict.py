"""Batched inference, the run loop: ``(image_path, label)`` items -> fetched bytes -> model -> the predictions table.

:func:`predict_images` fetches each batch's bytes on a thread pool, decodes them
(:mod:`evaluation.imaging`) and turns them into pixel values (:mod:`evaluation.preprocessing`, the
processor or the tensor path) on a background thread while the model runs on the previous batch
(:func:`forward_probs`: on the model's device, channels_last and autocast on CUDA). An image that
cannot be fetched or decoded becomes a failed row (:mod:`evaluation.predictions`) and the run goes
on. The Spark engine (:mod:`evaluation.spark_engine`) runs this same loop on each partition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from evaluation.imaging import ImageDecodeError, decode_to_images, decode_to_tensors
from evaluation.model import LoadedModel
from evaluation.predictions import FETCH_FAILED, failed_row, ok_row, predictions_frame
from evaluation.preprocessing import PathChoice, TensorPreprocess, processor_pixel_values, resolve_path, to_device
from monitor.errors import ConfigError, MonitorError

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
class _Prepared:
    """One batch after fetch, decode and preprocessing: what the model still has to do."""

    failures: dict[int, str]  # position in the batch -> reason
    ok_positions: list[int]
    pixel_values: torch.Tensor | None


def _fetch(read: Callable[[str], bytes], image_path: str) -> bytes | str:
    try:
        return read(image_path)
    except (MonitorError, OSError) as exc:
        log.warning("could not read %s: %s", image_path, exc)
        return FETCH_FAILED


def _prepare(
    contents: Sequence[bytes | str],
    paths: Sequence[str],
    loaded: LoadedModel,
    chosen: Literal["processor", "tensor"],
    spec: TensorPreprocess | None,
    max_pixels: int,
    decode_pool: ThreadPoolExecutor | None,
) -> _Prepared:
    """Decode and preprocess one batch's bytes; a failure reason (``str``) in ``contents`` stays that row's failure."""
    failures: dict[int, str] = {}
    ok_positions: list[int] = []
    images: list[Any] = []

    def note(position: int, error: ImageDecodeError) -> None:
        log.warning("could not decode %s: %s", paths[position], error)
        failures[position] = error.reason

    readable = [(i, c) for i, c in enumerate(contents) if isinstance(c, (bytes, bytearray))]
    for i, content in enumerate(contents):
        if not isinstance(content, (bytes, bytearray)):
            failures[i] = content if isinstance(content, str) else FETCH_FAILED
    blobs = [bytes(c) for _, c in readable]
    decoded: Sequence[Any]
    if chosen == "tensor":
        decoded = decode_to_tensors(blobs, max_pixels=max_pixels, device=loaded.device, pool=decode_pool)
    else:
        decoded = decode_to_images(blobs, max_pixels=max_pixels, pool=decode_pool)
    for (position, _), result in zip(readable, decoded):
        if isinstance(result, ImageDecodeError):
            note(position, result)
        else:
            ok_positions.append(position)
            images.append(result)
    if not images:
        return _Prepared(failures, ok_positions, None)
    if chosen == "tensor":
        assert spec is not None
        pixel_values = spec(images, loaded.device)
    else:
        pixel_values = processor_pixel_values(loaded, images)
    return _Prepared(failures, ok_positions, pixel_values)


def _chunks(count: int, size: int) -> Iterator[range]:
    for start in range(0, count, size):
        yield range(start, min(start + size, count))


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
    threads call it concurrently and keep the bytes in memory. Batches of ``batch_size`` are
    decoded and preprocessed on a background thread while the model runs on the previous one.
    A fetch failure (``MonitorError``/``OSError`` from ``read``) or a decode failure gives a row
    with ``status="failed"``, ``error`` = the reason (``fetch_failed`` or one of
    :data:`evaluation.imaging.DECODE_REASONS`) and no prediction; the run goes on. Rows come in
    the order of ``items``. ``progress(n)`` is called after each batch with the number of items
    it finished. ``path``/``precision``: see :func:`evaluation.preprocessing.resolve_path`,
    :func:`autocast_dtype`; ``compile_model`` runs the network through ``torch.compile`` (worth it
    on GPU hosts only).
    """
    if batch_size < 1 or fetch_workers < 1 or top_k < 1:
        raise ConfigError(f"batch_size, fetch_workers and top_k must be >= 1, got {batch_size}, {fetch_workers}, {top_k}")
    chosen = resolve_path(loaded, path)
    spec = TensorPreprocess.from_processor(loaded.processor) if chosen == "tensor" else None
    network: Callable[..., Any] | None = None
    if compile_model:
        network = torch.compile(loaded.model, dynamic=False)
    rows: list[dict[str, Any]] = []
    batches = list(_chunks(len(items), batch_size))
    with ThreadPoolExecutor(fetch_workers, thread_name_prefix="fetch") as fetch_pool, ThreadPoolExecutor(
        1, thread_name_prefix="prepare"
    ) as prepare_pool:

        def submit(batch: range) -> Future[_Prepared]:
            paths = [items[i][0] for i in batch]
            fetched = [fetch_pool.submit(_fetch, read, p) for p in paths]
            # Decoding (Pillow releases the GIL) fans out on the fetch threads too.
            return prepare_pool.submit(
                lambda: _prepare([f.result() for f in fetched], paths, loaded, chosen, spec, max_pixels, fetch_pool)
            )

        pending = submit(batches[0]) if batches else None
        for number, batch in enumerate(batches):
            assert pending is not None
            prepared = pending.result()
            # Start fetching and decoding the next batch before this one's forward pass.
            pending = submit(batches[number + 1]) if number + 1 < len(batches) else None
            probs = (
                forward_probs(loaded, prepared.pixel_values, precision=precision, model=network, pad_to=batch_size if compile_model else None).numpy()
                if prepared.pixel_values is not None
                else np.zeros((0, len(loaded.labels)))
            )
            by_position = dict(zip(prepared.ok_positions, probs))
            for position, index in enumerate(batch):
                image_path, label = items[index]
                if position in by_position:
                    rows.append(ok_row(date, image_path, label, by_position[position], loaded.labels, loaded.model_id, top_k))
                else:
                    rows.append(failed_row(date, image_path, label, loaded.model_id, prepared.failures[position]))
            if progress is not None:
                progress(len(batch))
    return predictions_frame(rows)
