"""Gallery thumbnails: the image as the model saw it, made small and encoded as JPEG.

Decoding, with every guard on the way (empty, not an image, too many pixels, truncated, corrupt;
EXIF orientation, transparency), is :func:`evaluation.imaging.decode_image`'s; this only resizes
and encodes.
"""

from __future__ import annotations

import io

from monitor.core.errors import DataError

#: Longest side of a gallery thumbnail, in pixels.
THUMB_SIDE = 128


def make_thumbnail(data: bytes, max_side: int = THUMB_SIDE, max_pixels: int = 50_000_000) -> bytes:
    """A JPEG of ``data`` no larger than ``max_side`` on its longest side.

    Raises :class:`DataError` when :func:`~evaluation.imaging.decode_image` refuses the bytes:
    "larger than the ... pixel limit" for a decompression bomb, "not a readable image" otherwise.
    """
    # Imported here: the imaging module brings torch with it, which the rest of the dashboard never needs.
    from evaluation.imaging import ImageDecodeError, decode_image

    try:
        picture = decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        if exc.reason == "too_large":
            raise DataError(f"image larger than the {max_pixels} pixel limit: {exc}") from exc
        raise DataError(f"not a readable image: {exc}") from exc
    picture.thumbnail((max_side, max_side))
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=85)
    return out.getvalue()
