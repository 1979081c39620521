"""Where each class stands: its latest verdict and since when, the order to show classes in, verdict changes.

Pure functions of the class health rows (:data:`~dashboards.records.HEALTH_FIELDS`). Verdicts are
:class:`monitor.core.verdicts.Verdict` values; the rows hold them as plain strings, which compare equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from dashboards.records import HEALTH_FIELDS
from monitor.core.verdicts import ATTENTION, BY_URGENCY, Verdict

#: The urgency of a missing or unknown verdict: after every real one.
UNRANKED = len(BY_URGENCY)


def as_verdict(value: object) -> Verdict | None:
    """``value`` as a :class:`Verdict`; None for a missing value or anything that is not a verdict."""
    if not isinstance(value, str):
        return None
    try:
        return Verdict(value)
    except ValueError:
        return None


def urgency(verdict: object) -> int:
    """0 for the most urgent verdict (:data:`monitor.core.verdicts.BY_URGENCY`); :data:`UNRANKED` for anything else."""
    known = as_verdict(verdict)
    return UNRANKED if known is None else known.urgency


def verdict_text(verdict: object) -> str:
    """A verdict for people (``needs retraining``); anything else as it is."""
    known = as_verdict(verdict)
    return str(verdict) if known is None else known.text


def class_status(health: pd.DataFrame, as_of: str | None = None) -> pd.DataFrame:
    """Each class's latest health row on or before ``as_of``, with ``since``: the first day of its current verdict.

    One row per label (index: label), sorted by label. ``since`` is computed from the rows given,
    so pass the whole history for a true "since". ``previous_verdict``: the verdict before the current one.

    One sort of integer codes and a few array passes, so a year of 1,000 classes takes tens of milliseconds
    (the same answer as grouping the rows by class and run of equal verdicts, which took seconds).
    """
    columns = list(HEALTH_FIELDS) + ["since", "previous_verdict"]
    if health.empty:
        return pd.DataFrame(columns=columns).set_index("label")
    on_or_before = None if as_of is None else health["date"] <= as_of
    # A mask that keeps every row (the overview's whole history) is no copy of it: a year of 1,000 classes is 150 MB.
    rows = health if on_or_before is None or bool(on_or_before.all()) else health[on_or_before]
    if rows.empty:
        return pd.DataFrame(columns=columns).set_index("label")
    label_code, _ = pd.factorize(rows["label"], sort=True)
    date_code, dates = pd.factorize(rows["date"], sort=True)
    date_code = np.where(date_code < 0, len(dates), date_code)  # a missing date sorts last, as sort_values puts it
    order = np.lexsort((date_code, label_code))  # by class, then date; stable, as the rows were given
    order = order[label_code[order] >= 0]  # a row without a class belongs to none
    if not len(order):
        return pd.DataFrame(columns=columns).set_index("label")
    label = label_code[order]
    verdict = rows["verdict"].to_numpy(dtype=object)[order]
    new_class = np.r_[True, label[1:] != label[:-1]]
    # A run of one verdict starts where the class starts or the verdict differs from the day before (pandas' ``ne``:
    # NaN differs from everything, None equals None).
    in_order = pd.Series(verdict)
    changed = new_class | in_order.ne(in_order.shift()).to_numpy(dtype=bool)
    start = np.maximum.accumulate(np.where(changed, np.arange(len(order)), 0))
    last = np.flatnonzero(np.r_[label[1:] != label[:-1], True])  # each class's latest row
    run = start[last]
    since = rows["date"].to_numpy(dtype=object)[order][run]
    previous = np.full(len(run), None, dtype=object)
    has_before = ~new_class[run]
    previous[has_before] = verdict[run[has_before] - 1]
    since[pd.isna(since)] = None
    previous[pd.isna(previous)] = None
    latest = rows.iloc[order[last]].assign(since=since, previous_verdict=previous)
    return latest.set_index("label")


def rank_classes(status: pd.DataFrame, pooled_accuracy: pd.Series, labels: Iterable[str], order: str) -> list[str]:
    """Order ``labels`` for display.

    ``worst``: verdict urgency, then probability of being below target (high first), then pooled
    accuracy of the shown range (low first); ``accuracy``: pooled accuracy of the range, low first;
    ``name``: alphabetical. Classes with no data go last.
    """
    frame = pd.DataFrame(index=pd.Index(sorted(set(labels)), name="label"))
    frame["severity"] = [
        urgency(status["verdict"].get(label)) if "verdict" in status else UNRANKED for label in frame.index
    ]
    prob = status["prob_below_target"] if "prob_below_target" in status else pd.Series(dtype=float)
    frame["prob"] = pd.to_numeric(prob.reindex(frame.index), errors="coerce").fillna(-1.0)
    frame["acc"] = pd.to_numeric(pooled_accuracy.reindex(frame.index), errors="coerce").fillna(2.0)
    frame["name"] = frame.index
    if order == "name":
        ranked = frame.sort_values("name")
    elif order == "accuracy":
        ranked = frame.sort_values(["acc", "name"])
    else:
        ranked = frame.sort_values(["severity", "prob", "acc", "name"], ascending=[True, False, True, True])
    return list(ranked.index)


def flagged_rows(status: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """The classes of ``labels`` whose latest verdict asks for attention (:data:`~monitor.core.verdicts.ATTENTION`), most urgent first."""
    if status.empty or "verdict" not in status:
        return status.iloc[0:0]
    rows = status[status.index.isin(list(labels)) & status["verdict"].isin([str(verdict) for verdict in ATTENTION])]
    order = rows.assign(
        _sev=rows["verdict"].map(urgency), _prob=pd.to_numeric(rows["prob_below_target"], errors="coerce").fillna(-1.0)
    )
    return order.sort_values(["_sev", "_prob"], ascending=[True, False]).drop(columns=["_sev", "_prob"])


def verdict_counts(status: pd.DataFrame, labels: Sequence[str]) -> list[tuple[Verdict, int]]:
    """How many of ``labels`` are on each verdict now, most urgent verdict first; a verdict no class has is left out."""
    if status.empty or "verdict" not in status:
        return []
    counts = status[status.index.isin(list(labels))]["verdict"].value_counts()
    return [(verdict, int(counts.get(verdict, 0))) for verdict in BY_URGENCY if verdict in counts]


def verdict_changes(health: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``health`` (one label) where the verdict differs from the day before, with ``previous_verdict``."""
    if health.empty:
        return health.assign(previous_verdict=pd.Series(dtype=object))
    rows = health.sort_values("date")
    previous = rows["verdict"].shift()
    changed = previous.notna() & rows["verdict"].ne(previous)
    return rows[changed].assign(previous_verdict=previous[changed])
