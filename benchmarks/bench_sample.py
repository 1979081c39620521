"""Sampling cost: time and documents examined to draw the stratified sample from 10k, 100k and 1M indexed images.

The claim to check: drawing N images per class reads about ``classes x N x oversample``
index entries and documents (divided by the share that passes the ``created`` filter),
whatever the size of the collection.

No real MongoDB is available here, and mongomock has no ``explain()`` and no indexes. So the
calls ``Store`` makes on a MongoDB backend (``MongoStore(db=...)``) for ``draw_sample`` are served by
``IndexedImages`` below: the ``sampling`` index ``{source, status, label, sample_key}`` held as
sorted arrays, walked the way MongoDB's IXSCAN -> FETCH(created filter) -> LIMIT plan walks it,
counting every index key and document it touches. ``draw_sample`` and ``sample_cost`` run
unmodified against it (``Store.walk_cost`` takes its ``explain()`` path).

The classes of a date come from ``Store.usable_labels``: a ``distinct("label")`` filtered on
``created``, which is not in any index with ``status``, so MongoDB cannot answer it with a
DISTINCT_SCAN: it walks ``{source, status: ok}`` and fetches every document to test ``created``.
The emulation counts those fetches apart ("labels"): they grow with the collection, the walks do not.

At 10k images (and 100k without ``--quick``) the same documents are also written, through
``Store.write_images``, into the embedded store users get without ``MONITOR_MONGO_URI``
(``open_store`` on a temporary data dir: mongomock partitions per (source, label), committed to
BSON files), drawn from in the process that wrote them (the partitions then live in mongomock) and
after opening the store again (read from the files), to check that both engines give the identical
sample and that ``sample_cost``'s query-shape count there agrees with the walked count, and to show
what the embedded default costs (each draw reads the class's whole partition).

    .venv/bin/python benchmarks/bench_sample.py --quick     # < 1 minute (10k, 100k, 1M)
    .venv/bin/python benchmarks/bench_sample.py             # adds the embedded store at 100k, more N and class counts
    .venv/bin/python benchmarks/bench_sample.py --quick --json   # the figures as one JSON object (the table on stderr)
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from monitor.core.dates import end_of_day  # noqa: E402
from monitor.core.settings import Settings  # noqa: E402
from monitor.domain.indexing import sample_key  # noqa: E402
from monitor.domain.sampling import DEFAULT_OVERSAMPLE, draw_sample, sample_cost  # noqa: E402
from monitor.store import SAMPLING_INDEX, MongoStore, Store, open_store  # noqa: E402

SOURCE = "gs://bench-bucket/val"
DATE = dt.date(2026, 3, 31)
UTC = dt.UTC
#: Images arrive uniformly over these days; those after DATE are not eligible for it.
FIRST_DAY = dt.datetime(2026, 1, 1, tzinfo=UTC)
SPAN_DAYS = 120
MISSING_SHARE = 0.05  # vanished blobs: status "missing", a different range of the index


def _ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


class Dataset:
    """``size`` image documents of ``classes`` labels: paths, keys, created times, statuses (as numpy arrays)."""

    def __init__(self, size: int, classes: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.size, self.classes = size, classes
        self.labels = [f"class_{k:03d}" for k in range(classes)]
        self.label_of = rng.integers(0, classes, size)
        self.paths = [f"{self.labels[lab]}/img_{i:07d}.jpg" for i, lab in enumerate(self.label_of.tolist())]
        self.keys = np.fromiter((sample_key(p) for p in self.paths), dtype=np.float64, count=size)
        start = _ms(FIRST_DAY)
        self.created_ms = start + rng.integers(0, SPAN_DAYS * 86_400_000, size)
        self.ok = rng.random(size) >= MISSING_SHARE

    def created(self, i: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(int(self.created_ms[i]) / 1000, tz=UTC)

    def docs(self) -> list[dict[str, Any]]:
        """The documents as the indexer writes them (only the fields sampling reads, plus status)."""
        return [
            {
                "source": SOURCE,
                "path": self.paths[i],
                "label": self.labels[int(self.label_of[i])],
                "sample_key": float(self.keys[i]),
                "created": self.created(i),
                "status": "ok" if self.ok[i] else "missing",
                "reason": None if self.ok[i] else "vanished",
            }
            for i in range(self.size)
        ]


class _Cursor:
    def __init__(
        self, coll: IndexedImages, label: str, key_range: dict[str, float], window: dict[str, dt.datetime]
    ) -> None:
        self._coll, self._label, self._range, self._window = coll, label, key_range, window
        self._limit = 0

    def sort(self, *_: Any) -> _Cursor:
        return self  # the index is already in sample_key order

    def hint(self, index: Any) -> _Cursor:
        assert list(index) == SAMPLING_INDEX, index
        return self

    def limit(self, n: int) -> _Cursor:
        self._limit = n
        return self

    def _walk(self) -> tuple[list[int], int]:
        """Rows returned and index entries (= documents fetched) examined."""
        keys, rows, created = self._coll.index[self._label]
        if "$gte" in self._range:
            lo, hi = bisect.bisect_left(keys, self._range["$gte"]), len(keys)
        else:
            lo, hi = 0, bisect.bisect_left(keys, self._range["$lt"])
        top = _ms(self._window["$lte"])
        bottom = _ms(self._window["$gte"]) if "$gte" in self._window else None
        found: list[int] = []
        examined = 0
        for pos in range(lo, hi):
            examined += 1  # one index key, one FETCH to read `created` (not in the index)
            when = created[pos]
            if when <= top and (bottom is None or when >= bottom):
                found.append(rows[pos])
                if self._limit and len(found) == self._limit:
                    break
        return found, examined

    def __iter__(self):  # type: ignore[no-untyped-def]
        found, examined = self._walk()
        self._coll.docs_examined += examined
        self._coll.queries += 1
        data = self._coll.data
        for i in found:
            yield {
                "path": data.paths[i],
                "label": self._label,
                "sample_key": float(data.keys[i]),
                "created": data.created(i),
            }

    def explain(self) -> dict[str, Any]:
        found, examined = self._walk()
        return {
            "executionStats": {"totalDocsExamined": examined, "totalKeysExamined": examined, "nReturned": len(found)}
        }


class IndexedImages:
    """The ``images`` collection as MongoDB's ``sampling`` index serves the store's sampling queries, with counters."""

    def __init__(self, data: Dataset) -> None:
        self.data = data
        self.docs_examined = 0
        self.queries = 0
        self.distinct_examined = 0
        self.index: dict[str, tuple[list[float], list[int], list[int]]] = {}
        for k, label in enumerate(data.labels):
            rows = np.flatnonzero((data.label_of == k) & data.ok)  # status "ok" prefix of the index only
            order = rows[np.argsort(data.keys[rows], kind="stable")]
            self.index[label] = (data.keys[order].tolist(), order.tolist(), data.created_ms[order].tolist())

    def distinct(self, field: str, flt: dict[str, Any]) -> list[str]:
        """``Store.usable_labels``: IXSCAN over ``{source, status: ok}``, FETCH each document to test ``created``."""
        assert field == "label" and set(flt) <= {"source", "status", "created"}, flt
        assert flt["source"] == SOURCE and flt["status"] == "ok", flt
        window = flt.get("created", {})
        assert set(window) <= {"$lte"}, window
        top = _ms(window["$lte"]) if window else None
        found = []
        for label, (_, _, created) in self.index.items():
            self.distinct_examined += len(
                created
            )  # no DISTINCT_SCAN with a filter outside the index: every entry is fetched
            if created and (top is None or min(created) <= top):
                found.append(label)
        return found

    def find(self, flt: dict[str, Any], projection: dict[str, int] | None = None) -> _Cursor:
        assert set(flt) == {"source", "status", "label", "sample_key", "created"}, flt
        assert flt["source"] == SOURCE and flt["status"] == "ok", flt
        return _Cursor(self, flt["label"], flt["sample_key"], flt["created"])


class _Client:
    def close(self) -> None:
        pass


class _DB(dict):  # type: ignore[type-arg]
    """The database ``MongoStore(db=...)`` is given: only ``images`` exists (sampling reads nothing else)."""

    client = _Client()


def indexed_store(data: Dataset) -> tuple[Store, IndexedImages]:
    images = IndexedImages(data)
    return MongoStore(db=_DB(images=images), description="sampling index (emulated)"), images  # type: ignore[arg-type]


def embedded_store(data: Dataset, tmp: Path, n: int, days: list[str]) -> tuple[Settings, float, dict[str, float]]:
    """Write ``data`` into a new embedded store through ``Store.write_images`` and commit it; then draw in that same
    process (the written partitions now live in mongomock, as when ``monitor evaluate`` samples right after indexing
    new images). Returns the store's settings, the seconds the writes and commit took, and the draw figures."""
    settings = Settings(data_dir=tmp / f"data-{data.size}-{data.classes}", mongo_uri="")
    with open_store(settings) as store:
        started = time.perf_counter()
        docs = data.docs()
        for start in range(0, len(docs), 10_000):
            store.write_images(SOURCE, docs[start : start + 10_000], [])
        store.commit()
        seconds = time.perf_counter() - started
        after_write = measure(store, None, n, days)
    return settings, seconds, after_write


def dates(count: int) -> list[dt.date]:
    return [DATE - dt.timedelta(days=k) for k in range(count)]


def measure(store: Store, images: IndexedImages | None, n: int, days: list[str]) -> dict[str, float]:
    times, examined, queries, drawn, labels = [], [], [], [], []
    for day in days:
        if images is not None:
            images.docs_examined = images.queries = images.distinct_examined = 0
        start = time.perf_counter()
        sample = draw_sample(store, SOURCE, day, n, seed=0)
        times.append(time.perf_counter() - start)
        drawn.append(len(sample.items))
        if images is not None:
            examined.append(images.docs_examined)
            queries.append(images.queries)
            labels.append(images.distinct_examined)
    return {
        "ms": 1000 * statistics.median(times),
        "first_ms": 1000 * times[0],
        "examined": statistics.mean(examined) if examined else float("nan"),
        "labels_examined": statistics.mean(labels) if labels else float("nan"),
        "queries": statistics.mean(queries) if queries else float("nan"),
        "drawn": statistics.mean(drawn),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer dates and variants; finishes in under a minute")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--classes", type=int, default=15)
    parser.add_argument("--n", type=int, default=10, help="images per class")
    parser.add_argument(
        "--embedded-max",
        "--mongomock-max",
        dest="embedded_max",
        type=int,
        help="largest size also written to the embedded store (default 100,000; quick 10,000)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object of the figures (the table goes to stderr)"
    )
    args = parser.parse_args(argv)
    embedded_max = args.embedded_max if args.embedded_max is not None else (10_000 if args.quick else 100_000)
    days = dates(3 if args.quick else 10)
    eligible_share = (end_of_day(DATE) - FIRST_DAY) / dt.timedelta(days=SPAN_DAYS)
    expected = args.classes * args.n * DEFAULT_OVERSAMPLE / eligible_share
    out = sys.stderr if args.json else sys.stdout

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    say(
        f"bench_sample  {dt.datetime.now(UTC):%Y-%m-%d %H:%M} UTC  {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    say(
        f"{args.classes} classes, N = {args.n}, oversample {DEFAULT_OVERSAMPLE}; {MISSING_SHARE:.0%} of images missing; "
        f"{eligible_share:.0%} created by the end of {DATE}: expected ~{expected:,.0f} documents examined per sample"
    )
    say(
        f"figures are medians over {len(days)} dates; 'examined' = index keys walked = documents fetched by the class walks (sampling index, emulated);"
    )
    say(
        "'labels' = documents the labels distinct fetches (its created filter is outside the index: no DISTINCT_SCAN)\n"
    )
    header = f"{'images':>10}  {'build s':>7}  {'draw ms':>8}  {'examined':>9}  {'queries':>7}  {'drawn':>5}  {'explain':>8}  {'labels':>9}  {'scan would read':>15}"
    say(header)
    result: dict[str, Any] = {
        "classes": args.classes,
        "n": args.n,
        "oversample": DEFAULT_OVERSAMPLE,
        "dates": len(days),
        "expected_examined": expected,
        "sizes": [],
        "embedded": [],
        "vs_n": [],
        "vs_classes": [],
    }
    biggest: tuple[Dataset, Store, IndexedImages] | None = None
    checks: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_sample_") as tmp:
        for size in args.sizes:
            started = time.perf_counter()
            data = Dataset(size, args.classes)
            store, images = indexed_store(data)
            build = time.perf_counter() - started
            row = measure(store, images, args.n, days)
            cost = sample_cost(store, SOURCE, DATE, args.n, seed=0)
            say(
                f"{size:>10,}  {build:>7.1f}  {row['ms']:>8.1f}  {row['examined']:>9,.0f}  {row['queries']:>7.0f}  {row['drawn']:>5.0f}"
                f"  {cost.docs_examined:>8,}  {row['labels_examined']:>9,.0f}  {size:>15,}"
            )
            result["sizes"].append(
                {
                    "images": size,
                    "build_s": build,
                    **row,
                    "explain_docs_examined": cost.docs_examined,
                    "explain_keys_examined": cost.keys_examined,
                    "explain_method": cost.method,
                }
            )
            if size <= embedded_max:
                settings, load, after_write = embedded_store(data, Path(tmp), args.n, days[:2])
                with open_store(
                    settings
                ) as embedded:  # a later command: partitions are read back from the files as drawn
                    opened = measure(embedded, None, args.n, days[:2])
                    same = all(
                        draw_sample(embedded, SOURCE, d, args.n, seed=0)
                        == draw_sample(store, SOURCE, d, args.n, seed=0)
                        for d in days[:2]
                    )
                    embedded_cost = sample_cost(embedded, SOURCE, DATE, args.n, seed=0)
                checks.append(
                    f"{size:>10,}  write + commit {load:.1f} s; draw after opening the store {opened['first_ms']:,.0f} ms first (reads the files), "
                    f"{opened['ms']:,.0f} ms median; in the process that wrote the images {after_write['ms']:,.0f} ms (through mongomock); "
                    f"same sample as the index walk: {same}; query-shape count {embedded_cost.docs_examined:,} vs explain {cost.docs_examined:,}"
                )
                result["embedded"].append(
                    {
                        "images": size,
                        "write_commit_s": load,
                        "first_draw_after_open_ms": opened["first_ms"],
                        "draw_after_open_ms": opened["ms"],
                        "draw_after_write_ms": after_write["ms"],
                        "same_sample": same,
                        "query_shape_docs_examined": embedded_cost.docs_examined,
                        "explain_docs_examined": cost.docs_examined,
                    }
                )
            biggest = (data, store, images)
    if checks:
        say(
            "\ncross-check against the embedded store (open_store on a temporary data dir; draws: median over 2 dates):"
        )
        say("\n".join(checks))

    assert biggest is not None
    data, store, images = biggest
    variants = [2, 5, 10, 20, 40] if not args.quick else [5, 10, 40]
    say(f"\nexamined vs N at {data.size:,} images, {data.classes} classes (should grow ~linearly with N):")
    for n in variants:
        row = measure(store, images, n, days)
        say(
            f"  N = {n:>3}  examined {row['examined']:>9,.0f}  per class x N {row['examined'] / (data.classes * n):6.1f}  draw {row['ms']:7.1f} ms"
        )
        result["vs_n"].append(
            {"n": n, "examined": row["examined"], "per_class_n": row["examined"] / (data.classes * n), "ms": row["ms"]}
        )
    class_counts = [5, 15, 60] if not args.quick else [5, 60]
    size = min(args.sizes[-1], 200_000 if args.quick else 1_000_000)
    say(f"\nexamined vs classes at {size:,} images, N = {args.n} (should grow ~linearly with classes):")
    for classes in class_counts:
        store_c, images_c = indexed_store(Dataset(size, classes, seed=1))
        row = measure(store_c, images_c, args.n, days)
        say(
            f"  {classes:>3} classes  examined {row['examined']:>9,.0f}  per class x N {row['examined'] / (classes * args.n):6.1f}  draw {row['ms']:7.1f} ms"
        )
        result["vs_classes"].append(
            {
                "classes": classes,
                "images": size,
                "examined": row["examined"],
                "per_class_n": row["examined"] / (classes * args.n),
                "ms": row["ms"],
            }
        )
    if args.json:
        json.dump(result, sys.stdout, indent=2, default=lambda v: None if isinstance(v, float) and v != v else str(v))
        print()
    return result


if __name__ == "__main__":
    main()
