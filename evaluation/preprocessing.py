"""Decoded images -> the model's input (float32 NCHW pixel values), by one of two paths that give the same predictions.

- ``processor``: the model's own Hugging Face image processor on RGB PIL images, on the CPU (the
  reference, and the path for any processor the tensor path cannot reproduce).
- ``tensor``: the processor's configuration (resize by shortest edge or to a fixed size,
  ``crop_pct``/center crop, bilinear/bicubic/nearest, rescale, mean/std) reproduced with torch ops
  on uint8 CHW tensors (:class:`TensorPreprocess`), on whatever device they are sent to: next to the
  model on the GPU, CPU tensors reaching it through pinned memory. Pixel values stay within one grey
  level of the processor's (Pillow and torch round their resampling differently) and predictions
  are the same.

:func:`resolve_path` picks one: ``auto`` is the tensor path on CUDA when the processor is one it
reproduces, and the processor path on the CPU; the tensor path runs on the CPU only when asked for
(``path="tensor"``), as the tests that hold it to the processor do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image

from evaluation.model import LoadedModel
from monitor.core.errors import ModelError

log = logging.getLogger(__name__)

PathChoice = Literal["auto", "processor", "tensor"]

_RESAMPLE_BY_PIL = {0: "nearest", 2: "bilinear", 3: "bicubic"}
# Processor classes whose steps are exactly resize -> (center crop) -> rescale -> normalise.
_REPRODUCIBLE = ("ConvNextImageProcessor", "ViTImageProcessor", "BitImageProcessor", "DeiTImageProcessor")


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
    def from_processor(cls, processor: Any) -> TensorPreprocess:
        """Read a ConvNext/ViT/Bit/DeiT-style processor's settings; ModelError for anything it cannot reproduce."""
        kind = type(processor).__name__.removesuffix("Pil").removesuffix("Fast")
        if kind not in _REPRODUCIBLE:
            raise ModelError(
                f"the tensor preprocessing path does not reproduce {type(processor).__name__}; use the processor path"
            )
        if getattr(processor, "do_pad", False):
            raise ModelError(
                f"the tensor preprocessing path does not reproduce padding ({type(processor).__name__}.do_pad)"
            )
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
                raise ValueError(
                    f"image {index}: expected a uint8 3xHxW tensor, got {image.dtype} {tuple(image.shape)}"
                )
            groups.setdefault((int(image.shape[1]), int(image.shape[2]), str(image.device)), []).append(index)
        out: torch.Tensor | None = None
        for (height, width, _), members in groups.items():
            batch = torch.stack([images[i] for i in members]) if len(members) > 1 else images[members[0]].unsqueeze(0)
            batch = to_device(batch, target).float()
            batch = self._resize(batch, height, width)
            for crop in self.crops:
                batch = _center_crop(batch, *crop)
            if out is None:
                out = torch.empty((len(images), 3, batch.shape[2], batch.shape[3]), dtype=torch.float32, device=target)
            if batch.shape[2:] != out.shape[2:]:
                raise ModelError(
                    f"images preprocess to different sizes {tuple(batch.shape[2:])} and {tuple(out.shape[2:])}: this processor needs a crop"
                )
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
        raise ModelError(
            f"the tensor preprocessing path does not reproduce resample={value!r}; use the processor path"
        ) from None


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


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``batch`` on ``device``; from the CPU to CUDA through pinned memory, without blocking the host."""
    if batch.device == device:
        return batch
    if device.type == "cuda" and batch.device.type == "cpu":
        return batch.contiguous().pin_memory().to(device, non_blocking=True)
    return batch.to(device)


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


def processor_pixel_values(loaded: LoadedModel, images: Sequence[Image.Image]) -> torch.Tensor:
    """The reference preprocessing: the model's own image processor on RGB PIL images -> float32 NCHW (CPU)."""
    return loaded.processor(images=list(images), return_tensors="pt")["pixel_values"]
