"""Predict throughput: end to end (JPEG bytes in memory -> decode -> preprocess -> logits) vs the model alone.

Both are measured in one run, on the same device, batch size and model, for the shipped digits
model and for a ResNet-50-sized model with random weights (transformers' default ResNetConfig is
the ResNet-50 shape; nothing is downloaded). The ratio end-to-end / model-only says how much of
the model's speed the input pipeline keeps (target >= 0.8).

    .venv/bin/python benchmarks/bench_predict.py --quick        # < 1 minute on 2 CPU cores
    .venv/bin/python benchmarks/bench_predict.py                # a few minutes
    .venv/bin/python benchmarks/bench_predict.py --device cuda --precision bf16 --images 4096
    .venv/bin/python benchmarks/bench_predict.py --quick --json  # the figures as one JSON object (the table on stderr)
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluation.model import LoadedModel, load_model, quiet_transformers  # noqa: E402
from evaluation.imaging import image_to_tensor  # noqa: E402
from evaluation.predict import forward_probs, predict_images  # noqa: E402
from evaluation.preprocessing import TensorPreprocess, processor_pixel_values, resolve_path  # noqa: E402
from monitor.digits import encode_digit, load_digits_images  # noqa: E402
from monitor.settings import SHIPPED_MODEL_DIR  # noqa: E402


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, torch threads {torch.get_num_threads()}"


def photo_jpegs(count: int, width: int, height: int, seed: int = 0) -> list[bytes]:
    """Photo-like JPEGs (smooth gradients plus noise, quality 90): they decode like camera images, not flat colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for i in range(min(count, 16)):  # 16 distinct images, reused: encoding is not what is measured
        phase = rng.uniform(0, 6.28, size=3)
        base = np.stack([127 + 100 * np.sin(xx / (23 + 7 * c) + yy / (31 + 5 * c) + phase[c]) for c in range(3)], axis=-1)
        noisy = np.clip(base + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return [out[i % len(out)] for i in range(count)]


def digit_jpegs(count: int) -> list[bytes]:
    images, _ = load_digits_images()
    distinct = [encode_digit(images[i]) for i in range(min(count, 256))]
    return [distinct[i % len(distinct)] for i in range(count)]


def resnet50_dir(dest: Path, image_size: int) -> Path:
    """A random-weight ResNet-50 (transformers' default ResNetConfig) saved as a user's model directory."""
    from transformers import ResNetConfig, ResNetForImageClassification
    from transformers.models.convnext import ConvNextImageProcessorPil

    torch.manual_seed(0)
    config = ResNetConfig(num_labels=1000, id2label={i: f"class_{i}" for i in range(1000)}, label2id={f"class_{i}": i for i in range(1000)})
    with quiet_transformers():
        ResNetForImageClassification(config).save_pretrained(dest)
    # microsoft/resnet-50's processor: shortest edge 224 via crop_pct 0.875 (resize 256, crop 224), bicubic.
    ConvNextImageProcessorPil(size={"shortest_edge": image_size}, crop_pct=0.875).save_pretrained(dest)
    return dest


def timed(run: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` runs (the best is the one least disturbed by the rest of the machine)."""
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def bench_model(
    name: str, loaded: LoadedModel, blobs: list[bytes], *, batch_size: int, fetch_workers: int, path: str, precision: str, repeats: int
) -> dict[str, float | str]:
    chosen = resolve_path(loaded, path)  # type: ignore[arg-type]
    items = [(f"img/{i}.jpg", loaded.labels[0]) for i in range(len(blobs))]
    store = dict(zip((p for p, _ in items), blobs))
    # Model only: real pixel values of one batch, already on the device, fed len(blobs) / batch_size times.
    first = [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs[:batch_size]]
    if chosen == "tensor":
        pixels = TensorPreprocess.from_processor(loaded.processor)([image_to_tensor(im) for im in first], loaded.device)
    else:
        pixels = processor_pixel_values(loaded, first).to(loaded.device)
    batches = -(-len(blobs) // batch_size)

    def model_only() -> None:
        for _ in range(batches):
            forward_probs(loaded, pixels, precision=precision)  # type: ignore[arg-type]

    def end_to_end() -> None:
        predict_images(
            items, store.__getitem__, loaded, date="2024-01-01", batch_size=batch_size, fetch_workers=fetch_workers,
            top_k=5, max_pixels=50_000_000, path=chosen, precision=precision,  # type: ignore[arg-type]
        )  # fmt: skip

    forward_probs(loaded, pixels, precision=precision)  # type: ignore[arg-type]  # warm-up (allocator, kernels)
    model_s = e2e_s = float("inf")
    # Interleaved, best of each: a burst of other work on the machine then hits both sides alike.
    for _ in range(repeats):
        model_s = min(model_s, timed(model_only, 1))
        e2e_s = min(e2e_s, timed(end_to_end, 1))
    count = batches * batch_size
    return {
        "model": name,
        "path": chosen,
        "images": len(blobs),
        "input": f"{Image.open(io.BytesIO(blobs[0])).size[0]}x{Image.open(io.BytesIO(blobs[0])).size[1]} JPEG -> {tuple(pixels.shape[2:])}",
        "model_only": count / model_s,
        "end_to_end": len(blobs) / e2e_s,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: finishes in under a minute on 2 CPU cores")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fetch-workers", type=int, default=4)
    parser.add_argument("--images", type=int, default=None, help="images per measurement for the shipped model (ResNet-50 gets fewer on CPU)")
    parser.add_argument("--path", default="auto", choices=["auto", "processor", "tensor", "both"], help="preprocessing path; both: measure each (auto: tensor on CUDA when the processor is reproducible, else processor)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--skip-resnet50", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object of the figures (the table goes to stderr)")
    args = parser.parse_args(argv)
    out = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    on_gpu = device.type == "cuda"
    small = args.images or (512 if args.quick else 4096)
    large = args.images or ((512 if args.quick else 4096) if on_gpu else (32 if args.quick else 256))
    repeats = args.repeats or (2 if args.quick else 3)
    say(f"bench_predict  {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC  device: {device_name(device)}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    say(f"host: {os.cpu_count()} CPUs, load average {load} (other work on the machine slows both figures)")
    say(f"torch {torch.__version__}, batch size {args.batch_size}, fetch workers {args.fetch_workers}, precision {args.precision}, best of {repeats}")
    results = []
    paths = ["processor", "tensor"] if args.path == "both" else [args.path]
    common = dict(batch_size=args.batch_size, fetch_workers=args.fetch_workers, precision=args.precision, repeats=repeats)
    shipped = load_model(SHIPPED_MODEL_DIR, str(device))
    for path in paths:
        results.append(bench_model("digits-resnet (shipped)", shipped, digit_jpegs(small), path=path, **common))  # type: ignore[arg-type]
    if not args.skip_resnet50:
        with tempfile.TemporaryDirectory() as tmp:
            loaded = load_model(resnet50_dir(Path(tmp) / "resnet-50-random", 224), str(device))
            for path in paths:
                results.append(bench_model("ResNet-50 (random weights)", loaded, photo_jpegs(large, 500, 375), path=path, **common))  # type: ignore[arg-type]
    say(f"{'model':28} {'path':9} {'images':>6}  {'input':32} {'model-only img/s':>17} {'end-to-end img/s':>17} {'ratio':>6}")
    for r in results:
        ratio = float(r["end_to_end"]) / float(r["model_only"])
        flag = "" if ratio >= 0.8 else "  (< 0.8 target)"
        say(f"{r['model']:28} {r['path']:9} {r['images']:>6}  {r['input']:32} {r['model_only']:>17,.0f} {r['end_to_end']:>17,.0f} {ratio:>6.2f}{flag}")
        r["ratio"] = ratio
    result = {
        "device": device_name(device), "torch": torch.__version__, "batch_size": args.batch_size, "fetch_workers": args.fetch_workers,
        "precision": args.precision, "repeats": repeats, "results": results,
    }  # fmt: skip
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    return result


if __name__ == "__main__":
    main()
