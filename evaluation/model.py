"""Load an image classifier from a local Hugging Face directory (offline), identify it, and check its labels."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import pickle
import threading
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from monitor.core.errors import ModelError, first_line

log = logging.getLogger(__name__)

#: Weight files ``from_pretrained`` may read; all that are present enter the checksum.
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


@dataclass
class LoadedModel:
    """A model ready for inference, with the identity that predictions and metrics record."""

    model: torch.nn.Module
    processor: Any  # a transformers image processor (the PIL backend when torchvision is absent)
    id2label: dict[int, str]
    labels: list[str]  # id2label's values in class-index order
    model_id: str  # "<name>@<first 12 hex of checksum>"
    name: str  # the directory's name
    checksum: str  # sha256 over the weight files' names and bytes
    device: torch.device
    model_dir: Path


def weights_checksum(model_dir: Path) -> str:
    """sha256 over every weight file in ``model_dir`` (names and bytes, in name order); ModelError if there is none."""
    files = sorted({path for pattern in WEIGHT_PATTERNS for path in Path(model_dir).glob(pattern) if path.is_file()})
    if not files:
        raise ModelError(f"model directory {model_dir} has no weight files (model.safetensors or pytorch_model.bin)")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an explicit ``cuda`` without a GPU is a ModelError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"device {device!r} is not a torch device: {exc}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} was asked for but torch sees no CUDA GPU (torch {torch.__version__})")
    return resolved


def load_model(model_dir: Path, device: str = "auto") -> LoadedModel:
    """Load ``model_dir`` (any directory ``AutoModelForImageClassification`` and ``AutoImageProcessor`` accept).

    Never touches the Hugging Face Hub: the directory must exist and every file is read locally
    (``local_files_only=True``; a path that does not exist is refused before transformers could
    take it for a Hub repository id). The model is put in eval mode on ``device`` (``auto``: CUDA
    when present, else CPU), in channels_last memory format on CUDA.

    Raises :class:`ModelError` naming the directory and the cause: missing directory, no
    ``config.json`` or ``preprocessor_config.json``, no weights, a config transformers cannot read,
    or a model that is not an image classifier.
    """
    model_dir = Path(model_dir).expanduser().resolve()
    if not model_dir.is_dir():
        raise ModelError(
            f"model directory {model_dir} does not exist (set MONITOR_MODEL_DIR to a Hugging Face model directory)"
        )
    for required in ("config.json", "preprocessor_config.json"):
        if not (model_dir / required).is_file():
            others = sorted(p.name for p in model_dir.iterdir() if p.suffix in OTHER_FORMATS)[:3]
            what = f" (it holds {', '.join(others)}: not a Hugging Face model)" if others else ""
            raise ModelError(
                f"model directory {model_dir} has no {required}{what}: give MONITOR_MODEL_DIR a directory that "
                "AutoModelForImageClassification.from_pretrained loads (save_pretrained writes one), or predict the "
                "day's sample with your own model and bring the predictions in: `monitor predictions import FILE "
                "--date D` (README, Your own predictions)"
            )
    _check_json(model_dir / "config.json")
    _check_json(model_dir / "preprocessor_config.json")
    checksum = weights_checksum(model_dir)
    target = resolve_device(device)

    from transformers import AutoImageProcessor, AutoModelForImageClassification

    try:
        with quiet_transformers():
            model, info = AutoModelForImageClassification.from_pretrained(
                model_dir, local_files_only=True, trust_remote_code=False, output_loading_info=True
            )
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        SafetensorError,
    ) as exc:
        # A truncated or corrupt weight file lands here too (safetensors' own error, or pickle's for .bin files).
        raise ModelError(
            f"model directory {model_dir} does not load as an image classifier: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    # transformers only warns about weights missing from the files and initialises them at random:
    # a model that would predict noise must not load.
    missing = list(info.get("missing_keys") or []) + [str(key) for key in info.get("mismatched_keys") or []]
    if missing:
        raise ModelError(
            f"model directory {model_dir}: the weight files lack {len(missing)} of the model's tensors "
            f"(e.g. {', '.join(missing[:3])}); they belong to another architecture or are incomplete"
        )
    unexpected = list(info.get("unexpected_keys") or [])
    if unexpected:
        # Extra tensors do no harm to the model; transformers' own report of them is silenced above.
        log.warning(
            "model directory %s: %d tensors in the weight files are not used (e.g. %s)",
            model_dir,
            len(unexpected),
            ", ".join(unexpected[:3]),
        )
    try:
        with quiet_transformers():
            processor = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(
            f"model directory {model_dir}: preprocessor_config.json does not load: {type(exc).__name__}: {exc}"
        ) from exc

    id2label = {int(index): str(label) for index, label in model.config.id2label.items()}
    num_labels = int(model.config.num_labels)
    if sorted(id2label) != list(range(num_labels)):
        raise ModelError(
            f"model directory {model_dir}: id2label covers indices {sorted(id2label)[:5]}... not 0..{num_labels - 1}"
        )

    model.eval()
    if target.type == "cuda":
        model = model.to(target, memory_format=torch.channels_last)
    else:
        model = model.to(target)
    name = model_dir.name
    return LoadedModel(
        model=model,
        processor=processor,
        id2label=id2label,
        labels=[id2label[i] for i in range(num_labels)],
        model_id=f"{name}@{checksum[:12]}",
        name=name,
        checksum=checksum,
        device=target,
        model_dir=model_dir,
    )


_QUIET_LOCK = threading.RLock()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars ("Loading weights") and warnings for the duration; restore them after.

    The service reports what matters itself (missing tensors are an error, extra ones a log line);
    transformers' settings are global, so they are put back as they were, for any caller.
    """
    from transformers.utils import logging as hf_logging

    with _QUIET_LOCK:
        bars = hf_logging.is_progress_bar_enabled()
        verbosity = hf_logging.get_verbosity()
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        try:
            yield
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()


def model_identity(model_dir: Path) -> str:
    """The ``model_id`` :func:`load_model` gives ``model_dir`` (``<name>@<12 hex>``), from the weight files alone."""
    model_dir = Path(model_dir).expanduser().resolve()
    return f"{model_dir.name}@{weights_checksum(model_dir)[:12]}"


#: Checkpoint formats a team may hold instead of a Hugging Face directory (named in the error that says what to do).
OTHER_FORMATS = (".pt", ".pth", ".ckpt", ".onnx", ".torchscript", ".pb", ".h5", ".bin")


def check_labels(loaded: LoadedModel, labels: Iterable[str]) -> None:
    """Raise :class:`ModelError` if any of ``labels`` (the source's classes) is not one of the model's labels."""
    known = set(loaded.labels)
    unknown = sorted({label for label in labels if label not in known})
    if not unknown:
        return
    shown = ", ".join(loaded.labels[:10]) + (", ..." if len(loaded.labels) > 10 else "")
    names = ", ".join(repr(label) for label in unknown[:20]) + (
        f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
    )
    noun = "label" if len(unknown) == 1 else "labels"
    verb = "is" if len(unknown) == 1 else "are"
    raise ModelError(
        f"{noun} {names} in the source {verb} not among the model {loaded.model_id}'s {len(loaded.labels)} labels ({shown})"
    )


def _check_json(path: Path) -> None:
    """Refuse a configuration file that is not bounded JSON in a regular file (a FIFO, a device, deep nesting, ``1e999``)
    before transformers reads it, in one line: never a hang, never a RecursionError."""
    from monitor.core.files import read_json_file

    read_json_file(
        path, what=f"model directory {path.parent}: {path.name}", max_bytes=64 << 20, max_depth=64, error=ModelError
    )
