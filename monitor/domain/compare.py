"""A candidate model beside production, class by class: paired statistics on the same images, and a promotion verdict.

Pure functions only: paired count tables and a few numbers in, a table and a :class:`Comparison` out; no
settings, store or file. The counts come from Spark SQL (:func:`evaluation.metrics.paired_counts_spark`)
or its pandas reference; reading both models' predictions and production's flagged classes, and storing
the result, is :mod:`monitor.orchestration.compare_stage`'s. The benchmark (``benchmarks/bench_compare.py``)
drives these same functions.

Per class, over the images both models predicted (``status == "ok"`` for both):

- the paired table: ``both_right``, ``only_production`` (b), ``only_candidate`` (c), ``both_wrong``;
- McNemar's exact test: under "equally accurate", ``c ~ Binomial(b + c, 1/2)``; the two-sided p-value is
  :func:`scipy.stats.binomtest`'s, and the one-sided ``p_better`` (``c`` large) and ``p_worse`` (``b`` large)
  drive the verdict. Only the discordant images carry evidence: the pairing removes the variance both
  models share, which an unpaired two-proportion test on the same data keeps;
- the accuracy difference ``(c - b) / n`` with the Agresti–Min interval (Wald on the table with 1/2 added
  to each cell; Agresti & Min 2005, good coverage down to small n).

The verdict (:class:`~monitor.core.verdicts.ComparisonVerdict`), at level ``alpha``:

- a class is **worse** when its Holm-adjusted ``p_worse`` (Holm over all classes) is below ``alpha`` and
  its accuracy dropped by more than the non-inferiority margin. Holm, not a false-discovery rate: one class
  declared worse rejects the candidate, so the error to bound is "any class wrongly declared worse"
  (family-wise), and Holm bounds it under any dependence between classes, never less powerful than Bonferroni;
- a flagged class is **improved** when its own ``p_better`` is below ``alpha``, unadjusted: "every flagged
  class improved" is an intersection-union test, whose level is that of each test (no correction needed);
- ``reject`` when a class is worse (naming them); ``promote`` when every flagged class improved and no class
  is worse; otherwise ``insufficient_data``, with the days each pending class still needs at its observed
  rate of discordant images and observed direction, for 80% power (exact binomial power).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import (
    Any,
    NotRequired,  # pydantic reads these on Python 3.11 (the schemas)
    cast,
)

import numpy as np
import pandas as pd
from scipy import stats
from typing_extensions import TypedDict

from monitor.core.errors import DataError
from monitor.core.verdicts import ComparisonVerdict

#: The paired count columns of one class, in table order (production first).
COUNT_COLUMNS = ("both_right", "only_production", "only_candidate", "both_wrong")
#: Power the "days still needed" estimate aims for.
TARGET_POWER = 0.8
#: How the two families of tests are corrected, recorded in every comparison.
MULTIPLICITY = (
    "holm (family-wise, over all classes) for worse; each flagged class at alpha (intersection-union) for improved"
)


class ClassComparison(TypedDict):
    """One class's row of :func:`compare_classes`' table, JSON-ready (a class without paired images has None accuracies)."""

    label: str
    both_right: int
    only_production: int
    only_candidate: int
    both_wrong: int
    n: int
    production_accuracy: float | None
    candidate_accuracy: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_mcnemar: float
    p_better: float
    p_worse: float
    p_worse_holm: float
    flagged: bool
    improved: bool
    worse: bool


class DiscordantImage(TypedDict):
    """An image exactly one model got right (:func:`discordant_images`)."""

    date: str
    image_path: str
    label: str
    production_pred: str
    candidate_pred: str
    right: str  # "candidate" | "production"


class ComparisonRecord(TypedDict):
    """:class:`Comparison` as plain JSON values: ``monitor compare --json``, the ``comparisons`` documents, the DAG's event."""

    verdict: str
    reason: str
    production: str
    candidate: str
    start: str
    end: str
    days: int
    alpha: float
    margin: float
    multiplicity: str
    flagged: list[str]
    improved: list[str]
    worse: list[str]
    pending: dict[str, int | None]
    days_more: int | None
    classes: NotRequired[list[ClassComparison]]
    unpaired: dict[str, int]
    discordant: NotRequired[list[DiscordantImage]]


# --- the tests, vectorised over classes ---------------------------------------------------------


def mcnemar_exact_p(
    only_production: Sequence[int] | np.ndarray, only_candidate: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Two-sided exact McNemar p-values (``binomtest(c, b + c, 1/2)``); 1 where no pair is discordant.

    Vectorised: with p = 1/2 the binomial is symmetric, so the two-sided p-value is twice the smaller tail.
    """
    b = np.asarray(only_production, dtype=np.int64)
    c = np.asarray(only_candidate, dtype=np.int64)
    m = b + c
    low = np.minimum(b, c)
    p = np.minimum(1.0, 2.0 * stats.binom.cdf(low, m, 0.5))
    return np.where(m > 0, p, 1.0)


def one_sided_p(successes: Sequence[int] | np.ndarray, discordant: Sequence[int] | np.ndarray) -> np.ndarray:
    """``P(X >= successes)`` for ``X ~ Binomial(discordant, 1/2)``: ``binomtest(..., alternative="greater")``; 1 when none."""
    k = np.asarray(successes, dtype=np.int64)
    m = np.asarray(discordant, dtype=np.int64)
    return np.where(m > 0, stats.binom.sf(k - 1, m, 0.5), 1.0)


def paired_difference_ci(counts: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Agresti–Min interval for ``candidate - production`` accuracy from ``counts`` (rows x the four :data:`COUNT_COLUMNS`)."""
    table = np.asarray(counts, dtype=np.float64) + 0.5  # 1/2 in each cell (Agresti & Min 2005)
    n = table.sum(axis=1)
    b, c = table[:, 1], table[:, 2]
    d = (c - b) / n
    var = ((b + c) - (c - b) ** 2 / n) / n**2
    z = stats.norm.ppf(0.5 + confidence / 2)
    half = z * np.sqrt(np.maximum(var, 0.0))
    return np.clip(d - half, -1.0, 1.0), np.clip(d + half, -1.0, 1.0)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values: sorted ascending, ``(m - i) * p_(i)``, running maximum, capped at 1.

    Equal to statsmodels' ``multipletests(method="holm")`` (the test holds it to that); written out because
    that function runs a full garbage collection on every call, which dominated the benchmark's simulation.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.size == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, np.maximum.accumulate((p.size - np.arange(p.size)) * p[order]))
    out = np.empty_like(p)
    out[order] = scaled
    return out


def unpaired_p_worse(counts: np.ndarray) -> np.ndarray:
    """One-sided two-proportion z-test of "candidate less accurate" ignoring the pairing (the benchmark's comparison).

    Treats the two models' correct counts as two independent samples of ``n`` images each (pooled variance).
    """
    table = np.asarray(counts, dtype=np.float64)
    n = table.sum(axis=1)
    prod = (table[:, 0] + table[:, 1]) / np.maximum(n, 1)
    cand = (table[:, 0] + table[:, 2]) / np.maximum(n, 1)
    pooled = (prod + cand) / 2
    se = np.sqrt(np.maximum(pooled * (1 - pooled) * 2 / np.maximum(n, 1), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (prod - cand) / se, 0.0)
    return np.asarray(stats.norm.sf(z))


def discordant_needed(
    share_candidate: float, alpha: float, power: float = TARGET_POWER, limit: int = 100_000
) -> int | None:
    """Fewest discordant pairs for which the one-sided exact test at ``alpha`` rejects with ``power`` when ``c/(b+c)`` is ``share_candidate``.

    None when the candidate is not ahead (``share_candidate <= 1/2``: no amount of such data shows an improvement)
    or more than ``limit`` pairs would be needed. Every count up to 200 is tried, then steps of 5% (one vectorised pass).
    """
    if not share_candidate > 0.5:
        return None
    grid = np.arange(1, min(limit, 200) + 1)
    if limit > 200:
        grid = np.unique(np.concatenate([grid, np.geomspace(200, limit, 240).astype(np.int64)]))
    # Critical count per m: the smallest k with P(X >= k | 1/2) <= alpha.
    critical = stats.binom.isf(alpha, grid, 0.5) + 1
    reaches = (critical <= grid) & (stats.binom.sf(critical - 1, grid, share_candidate) >= power)
    return int(grid[np.argmax(reaches)]) if reaches.any() else None


# --- the per-class table and the verdict ----------------------------------------------------------


def compare_classes(
    counts: pd.DataFrame,
    *,
    flagged: Iterable[str] = (),
    alpha: float = 0.05,
    margin: float = 0.0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """The per-class comparison: ``counts`` (``label`` and :data:`COUNT_COLUMNS`) -> one row per class with the statistics.

    Columns added: ``n``, ``production_accuracy``, ``candidate_accuracy``, ``difference`` (candidate minus
    production), ``ci_low``/``ci_high`` (Agresti–Min), ``p_mcnemar`` (exact, two-sided), ``p_better``,
    ``p_worse``, ``p_worse_holm``, ``flagged``, ``improved``, ``worse`` (see the module docstring).
    """
    missing = [c for c in ("label", *COUNT_COLUMNS) if c not in counts.columns]
    if missing:
        raise DataError(f"paired counts lack the column(s) {', '.join(missing)}")
    if not 0.0 < alpha < 1.0:
        raise DataError(f"alpha = {alpha} is not between 0 and 1")
    table = counts[["label", *COUNT_COLUMNS]].sort_values("label").reset_index(drop=True).copy()
    cells = table[list(COUNT_COLUMNS)].to_numpy(dtype=np.int64)
    if (cells < 0).any():
        raise DataError("paired counts must not be negative")
    n = cells.sum(axis=1)
    b, c = cells[:, 1], cells[:, 2]
    wanted = set(flagged)
    safe_n = np.maximum(n, 1)
    table["n"] = n
    table["production_accuracy"] = np.where(n > 0, (cells[:, 0] + b) / safe_n, np.nan)
    table["candidate_accuracy"] = np.where(n > 0, (cells[:, 0] + c) / safe_n, np.nan)
    table["difference"] = np.where(n > 0, (c - b) / safe_n, np.nan)
    low, high = paired_difference_ci(cells, confidence)
    table["ci_low"] = np.where(n > 0, low, np.nan)
    table["ci_high"] = np.where(n > 0, high, np.nan)
    table["p_mcnemar"] = mcnemar_exact_p(b, c)
    table["p_better"] = one_sided_p(c, b + c)
    table["p_worse"] = one_sided_p(b, b + c)
    table["p_worse_holm"] = holm(table["p_worse"].to_numpy())
    table["flagged"] = table["label"].isin(wanted)
    table["improved"] = table["flagged"] & (table["p_better"] < alpha)
    table["worse"] = (table["p_worse_holm"] < alpha) & (table["difference"] < -margin)
    return table


@dataclass
class Comparison:
    """The promotion verdict and the evidence behind it; :meth:`to_dict` gives its :class:`ComparisonRecord`."""

    verdict: ComparisonVerdict
    reason: str  # one sentence a person can read
    production: str
    candidate: str
    start: str
    end: str
    days: int
    alpha: float
    margin: float
    multiplicity: str = MULTIPLICITY
    flagged: list[str] = field(default_factory=list)
    improved: list[str] = field(default_factory=list)
    worse: list[str] = field(default_factory=list)
    pending: dict[str, int | None] = field(
        default_factory=dict
    )  # flagged class not yet improved -> more days needed (None: not ahead)
    days_more: int | None = None  # for insufficient_data: the most any pending class needs (None: cannot tell)
    classes: list[ClassComparison] = field(default_factory=list)
    unpaired: dict[str, int] = field(
        default_factory=dict
    )  # class -> images only one model predicted (left out of the pairs)
    discordant: list[DiscordantImage] | None = None  # a gallery of images one model got right, when asked for

    def to_dict(self) -> ComparisonRecord:
        record = asdict(self)
        record["verdict"] = self.verdict.value
        if self.discordant is None:
            del record["discordant"]
        return cast(ComparisonRecord, record)


def days_still_needed(
    only_production: int, only_candidate: int, days: int, alpha: float, power: float = TARGET_POWER
) -> int | None:
    """More days of data a class needs for its improvement to show, at its observed discordance rate and direction.

    None when the candidate is not ahead on the class (or nothing is discordant yet): no rate to extrapolate.
    """
    discordant = only_production + only_candidate
    if discordant == 0 or days <= 0:
        return None
    needed = discordant_needed(only_candidate / discordant, alpha, power)
    if needed is None:
        return None
    per_day = discordant / days
    return max(1, math.ceil(needed / per_day) - days)


def judge(
    table: pd.DataFrame,
    *,
    production: str,
    candidate: str,
    start: str,
    end: str,
    days: int,
    alpha: float,
    margin: float,
    min_samples: int = 1,
) -> Comparison:
    """The promotion verdict from :func:`compare_classes`' table (rules in the module docstring)."""
    flagged = sorted(table.loc[table["flagged"], "label"])
    improved = sorted(table.loc[table["improved"], "label"])
    worse = sorted(table.loc[table["worse"], "label"])
    base: dict[str, Any] = dict(
        production=production,
        candidate=candidate,
        start=start,
        end=end,
        days=days,
        alpha=alpha,
        margin=margin,
        flagged=flagged,
        improved=improved,
        worse=worse,
        classes=_records(table),
    )
    if worse:
        drops = ", ".join(
            f"{row.label} ({row.difference:+.3f}, {int(row.only_production)} vs {int(row.only_candidate)} discordant)"
            for row in table[table["worse"]].itertuples()
        )
        return Comparison(
            ComparisonVerdict.REJECT,
            f"{len(worse)} class(es) got significantly worse by more than {margin:.3f}: {drops}",
            **base,
        )
    thin = sorted(table.loc[table["n"] < min_samples, "label"])
    pending: dict[str, int | None] = {}
    for row in table[table["flagged"] & ~table["improved"]].itertuples():
        pending[str(row.label)] = days_still_needed(int(row.only_production), int(row.only_candidate), days, alpha)
    if not pending and not thin:
        what = f"all {len(flagged)} flagged class(es) improved significantly" if flagged else "no class was flagged"
        return Comparison(
            ComparisonVerdict.PROMOTE, f"{what} and no class is significantly worse by more than {margin:.3f}", **base
        )
    known = [d for d in pending.values() if d is not None]
    days_more = max(known) if known and len(known) == len(pending) else None
    parts = []
    if pending:
        shown = ", ".join(
            f"{label} ({'~' + str(d) + ' more days' if d is not None else 'not ahead yet'})"
            for label, d in pending.items()
        )
        parts.append(f"flagged class(es) not yet significantly better: {shown}")
    if thin:
        parts.append(f"{len(thin)} class(es) have fewer than {min_samples} paired images")
        if not pending:
            days_more = (
                max(1, math.ceil(days * min_samples / max(1, int(table["n"].min()))) - days)
                if int(table["n"].min()) > 0
                else None
            )
    return Comparison(
        ComparisonVerdict.INSUFFICIENT_DATA, "; ".join(parts), pending=pending, days_more=days_more, **base
    )


def compare_counts(
    counts: Sequence[dict[str, Any]],
    *,
    production: str,
    candidate: str,
    days: Sequence[str],
    flagged: Iterable[str],
    alpha: float,
    margin: float,
    confidence: float,
    min_samples: int,
) -> Comparison:
    """The whole comparison from the paired count rows of the pooled ``days`` (:func:`evaluation.metrics.paired_counts_pandas`'
    rows: ``label``, :data:`COUNT_COLUMNS`, ``unpaired``): :func:`compare_classes`, then :func:`judge`, with the unpaired counts."""
    table = compare_classes(
        pd.DataFrame(list(counts)), flagged=flagged, alpha=alpha, margin=margin, confidence=confidence
    )
    verdict = judge(
        table,
        production=production,
        candidate=candidate,
        start=days[0],
        end=days[-1],
        days=len(days),
        alpha=alpha,
        margin=margin,
        min_samples=min_samples,
    )
    verdict.unpaired = {str(row["label"]): int(row["unpaired"]) for row in counts if row["unpaired"]}
    return verdict


def gallery(frame: pd.DataFrame) -> list[DiscordantImage]:
    """:func:`discordant_images`' rows as JSON-ready records."""
    return [
        cast(DiscordantImage, {key: str(value) for key, value in row.items()})
        for row in frame.to_dict(orient="records")
    ]


def _records(table: pd.DataFrame) -> list[ClassComparison]:
    """The table as JSON-ready rows (NaN -> None, numpy scalars -> Python)."""
    out: list[ClassComparison] = []
    for record in table.to_dict(orient="records"):
        clean: dict[str, Any] = {}
        for key, value in record.items():
            if isinstance(value, (np.bool_, bool)):
                clean[key] = bool(value)
            elif isinstance(value, (np.integer,)):
                clean[key] = int(value)
            elif isinstance(value, (float, np.floating)):
                clean[key] = None if math.isnan(float(value)) else float(value)
            else:
                clean[key] = value
        out.append(cast(ClassComparison, clean))
    return out


def discordant_images(production: pd.DataFrame, candidate: pd.DataFrame, *, limit: int | None = None) -> pd.DataFrame:
    """The images exactly one model got right (both ``ok``): ``date, image_path, label, production_pred, candidate_pred, right``.

    ``right`` is ``"candidate"`` or ``"production"``. Rows take the classes in turn (each class's first image, then
    each one's second, ...; within a class by date and path), so that the first ``limit`` show every class.
    """
    columns = ["date", "image_path", "label", "pred", "status"]
    left = production.loc[production["status"] == "ok", columns]
    right = candidate.loc[candidate["status"] == "ok", columns]
    merged = left.merge(right, on=["date", "image_path"], suffixes=("_p", "_c"))
    production_right = merged["pred_p"] == merged["label_p"]
    candidate_right = merged["pred_c"] == merged["label_c"]
    merged = merged[production_right != candidate_right]
    out = pd.DataFrame(
        {
            "date": merged["date"],
            "image_path": merged["image_path"],
            "label": merged["label_p"],
            "production_pred": merged["pred_p"],
            "candidate_pred": merged["pred_c"],
            "right": np.where(merged["pred_c"] == merged["label_c"], "candidate", "production"),
        }
    ).sort_values(["label", "date", "image_path"], ignore_index=True)
    out = (
        out.assign(_turn=out.groupby("label").cumcount())
        .sort_values(["_turn", "label"], kind="stable", ignore_index=True)
        .drop(columns="_turn")
    )
    return out if limit is None else out.head(limit)
