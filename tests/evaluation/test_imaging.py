"""Decoding image bytes: formats, colour modes, orientation, and the typed refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from evaluation.imaging import ImageDecodeError, decode_image, probe_image
from monitor.core.errors import DataError, MonitorError
from tests.fixtures.images import encode, gradient, png_header_only, rotated_exif_jpeg

LIMIT = 10_000_000


@pytest.mark.parametrize(
    ("fmt", "mode", "tolerance"),
    [
        ("PNG", "RGB", 0),
        ("BMP", "RGB", 0),
        ("TIFF", "RGB", 0),
        ("WEBP", "RGB", 0),  # lossless below
        ("JPEG", "RGB", 12),
        ("GIF", "P", 48),  # 256-colour palette
    ],
)
def test_formats_decode_to_the_pixels_that_were_encoded(fmt: str, mode: str, tolerance: int) -> None:
    pixels = gradient(40, 30)
    image = Image.fromarray(pixels).convert(mode)
    options = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    decoded = decode_image(encode(image, fmt, **options), max_pixels=LIMIT)
    assert decoded.mode == "RGB"
    assert decoded.size == (40, 30)
    assert np.abs(np.asarray(decoded, dtype=int) - pixels.astype(int)).mean() <= tolerance


def test_grayscale_becomes_three_equal_channels() -> None:
    grey = Image.fromarray(gradient()[..., 0])
    decoded = np.asarray(decode_image(encode(grey, "PNG"), max_pixels=LIMIT))
    assert decoded.shape == (30, 40, 3)
    np.testing.assert_array_equal(decoded[..., 0], np.asarray(grey))
    np.testing.assert_array_equal(decoded[..., 1], decoded[..., 2])


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    values = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    decoded = np.asarray(decode_image(data, max_pixels=LIMIT))[..., 0]
    expected = np.rint(values / 257.0)
    assert np.abs(decoded - expected).max() <= 1
    assert decoded.max() == 255 and decoded.min() == 0


def test_cmyk_jpeg_converts_to_rgb_colours() -> None:
    red = Image.new("RGB", (16, 16), (220, 30, 30))
    data = encode(red.convert("CMYK"), "JPEG", quality=95)
    assert probe_image(data, max_pixels=LIMIT).mode == "CMYK"
    r, g, b = np.asarray(decode_image(data, max_pixels=LIMIT)).reshape(-1, 3).mean(axis=0)
    assert r > 180 and g < 70 and b < 70


def test_alpha_is_composited_on_white() -> None:
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red everywhere...
    rgba[:, 5:, 3] = 255  # ...opaque on the right half, fully transparent on the left
    decoded = np.asarray(decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"), max_pixels=LIMIT))
    np.testing.assert_array_equal(decoded[:, :5], 255)
    np.testing.assert_array_equal(decoded[:, 5:], np.broadcast_to([200, 0, 0], (10, 5, 3)))


def test_palette_transparency_is_composited_on_white() -> None:
    palette_image = Image.new("P", (8, 8), 1)
    palette_image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette_image.info["transparency"] = 1
    decoded = np.asarray(decode_image(encode(palette_image, "GIF", transparency=1), max_pixels=LIMIT))
    np.testing.assert_array_equal(decoded, 255)


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    decoded = np.asarray(decode_image(data, max_pixels=LIMIT))
    np.testing.assert_array_equal(decoded, np.broadcast_to([255, 0, 0], (8, 8, 3)))


def test_exif_orientation_is_applied() -> None:
    data = rotated_exif_jpeg(width=40, height=20, orientation=6)
    header = probe_image(data, max_pixels=LIMIT)
    assert (header.width, header.height, header.orientation) == (40, 20, 6)
    decoded = decode_image(data, max_pixels=LIMIT)
    assert decoded.size == (20, 40)  # rotated upright: now taller than wide
    # Orientation 6 means rotate 90 degrees clockwise: the stored top-left corner ends at the top right.
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=int)
    np.testing.assert_allclose(np.asarray(decoded, dtype=int)[0, -1], stored[0, 0], atol=16)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "zero_bytes"),
        (b"label,path\nseven,seven/1.jpg\n", "not_an_image"),
        (b"\x00" * 64, "not_an_image"),
    ],
    ids=["zero-bytes", "text-file", "nul-bytes"],
)
def test_non_images_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=f"^{reason}: ") as info:
        decode_image(data, max_pixels=LIMIT)
    assert info.value.reason == reason


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_images_are_refused_as_truncated(fmt: str) -> None:
    data = encode(Image.fromarray(gradient(64, 64)), fmt)
    with pytest.raises(ImageDecodeError, match="^truncated: ") as info:
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)
    assert info.value.reason == "truncated"


def test_image_over_the_pixel_limit_is_refused_before_decoding() -> None:
    data = encode(Image.new("RGB", (200, 100)), "PNG")
    with pytest.raises(ImageDecodeError, match=r"^too_large: PNG 200x100 = 20,000 pixels exceeds the limit of 19,999"):
        decode_image(data, max_pixels=19_999)
    assert decode_image(data, max_pixels=20_000).size == (200, 100)


def test_bomb_header_is_refused_without_touching_pillows_global_limit() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageDecodeError, match="^too_large: ") as info:
        decode_image(png_header_only(30_000, 30_000), max_pixels=LIMIT)
    assert info.value.reason == "too_large"
    assert Image.MAX_IMAGE_PIXELS == before


def test_header_within_limits_but_without_pixels_is_truncated() -> None:
    with pytest.raises(ImageDecodeError, match="^truncated: "):
        decode_image(png_header_only(50, 50), max_pixels=LIMIT)


def test_decode_error_is_a_data_error_of_the_service() -> None:
    with pytest.raises(DataError):
        decode_image(b"", max_pixels=LIMIT)
    assert issubclass(ImageDecodeError, MonitorError)
