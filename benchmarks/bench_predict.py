"""Predict throughput: end to end (JPEG bytes in memory -> decode -> preprocess -> logits) vs the model alone.

Both are measured in one run, on the same device, batch size and model, for the shipped digits
model and for a ResNet-50-sized model with random weights (transformers' default ResNetConfig is
the ResNet-50 shape; nothing is downloaded). The ratio end-to-end / model-only says how much of
the model's speed the input pipeline keeps (target >= 0.8).

    .venv/bin/python benchmarks/bench_predict.py --quick        # < 1 minute on 2 CPU cores
    .venv/bin/python benchmarks/bench_predict.py                # a few minutes
    .venv/bin/python benchmarks/bench_predict.py --device cuda --dtype bf16 --batch-sizes 64,256 --images 4096
    .venv/bin/python benchmarks/bench_predict.py --quick --json  # the figures as one JSON object (the table on stderr)
    .venv/bin/python benchmarks/bench_predict.py --equivalence --device cuda --json   # CPU vs CUDA predictions

On CUDA the default path (``--path auto``) is the production GPU path: JPEGs decoded by nvjpeg
(torchvision's ``decode_jpeg``, when torchvision imports; Pillow otherwise, which the JSON's
``decode`` says), resized and normalised on the GPU, bf16 autocast (``--dtype auto`` or ``bf16``).

``--equivalence`` measures nothing: it predicts the held-out digits (the half of the data set the
shipped model never saw) with the production ``predict_images`` once on the CPU (the reference:
processor path, fp32) and once on ``--device`` with ``--path``/``--dtype`` (and in fp32 there too
when ``--dtype`` is reduced), and says whether every predicted label is the same and every class
probability within the tolerance (exit status 1 when not). ``benchmarks/gpu_check.sh`` runs both.
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

from evaluation.imaging import _gpu_jpeg_decoder, image_to_tensor  # noqa: E402
from evaluation.model import LoadedModel, load_model, quiet_transformers  # noqa: E402
from evaluation.predict import autocast_dtype, forward_probs, predict_images  # noqa: E402
from evaluation.preprocessing import TensorPreprocess, processor_pixel_values, resolve_path  # noqa: E402
from monitor.domain.digits import LABELS, digit_file_name, encode_digit, load_digits_images, split_indices  # noqa: E402

# monitor.core.settings.SHIPPED_MODEL_DIR, without importing the settings (pydantic): an image that
# already holds CUDA torch and transformers can run this file with no other package installed.
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent.parent / "model_artifacts" / "digits-resnet"
#: Largest |p_device - p_cpu| allowed for any class of any held-out digit, by the candidate's dtype.
#: Measured on the CPU (tensor path vs processor path, 901 digits, all 10 classes): worst 0.021 in
#: fp32 and 0.042 under bf16 autocast, mean 0.0001 and 0.0003 (pixels one grey level apart move a
#: few near-boundary digits). The bounds leave room for nvjpeg's rounding and CUDA's TF32 convolutions;
#: a wrong resize or normalisation moves probabilities by tenths. Labels must match exactly.
TOLERANCE = {"fp32": 0.03, "bf16": 0.06, "fp16": 0.06}


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
    for _ in range(min(count, 16)):  # 16 distinct images, reused: encoding is not what is measured
        phase = rng.uniform(0, 6.28, size=3)
        base = np.stack(
            [127 + 100 * np.sin(xx / (23 + 7 * c) + yy / (31 + 5 * c) + phase[c]) for c in range(3)], axis=-1
        )
        noisy = np.clip(base + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return [out[i % len(out)] for i in range(count)]


def digit_jpegs(count: int) -> list[bytes]:
    images, _ = load_digits_images()
    distinct = [encode_digit(images[i]) for i in range(min(count, 256))]
    return [distinct[i % len(distinct)] for i in range(count)]


def resnet50_dir(dest: Path, image_size: int, labels: int = 1000, tiny: bool = False) -> Path:
    """A random-weight ResNet-50 (transformers' default ResNetConfig) with ``labels`` classes, saved as a user's model directory.

    ``tiny``: the same class, processor and labels with one narrow block per stage (the plumbing, in
    seconds on a CPU; its figures mean nothing).
    """
    from transformers import ResNetConfig, ResNetForImageClassification

    try:
        from transformers.models.convnext import ConvNextImageProcessorPil
    except ImportError:  # a transformers 5 from before the Pillow backend's own class: the same settings
        from transformers import ConvNextImageProcessor as ConvNextImageProcessorPil  # type: ignore[assignment]

    torch.manual_seed(0)
    shape = dict(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1]) if tiny else {}
    config = ResNetConfig(
        num_labels=labels,
        id2label={i: f"class_{i}" for i in range(labels)},
        label2id={f"class_{i}": i for i in range(labels)},
        **shape,
    )
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


def decode_kind(loaded: LoadedModel, chosen: str) -> str:
    """Who decodes plain JPEGs on this path: nvjpeg on CUDA's tensor path when torchvision works, else Pillow."""
    if chosen == "tensor" and loaded.device.type == "cuda" and _gpu_jpeg_decoder() is not None:
        return "nvjpeg"
    return "pillow"


def dtype_name(device: torch.device, precision: str) -> str:
    """The autocast dtype ``precision`` resolves to on ``device``: fp32, bf16 or fp16."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast_dtype(device, precision)]  # type: ignore[arg-type,index]


def bench_model(
    name: str,
    loaded: LoadedModel,
    blobs: list[bytes],
    *,
    batch_size: int,
    fetch_workers: int,
    path: str,
    precision: str,
    repeats: int,
) -> dict[str, object]:
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
            items,
            store.__getitem__,
            loaded,
            date="2024-01-01",
            batch_size=batch_size,
            fetch_workers=fetch_workers,
            top_k=5,
            max_pixels=50_000_000,
            path=chosen,
            precision=precision,  # type: ignore[arg-type]
        )

    forward_probs(loaded, pixels, precision=precision)  # type: ignore[arg-type]  # warm-up (allocator, kernels)
    model_s = e2e_s = float("inf")
    # Interleaved, best of each: a burst of other work on the machine then hits both sides alike.
    for _ in range(repeats):
        model_s = min(model_s, timed(model_only, 1))
        e2e_s = min(e2e_s, timed(end_to_end, 1))
    count = batches * int(pixels.shape[0])  # fewer images than one batch: that many per forward pass
    width, height = Image.open(io.BytesIO(blobs[0])).size
    return {
        "model": name,
        "labels": len(loaded.labels),
        "batch_size": batch_size,
        "path": chosen,
        "decode": decode_kind(loaded, chosen),
        "dtype": dtype_name(loaded.device, precision),
        "images": len(blobs),
        "input": f"{width}x{height} JPEG -> {tuple(pixels.shape[2:])}",
        "model_only": count / model_s,
        "end_to_end": len(blobs) / e2e_s,
    }


# --- CPU vs device predictions on the shipped model ------------------------------------------------


def heldout_digits(limit: int | None = None) -> tuple[list[tuple[str, str]], dict[str, bytes]]:
    """The held-out digits (never seen in training) as ``(image_path, label)`` items and their JPEG bytes, as the demo source stores them."""
    images, targets = load_digits_images()
    chosen = split_indices()[1]
    if limit is not None:
        chosen = chosen[:limit]
    items = [(f"{LABELS[int(targets[i])]}/{digit_file_name(int(i))}", LABELS[int(targets[i])]) for i in chosen]
    return items, {path: encode_digit(images[int(i)]) for (path, _), i in zip(items, chosen)}


def probability_matrix(frame, labels: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Every class's probability per row, from the top-k lists (top_k = every label)."""
    column = {label: j for j, label in enumerate(labels)}
    out = np.full((len(frame), len(labels)), np.nan)
    for i, (names, scores) in enumerate(zip(frame["topk_labels"], frame["topk_scores"])):
        for name, score in zip(names, scores):
            out[i, column[name]] = score
    return out


def equivalence(
    device: torch.device,
    *,
    path: str,
    precision: str,
    batch_size: int,
    fetch_workers: int,
    limit: int | None,
    tolerance: float | None,
) -> dict[str, object]:
    """Held-out digits through ``predict_images`` on the CPU (reference) and on ``device``: same labels, probabilities within tolerance."""
    items, store = heldout_digits(limit)
    run = dict(date="2024-01-01", batch_size=batch_size, fetch_workers=fetch_workers, max_pixels=50_000_000)
    reference_model = load_model(SHIPPED_MODEL_DIR, "cpu")
    labels = reference_model.labels
    start = time.perf_counter()
    reference = predict_images(items, store.__getitem__, reference_model, top_k=len(labels), **run)  # type: ignore[arg-type]
    reference_s = time.perf_counter() - start
    ref_probs = probability_matrix(reference, labels)
    candidate_model = load_model(SHIPPED_MODEL_DIR, str(device))
    chosen = resolve_path(candidate_model, path)  # type: ignore[arg-type]
    wanted = dtype_name(device, precision)
    precisions = [precision] + (["fp32"] if wanted != "fp32" else [])
    candidates = []
    for candidate_precision in precisions:
        dtype = dtype_name(device, candidate_precision)
        limit_abs = tolerance if tolerance is not None else TOLERANCE[dtype]
        start = time.perf_counter()
        frame = predict_images(
            items,
            store.__getitem__,
            candidate_model,
            top_k=len(labels),
            path=chosen,
            precision=candidate_precision,
            **run,  # type: ignore[arg-type]
        )
        seconds = time.perf_counter() - start
        probs = probability_matrix(frame, labels)
        diff = np.abs(probs - ref_probs)
        differing = [i for i, (a, b) in enumerate(zip(reference["pred"], frame["pred"])) if a != b]
        failed = int((frame["status"] != "ok").sum())
        worst = float(np.nanmax(diff)) if diff.size else 0.0
        candidates.append(
            {
                "device": str(device),
                "path": chosen,
                "decode": decode_kind(candidate_model, chosen),
                "dtype": dtype,
                "tolerance": limit_abs,
                "label_mismatches": len(differing),
                "failed_rows": failed,
                "max_abs_prob_diff": worst,
                "mean_abs_prob_diff": float(np.nanmean(diff)) if diff.size else 0.0,
                "max_abs_confidence_diff": float(np.nanmax(np.abs(frame["confidence"] - reference["confidence"])))
                if len(frame)
                else 0.0,
                "accuracy": float((frame["pred"] == frame["label"]).mean()),
                "seconds": seconds,
                "mismatches": [
                    {
                        "image_path": items[i][0],
                        "label": items[i][1],
                        "cpu": reference["pred"][i],
                        "device": frame["pred"][i],
                        "cpu_confidence": float(reference["confidence"][i]),
                        "device_confidence": float(frame["confidence"][i]),
                    }
                    for i in differing[:10]
                ],
                "passed": not differing and failed == 0 and not np.isnan(diff).any() and worst <= limit_abs,
            }
        )
    return {
        "check": "equivalence",
        "model": reference_model.model_id,
        "images": len(items),
        "reference": {
            "device": "cpu",
            "path": resolve_path(reference_model, "auto"),
            "dtype": dtype_name(torch.device("cpu"), "auto"),
            "processor": type(reference_model.processor).__name__,
            "accuracy": float((reference["pred"] == reference["label"]).mean()),
            "failed_rows": int((reference["status"] != "ok").sum()),
            "seconds": reference_s,
        },
        "candidates": candidates,
        "passed": bool(candidates)
        and all(c["passed"] for c in candidates)
        and bool((reference["status"] == "ok").all()),
    }


# --- command line ---------------------------------------------------------------------------------


def batch_sizes(text: str) -> list[int]:
    """``64,256`` -> [64, 256]: positive integers, comma-separated."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive batch sizes, got {text!r}")
    return sizes


def library_versions() -> dict[str, str | None]:
    import transformers

    try:
        import torchvision

        vision: str | None = torchvision.__version__
    except (ImportError, RuntimeError, OSError, AttributeError):
        vision = None
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "torchvision": vision,
        "transformers": transformers.__version__,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: finishes in under a minute on 2 CPU cores")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--batch-size", type=int, default=None, help="one batch size (default 32; --batch-sizes gives several)"
    )
    parser.add_argument(
        "--batch-sizes",
        type=batch_sizes,
        default=None,
        metavar="N,N",
        help="batch sizes to measure in turn, e.g. 64,256",
    )
    parser.add_argument("--fetch-workers", type=int, default=4)
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="images per measurement (ResNet-50 gets fewer on CPU by default); with --equivalence: the first N held-out digits",
    )
    parser.add_argument(
        "--path",
        default="auto",
        choices=["auto", "processor", "tensor", "both"],
        help="preprocessing path; both: measure each (auto: tensor on CUDA when the processor is reproducible, else processor)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--precision",
        "--dtype",
        dest="precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast dtype (auto: bf16, else fp16, on CUDA; fp32 on CPU)",
    )
    parser.add_argument(
        "--labels", type=int, default=1000, help="classes of the random-weight ResNet-50 (default 1000, ImageNet's)"
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--skip-resnet50", action="store_true")
    parser.add_argument("--skip-shipped", action="store_true", help="measure the ResNet-50 only")
    parser.add_argument(
        "--tiny-resnet",
        action="store_true",
        help="a tiny ResNet (same class, processor and labels) instead of ResNet-50: tests the plumbing in seconds, figures meaningless",
    )
    parser.add_argument(
        "--equivalence",
        action="store_true",
        help="measure nothing: compare the shipped model's predictions on the CPU and on --device (exit 1 when they differ)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help=f"with --equivalence: largest probability difference allowed (default by dtype: {TOLERANCE})",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object of the figures (the table goes to stderr)"
    )
    args = parser.parse_args(argv)
    out = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.path == "both" and args.equivalence:
        parser.error("--equivalence compares one path: give --path auto, processor or tensor")
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: torch {torch.__version__} sees no CUDA GPU")
    on_gpu = device.type == "cuda"
    sizes = args.batch_sizes or [args.batch_size or 32]
    started = time.perf_counter()
    if args.equivalence:
        say(f"bench_predict --equivalence  device: {device_name(device)}")
        result = equivalence(
            device,
            path=args.path,
            precision=args.precision,
            batch_size=args.batch_size or (args.batch_sizes or [64])[0],
            fetch_workers=args.fetch_workers,
            limit=args.images,
            tolerance=args.tolerance,
        )
        ref = result["reference"]
        say(
            f"reference: cpu, {ref['path']} path, {ref['dtype']}: accuracy {ref['accuracy']:.3f} on {result['images']} held-out digits"
        )  # type: ignore[index]
        for c in result["candidates"]:  # type: ignore[attr-defined]
            verdict = "same" if c["passed"] else "DIFFERENT"
            say(
                f"{c['device']}, {c['path']} path ({c['decode']}), {c['dtype']}: {verdict}: {c['label_mismatches']} label mismatches, "
                f"max |dp| {c['max_abs_prob_diff']:.4f} (tolerance {c['tolerance']}), accuracy {c['accuracy']:.3f}"
            )
        result.update(device_name=device_name(device), **library_versions(), seconds=time.perf_counter() - started)
        if args.json:
            json.dump(result, sys.stdout, indent=2)
            print()
        return result
    small = args.images or (512 if args.quick else 4096)
    large = args.images or ((512 if args.quick else 4096) if on_gpu else (32 if args.quick else 256))
    repeats = args.repeats or (2 if args.quick else 3)
    say(f"bench_predict  {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC  device: {device_name(device)}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    say(f"host: {os.cpu_count()} CPUs, load average {load} (other work on the machine slows both figures)")
    say(
        f"torch {torch.__version__}, batch sizes {','.join(map(str, sizes))}, fetch workers {args.fetch_workers}, precision {args.precision}, best of {repeats}"
    )
    results = []
    paths = ["processor", "tensor"] if args.path == "both" else [args.path]
    common = dict(fetch_workers=args.fetch_workers, precision=args.precision, repeats=repeats)
    if not args.skip_shipped:
        shipped = load_model(SHIPPED_MODEL_DIR, str(device))
        blobs = digit_jpegs(small)
        for size in sizes:
            for path in paths:
                results.append(
                    bench_model("digits-resnet (shipped)", shipped, blobs, batch_size=size, path=path, **common)
                )  # type: ignore[arg-type]
    if not args.skip_resnet50:
        with tempfile.TemporaryDirectory() as tmp:
            loaded = load_model(
                resnet50_dir(Path(tmp) / "resnet-50-random", 224, args.labels, tiny=args.tiny_resnet), str(device)
            )
            blobs = photo_jpegs(large, 500, 375)
            name = "ResNet tiny (random weights)" if args.tiny_resnet else "ResNet-50 (random weights)"
            for size in sizes:
                for path in paths:
                    results.append(bench_model(name, loaded, blobs, batch_size=size, path=path, **common))  # type: ignore[arg-type]
    say(
        f"{'model':28} {'batch':>5} {'path':9} {'decode':7} {'dtype':5} {'images':>6}  {'input':32} {'model-only img/s':>17} {'end-to-end img/s':>17} {'ratio':>6}"
    )
    for r in results:
        ratio = float(r["end_to_end"]) / float(r["model_only"])  # type: ignore[arg-type]
        flag = "" if ratio >= 0.8 else "  (< 0.8 target)"
        say(
            f"{r['model']:28} {r['batch_size']:>5} {r['path']:9} {r['decode']:7} {r['dtype']:5} {r['images']:>6}  {r['input']:32} "
            f"{r['model_only']:>17,.0f} {r['end_to_end']:>17,.0f} {ratio:>6.2f}{flag}"
        )
        r["ratio"] = ratio
    result = {
        "check": "benchmark",
        "device": device_name(device),
        **library_versions(),
        "batch_size": sizes[0],
        "batch_sizes": sizes,
        "fetch_workers": args.fetch_workers,
        "precision": args.precision,
        "dtype": dtype_name(device, args.precision),
        "labels": args.labels,
        "repeats": repeats,
        "results": results,
        "seconds": time.perf_counter() - started,
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    return result


if __name__ == "__main__":
    sys.exit(0 if main().get("passed", True) else 1)
