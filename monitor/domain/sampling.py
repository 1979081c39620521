"""Stratified, reproducible daily samples: N images per class drawn through the ``sampling`` index, written as samples/D.csv.

How a class is sampled for date D (``draw_sample``):

1. ``u = H(date, seed, label)`` is a pivot in [0, 1); ``H`` is blake2b (8-byte digest, big-endian, / 2**64) of
   a tag (``pivot``, ``pick``, ``followup``; ``key`` for the sample key) and the parts joined by U+001F, read as a
   uniform float.
2. The index ``{source, status, label, sample_key}`` is walked from ``sample_key >= u`` in key
   order, keeping images created by the end of D (and, with ``fresh_days``, not before the
   window): ``find(...).sort("sample_key").limit(L)``, wrapping around to ``sample_key < u``
   when the class runs out above the pivot. ``L = oversample * N``.
3. Of those ``L`` images, the ``N`` with the smallest date-keyed priority
   ``H(date, seed, path)`` are the sample.

No hash takes the source's URI: an image enters them by its path inside the source only, so the same
images draw the same sample for a date and seed wherever the source lives (a copy of a bucket, a
folder under another clone's path). Two sources that hold the same paths draw the same paths on a date;
each source's draw is still a uniform one.

Why this is a uniform random sample per class and day: an image's ``sample_key`` is ``H(key, path)``
(:func:`monitor.domain.indexing.sample_key`), so the keys of a class are independent uniforms that know nothing of the
images' content; ``u`` is a fresh uniform for each date, so the run after ``u`` is a random
stretch of the class's key order, and step 3 draws a uniform random ``N``-subset of it. Over
the hash, every ``N``-subset of the class is equally likely on a day. Across days, with the
keys fixed, an image is drawn with probability ``N/L`` times the key arc spanned by its ``L``
predecessors: mean ``N/M`` for a class of ``M`` images, relative spread about ``1/sqrt(L)``
(10 % at the default ``L = 10 N = 100``), and independent of content, so pooled accuracy stays
unbiased. A class with at most ``L`` available images is read whole, so each of its images is
drawn with probability exactly ``N/M`` every day. (Taking just the ``N`` keys after the pivot,
``L = N``, would leave a spread of ``1/sqrt(N)``: about 32 % at ``N = 10``, some images drawn
twice as often as others over a year.) Different dates hash to unrelated pivots and
priorities, hence different samples; the same date and seed give the same sample as long as
the indexed images are the same.

Follow-up (``followup``: label -> k extra images, from the health verdicts of the day before):
the class's walk is lengthened to ``oversample * (N + k)`` entries from the same pivot, the base
``N`` are chosen exactly as without follow-up (the smallest priorities among the first
``oversample * N``), and the ``k`` extra are the smallest of a second, independent priority
``H("followup", date, seed, path)`` among the rest of the longer walk. So the base draw
does not change when follow-up is on, the extra images are disjoint from it, reproducible for
the date, point-in-time (the same ``created`` filter), and a uniform draw from the class, so the
pooled accuracy stays unbiased. They are marked ``draw = followup`` in the CSV.

**Each image once per model** (``seen``: what the pipeline passes for the production model). A deterministic
model gives the same answer for the same image, so re-drawing an image adds cost, not evidence, and a finite
bucket re-drawn day after day would count its few images again and again. With ``seen`` (label -> the
identities of the images the model evaluated on other dates, :func:`image_identity`) the class's unseen
images are drawn **newest arrival day first**, and within one arrival day by the pivot walk above (a uniform
draw of that day's arrivals); follow-up images continue down the same order. Newest first, because a drop
shows first in what arrives: a team adding a few images a day gets them evaluated the day they land, and a
backlog of older images is worked through behind them. A class of which the model has evaluated nothing draws
``max(N, first_draw)`` base images, so a bucket that already holds hundreds of images per class gets a verdict
on the first day. ``unseen`` and ``unseen_left`` record what the class had to show before and after the draw;
a class with nothing unseen draws nothing, and health says so. Reproducible for the date as above; the seen
set is every other date's evaluations, so a backfilled date never draws an image a later date evaluated.
Cost: the class's documents in the created window are read (``Store.class_images``, the
``source_label_created`` index on MongoDB), so this draw grows with the class, not with ``N`` (no real
MongoDB was available here to time it; ``sample_cost`` counts the walk of the draw without ``seen``). The seen
set is every evaluation of the model (``Store.evaluated``): on the embedded store 300,000 of them (1,000 classes,
10 a day, 30 days) read in 2.7 s (2-core box at load 6, 2026-12-07), so a year at 1,000 classes would take about
half a minute a day there; a real MongoDB reads them through the ``model_label_image`` index.

Cost (without ``seen``): each class reads about ``L`` index entries and documents from its pivot (divided by the
share of its images that pass the created filter, which is checked on the fetched document),
so the work grows with classes x N, not with the collection. No ``$rand``, ``$sample``,
``$setWindowFields`` or ``$topN``: the same queries run on mongomock and on MongoDB.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.core.dates import days_before, end_of_day, iso_day, start_of_day
from monitor.core.errors import ConfigError, DataError
from monitor.core.files import FileRefused, atomic_write, read_bounded
from monitor.store import Store

#: Index entries read per class for each image drawn (see the module docstring).
DEFAULT_OVERSAMPLE = 10
CSV_COLUMNS = ("date", "source", "image_path", "label", "sample_key", "created", "draw", "image")
#: What the CSV held before follow-up sampling (every row a base draw), and before image identities: both still read.
LEGACY_CSV_COLUMNS = CSV_COLUMNS[:-2]
PRE_IDENTITY_CSV_COLUMNS = CSV_COLUMNS[:-1]
DRAWS = ("base", "followup")
#: A sample CSV larger than this is refused (a million rows is about 200 MB).
MAX_SAMPLE_CSV_BYTES = 1 << 30


@dataclass(frozen=True)
class SampleItem:
    """One drawn image."""

    image_path: str
    label: str
    sample_key: float
    created: dt.datetime
    draw: str = "base"  # "followup": an extra image asked for by the health verdict of the day before
    image: str | None = None  # the image's identity (:func:`image_identity`): what "evaluated once per model" counts


@dataclass
class Sample:
    """The sample of one source and date.

    ``seed``, ``n_per_class`` and ``fresh_days`` are ``None`` when read back from a CSV (which
    holds only the items); the ``samples`` document keeps them.
    """

    date: dt.date
    source: str
    seed: int | None
    n_per_class: int | None
    fresh_days: int | None
    items: list[SampleItem] = field(default_factory=list)
    classes: dict[str, int] = field(default_factory=dict)  # label -> images drawn (0 for an empty class)
    short_classes: dict[str, int] = field(default_factory=dict)  # label -> images available, for classes below N
    followup: dict[str, int] = field(default_factory=dict)  # label -> follow-up images drawn (beyond the base N)
    model_id: str | None = None  # the model whose evaluated images were left out (None: a draw that knows no model)
    unseen: dict[str, int] = field(
        default_factory=dict
    )  # label -> images the model had not evaluated, before this draw
    unseen_left: dict[str, int] = field(default_factory=dict)  # label -> ... still not evaluated after this draw


@dataclass(frozen=True)
class SampleCost:
    """Index entries and documents the sampling queries touch (see :func:`sample_cost`)."""

    docs_examined: int
    keys_examined: int | None
    queries: int
    classes: int
    method: str  # "explain" (MongoDB executionStats) or "query-shape" (counted on the embedded store)


def _unit(*parts: object) -> float:
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def pivot(date: dt.date, seed: int, label: str) -> float:
    """Where class ``label`` starts its walk along ``sample_key`` on ``date``: uniform in [0, 1)."""
    return _unit("pivot", date, seed, label)


def _priority(date: dt.date, seed: int, path: str) -> float:
    return _unit("pick", date, seed, path)


def _followup_priority(date: dt.date, seed: int, path: str) -> float:
    return _unit("followup", date, seed, path)


def _validate(n_per_class: int, fresh_days: int | None, oversample: int) -> None:
    if n_per_class < 1:
        raise ConfigError(f"samples per class must be at least 1, got {n_per_class}")
    if fresh_days is not None and fresh_days < 1:
        raise ConfigError(f"fresh_days must be at least 1 when set, got {fresh_days}")
    if oversample < 1:
        raise ConfigError(f"oversample must be at least 1, got {oversample}")


def created_window(date: dt.date, fresh_days: int | None) -> dict[str, dt.datetime]:
    """The ``created`` condition for ``date``: up to the end of D; with ``fresh_days`` = k, from the start of D-(k-1)."""
    window = {"$lte": end_of_day(date)}
    if fresh_days is not None:
        window["$gte"] = start_of_day(days_before(date, fresh_days - 1))
    return window


def _labels(store: Store, source_uri: str, labels: Iterable[str] | None, date: dt.date) -> list[str]:
    """The classes of ``date``: labels with a usable image created by the end of D (a class added later is not news for D)."""
    if labels is not None:
        return sorted(set(labels))
    return store.usable_labels(source_uri, created_by=end_of_day(date))


def image_identity(checksum: str | None, path: str) -> str:
    """What makes two files the same image for "evaluated once per model".

    On GCS the checksum is ``<md5 or crc32c>@<generation>`` (:class:`monitor.core.sources.GCSSource`): its content part
    identifies the bytes, so a renamed, copied or re-uploaded object is the same image. A local folder's checksum is
    ``<size>-<mtime>``, which files written in the same instant share, so there the path and that checksum identify
    the image: a file rewritten with new content is a new image, a renamed one is too (its bytes are never read at
    indexing, so a rename cannot be told from a new file).
    """
    if checksum and "@" in str(checksum):
        return "content:" + str(checksum).split("@", 1)[0]
    return f"path:{path}" + (f"#{checksum}" if checksum else "")


def draw_sample(
    store: Store,
    source_uri: str,
    date: dt.date,
    n_per_class: int,
    seed: int,
    *,
    fresh_days: int | None = None,
    labels: Iterable[str] | None = None,
    oversample: int = DEFAULT_OVERSAMPLE,
    followup: Mapping[str, int] | None = None,
    followup_unit: int = 1,
    seen: Mapping[str, Collection[str]] | None = None,
    first_draw: int = 0,
    model_id: str | None = None,
) -> Sample:
    """Draw ``n_per_class`` usable images per class of ``source_uri`` for ``date`` (see the module docstring).

    Only images created on or before the end of ``date`` (UTC) are eligible, so a date's sample
    never holds an image that arrived later; with ``fresh_days`` = k only those created in the
    k days ending with ``date``. ``labels`` defaults to every label with a usable image in the
    store; a label with fewer than N eligible images gives all it has and is listed in
    ``short_classes`` (with 0 when it has none at D). ``followup`` asks for extra images of some
    classes (see the module docstring); a request for a class not sampled on D is ignored, and a
    class with fewer images than asked for gives a whole multiple of ``followup_unit``. An
    empty sample means nothing was eligible; callers decide whether that is an error. Items are
    sorted by label, then path.

    ``seen`` (label -> image identities ``model_id`` already evaluated, on other dates) turns on the draw of
    **unseen images, newest first** (:func:`_draw_unseen`): none of them is drawn, and a class of which the
    model has evaluated nothing draws ``max(N, first_draw)`` base images.
    """
    _validate(n_per_class, fresh_days, oversample)
    window = created_window(date, fresh_days)
    items: list[SampleItem] = []
    classes: dict[str, int] = {}
    short: dict[str, int] = {}
    extras: dict[str, int] = {}
    unseen: dict[str, int] = {}
    unseen_left: dict[str, int] = {}
    wanted = {str(label): int(k) for label, k in (followup or {}).items() if int(k) > 0}
    chosen: Sequence[Mapping[str, Any]]
    more: Sequence[Mapping[str, Any]]
    for label in _labels(store, source_uri, labels, date):
        extra = wanted.get(label, 0)
        if seen is not None:
            known = seen.get(label) or ()
            want = max(n_per_class, first_draw) if not known else n_per_class
            pool = _unseen(store.class_images(source_uri, label, window), known)
            chosen, more = _draw_unseen(pool, date, seed, label, want, extra, oversample)
            unseen[label] = len(pool)
        else:
            run = store.walk_class(
                source_uri, label, window, pivot(date, seed, label), (n_per_class + extra) * oversample
            )
            # The base draw looks at the first oversample * N entries only, as it would without follow-up.
            base = run[: n_per_class * oversample]
            chosen = list(sorted(base, key=lambda doc: _priority(date, seed, doc["path"]))[:n_per_class])
            taken = {doc["path"] for doc in chosen}
            more = sorted(
                (doc for doc in run if doc["path"] not in taken),
                key=lambda doc: _followup_priority(date, seed, doc["path"]),
            )[:extra]
        more = more[: len(more) // followup_unit * followup_unit]  # short of images: whole grant units only
        if seen is not None:
            unseen_left[label] = unseen[label] - len(chosen) - len(more)
        for draw, docs in (("base", chosen), ("followup", more)):
            for doc in docs:
                created = doc["created"]
                if created.tzinfo is None:
                    created = created.replace(tzinfo=dt.UTC)
                items.append(
                    SampleItem(
                        image_path=doc["path"],
                        label=label,
                        sample_key=float(doc["sample_key"]),
                        created=created,
                        draw=draw,
                        image=image_identity(doc.get("checksum"), doc["path"]),
                    )
                )
        classes[label] = len(chosen) + len(more)
        if len(chosen) < n_per_class:
            short[label] = len(chosen)
        if more:
            extras[label] = len(more)
    items.sort(key=lambda item: (item.label, item.image_path))
    return Sample(
        date=date,
        source=source_uri,
        seed=seed,
        n_per_class=n_per_class,
        fresh_days=fresh_days,
        items=items,
        classes=classes,
        short_classes=short,
        followup=extras,
        model_id=model_id if seen is not None else None,
        unseen=unseen,
        unseen_left=unseen_left,
    )


def _unseen(docs: Iterable[Mapping[str, Any]], known: Collection[str]) -> list[Mapping[str, Any]]:
    """The documents whose image the model has not evaluated, one per identity (the smallest path of copies)."""
    by_image: dict[str, Mapping[str, Any]] = {}
    for doc in sorted(docs, key=lambda doc: str(doc["path"])):
        image = image_identity(doc.get("checksum"), str(doc["path"]))
        if image not in known and image not in by_image:
            by_image[image] = doc
    return list(by_image.values())


def _arrival_day(doc: Mapping[str, Any]) -> dt.date:
    created = doc["created"]
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    return created.astimezone(dt.UTC).date()


def _draw_unseen(
    pool: Sequence[Mapping[str, Any]],
    date: dt.date,
    seed: int,
    label: str,
    want: int,
    extra: int,
    oversample: int,
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """The base and follow-up images of one class from its unseen ``pool``: the newest arrival day first, and within a
    day the pivot walk of the module docstring (a uniform draw of that day's arrivals)."""
    by_day: dict[dt.date, list[Mapping[str, Any]]] = defaultdict(list)
    for doc in pool:
        by_day[_arrival_day(doc)].append(doc)
    start = pivot(date, seed, label)

    def take(count: int, exclude: set[str], priority: Any) -> list[Mapping[str, Any]]:
        out: list[Mapping[str, Any]] = []
        for day in sorted(by_day, reverse=True):
            if len(out) >= count:
                break
            group = sorted(
                (doc for doc in by_day[day] if doc["path"] not in exclude), key=lambda doc: float(doc["sample_key"])
            )
            need = count - len(out)
            if len(group) <= need:
                out.extend(group)
                continue
            cut = next((i for i, doc in enumerate(group) if float(doc["sample_key"]) >= start), len(group))
            run = (group[cut:] + group[:cut])[: need * oversample]
            out.extend(sorted(run, key=lambda doc: priority(date, seed, doc["path"]))[:need])
        return out

    chosen = take(want, set(), _priority)
    more = take(extra, {str(doc["path"]) for doc in chosen}, _followup_priority) if extra else []
    return chosen, more


def sample_cost(
    store: Store,
    source_uri: str,
    date: dt.date,
    n_per_class: int,
    seed: int,
    *,
    fresh_days: int | None = None,
    labels: Iterable[str] | None = None,
    oversample: int = DEFAULT_OVERSAMPLE,
) -> SampleCost:
    """How many documents drawing this sample touches (for benchmarks and capacity planning).

    On MongoDB the sampling queries are run with ``explain()`` and ``executionStats`` are summed
    (``totalDocsExamined``, ``totalKeysExamined``). mongomock is not MongoDB: it scans every
    document for every query and has no explain, so there the count is taken from the query's
    shape: walking the ``sampling`` index range from the pivot in key order and counting the
    documents fetched until ``L`` pass the ``created`` filter, which is what MongoDB's
    IXSCAN -> FETCH(filter) -> LIMIT plan examines. The ``distinct`` for labels is answered
    from the index (DISTINCT_SCAN, no documents) and is not counted.
    """
    _validate(n_per_class, fresh_days, oversample)
    window = created_window(date, fresh_days)
    run_size = n_per_class * oversample
    docs = keys = queries = 0
    chosen_labels = _labels(store, source_uri, labels, date)
    for label in chosen_labels:
        examined, keyed, asked = store.walk_cost(source_uri, label, window, pivot(date, seed, label), run_size)
        docs, keys, queries = docs + examined, keys + keyed, queries + asked
    return SampleCost(
        docs_examined=docs,
        keys_examined=keys if store.cost_method == "explain" else None,
        queries=queries,
        classes=len(chosen_labels),
        method=store.cost_method,
    )


# --- the CSV artifact and the samples document --------------------------------------------------


def sample_csv_bytes(sample: Sample) -> bytes:
    """``sample`` as CSV (columns ``date, source, image_path, label, sample_key, created, draw, image``), rows by label, then path."""
    rows = sorted(sample.items, key=lambda item: (item.label, item.image_path))
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for item in rows:
        created = item.created if item.created.tzinfo else item.created.replace(tzinfo=dt.UTC)
        writer.writerow(
            [
                sample.date.isoformat(),
                sample.source,
                item.image_path,
                item.label,
                repr(float(item.sample_key)),
                created.astimezone(dt.UTC).isoformat(),
                item.draw,
                item.image or "",
            ]
        )
    return out.getvalue().encode("utf-8")


def write_sample_csv(sample: Sample, path: Path) -> Path:
    """Write ``sample`` as the file ``path`` (:func:`sample_csv_bytes`), atomically: readers see the old file or the new one."""
    data = sample_csv_bytes(sample)
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data), what="sample file")


def read_sample_csv(path: Path, *, date: dt.date | None = None, source: str | None = None) -> Sample:
    """Read the sample file ``path`` (bounded, never blocking: a FIFO or device in its place is refused); see :func:`parse_sample_csv`."""
    path = Path(path)
    try:
        data = read_bounded(path, max_bytes=MAX_SAMPLE_CSV_BYTES)
    except FileNotFoundError as exc:
        raise DataError(f"sample file {path} does not exist") from exc
    except FileRefused as exc:
        raise DataError(f"cannot read sample file {path}: it {exc}") from exc
    except OSError as exc:
        raise DataError(f"cannot read sample file {path}: {exc}") from exc
    return parse_sample_csv(data, str(path), date=date, source=source)


def parse_sample_csv(data: bytes, name: str, *, date: dt.date | None = None, source: str | None = None) -> Sample:
    """A sample written by :func:`sample_csv_bytes` (``name``: where it was read, for messages); malformed: :class:`DataError`.

    A file with the header only is the sample of a day with nothing new to evaluate when the caller names its
    ``date`` and ``source`` (the store recorded it so); otherwise it is refused.
    """
    path = name
    try:
        text = data.decode("utf-8")
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None or tuple(header) not in (CSV_COLUMNS, PRE_IDENTITY_CSV_COLUMNS, LEGACY_CSV_COLUMNS):
            raise DataError(f"{path} is not a sample CSV: header {header} is not {', '.join(CSV_COLUMNS)}")
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read sample file {path}: {exc}") from exc
    if not rows:
        if date is not None and source is not None and tuple(header) == CSV_COLUMNS:
            return Sample(date=date, source=source, seed=None, n_per_class=None, fresh_days=None)
        raise DataError(f"sample file {path} has no rows")
    dates, sources = set(), set()
    items: list[SampleItem] = []
    width = len(header)
    for line, row in enumerate(rows, start=2):
        if len(row) != width:
            raise DataError(f"{path} line {line}: {len(row)} fields, expected {width}")
        date_text, source, image_path, label, key_text, created_text = row[:6]
        draw = row[6] if width > 6 else "base"
        image = (row[7] or None) if width > 7 else None
        if draw not in DRAWS:
            raise DataError(f"{path} line {line}: draw {draw!r} is not one of {', '.join(DRAWS)}")
        try:
            key = float(key_text)
            created = dt.datetime.fromisoformat(created_text)
        except ValueError as exc:
            raise DataError(f"{path} line {line}: bad sample_key {key_text!r} or created {created_text!r}") from exc
        if not image_path or not label or not 0.0 <= key < 1.0:
            raise DataError(f"{path} line {line}: empty image_path/label or sample_key outside [0, 1)")
        if created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        dates.add(date_text)
        sources.add(source)
        items.append(
            SampleItem(image_path=image_path, label=label, sample_key=key, created=created, draw=draw, image=image)
        )
    if len(dates) != 1 or len(sources) != 1:
        raise DataError(
            f"{path} mixes dates {sorted(dates)} or sources {sorted(sources)}; a sample file holds one of each"
        )
    try:
        day = iso_day(dates.pop())
    except ConfigError as exc:
        raise DataError(f"{path}: {exc}") from exc
    classes: dict[str, int] = {}
    extras: dict[str, int] = {}
    for item in items:
        classes[item.label] = classes.get(item.label, 0) + 1
        if item.draw == "followup":
            extras[item.label] = extras.get(item.label, 0) + 1
    return Sample(
        date=day,
        source=sources.pop(),
        seed=None,
        n_per_class=None,
        fresh_days=None,
        items=items,
        classes=dict(sorted(classes.items())),
        short_classes={},
        followup=dict(sorted(extras.items())),
    )


def record_sample(
    store: Store, sample: Sample, csv_path: Path | str, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Upsert the ``samples`` document of (source, date): a re-run replaces it, never duplicates it."""
    doc: dict[str, Any] = {
        "source": sample.source,
        "date": sample.date.isoformat(),
        "seed": sample.seed,
        "n_per_class": sample.n_per_class,
        "fresh_days": sample.fresh_days,
        "created_at": now or dt.datetime.now(dt.UTC),
        "csv": str(csv_path),
        "items": [
            {"path": item.image_path, "label": item.label, "draw": item.draw, "image": item.image}
            for item in sample.items
        ],
        "classes": dict(sample.classes),
        "short_classes": dict(sample.short_classes),
        "followup": dict(sample.followup),
        "model_id": sample.model_id,
        "unseen": dict(sample.unseen),
        "unseen_left": dict(sample.unseen_left),
    }
    store.save_sample(doc)
    return doc
