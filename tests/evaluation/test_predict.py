"""Batched inference: the tensor (GPU) path against the image processor on the CPU, odd formats, failed rows, the Parquet file.

Tolerances, stated once: the tensor path resizes with torch's antialiased kernels where the
processor uses Pillow's, so pixel values differ by at most 1 grey level of 255 (3 when a small
image is blown up more than 5x) and by under 0.25 level on average; on the shipped model that
moves a top-1 confidence by at most 0.02 and never changes a top-1 prediction. bf16 autocast moves
confidences by at most 0.05.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from transformers.models.bit import BitImageProcessorPil
from transformers.models.convnext import ConvNextImageProcessorPil
from transformers.models.deit import DeiTImageProcessorPil
from transformers.models.vit import ViTImageProcessorPil

from evaluation.imaging import decode_to_tensors, image_to_tensor
from evaluation.model import LoadedModel, load_model
from evaluation.predict import forward_probs, predict_images
from evaluation.predictions import COLUMNS, PREDICTIONS_SCHEMA, read_predictions, write_predictions
from evaluation.preprocessing import TensorPreprocess, processor_pixel_values, resolve_path
from monitor.core.errors import ConfigError, DataError, ModelError, SourceError
from monitor.core.settings import SHIPPED_MODEL_DIR
from monitor.domain.digits import LABELS, digit_to_pil, load_digits_images, split_indices
from tests.fixtures.images import EXIF_ORIENTATION, encode, gradient, png_header_only

DATE = "2024-05-01"
LIMIT = 10_000_000
RUN = dict(date=DATE, batch_size=8, fetch_workers=3, top_k=3, max_pixels=LIMIT)
CONFIDENCE_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def shipped() -> LoadedModel:
    return load_model(SHIPPED_MODEL_DIR, "cpu")


@pytest.fixture(scope="module")
def digits() -> list[tuple[str, Image.Image]]:
    """Three held-out digits per class (never seen in training), rendered as the demo source renders them."""
    images, targets = load_digits_images()
    heldout = split_indices()[1]
    chosen = np.concatenate([heldout[targets[heldout] == d][:3] for d in range(10)])
    return [(LABELS[targets[i]], digit_to_pil(images[i])) for i in chosen]


def in_memory(blobs: dict[str, bytes]) -> Callable[[str], bytes]:
    """A source's ``read`` over a dict; unknown paths fail as a real source does."""

    def read(path: str) -> bytes:
        if path not in blobs:
            raise SourceError(f"{path} does not exist in memory://test")
        return blobs[path]

    return read


def reference_probs(loaded: LoadedModel, images: list[Image.Image]) -> np.ndarray:
    """Probabilities (N x labels) of decoded images through the processor path: the functions predict_images runs."""
    return forward_probs(loaded, processor_pixel_values(loaded, images)).numpy()


def jpeg_items(digits: list[tuple[str, Image.Image]]) -> tuple[list[tuple[str, str]], dict[str, bytes]]:
    blobs = {f"{label}/{i}.jpg": encode(image, "JPEG", quality=95) for i, (label, image) in enumerate(digits)}
    return [(path, path.split("/")[0]) for path in blobs], blobs


# --- the tensor path reproduces the image processor ----------------------------------------------


PROCESSORS = {
    "convnext-resnet50-style": (ConvNextImageProcessorPil(size={"shortest_edge": 64}, crop_pct=0.875), 1),
    "convnext-shipped-style": (
        ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=1.0, image_mean=[0.5] * 3, image_std=[0.5] * 3),
        1,
    ),
    "convnext-large-no-crop": (ConvNextImageProcessorPil(size={"shortest_edge": 400}), 3),
    "vit-fixed-size-bilinear": (ViTImageProcessorPil(size={"height": 48, "width": 40}), 1),
    "bit-shortest-edge-and-crop": (
        BitImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 48, "width": 48}),
        1,
    ),
    "deit-resize-then-crop": (
        DeiTImageProcessorPil(size={"height": 60, "width": 60}, crop_size={"height": 52, "width": 52}),
        1,
    ),
}
SIZES = [(64, 64), (37, 53), (300, 200), (20, 15), (101, 99)]


@pytest.mark.parametrize("name", list(PROCESSORS))
def test_tensor_preprocessing_reproduces_the_image_processor_within_one_grey_level(name: str) -> None:
    processor, max_levels = PROCESSORS[name]
    spec = TensorPreprocess.from_processor(processor)
    images = [Image.fromarray(gradient(w, h, seed=i)) for i, (w, h) in enumerate(SIZES)]
    level = 1 / 255 / min(processor.image_std)  # one grey level in normalised units

    reference = processor(images=images, return_tensors="pt")["pixel_values"]
    ours = spec([image_to_tensor(image) for image in images])

    assert ours.shape == reference.shape and ours.dtype == torch.float32
    difference = (ours - reference).abs()
    assert difference.max().item() <= max_levels * level + 1e-5
    assert difference.mean().item() <= 0.25 * level


def test_processors_the_tensor_path_cannot_reproduce_are_refused_and_auto_falls_back(shipped: LoadedModel) -> None:
    with pytest.raises(ModelError, match="does not reproduce resize size"):
        TensorPreprocess.from_processor(ViTImageProcessorPil(size={"shortest_edge": 32, "longest_edge": 64}))
    other = LoadedModel(
        **{**shipped.__dict__, "processor": ViTImageProcessorPil(size={"shortest_edge": 32, "longest_edge": 64})}
    )
    with pytest.raises(ModelError, match="does not reproduce"):
        predict_images(
            [("a/x.png", "a")],
            in_memory({"a/x.png": encode(Image.new("RGB", (8, 8)), "PNG")}),
            other,
            path="tensor",
            **RUN,
        )
    # auto: the reference processor on CPU; on CUDA the tensor path, unless it cannot reproduce the processor.
    # (A LoadedModel that only claims CUDA: resolve_path looks at the device type, nothing runs there.)
    on_cuda = LoadedModel(**{**shipped.__dict__, "device": torch.device("cuda")})
    other_on_cuda = LoadedModel(**{**other.__dict__, "device": torch.device("cuda")})
    assert resolve_path(shipped, "auto") == "processor"
    assert resolve_path(on_cuda, "auto") == "tensor"
    assert resolve_path(other_on_cuda, "auto") == "processor"
    assert resolve_path(on_cuda, "processor") == "processor"
    assert resolve_path(shipped, "tensor") == "tensor"


@pytest.mark.slow
def test_tensor_path_gives_the_processor_paths_predictions_on_the_shipped_model(shipped: LoadedModel, digits) -> None:
    items, blobs = jpeg_items(digits)

    reference = predict_images(items, in_memory(blobs), shipped, path="processor", **RUN)
    tensor = predict_images(items, in_memory(blobs), shipped, path="tensor", **RUN)

    assert (reference["status"] == "ok").all() and (tensor["status"] == "ok").all()
    assert (reference["pred"] == reference["label"]).mean() >= 0.9  # a working model, not a constant
    assert list(tensor["pred"]) == list(reference["pred"])
    np.testing.assert_allclose(tensor["confidence"], reference["confidence"], rtol=0, atol=CONFIDENCE_TOLERANCE)


@pytest.mark.slow
def test_bf16_autocast_keeps_the_predictions(shipped: LoadedModel, digits) -> None:
    items, blobs = jpeg_items(digits)
    fp32 = predict_images(items, in_memory(blobs), shipped, precision="fp32", **RUN)
    bf16 = predict_images(items, in_memory(blobs), shipped, precision="bf16", **RUN)
    assert list(bf16["pred"]) == list(fp32["pred"])
    np.testing.assert_allclose(bf16["confidence"], fp32["confidence"], rtol=0, atol=0.05)


# --- odd formats ---------------------------------------------------------------------------------


def rotated_with_exif(image: Image.Image) -> bytes:
    """The picture stored turned 90 degrees counter-clockwise, with EXIF orientation 6 saying how to turn it back."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return encode(image.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())


ODD_FORMATS: dict[str, Callable[[Image.Image], bytes]] = {
    "png": lambda im: encode(im, "PNG"),
    "gif": lambda im: encode(im.convert("P"), "GIF"),
    "webp": lambda im: encode(im, "WEBP", lossless=True),
    "bmp": lambda im: encode(im, "BMP"),
    "tiff": lambda im: encode(im, "TIFF"),
    "grayscale-png": lambda im: encode(im.convert("L"), "PNG"),
    "cmyk-jpeg": lambda im: encode(im.convert("CMYK"), "JPEG", quality=95),
    "rgba-png": lambda im: encode(im.convert("RGBA"), "PNG"),
    "exif-rotated-jpeg": rotated_with_exif,
}


@pytest.mark.slow
@pytest.mark.parametrize("path", ["processor", "tensor"])
def test_odd_formats_decode_and_predict_like_the_plain_image(shipped: LoadedModel, digits, path: str) -> None:
    # One sure digit per class: what changes with the format must be the decoding, not a borderline call.
    reference_items = {f"{label}/plain.png": image for label, image in digits[::3]}
    reference = reference_probs(shipped, list(reference_items.values()))
    blobs = {
        f"{ref_path.split('/')[0]}/{fmt}": make(image)
        for ref_path, image in reference_items.items()
        for fmt, make in ODD_FORMATS.items()
    }
    items = [(p, p.split("/")[0]) for p in blobs]

    frame = predict_images(items, in_memory(blobs), shipped, path=path, **RUN)

    assert (frame["status"] == "ok").all(), frame.loc[frame["status"] != "ok", ["image_path", "error"]]
    expected_pred = {label.split("/")[0]: LABELS[int(np.argmax(p))] for label, p in zip(reference_items, reference)}
    assert {row.image_path: row.pred for row in frame.itertuples()} == {
        p: expected_pred[p.split("/")[0]] for p in blobs
    }
    # Orientation matters to this model: the same bytes without their EXIF tag are read differently.
    rotated = reference_probs(
        shipped, [image.transpose(Image.Transpose.ROTATE_90) for image in reference_items.values()]
    )
    assert np.abs(rotated - reference).max() > 0.5


# --- failures are rows, not crashes -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("path", ["processor", "tensor"])
def test_corrupt_empty_and_unreadable_images_become_failed_rows_and_the_rest_are_predicted(
    shipped: LoadedModel, digits, path: str
) -> None:
    good_items, blobs = jpeg_items(digits[:12])
    truncated = encode(Image.fromarray(gradient(64, 64)), "JPEG")
    bad = {
        "zero/empty.jpg": (b"", "zero_bytes"),
        "one/notes.jpg": (b"label,path\nseven,seven/1.jpg\n", "not_an_image"),
        "two/cut.jpg": (truncated[: len(truncated) // 2], "truncated"),
        "three/bomb.png": (png_header_only(30_000, 30_000), "too_large"),
    }
    blobs.update({p: data for p, (data, _) in bad.items()})
    reasons = {p: reason for p, (_, reason) in bad.items()} | {"four/gone.jpg": "fetch_failed"}
    # Interleave the failures so that they fall in different batches, one batch failing whole.
    items = list(good_items)
    for offset, bad_path in zip((0, 3, 8, 9, 14), reasons):
        items.insert(offset, (bad_path, bad_path.split("/")[0]))
    seen: list[int] = []

    frame = predict_images(
        items, in_memory(blobs), shipped, path=path, progress=seen.append, **{**RUN, "batch_size": 4}
    )
    alone = predict_images(good_items, in_memory(blobs), shipped, path=path, **RUN)

    assert list(frame.columns) == list(COLUMNS)
    assert list(frame["image_path"]) == [p for p, _ in items]
    assert sum(seen) == len(items) and len(seen) == -(-len(items) // 4)
    failed = frame[frame["status"] == "failed"]
    assert dict(zip(failed["image_path"], failed["error"])) == reasons
    assert failed["pred"].isna().all() and failed["confidence"].isna().all()
    assert all(lists == [] for lists in failed["topk_labels"]) and all(lists == [] for lists in failed["topk_scores"])
    ok = frame[frame["status"] == "ok"].reset_index(drop=True)
    assert ok["error"].isna().all()
    assert list(ok["pred"]) == list(alone["pred"])
    np.testing.assert_allclose(ok["confidence"], alone["confidence"], rtol=0, atol=1e-5)
    first = ok.iloc[0]
    assert first["topk_labels"][0] == first["pred"] and first["topk_scores"][0] == first["confidence"]
    assert len(first["topk_labels"]) == 3 and first["topk_scores"] == sorted(first["topk_scores"], reverse=True)


def test_bad_run_settings_are_a_config_error(shipped: LoadedModel) -> None:
    with pytest.raises(ConfigError, match="batch_size, fetch_workers and top_k must be >= 1, got 0"):
        predict_images([], in_memory({}), shipped, **{**RUN, "batch_size": 0})


def test_no_items_give_an_empty_table_with_every_column(shipped: LoadedModel) -> None:
    frame = predict_images([], in_memory({}), shipped, **RUN)
    assert frame.empty and list(frame.columns) == list(COLUMNS)


def test_decoding_to_tensors_falls_back_to_pillow_without_a_gpu_decoder(image_bytes) -> None:
    jpeg = image_bytes("JPEG", quality=95)
    decoded = decode_to_tensors([jpeg, b""], max_pixels=LIMIT, device="cpu", gpu_decode=True)
    assert isinstance(decoded[0], torch.Tensor) and decoded[0].shape == (3, 30, 40) and decoded[0].dtype == torch.uint8
    from evaluation.imaging import decode_image

    np.testing.assert_array_equal(decoded[0].permute(1, 2, 0).numpy(), np.asarray(decode_image(jpeg, max_pixels=LIMIT)))
    assert getattr(decoded[1], "reason", None) == "zero_bytes"


# --- predictions/D.parquet --------------------------------------------------------------------------


def test_predictions_survive_the_parquet_round_trip_with_the_contract_schema(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        [
            [DATE, "seven/a.jpg", "seven", "seven", 0.9, ["seven", "one"], [0.9, 0.05], "m@1", "ok", None, "base"],
            [DATE, "three/b.jpg", "three", None, None, [], [], "m@1", "failed", "truncated", "followup"],
        ],
        columns=list(COLUMNS),
    )
    path = tmp_path / "predictions" / f"{DATE}.parquet"
    write_predictions(frame, path)

    assert pq.read_schema(path).remove_metadata().equals(PREDICTIONS_SCHEMA)
    back = read_predictions(path)
    assert back.loc[0, "topk_labels"] == ["seven", "one"] and back.loc[1, "topk_scores"] == []
    assert back.loc[1, "pred"] is None and np.isnan(back.loc[1, "confidence"])
    assert list(back["error"]) == [None, "truncated"]
    assert list(back["draw"]) == ["base", "followup"]
    assert not list(path.parent.glob(".*.tmp"))


def test_a_predictions_file_from_before_followup_sampling_reads_back_as_base_draws(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        [[DATE, "seven/a.jpg", "seven", "seven", 0.9, ["seven"], [0.9], "m@1", "ok", None]],
        columns=[c for c in COLUMNS if c != "draw"],
    )
    path = tmp_path / "old.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    assert list(read_predictions(path)["draw"]) == ["base"]


def test_predictions_without_the_contract_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"lack columns \['topk_labels'"):
        write_predictions(pd.DataFrame(columns=[c for c in COLUMNS if c != "topk_labels"]), tmp_path / "p.parquet")
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(DataError, match="is not a predictions file"):
        read_predictions(tmp_path / "other.parquet")
    with pytest.raises(DataError, match="no predictions file"):
        read_predictions(tmp_path / "nowhere.parquet")
