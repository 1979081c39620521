"""Real images for the demo and the shipped model: scikit-learn's handwritten digits (no download), rendered as photos."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from monitor.core.files import atomic_write

#: Class names, in the model's label order: the digit ``d`` is ``LABELS[d]``.
LABELS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: Side in pixels of a rendered digit (the 8x8 original, resized smoothly).
RENDER_SIZE = 64

#: The data set stores ink intensity as 0..16.
_DIGITS_MAX = 16

_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as ``(images, targets)``: uint8 ``(n, 8, 8)`` ink intensity scaled to 0..255, and int digits 0..9."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / _DIGITS_MAX)).clip(0, 255).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def split_indices(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified 50/50 split of the data set: ``(train_idx, heldout_idx)``, each sorted.

    The shipped model is trained on ``train_idx`` only; the demo source and the accuracy test use
    ``heldout_idx``. Written with numpy's legacy ``RandomState`` (its stream is frozen across numpy
    versions) rather than scikit-learn's splitter, so the split, and with it the promise that the
    model never saw a held-out digit, cannot move when either library is upgraded.
    """
    _, targets = load_digits_images()
    rng = np.random.RandomState(seed)
    train: list[np.ndarray] = []
    heldout: list[np.ndarray] = []
    for digit in range(len(LABELS)):
        members = np.flatnonzero(targets == digit)
        shuffled = members[rng.permutation(len(members))]
        half = len(shuffled) // 2
        train.append(shuffled[:half])
        heldout.append(shuffled[half:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(heldout))


def digit_to_pil(array: np.ndarray, size: int = RENDER_SIZE) -> Image.Image:
    """Render one uint8 8x8 digit as an RGB ``size`` x ``size`` picture: dark ink on white paper, bicubic-smoothed."""
    pixels = np.asarray(array)
    if pixels.shape != (8, 8) or pixels.dtype != np.uint8:
        raise ValueError(f"a digit is a uint8 8x8 array, got {pixels.dtype} {pixels.shape}")
    paper = Image.fromarray(255 - pixels, mode="L")
    return paper.resize((size, size), resample=Image.Resampling.BICUBIC).convert("RGB")


def digit_file_name(index: int, fmt: str = "JPEG") -> str:
    """Stable file name of the data set's digit ``index``: ``digit_00123.jpg``."""
    return f"digit_{index:05d}{_extension(fmt)}"


def encode_digit(
    array: np.ndarray, fmt: Literal["JPEG", "PNG", "WEBP", "BMP"] | str = "JPEG", size: int = RENDER_SIZE
) -> bytes:
    """The bytes of one rendered digit in ``fmt`` (JPEG at quality 95), as the demo source stores it."""
    buffer = io.BytesIO()
    options = {"quality": 95} if fmt.upper() in {"JPEG", "WEBP"} else {}
    digit_to_pil(array, size=size).save(buffer, format=fmt.upper(), **options)
    return buffer.getvalue()


def build_demo_source(dest: Path, indices: np.ndarray | list[int] | None = None, fmt: str = "JPEG") -> int:
    """Write digits as ``<dest>/<label>/digit_NNNNN.jpg`` and return how many files were written.

    ``indices`` are positions in the data set (default: the held-out half of :func:`split_indices`).
    Idempotent: a file that already holds the same bytes is left alone (and not counted); each
    write goes to a temporary file renamed into place, so a crash never leaves half an image.
    """
    images, targets = load_digits_images()
    chosen = split_indices()[1] if indices is None else np.asarray(indices, dtype=np.int64)
    if chosen.size and (chosen.min() < 0 or chosen.max() >= len(images)):
        raise ValueError(f"digit indices must lie in [0, {len(images)}), got {chosen.min()}..{chosen.max()}")
    written = 0
    for index in chosen.tolist():
        folder = Path(dest) / LABELS[int(targets[index])]
        target = folder / digit_file_name(index, fmt)
        data = encode_digit(images[index], fmt)
        if target.is_file() and target.read_bytes() == data:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, data)
        written += 1
    return written


def _extension(fmt: str) -> str:
    try:
        return _EXTENSIONS[fmt.upper()]
    except KeyError:
        raise ValueError(f"unsupported demo image format {fmt!r}; choose one of {', '.join(_EXTENSIONS)}") from None


def _atomic_write(target: Path, data: bytes) -> None:
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(data), what="image")
