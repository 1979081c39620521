"""Image bytes -> RGB PIL image, with guards: any format Pillow reads, EXIF orientation, size limit, typed failures."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from monitor.errors import DataError

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
        raise ImageDecodeError("truncated" if isinstance(exc, EOFError) else "corrupt", f"{image.format}: {exc}") from exc
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


def _open(data: bytes, max_pixels: int) -> Image.ImageFile.ImageFile:
    if not data:
        raise ImageDecodeError("zero_bytes", "the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("too_large", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not_an_image", f"Pillow does not recognise these {len(data)} bytes as an image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Recognised signature, unreadable header: a cut-off or damaged file.
        reason = "truncated" if isinstance(exc, EOFError) or _says_truncated(str(exc)) else "corrupt"
        raise ImageDecodeError(reason, f"unreadable header: {exc}") from exc
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise ImageDecodeError("too_large", f"{image.format} {image.width}x{image.height} = {pixels:,} pixels exceeds the limit of {max_pixels:,}")
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
