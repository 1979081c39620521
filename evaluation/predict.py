"""Batched inference: image bytes -> decoded -> preprocessed -> logits -> the predictions table (CPU and GPU paths).

Two preprocessing paths give the same predictions:

- ``processor``: the model's own Hugging Face image processor on PIL images (the reference, and
  the path for any processor the tensor path cannot reproduce).
- ``tensor``: the processor's configuration (resize by shortest edge or to a fixed size,
  ``crop_pct``/center crop, bilinear/bicubic/nearest, rescale, mean/std) reproduced with torch ops
  on uint8 tensors, so it runs on the GPU next to the model. On CUDA, plain JPEGs are decoded by
  nvjpeg (``torchvision.io.decode_jpeg``) when torchvision imports, everything else by Pillow;
  the batch is moved through pinned memory, laid out channels_last and run under autocast
  (bf16, else fp16).

``path="auto"`` picks ``tensor`` whenever the processor is one it can reproduce, on the GPU and
on the CPU alike: pixel values stay within one grey level of the processor's (Pillow and torch
round their resampling differently), predictions are the same, and on the CPU it is several times
faster than the processor's per-image Python (measured by ``benchmarks/bench_predict.py``). The
pieces are plain functions, so tests compare the two paths on the CPU, and a Spark
``mapInPandas`` UDF can call :func:`predict_frame` on a pandas batch.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image

from evaluation.imaging import ImageDecodeError, decode_image, probe_image
from evaluation.model import LoadedModel
from monitor.files import atomic_write
from monitor.errors import ConfigError, DataError, ModelError, MonitorError

log = logging.getLogger(__name__)

#: The predictions table, in this column order (docs/ARCHITECTURE.md, ``predictions/D.parquet``).
COLUMNS: tuple[str, ...] = (
    "date",
    "image_path",
    "label",
    "pred",
    "confidence",
    "topk_labels",
    "topk_scores",
    "model_id",
    "status",
    "error",
    "draw",
)
#: ``draw`` of a row: a base image of the day's sample, or a follow-up image (monitor.sampling); files
#: written before follow-up sampling lack the column and read back as ``base``.
DRAW_BASE = "base"
PREDICTIONS_SCHEMA = pa.schema(
    [
        pa.field("date", pa.string(), nullable=False),
        pa.field("image_path", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("pred", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("topk_labels", pa.list_(pa.string())),
        pa.field("topk_scores", pa.list_(pa.float64())),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("draw", pa.string(), nullable=False),
    ]
)
#: ``error`` of a row whose bytes could not be read from the source (decode failures carry
#: :data:`evaluation.imaging.DECODE_REASONS`).
FETCH_FAILED = "fetch_failed"

PathChoice = Literal["auto", "processor", "tensor"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]

_RESAMPLE_BY_PIL = {0: "nearest", 2: "bilinear", 3: "bicubic"}
# Processor classes whose steps are exactly resize -> (center crop) -> rescale -> normalise.
_REPRODUCIBLE = ("ConvNextImageProcessor", "ViTImageProcessor", "BitImageProcessor", "DeiTImageProcessor")


# --------------------------------------------------------------------------------------------
# The processor's configuration as torch ops
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorPreprocess:
    """An image processor's configuration, applied with torch ops to uint8 CHW tensors on any device.

    ``resize``: ``("shortest", edge)`` scales the short side to ``edge`` keeping the aspect ratio
    (the long side truncated to an int, as transformers does), ``("fixed", h, w)`` warps to h x w.
    ``crops``: center crops applied in turn (zero padding where the image is smaller), as
    transformers' numpy crop; ConvNext crops inside its resize and may crop again, and two integer
    crops do not always equal one.
    """

    resize: tuple[Any, ...] | None
    crops: tuple[tuple[int, int], ...]
    resample: Literal["nearest", "bilinear", "bicubic"]
    rescale: float | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None

    @classmethod
    def from_processor(cls, processor: Any) -> "TensorPreprocess":
        """Read a ConvNext/ViT/Bit/DeiT-style processor's settings; ModelError for anything it cannot reproduce."""
        kind = type(processor).__name__.removesuffix("Pil").removesuffix("Fast")
        if kind not in _REPRODUCIBLE:
            raise ModelError(f"the tensor preprocessing path does not reproduce {type(processor).__name__}; use the processor path")
        if getattr(processor, "do_pad", False):
            raise ModelError(f"the tensor preprocessing path does not reproduce padding ({type(processor).__name__}.do_pad)")
        resample = _resample_name(getattr(processor, "resample", 2))
        size = processor.size
        resize: tuple[Any, ...] | None = None
        crops: list[tuple[int, int]] = []
        if processor.do_resize:
            shortest = getattr(size, "shortest_edge", None)
            if kind == "ConvNextImageProcessor":
                if not shortest:
                    raise ModelError(f"ConvNext processor size {size} has no shortest_edge")
                if shortest < 384:
                    resize = ("shortest", int(shortest / processor.crop_pct))
                    crops.append((int(shortest), int(shortest)))
                else:
                    resize = ("fixed", int(shortest), int(shortest))
            elif shortest and not getattr(size, "longest_edge", None):
                resize = ("shortest", int(shortest))
            elif getattr(size, "height", None) and getattr(size, "width", None):
                resize = ("fixed", int(size.height), int(size.width))
            else:
                raise ModelError(f"the tensor preprocessing path does not reproduce resize size {size}")
        if getattr(processor, "do_center_crop", False):
            crop_size = processor.crop_size
            crops.append((int(crop_size.height), int(crop_size.width)))
        mean = std = None
        if processor.do_normalize:
            mean = _triple(processor.image_mean)
            std = _triple(processor.image_std)
        return cls(
            resize=resize,
            crops=tuple(crops),
            resample=resample,
            rescale=float(processor.rescale_factor) if processor.do_rescale else None,
            mean=mean,
            std=std,
        )

    def __call__(self, images: Sequence[torch.Tensor], device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 CHW tensors (any sizes, any device) -> float32 NCHW pixel values on ``device``.

        Same-sized images are resized together; CPU tensors reach a CUDA device through pinned memory.
        """
        target = torch.device(device)
        if not images:
            raise ValueError("no images to preprocess")
        # Same-sized images on the same device resize as one batch (nvjpeg's output is on the GPU, Pillow's on the CPU).
        groups: dict[tuple[int, int, str], list[int]] = {}
        for index, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
                raise ValueError(f"image {index}: expected a uint8 3xHxW tensor, got {image.dtype} {tuple(image.shape)}")
            groups.setdefault((int(image.shape[1]), int(image.shape[2]), str(image.device)), []).append(index)
        out: torch.Tensor | None = None
        for (height, width, _), members in groups.items():
            batch = torch.stack([images[i] for i in members]) if len(members) > 1 else images[members[0]].unsqueeze(0)
            batch = _to_device(batch, target).float()
            batch = self._resize(batch, height, width)
            for crop in self.crops:
                batch = _center_crop(batch, *crop)
            if out is None:
                out = torch.empty((len(images), 3, batch.shape[2], batch.shape[3]), dtype=torch.float32, device=target)
            if batch.shape[2:] != out.shape[2:]:
                raise ModelError(f"images preprocess to different sizes {tuple(batch.shape[2:])} and {tuple(out.shape[2:])}: this processor needs a crop")
            out[members] = batch
        assert out is not None
        if self.rescale is not None:
            out.mul_(self.rescale)
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean, dtype=torch.float32, device=target).view(1, 3, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=target).view(1, 3, 1, 1)
            out.sub_(mean).div_(std)
        return out

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Size after resize (and crop) of a ``height`` x ``width`` image."""
        return self.crops[-1] if self.crops else self._resized_size(height, width)

    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        if self.resize is None:
            return height, width
        if self.resize[0] == "fixed":
            return int(self.resize[1]), int(self.resize[2])
        edge = int(self.resize[1])
        # transformers' get_resize_output_image_size(default_to_square=False): the long side is truncated.
        if width <= height:
            return int(edge * height / width), edge
        return edge, int(edge * width / height)

    def _resize(self, batch: torch.Tensor, height: int, width: int) -> torch.Tensor:
        new_size = self._resized_size(height, width)
        if new_size == (height, width):
            return batch  # Pillow returns an unchanged copy for a same-size resize
        if self.resample == "nearest":
            resized = F.interpolate(batch, size=new_size, mode="nearest-exact")
        else:
            # antialias=True uses Pillow's kernels (bicubic a=-0.5, widened when shrinking).
            resized = F.interpolate(batch, size=new_size, mode=self.resample, align_corners=False, antialias=True)
        # The processor resizes 8-bit images with Pillow, which rounds and clips back to 0..255.
        return resized.round_().clamp_(0, 255)


def _resample_name(value: Any) -> Literal["nearest", "bilinear", "bicubic"]:
    raw = getattr(value, "value", value)
    if isinstance(raw, str) and raw in {"nearest", "bilinear", "bicubic"}:
        return raw  # type: ignore[return-value]  # torchvision InterpolationMode
    try:
        return _RESAMPLE_BY_PIL[int(raw)]  # type: ignore[return-value]
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"the tensor preprocessing path does not reproduce resample={value!r}; use the processor path") from None


def _triple(values: Any) -> tuple[float, float, float]:
    if isinstance(values, (int, float)):
        return (float(values),) * 3  # type: ignore[return-value]
    items = tuple(float(v) for v in values)
    if len(items) != 3:
        raise ModelError(f"expected 3 channel statistics, got {values!r}")
    return items  # type: ignore[return-value]


def _center_crop(batch: torch.Tensor, crop_height: int, crop_width: int) -> torch.Tensor:
    height, width = batch.shape[2], batch.shape[3]
    if crop_height > height or crop_width > width:
        # transformers pads a too-small image with zeros, centred (ceil), then crops.
        pad_top = -(-(max(crop_height, height) - height) // 2)
        pad_left = -(-(max(crop_width, width) - width) // 2)
        new_height, new_width = max(crop_height, height), max(crop_width, width)
        batch = F.pad(batch, (pad_left, new_width - width - pad_left, pad_top, new_height - height - pad_top))
        height, width = new_height, new_width
    top = (height - crop_height) // 2
    left = (width - crop_width) // 2
    return batch[:, :, top : top + crop_height, left : left + crop_width]


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    if batch.device == device:
        return batch
    if device.type == "cuda" and batch.device.type == "cpu":
        return batch.contiguous().pin_memory().to(device, non_blocking=True)
    return batch.to(device)


def image_to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """An RGB PIL image or uint8 HWC array -> uint8 CHW tensor (a view, no copy, for arrays)."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got an array of shape {array.shape}")
    if not array.flags.writeable:
        array = array.copy()  # torch wants writable memory; PIL's buffers are read-only
    return torch.from_numpy(array).permute(2, 0, 1)


# --------------------------------------------------------------------------------------------
# Decoding: Pillow everywhere, nvjpeg for plain JPEGs on CUDA
# --------------------------------------------------------------------------------------------


@functools.cache
def _gpu_jpeg_decoder() -> Callable[..., Any] | None:
    """torchvision's nvjpeg ``decode_jpeg`` if torchvision imports and works here, else None (then Pillow decodes)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except (ImportError, RuntimeError, OSError, AttributeError) as exc:
        # The CPU machines' only torchvision builds are CUDA builds that fail to import (see ENVIRONMENT.md).
        log.info("torchvision unavailable (%s): JPEGs are decoded with Pillow", exc)
        return None
    return functools.partial(decode_jpeg, mode=ImageReadMode.RGB)


def decode_to_tensors(
    contents: Sequence[bytes],
    *,
    max_pixels: int,
    device: torch.device | str = "cpu",
    gpu_decode: bool | None = None,
    pool: ThreadPoolExecutor | None = None,
) -> list[torch.Tensor | ImageDecodeError]:
    """Decode each image to a uint8 CHW tensor (on ``device`` when nvjpeg decoded it, else on the CPU), or its error.

    Upright baseline RGB/grey JPEGs that end in an EOI marker go to nvjpeg in one batched call
    when ``device`` is CUDA and torchvision imports (``gpu_decode=None``: whenever possible;
    False: never); anything else (other formats, CMYK, EXIF-rotated, truncated) is decoded by
    Pillow through :func:`decode_image` (on ``pool``'s threads when given), which also applies
    every guard. If nvjpeg refuses the batch, its images fall back to Pillow.
    """
    target = torch.device(device)
    decoder = _gpu_jpeg_decoder() if target.type == "cuda" and gpu_decode is not False else None
    results: list[torch.Tensor | ImageDecodeError | None] = [None] * len(contents)
    to_gpu: list[int] = []
    to_pillow: list[int] = []
    for index, data in enumerate(contents):
        if decoder is None:
            to_pillow.append(index)
            continue
        try:
            header = probe_image(data, max_pixels=max_pixels)
        except ImageDecodeError as exc:
            results[index] = exc
            continue
        plain = header.format == "JPEG" and header.mode in {"RGB", "L"} and header.orientation == 1
        (to_gpu if plain and data.endswith(b"\xff\xd9") else to_pillow).append(index)
    if to_gpu and decoder is not None:
        try:
            decoded = decoder([torch.frombuffer(bytearray(contents[i]), dtype=torch.uint8) for i in to_gpu], device=target)
        except RuntimeError as exc:
            log.warning("nvjpeg refused a batch of %d JPEGs (%s); decoding them with Pillow", len(to_gpu), exc)
            to_pillow.extend(to_gpu)
        else:
            for index, tensor in zip(to_gpu, decoded):
                results[index] = tensor
    decode = functools.partial(_decode_tensor_or_error, max_pixels=max_pixels)
    blobs = [contents[i] for i in to_pillow]
    for index, result in zip(to_pillow, pool.map(decode, blobs) if pool is not None else map(decode, blobs)):
        results[index] = result
    return [r for r in results if r is not None]


def _decode_tensor_or_error(data: bytes, *, max_pixels: int) -> torch.Tensor | ImageDecodeError:
    try:
        return image_to_tensor(decode_image(data, max_pixels=max_pixels))
    except ImageDecodeError as exc:
        return exc


# --------------------------------------------------------------------------------------------
# One batch: images -> probabilities
# --------------------------------------------------------------------------------------------


def resolve_path(loaded: LoadedModel, path: PathChoice = "auto") -> Literal["processor", "tensor"]:
    """``auto``: on CUDA, the tensor path when the processor is one it reproduces; on CPU (and when it
    cannot reproduce it), the model's own image processor, the reference that the equivalence tests hold
    the tensor path to (same top-1, confidences within 0.02)."""
    if path != "auto":
        return path
    if loaded.device.type != "cuda":
        return "processor"
    try:
        TensorPreprocess.from_processor(loaded.processor)
    except ModelError as exc:
        log.info("tensor preprocessing unavailable (%s); using the image processor", exc)
        return "processor"
    return "tensor"


def autocast_dtype(device: torch.device, precision: Precision = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``auto`` is bf16 (else fp16) on CUDA and fp32 on CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def processor_pixel_values(loaded: LoadedModel, images: Sequence[Image.Image]) -> torch.Tensor:
    """The reference preprocessing: the model's own image processor on RGB PIL images -> float32 NCHW (CPU)."""
    return loaded.processor(images=list(images), return_tensors="pt")["pixel_values"]


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
        inputs = _to_device(pixel_values, loaded.device)
        if pad_to is not None and count < pad_to:
            inputs = torch.cat([inputs, inputs[-1:].expand(pad_to - count, -1, -1, -1)])
        if loaded.device.type == "cuda":
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=loaded.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = network(pixel_values=inputs).logits
        return logits[:count].float().softmax(dim=-1).cpu()


def predict_batch(
    loaded: LoadedModel,
    images: Sequence[Image.Image | np.ndarray | torch.Tensor],
    *,
    path: PathChoice = "auto",
    precision: Precision = "auto",
    model: Callable[..., Any] | None = None,
) -> np.ndarray:
    """Probabilities (N x labels, float32) for decoded RGB images: PIL images, uint8 HWC arrays or uint8 CHW tensors.

    A pure function of its inputs, for callers that batch on their own (a Spark ``mapInPandas`` UDF).
    """
    if not images:
        return np.zeros((0, len(loaded.labels)), dtype=np.float32)
    chosen = resolve_path(loaded, path)
    if chosen == "processor":
        pil_images = [_as_pil(image) for image in images]
        pixel_values = processor_pixel_values(loaded, pil_images)
    else:
        spec = TensorPreprocess.from_processor(loaded.processor)
        tensors = [image if isinstance(image, torch.Tensor) else image_to_tensor(image) for image in images]
        pixel_values = spec(tensors, loaded.device)
    return forward_probs(loaded, pixel_values, precision=precision, model=model).numpy()


def _as_pil(image: Image.Image | np.ndarray | torch.Tensor) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        return Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    return Image.fromarray(np.asarray(image, dtype=np.uint8))


# --------------------------------------------------------------------------------------------
# Rows of the predictions table
# --------------------------------------------------------------------------------------------


def ok_row(date: str, image_path: str, label: str, probs: np.ndarray, labels: Sequence[str], model_id: str, top_k: int) -> dict[str, Any]:
    """One ``status == "ok"`` row: ``pred``/``confidence`` are the top entry of the top-k lists."""
    k = min(top_k, len(labels))
    order = np.argsort(-probs, kind="stable")[:k]
    top_labels = [labels[i] for i in order]
    top_scores = [float(probs[i]) for i in order]
    return {
        "date": date,
        "image_path": image_path,
        "label": label,
        "pred": top_labels[0],
        "confidence": top_scores[0],
        "topk_labels": top_labels,
        "topk_scores": top_scores,
        "model_id": model_id,
        "status": "ok",
        "error": None,
    }


def failed_row(date: str, image_path: str, label: str, model_id: str, reason: str) -> dict[str, Any]:
    """One ``status == "failed"`` row: no prediction, empty top-k lists, ``error`` = the reason code."""
    return {
        "date": date,
        "image_path": image_path,
        "label": label,
        "pred": None,
        "confidence": None,
        "topk_labels": [],
        "topk_scores": [],
        "model_id": model_id,
        "status": "failed",
        "error": reason,
    }


def predictions_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> the predictions DataFrame with exactly :data:`COLUMNS` (also when empty)."""
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    frame["confidence"] = frame["confidence"].astype("float64")
    frame["draw"] = frame["draw"].where(frame["draw"].notna(), DRAW_BASE).astype(object)
    return frame


# --------------------------------------------------------------------------------------------
# Whole runs
# --------------------------------------------------------------------------------------------


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
    contents: Sequence[bytes | str | None],
    paths: Sequence[str],
    loaded: LoadedModel,
    chosen: Literal["processor", "tensor"],
    spec: TensorPreprocess | None,
    max_pixels: int,
    decode_pool: ThreadPoolExecutor | None,
) -> _Prepared:
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
    decoded: list[Any]
    if chosen == "tensor":
        decoded = decode_to_tensors(blobs, max_pixels=max_pixels, device=loaded.device, pool=decode_pool)
    else:
        decode = functools.partial(_decode_or_error, max_pixels=max_pixels)
        decoded = list(decode_pool.map(decode, blobs)) if decode_pool is not None else [decode(b) for b in blobs]
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


def _decode_or_error(data: bytes, *, max_pixels: int) -> Image.Image | ImageDecodeError:
    try:
        return decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        return exc


def _chunks(count: int, size: int) -> Iterator[range]:
    for start in range(0, count, size):
        yield range(start, min(start + size, count))


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
    """Predict every ``(image_path, label)`` in ``items`` and return the predictions table (:data:`COLUMNS`).

    ``read(image_path) -> bytes`` fetches an image (a source's ``read``); ``fetch_workers``
    threads call it concurrently and keep the bytes in memory. Batches of ``batch_size`` are
    decoded and preprocessed on a background thread while the model runs on the previous one.
    A fetch failure (``MonitorError``/``OSError`` from ``read``) or a decode failure gives a row
    with ``status="failed"``, ``error`` = the reason (``fetch_failed`` or one of
    :data:`evaluation.imaging.DECODE_REASONS`) and no prediction; the run goes on. Rows come in
    the order of ``items``. ``progress(n)`` is called after each batch with the number of items
    it finished. ``path``/``precision``: see :func:`resolve_path`, :func:`autocast_dtype`;
    ``compile_model`` runs the network through ``torch.compile`` (worth it on GPU hosts only).
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


def predict_frame(
    frame: pd.DataFrame,
    loaded: LoadedModel,
    *,
    date: str,
    top_k: int,
    max_pixels: int,
    batch_size: int = 64,
    content_column: str = "content",
    error_column: str = "fetch_error",
    path: PathChoice = "auto",
    precision: Precision = "auto",
) -> pd.DataFrame:
    """Predict a pandas batch that already holds the image bytes (for Spark ``mapInPandas``).

    ``frame`` has ``image_path``, ``label`` and ``content_column`` (bytes, or null when the fetch
    failed; then ``error_column``, if present, gives the reason, else ``fetch_failed``). Returns
    the predictions table for those rows, in the same order.
    """
    missing = {"image_path", "label", content_column} - set(frame.columns)
    if missing:
        raise DataError(f"predict_frame needs columns {sorted(missing)}; got {list(frame.columns)}")
    chosen = resolve_path(loaded, path)
    spec = TensorPreprocess.from_processor(loaded.processor) if chosen == "tensor" else None
    paths = frame["image_path"].astype(str).tolist()
    labels = frame["label"].astype(str).tolist()
    contents: list[Any] = frame[content_column].tolist()
    if error_column in frame.columns:
        contents = [
            c if isinstance(c, (bytes, bytearray)) else (e if isinstance(e, str) and e else FETCH_FAILED)
            for c, e in zip(contents, frame[error_column].tolist())
        ]
    rows: list[dict[str, Any]] = []
    for batch in _chunks(len(frame), batch_size):
        prepared = _prepare([contents[i] for i in batch], [paths[i] for i in batch], loaded, chosen, spec, max_pixels, None)
        probs = forward_probs(loaded, prepared.pixel_values, precision=precision).numpy() if prepared.pixel_values is not None else None
        by_position = dict(zip(prepared.ok_positions, probs)) if probs is not None else {}
        for position, index in enumerate(batch):
            if position in by_position:
                rows.append(ok_row(date, paths[index], labels[index], by_position[position], loaded.labels, loaded.model_id, top_k))
            else:
                rows.append(failed_row(date, paths[index], labels[index], loaded.model_id, prepared.failures[position]))
    return predictions_frame(rows)


# --------------------------------------------------------------------------------------------
# predictions/D.parquet
# --------------------------------------------------------------------------------------------


def write_predictions(frame: pd.DataFrame, path: Path) -> None:
    """Write the predictions table as Parquet, atomically (a temporary file renamed over ``path``)."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"predictions for {path} lack columns {missing}")
    table = pa.Table.from_pandas(frame[list(COLUMNS)], schema=PREDICTIONS_SCHEMA, preserve_index=False)
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp), what="predictions file")


def read_predictions(path: Path) -> pd.DataFrame:
    """Read a predictions Parquet file back (lists as Python lists); DataError if it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no predictions file at {path}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file: {exc}") from exc
    if "draw" not in table.column_names:
        table = table.append_column("draw", pa.array([DRAW_BASE] * table.num_rows, pa.string()))
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path} is not a predictions file: it lacks columns {missing}")
    frame = table.select(list(COLUMNS)).to_pandas()
    for column in ("topk_labels", "topk_scores"):
        frame[column] = [list(v) if v is not None else [] for v in frame[column]]
    return frame
