"""Plays a team's own batch-inference job for "bring your own predictions": it knows nothing of the service.

It reads the day's sample (the contract out: ``samples/D.csv``, columns ``image_path`` and ``label``), predicts
each image with its own model code (here plain transformers on the shipped model; yours may be TorchScript,
ONNX or a remote endpoint), and writes the contract in: ``incoming/D.csv`` with ``image_path``, ``pred``,
``score``. Then::

    monitor predictions import data/incoming/2026-11-20.csv --date 2026-11-20 --model-id my-model@v7

or, with the DAG in external mode (``[class_health] predictor = external``), the DAG finds the file itself.

    python examples/external_predictor.py --date 2026-11-20 [--data-dir data] [--source data/source] [--model DIR]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--date", required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--source", type=Path, default=None, help="the image folder (default: <data-dir>/source)")
    parser.add_argument(
        "--model", type=Path, default=Path(__file__).resolve().parents[1] / "model_artifacts" / "digits-resnet"
    )
    args = parser.parse_args()

    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    source = args.source or args.data_dir / "source"
    with open(args.data_dir / "samples" / f"{args.date}.csv", newline="", encoding="utf-8") as handle:
        paths = [row["image_path"] for row in csv.DictReader(handle)]
    processor = AutoImageProcessor.from_pretrained(args.model)
    model = AutoModelForImageClassification.from_pretrained(args.model).eval()
    out = args.data_dir / "incoming" / f"{args.date}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_path", "pred", "score"])
        for path in paths:
            with Image.open(source / path) as image:
                inputs = processor(images=image.convert("RGB"), return_tensors="pt")
            with torch.no_grad():
                probs = model(**inputs).logits.softmax(-1)[0]
            best = int(probs.argmax())
            writer.writerow([path, model.config.id2label[best], f"{float(probs[best]):.6f}"])
    print(f"wrote {len(paths)} predictions to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
