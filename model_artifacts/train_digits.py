"""Train the shipped model: a tiny Hugging Face ResNet on scikit-learn's digits, saved to model_artifacts/digits-resnet/.

Run from the repository root (a few seconds of CPU, deterministic):

    .venv/bin/python model_artifacts/train_digits.py [--out model_artifacts/digits-resnet] [--epochs 15]

The model trains only on ``split_indices()[0]``; the held-out half (the demo source) is scored at
the end. Images go through exactly the path the service uses: :func:`monitor.domain.digits.digit_to_pil`
renders each digit, and the image processor saved beside the model preprocesses it.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import ResNetConfig, ResNetForImageClassification
from transformers.models.convnext import ConvNextImageProcessorPil

from monitor.domain.digits import LABELS, digit_to_pil, load_digits_images, split_indices

DEFAULT_OUT = Path(__file__).resolve().parent / "digits-resnet"
#: The network sees 32x32 pixels: the 64x64 renderings are resized by the processor (bicubic,
#: antialiased); crop_pct=1.0 keeps the whole square, so no stroke is cropped away.
INPUT_SIZE = 32


def build_processor() -> ConvNextImageProcessorPil:
    """The processor saved with the model (``AutoImageProcessor`` loads it as ConvNextImageProcessor[Pil])."""
    return ConvNextImageProcessorPil(
        size={"shortest_edge": INPUT_SIZE},
        crop_pct=1.0,
        resample=Image.Resampling.BICUBIC,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def build_model() -> ResNetForImageClassification:
    """A ResNet-50-shaped network (bottleneck blocks) shrunk to 16..128 channels, one block per stage."""
    config = ResNetConfig(
        num_channels=3,
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        layer_type="bottleneck",
        hidden_act="relu",
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    return ResNetForImageClassification(config)


def _jpeg_round_trip(image: Image.Image) -> Image.Image:
    # The demo source stores JPEGs (quality 95): training on both forms keeps compression noise familiar.
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def pixel_values(processor: ConvNextImageProcessorPil, images: list[Image.Image]) -> torch.Tensor:
    """Preprocess with the saved processor, as inference does."""
    return processor(images=images, return_tensors="pt")["pixel_values"]


def train(out: Path, epochs: int, seed: int = 0) -> float:
    """Train, save to ``out`` and return the held-out accuracy (on JPEG-stored digits, as the demo serves them)."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    images, targets = load_digits_images()
    train_idx, heldout_idx = split_indices()
    processor = build_processor()

    rendered = [digit_to_pil(images[i]) for i in train_idx]
    x_train = pixel_values(processor, rendered + [_jpeg_round_trip(img) for img in rendered])
    y_train = torch.as_tensor(np.concatenate([targets[train_idx], targets[train_idx]]))
    x_held = pixel_values(processor, [_jpeg_round_trip(digit_to_pil(images[i])) for i in heldout_idx])
    y_held = torch.as_tensor(targets[heldout_idx])

    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    batch_size = 64
    steps = epochs * ((len(x_train) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            # Small random shifts (up to 2 px of 32): handwriting is never perfectly centred.
            shift = torch.randint(-2, 3, (2,), generator=generator).tolist()
            inputs = torch.roll(x_train[batch], shifts=shift, dims=(2, 3))
            loss = model(pixel_values=inputs, labels=y_train[batch]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss) * len(batch)
        print(f"epoch {epoch + 1:2d}/{epochs}  loss {total / len(x_train):.4f}")

    model.eval()
    with torch.inference_mode():
        predicted = model(pixel_values=x_held).logits.argmax(-1)
    accuracy = float((predicted == y_held).float().mean())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / "training.json").write_text(
        json.dumps(
            {
                "data": "sklearn.datasets.load_digits, monitor.domain.digits.split_indices(seed=0)",
                "train_images": int(len(train_idx)),
                "heldout_images": int(len(heldout_idx)),
                "epochs": epochs,
                "seed": seed,
                "heldout_accuracy": round(accuracy, 4),
                "torch": torch.__version__,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"held-out accuracy {accuracy:.4f} on {len(heldout_idx)} digits; trained in {time.perf_counter() - started:.1f} s; saved to {out}")
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    accuracy = train(args.out, args.epochs, args.seed)
    if accuracy < 0.9:
        raise SystemExit(f"held-out accuracy {accuracy:.4f} is below 0.9; not a model to ship")


if __name__ == "__main__":
    main()
