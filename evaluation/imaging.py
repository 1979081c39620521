"""Image bytes -> decoded image, with guards: any format Pillow reads, EXIF orientation, size limit, typed failures.

Pillow decodes to an RGB PIL image (:func:`decode_image`); :func:`decode_to_tensors` gives uint8 CHW
tensors for the tensor preprocessing path, decoding plain JPEGs with nvjpeg on CUDA.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from monitor.core.errors import DataError

log = logging.getLogger(__name__)

#: Every reason :class:`ImageDecodeError` can carry; predictions store one of them in ``error``.
DECODE_REASONS = ("zero_bytes", "not_an_image", "too_large", "truncated", "corrupt")

#: Transparent pixels are composited on this colour (the paper an RGB model expects).
BACKGROUND = (255, 255, 255)

_EXIF_ORIENTATION = 0x0112


class ImageDecodeError(DataError):
    """The bytes are not a usable image. ``reason`` is one of :data:`DECODE_REASONS`; the message says more."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding its pixels."""

    format: str  # Pillow's format name: "JPEG", "PNG", "GIF", "WEBP", ...
    mode: str  # Pillow's mode before conversion: "RGB", "L", "CMYK", "P", "RGBA", ...
    width: int
    height: int
    orientation: int  # EXIF orientation 1..8 (1 = upright, also when absent); 0 when the EXIF block is unreadable


def probe_image(data: bytes, *, max_pixels: int) -> ImageHeader:
    """Read the header only and apply the guards (empty, not an image, too many pixels).

    Lets a caller route an image (e.g. plain upright RGB/grey JPEGs to a GPU decoder) before any
    pixel is decoded. Raises :class:`ImageDecodeError`.
    """
    image = _open(data, max_pixels)
    return ImageHeader(
        format=image.format or "unknown",
        mode=image.mode,
        width=image.width,
        height=image.height,
        orientation=_orientation(image),
    )


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode ``data`` into an upright RGB image.

    Accepts any format Pillow reads (JPEG, PNG, GIF and animated formats: the first frame, WebP,
    BMP, TIFF...). Grey, palette, CMYK and 16-bit images become RGB; transparency is composited on
    white; the EXIF orientation is applied. ``width * height`` is checked against ``max_pixels``
    from the header, before decoding, so a decompression bomb costs nothing. Pillow's own global
    limit (``Image.MAX_IMAGE_PIXELS``, refused at twice it) is left untouched and still applies.

    Raises :class:`ImageDecodeError` with ``reason`` ``zero_bytes``, ``not_an_image``,
    ``too_large``, ``truncated`` or ``corrupt``.
    """
    image = _open(data, max_pixels)
    try:
        image.load()
    except OSError as exc:
        # Pillow reports cut-off data as OSError("image file is truncated ..."/"broken data stream ...").
        text = str(exc)
        reason = "truncated" if _says_truncated(text) else "corrupt"
        raise ImageDecodeError(reason, f"{image.format} {image.width}x{image.height}: {text}") from exc
    except (EOFError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(
            "truncated" if isinstance(exc, EOFError) else "corrupt", f"{image.format}: {exc}"
        ) from exc
    try:
        upright = ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, TypeError, OSError) as exc:
        raise ImageDecodeError("corrupt", f"{image.format}: unreadable EXIF orientation: {exc}") from exc
    return to_rgb(upright if upright is not None else image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha and palette transparency over white, 16-bit scaled to 8-bit."""
    if image.mode == "RGB":
        return image
    if image.mode in {"I;16", "I;16L", "I;16B", "I;16N", "I"}:
        # 16-bit grey (PNG, TIFF): Pillow's own conversion clips at 255, so scale the full range down.
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode == "F":
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if "A" in image.mode or "a" in image.mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        paper = Image.new("RGB", rgba.size, BACKGROUND)
        paper.paste(rgba, mask=rgba.getchannel("A"))
        return paper
    return image.convert("RGB")


# --- batches: to PIL images with Pillow, to tensors with nvjpeg for plain JPEGs on CUDA ----------


def decode_to_images(
    contents: Sequence[bytes], *, max_pixels: int, pool: ThreadPoolExecutor | None = None
) -> list[Image.Image | ImageDecodeError]:
    """Decode each image with :func:`decode_image` (on ``pool``'s threads when given): an RGB PIL image, or its error."""
    decode = functools.partial(_decode_or_error, max_pixels=max_pixels)
    return list(pool.map(decode, contents)) if pool is not None else [decode(b) for b in contents]


def _decode_or_error(data: bytes, *, max_pixels: int) -> Image.Image | ImageDecodeError:
    try:
        return decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        return exc


def image_to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """An RGB PIL image or uint8 HWC array -> uint8 CHW tensor (a view, no copy, for arrays)."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got an array of shape {array.shape}")
    if not array.flags.writeable:
        array = array.copy()  # torch wants writable memory; PIL's buffers are read-only
    return torch.from_numpy(array).permute(2, 0, 1)


@functools.cache
def _gpu_jpeg_decoder() -> Callable[..., Any] | None:
    """torchvision's nvjpeg ``decode_jpeg`` if torchvision imports and works here, else None (then Pillow decodes)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except (ImportError, RuntimeError, OSError, AttributeError) as exc:
        # A torchvision build that does not match the installed torch (or this host's CUDA) fails to import.
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
            decoded = decoder(
                [torch.frombuffer(bytearray(contents[i]), dtype=torch.uint8) for i in to_gpu], device=target
            )
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


# --- guards ---------------------------------------------------------------------------------------


def _open(data: bytes, max_pixels: int) -> Image.ImageFile.ImageFile:
    if not data:
        raise ImageDecodeError("zero_bytes", "the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("too_large", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            "not_an_image", f"Pillow does not recognise these {len(data)} bytes as an image"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Recognised signature, unreadable header: a cut-off or damaged file.
        reason = "truncated" if isinstance(exc, EOFError) or _says_truncated(str(exc)) else "corrupt"
        raise ImageDecodeError(reason, f"unreadable header: {exc}") from exc
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise ImageDecodeError(
            "too_large",
            f"{image.format} {image.width}x{image.height} = {pixels:,} pixels exceeds the limit of {max_pixels:,}",
        )
    if pixels == 0:
        raise ImageDecodeError("corrupt", f"{image.format} header says {image.width}x{image.height}")
    return image


def _says_truncated(text: str) -> bool:
    lowered = text.lower()
    return "truncated" in lowered or "broken data stream" in lowered


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except (SyntaxError, ValueError, TypeError, OSError):
        return 0
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1
