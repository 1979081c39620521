"""`monitor demo`: simulated daily arrivals of held-out digits, one class degraded from some day on, every day run end to end.

The demo source is a local folder ``<data_dir>/source`` laid out like a bucket. It starts with a
pool of held-out digits dated a month before the first day; then, each simulated day, new
images arrive for every class (held-out digits, lightly shifted and rotated so each arrival is a
new picture), their file times set to that day so that the point-in-time sampling sees them
arrive. From the drop day on, the arrivals of one class are damaged (blur, noise and a patch
over part of the digit), as a camera fault or a shift in the data would. The monitor samples
only fresh arrivals (``fresh_days``), evaluates each day, and the health step should flag that
class, and no other, a few days after the drop began.

The demo works only in a data dir it created (its marker file ``.monitor-demo``) or a new or empty one,
and starting over deletes only what it builds there (``source/ store/ samples/ predictions/``, and
``models/`` when its marker records that it created it): a user's files beside them are never touched.

By default every new image of the class is damaged (a dramatic drop: the shipped model gets about
half of them right). ``drop_to`` asks for a moderate drop instead: only a share of the arrivals is
damaged, chosen from the model's measured accuracy on clean and damaged pictures of the class so
that the class's expected accuracy is about ``drop_to``. Such a class typically goes on ``watch``
first, draws follow-up images (marked ``followup`` in the sample CSV), and is then flagged.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from monitor.core.dates import day_span, iso_day
from monitor.core.errors import ConfigError, DataError
from monitor.core.progress import ProgressFactory, no_progress
from monitor.core.settings import Settings
from monitor.domain.digits import LABELS, digit_to_pil, load_digits_images, split_indices
from monitor.orchestration.results import EvaluateResult

#: The file that makes a data dir the demo's: written when the demo (or set-up) starts in a new or empty folder.
MARKER = ".monitor-demo"
#: What the demo and set-up build in a data dir they own, and delete to start over. Nothing else is ever deleted.
DEMO_FOLDERS = ("source", "store", "samples", "predictions")
#: Built by ``--candidate`` only; the marker records it (``owns models``) before it is created, and only then is it the demo's.
MODELS_FOLDER = "models"
#: The marker is a few lines; a bigger one is not the demo's.
MAX_MARKER_BYTES = 4096
#: New images per class per simulated day: the base draw takes samples_per_class of the newest, follow-up draws from the rest
#: (each image is evaluated once, so the arrivals must hold what a watched class asks for).
ARRIVALS_PER_DAY = 40
#: Held-out digits per class already in the source before the first day.
BASE_POOL_PER_CLASS = 30


#: The demo candidate's classifier-bias shifts: + on the degraded class (it reads most damaged images again),
#: - on CANDIDATE_WORSE (it now misses some of that class); and that class.
CANDIDATE_SHIFT = (2.0, -1.5)
CANDIDATE_WORSE = "three"


def build_candidate_model(base: Path, dest: Path, bias_shift: dict[str, float]) -> Path:
    """A stand-in "retrained" model: a copy of ``base`` whose classifier biases move by ``bias_shift`` (label -> logits).

    A positive shift makes the model say that label more often (it recovers images of a damaged class
    that it took for others, at the cost of some false positives); a negative one makes it miss the
    class. Deterministic: the same shifts give the same weights, hence the same model id.
    """
    import json

    from safetensors.torch import load_file, save_file

    config = json.loads((base / "config.json").read_text())
    index = {label: int(i) for i, label in config["id2label"].items()}
    unknown = sorted(set(bias_shift) - set(index))
    if unknown:
        raise ConfigError(f"labels {unknown} are not among the model {base.name}'s labels")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copyfile(base / name, dest / name)
    weights = load_file(str(base / "model.safetensors"))
    bias_keys = [key for key in weights if key.startswith("classifier") and key.endswith("bias")]
    if len(bias_keys) != 1:
        raise ConfigError(f"{base} has no single classifier bias ({bias_keys})")
    bias = weights[bias_keys[0]].clone()
    for label, shift in bias_shift.items():
        bias[index[label]] += float(shift)
    weights[bias_keys[0]] = bias
    save_file(weights, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def _marker_extras(data_dir: Path) -> set[str] | None:
    """The extra folders the marker says the demo created (``owns NAME`` lines); None when there is no marker (a regular file)."""
    import stat

    marker = data_dir / MARKER
    try:
        info = marker.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"cannot read {marker}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MARKER_BYTES:
        return None  # a link, a folder or a pipe by that name was not written by the demo
    try:
        text = marker.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"cannot read {marker}: {exc.strerror or exc}") from exc
    owned = {line[len("owns ") :].strip() for line in text.splitlines() if line.startswith("owns ")}
    return owned & {MODELS_FOLDER}  # the only extra folder the demo builds; any other line is not honoured


def _write_marker(data_dir: Path, extras: set[str]) -> None:
    lines = [
        f"created by `monitor demo`; the demo may delete {', '.join(name + '/' for name in DEMO_FOLDERS)} here and nothing else"
    ]
    lines += [f"owns {name}" for name in sorted(extras)]
    (data_dir / MARKER).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _guard(settings: Settings, *, candidate: bool = False) -> Path:
    """Refuse to touch anything the demo did not create: it works only in a folder it marked, or a new or empty one."""
    data_dir = settings.data_dir
    source = data_dir / "source"
    if settings.mongo_uri:
        raise ConfigError("monitor demo writes its own store: unset MONITOR_MONGO_URI (it uses the embedded store)")
    if Path(settings.source_uri) != source:
        raise ConfigError(
            f"monitor demo builds its own source in {source}: unset MONITOR_SOURCE_URI (now {settings.source_uri})"
        )
    remedy = "point MONITOR_DATA_DIR at a new or empty folder for the demo"
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"MONITOR_DATA_DIR {data_dir} is not a folder; {remedy}")
    extras = _marker_extras(data_dir)
    if extras is None:
        try:
            foreign = data_dir.is_dir() and next(data_dir.iterdir(), None) is not None
        except OSError as exc:
            raise DataError(f"cannot list MONITOR_DATA_DIR {data_dir}: {exc.strerror or exc}; {remedy}") from exc
        if foreign:
            raise DataError(
                f"{data_dir} is not empty and monitor demo did not create it (no {MARKER} file in it); {remedy}"
            )
        return source
    models = data_dir / MODELS_FOLDER
    if candidate and MODELS_FOLDER not in extras and (models.exists() or models.is_symlink()):
        raise DataError(
            f"{models} was not created by monitor demo, which would write its candidate model there; move it away or {remedy}"
        )
    return source


def _reset(settings: Settings) -> None:
    """Delete what the demo built before (only :data:`DEMO_FOLDERS` and the folders its marker records), then mark the folder."""
    data_dir = settings.data_dir
    extras = _marker_extras(data_dir) or set()
    for name in (*DEMO_FOLDERS, *sorted(extras)):
        path = data_dir / name
        try:
            if path.is_symlink() or path.is_file():
                path.unlink()  # a link is removed, never what it points to
            elif path.is_dir():
                shutil.rmtree(path)
        except OSError as exc:
            raise DataError(f"cannot clear {path} for the demo: {exc.strerror or exc}") from exc
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        _write_marker(data_dir, extras)
    except OSError as exc:
        raise DataError(f"cannot write the demo's data dir {data_dir}: {exc.strerror or exc}") from exc


def _own_models(settings: Settings) -> Path:
    """``<data_dir>/models``, recorded in the marker as the demo's before it is created (so a later reset may delete it)."""
    data_dir = settings.data_dir
    extras = _marker_extras(data_dir) or set()
    models = data_dir / MODELS_FOLDER
    if MODELS_FOLDER not in extras:
        if models.exists() or models.is_symlink():
            raise DataError(
                f"{models} was not created by monitor demo; move it away or point MONITOR_DATA_DIR at a new or empty folder"
            )
        _write_marker(data_dir, extras | {MODELS_FOLDER})
    return models


def _noon(day: dt.date) -> float:
    return dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC).timestamp()


def _jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A new picture of the same digit: a small shift and rotation on white paper."""
    angle = float(rng.uniform(-6, 6))
    dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, translate=(dx, dy), fillcolor=(255, 255, 255))


def degrade_image(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Damage a digit the way a faulty camera would: heavy blur, sensor noise, a smudge over part of it."""
    side = image.width
    blurred = image.filter(ImageFilter.GaussianBlur(radius=side / 10))
    pixels = np.asarray(blurred, dtype=np.float32)
    pixels += rng.normal(0, 55, size=pixels.shape)
    top = int(rng.integers(0, side // 3))
    left = int(rng.integers(0, side // 3))
    pixels[top : top + side // 2, left : left + side // 2, :] = 90.0
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _write(path: Path, image: Image.Image, when: float) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    os.utime(path, (when, when))


def build_base_pool(source: Path, first_day: dt.date, seed: int = 0) -> int:
    """Held-out digits that were already in the bucket a month before the first simulated day."""
    images, targets = load_digits_images()
    heldout = split_indices()[1]
    rng = np.random.default_rng(seed)
    when = _noon(first_day - dt.timedelta(days=30))
    count = 0
    for digit, label in enumerate(LABELS):
        members = heldout[targets[heldout] == digit]
        for index in rng.choice(members, size=min(BASE_POOL_PER_CLASS, len(members)), replace=False):
            _write(source / label / f"digit_{int(index):05d}.jpg", digit_to_pil(images[index]), when)
            count += 1
    return count


def write_arrivals(
    source: Path, day: dt.date, *, degraded_label: str | None, seed: int = 0, damaged_share: float = 1.0
) -> int:
    """The images that arrive in the bucket on ``day``: ARRIVALS_PER_DAY new pictures per class.

    Of ``degraded_label``'s arrivals, each is damaged with probability ``damaged_share``.
    """
    images, targets = load_digits_images()
    heldout = split_indices()[1]
    rng = np.random.default_rng([seed, day.toordinal()])
    when = _noon(day)
    for digit, label in enumerate(LABELS):
        members = heldout[targets[heldout] == digit]
        for k, index in enumerate(rng.choice(members, size=ARRIVALS_PER_DAY, replace=False)):
            picture = _jitter(digit_to_pil(images[index]), rng)
            if label == degraded_label and rng.random() < damaged_share:
                picture = degrade_image(picture, rng)
            _write(source / label / f"{day.isoformat()}_{k:02d}_{int(index):05d}.jpg", picture, when)
    return ARRIVALS_PER_DAY * len(LABELS)


#: File time of the source that set-up builds: a fixed day in the past, so that `monitor evaluate
#: --date D` for any recent D samples from it (sampling is point-in-time: only images that existed on D).
SETUP_SOURCE_TIME = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


def build_setup_source(settings: Settings) -> dict[str, Any]:
    """The embedded default's image source: every held-out digit as ``<data_dir>/source/<label>/*.jpg``.

    What set-up builds so that ``monitor index / sample / evaluate`` work on a fresh machine with no
    settings. Leaves an existing source alone (a second set-up, or a demo's source); marks the data dir as demo-owned, so a later
    ``monitor demo`` may rebuild it. Refuses a data dir holding data it did not create.
    """
    from monitor.domain.digits import build_demo_source

    source = _guard(settings)
    if source.exists():  # built before, or a demo's source: leave it as it is
        count = sum(1 for path in source.rglob("*") if path.is_file())
        return {"source": str(source), "images": count, "written": 0, "dated": None}
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        _write_marker(settings.data_dir, _marker_extras(settings.data_dir) or set())
    except OSError as exc:
        raise DataError(f"cannot write the data dir {settings.data_dir}: {exc.strerror or exc}") from exc
    written = build_demo_source(source)
    when = SETUP_SOURCE_TIME.timestamp()
    files = [path for path in source.rglob("*") if path.is_file()]
    for path in files:
        os.utime(path, (when, when))
    return {
        "source": str(source),
        "images": len(files),
        "written": written,
        "dated": SETUP_SOURCE_TIME.date().isoformat(),
    }


def damage_share(settings: Settings, label: str, drop_to: float, *, pictures: int = 300) -> dict[str, float]:
    """The share of ``label``'s arrivals to damage so that the model's expected accuracy on them is about ``drop_to``.

    Measured on ``pictures`` jittered held-out digits of the class, each predicted clean and damaged.
    """
    from evaluation.model import load_model
    from evaluation.predict import predict_images

    images, targets = load_digits_images()
    heldout = split_indices()[1]
    members = heldout[targets[heldout] == LABELS.index(label)]
    rng = np.random.default_rng([settings.seed, 7919])
    blobs: dict[str, bytes] = {}
    for k, index in enumerate(rng.choice(members, size=pictures, replace=True)):
        picture = _jitter(digit_to_pil(images[index]), rng)
        for kind, shown in (("clean", picture), ("damaged", degrade_image(picture, rng))):
            buffer = io.BytesIO()
            shown.save(buffer, format="JPEG", quality=92)
            blobs[f"{kind}/{label}/{k}.jpg"] = buffer.getvalue()
    loaded = load_model(settings.model_dir, settings.device)
    frame = predict_images(
        [(path, label) for path in blobs],
        blobs.__getitem__,
        loaded,
        date="2000-01-01",
        batch_size=settings.batch_size,
        fetch_workers=1,
        top_k=1,
        max_pixels=settings.max_image_pixels,
    )
    right = (frame["pred"] == frame["label"]).groupby(frame["image_path"].str.split("/").str[0]).mean()
    clean, damaged = float(right["clean"]), float(right["damaged"])
    if not damaged < drop_to < clean:
        raise ConfigError(
            f"--drop-to {drop_to} is outside what the demo can show for {label!r}: the model gets {clean:.2f} of its clean "
            f"and {damaged:.2f} of its damaged pictures right; choose a value between them"
        )
    share = (clean - drop_to) / (clean - damaged)
    return {"share": share, "clean_accuracy": clean, "damaged_accuracy": damaged, "expected_accuracy": drop_to}


# The demo's last simulated day unless told otherwise: fixed, so that every run, whenever it is made, draws the same
# images and gives the figures the README reports (the draws are seeded by the date).
DEMO_LAST_DAY = dt.date(2026, 11, 30)


def run_demo(
    settings: Settings,
    *,
    days: int = 21,
    drop_day: int | None = None,
    degrade: str = "eight",
    drop_to: float | None = None,
    end: dt.date | None = None,
    candidate: bool = False,
    progress: ProgressFactory = no_progress,
) -> dict[str, Any]:
    """Simulate ``days`` days ending at ``end`` (default :data:`DEMO_LAST_DAY`) and evaluate each; returns what happened.

    ``candidate``: also predict, every day, a stand-in retrained model (:data:`CANDIDATE_SHIFT`, built by
    :func:`build_candidate_model` under ``<data_dir>/models``, a folder the demo creates and records in its marker): better on the degraded class, slightly worse on
    ``CANDIDATE_WORSE``, so that ``monitor compare`` and the dashboard's comparison page show both.

    ``drop_day`` (1-based, default 60% into the run) is the first day whose arrivals of class
    ``degrade`` are damaged: all of them, or with ``drop_to`` the share that brings the class's
    expected accuracy to about ``drop_to`` (:func:`damage_share`). The result holds the health rows of the last day, the classes flagged
    then, and for each flagged class the first day it was flagged and which day of the drop that was (1: its first).
    """
    from evaluation.spark import spark_for
    from monitor.orchestration.context import RunContext
    from monitor.orchestration.pipeline import evaluate_with
    from monitor.store import open_store

    if degrade not in LABELS:
        raise ConfigError(f"--degrade {degrade!r} is not a demo class; choose one of {', '.join(LABELS)}")
    if days < 3:
        raise ConfigError(f"--days {days} is too short; simulate at least 3 days")
    drop = drop_day if drop_day is not None else max(2, round(days * 0.6))
    if not 1 <= drop <= days:
        raise ConfigError(f"--drop-day {drop} is outside the simulated days 1..{days}")
    source = _guard(settings, candidate=candidate)
    severity = damage_share(settings, degrade, drop_to) if drop_to is not None else {"share": 1.0}
    _reset(settings)

    last = end or DEMO_LAST_DAY
    first = last - dt.timedelta(days=days - 1)
    drop_date = first + dt.timedelta(days=drop - 1)
    # The demo watches what newly arrived: samples come from the last 2 days' arrivals only.
    demo_settings = settings.model_copy(update={"fresh_days": settings.fresh_days or 2})
    build_base_pool(source, first, seed=settings.seed)

    spark = spark_for(settings)
    first_flagged: dict[str, str] = {}
    daily: list[dict[str, Any]] = []
    result: EvaluateResult | None = None
    with open_store(demo_settings) as store, progress("demo days", days) as advance:
        candidate_id = None
        if candidate:
            from evaluation.model import model_identity

            worse = CANDIDATE_WORSE if CANDIDATE_WORSE != degrade else "nine"
            built = build_candidate_model(
                settings.model_dir,
                _own_models(settings) / "digits-candidate",
                {degrade: CANDIDATE_SHIFT[0], worse: CANDIDATE_SHIFT[1]},
            )
            candidate_id = model_identity(built)
            store.add_candidate(str(built), model_id=candidate_id, added_at=dt.datetime.now(dt.UTC))
        for offset in range(days):
            day = first + dt.timedelta(days=offset)
            write_arrivals(
                source,
                day,
                degraded_label=degrade if day >= drop_date else None,
                seed=settings.seed,
                damaged_share=severity["share"],
            )
            result = evaluate_with(RunContext.for_date(demo_settings, day), store, spark=spark)
            for label in result["flagged"]:
                first_flagged.setdefault(label, day.isoformat())
            daily.append(
                {
                    "date": day.isoformat(),
                    "flagged": result["flagged"],
                    "accuracy": {row["label"]: row["accuracy"] for row in result["classes"]},
                    "verdicts": {row["label"]: row["verdict"] for row in result["health"]},
                    "followup": dict(result["followup"]),
                }
            )
            advance(1)
    if result is None:  # days >= 1 is checked on entry; this keeps the type checker honest
        raise ConfigError("the demo ran no day")
    days_to_flag = {
        label: day_span(drop_date, iso_day(day)) for label, day in first_flagged.items() if label == degrade
    }
    return {
        "first_date": first.isoformat(),
        "last_date": last.isoformat(),
        "drop_date": drop_date.isoformat(),
        "degraded": degrade,
        "severity": severity,
        "flagged": result["flagged"],
        "first_flagged": first_flagged,
        "days_to_flag": days_to_flag,
        "health": result["health"],
        "daily": daily,
        "model": result["model"],
        "candidate": candidate_id,
    }
