"""Several models on one day's images: one fetch and one decode, the same paths in the same order for every model."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from transformers.models.convnext import ConvNextImageProcessorPil

from evaluation.model import LoadedModel, load_model
from evaluation.predict import predict_images, predict_images_multi
from monitor.core.errors import ConfigError, SourceError
from monitor.core.settings import SHIPPED_MODEL_DIR
from monitor.domain.digits import LABELS, digit_to_pil, load_digits_images, split_indices
from tests.fixtures.images import encode

RUN = dict(date="2026-01-05", batch_size=8, fetch_workers=3, top_k=3, max_pixels=10_000_000)


@pytest.fixture(scope="module")
def shipped() -> LoadedModel:
    return load_model(SHIPPED_MODEL_DIR, "cpu")


@pytest.fixture(scope="module")
def blobs() -> dict[str, bytes]:
    images, targets = load_digits_images()
    heldout = split_indices()[1]
    chosen = np.concatenate([heldout[targets[heldout] == d][:2] for d in range(10)])
    out = {f"{LABELS[targets[i]]}/{n}.png": encode(digit_to_pil(images[i]), "PNG") for n, i in enumerate(chosen)}
    out["3/broken.png"] = b"not an image"
    return out


class CountingRead:
    """A source's ``read`` over a dict that counts every read of every path."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs, self.calls = blobs, Counter[str]()

    def __call__(self, path: str) -> bytes:
        self.calls[path] += 1
        if path not in self.blobs:
            raise SourceError(f"{path} does not exist")
        return self.blobs[path]


class CountingProcessor:
    """An image processor that counts the images it preprocesses (delegating to the real one)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.images = inner, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.images += len(kwargs.get("images", args[0] if args else []))
        return self.inner(*args, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return self.inner.to_dict()


def _as(loaded: LoadedModel, model_id: str, processor: Any = None) -> LoadedModel:
    return LoadedModel(
        **{
            **loaded.__dict__,
            "model_id": model_id,
            "processor": processor if processor is not None else loaded.processor,
        }
    )


def _items(blobs: dict[str, bytes]) -> list[tuple[str, str]]:
    # Reversed and with a path missing from the source: the order is the sample's, not the source's.
    return [(path, path.split("/")[0]) for path in reversed(list(blobs))] + [("7/gone.png", "7")]


@pytest.mark.slow
def test_the_candidate_sees_exactly_the_images_production_saw_fetched_and_preprocessed_once(
    shipped: LoadedModel, blobs
) -> None:
    read = CountingRead(blobs)
    counting = CountingProcessor(shipped.processor)
    production = _as(shipped, "prod@1", counting)
    candidate = _as(shipped, "cand@2", counting)
    items = _items(blobs)
    frames = predict_images_multi(items, read, [production, candidate], **RUN)
    assert [f["model_id"].unique().tolist() for f in frames] == [["prod@1"], ["cand@2"]]
    # Same paths, same order, same failures, for both models: the sample's order.
    for frame in frames:
        assert frame["image_path"].tolist() == [path for path, _ in items]
    assert frames[0][["image_path", "status", "error"]].equals(frames[1][["image_path", "status", "error"]])
    failed = frames[0][frames[0]["status"] != "ok"]
    assert dict(zip(failed["image_path"], failed["error"])) == {
        "3/broken.png": "not_an_image",
        "7/gone.png": "fetch_failed",
    }
    # One fetch per image, and one preprocessing per decodable image for the two models together (same processor config).
    assert set(read.calls.values()) == {1} and len(read.calls) == len(items)
    assert counting.images == len(blobs) - 1
    # Equal to each model predicted alone.
    alone = predict_images(items, CountingRead(blobs), shipped, **RUN)
    for frame in frames:
        assert frame.drop(columns="model_id").equals(alone.drop(columns="model_id"))


@pytest.mark.slow
def test_a_candidate_with_another_image_processor_gets_its_own_pixel_values_from_the_same_fetch(
    shipped: LoadedModel, blobs
) -> None:
    other = ConvNextImageProcessorPil(
        size={"shortest_edge": 48}, crop_pct=1.0, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    production, candidate = (
        _as(shipped, "prod@1", CountingProcessor(shipped.processor)),
        _as(shipped, "cand@2", CountingProcessor(other)),
    )
    read = CountingRead(blobs)
    items = _items(blobs)
    frames = predict_images_multi(items, read, [production, candidate], **RUN)
    assert set(read.calls.values()) == {1}
    assert production.processor.images == candidate.processor.images == len(blobs) - 1
    alone = predict_images(items, CountingRead(blobs), _as(shipped, "cand@2", other), **RUN)
    assert frames[1].equals(alone)
    assert frames[0]["image_path"].tolist() == frames[1]["image_path"].tolist()


def test_no_models_or_models_on_two_devices_are_refused(shipped: LoadedModel) -> None:
    import torch

    with pytest.raises(ConfigError, match="at least one model"):
        predict_images_multi([], CountingRead({}), [], **RUN)
    elsewhere = LoadedModel(**{**shipped.__dict__, "device": torch.device("meta")})
    with pytest.raises(ConfigError, match="different devices"):
        predict_images_multi([], CountingRead({}), [shipped, elsewhere], **RUN)
