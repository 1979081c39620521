"""The health stage's I/O: calibrations kept on disk, the counts and stored rows read, the day's ``class_health`` rows written.

The calculators of :mod:`monitor.domain.health` are pure; this module is where they meet the settings, the files and
the store (NannyML's runner beside its calculators). :func:`compute_health` judges one model and date;
:func:`followup_requests` shares the next sample's follow-up images out from the latest verdicts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.core.artifacts import ArtifactMissing, Artifacts, artifacts_for
from monitor.core.dates import days_after, days_before, iso_day
from monitor.core.errors import ConfigError, DataError, MonitorError
from monitor.core.files import FileRefused, parse_json_bounded
from monitor.core.settings import Settings
from monitor.core.verdicts import Verdict
from monitor.domain.health import calibration
from monitor.domain.health.calibration import Design, design
from monitor.domain.health.judge import (
    Carried,
    Counts,
    Evidence,
    HealthRow,
    check_counts,
    grant_followup,
    judge_classes,
    urgency,
)
from monitor.domain.health.policy import DesignArgs, HealthPolicy
from monitor.orchestration.context import RunContext
from monitor.orchestration.results import HealthResult
from monitor.orchestration.runs import record_stage
from monitor.store import Store, open_store

log = logging.getLogger(__name__)


def health_policy(settings: Settings, n: int | None = None, followup: int | None = None) -> HealthPolicy:
    """The numbers of ``settings`` the verdicts depend on; ``n``/``followup``: the day's sampling, if not the settings'."""
    return HealthPolicy(
        drop_to_detect=settings.drop_to_detect,
        false_alarms_per_year=settings.false_alarms_per_year,
        false_recoveries_per_year=settings.false_recoveries_per_year,
        samples_per_class=settings.samples_per_class if n is None else n,
        followup_samples=settings.followup_samples if followup is None else followup,
        window_days=settings.window_days,
        min_samples=settings.min_samples,
        confidence_level=settings.confidence_level,
    )


def design_for(
    target: float, settings: Settings, classes: int, n: int | None = None, followup: int | None = None
) -> Design:
    """The calibrated test for one class target under ``settings`` (``n``/``followup``: the day's sampling, if not the settings').

    A calibration takes about a second (policy iteration over ~1,000 states); each is kept in the process and in
    ``cache/health-designs.json`` of the artifact store (``MONITOR_ARTIFACTS_URI``), so a daily run pays for it once
    per settings change, not every day, whichever worker runs it.
    """
    return _cached_design(
        artifacts_for(settings), CACHE_KEY, health_policy(settings, n, followup).design_args(target, classes)
    )


#: The calibration cache's key in the artifact store.
CACHE_KEY = "cache/health-designs.json"


@lru_cache(maxsize=1)
def _code_version() -> str:
    """Changes with the calibration's code: a calibration of another version is never reused."""
    return hashlib.sha256(Path(calibration.__file__).read_bytes()).hexdigest()[:16]


def _cached_design(artifacts: Artifacts, name: str, args: DesignArgs) -> Design:
    """The calibration for ``args``: from this process, else from the cache ``name`` of ``artifacts``, else calibrated and kept there.

    The cache is read as bounded JSON (:func:`monitor.core.files.parse_json_bounded`: a regular file or object of
    at most 8 MiB, finite numbers, shallow nesting) and each entry checked against the ``Design`` it claims to be (the fields, their types,
    the arguments it was calibrated for); a damaged or odd cache is calibrated again, with a warning.
    """
    if args in _KNOWN:
        return _KNOWN[args]
    key = json.dumps([_code_version(), *args])
    file = artifacts.location(name)
    try:
        known = parse_json_bounded(artifacts.read(name, what="calibration cache", max_bytes=8 << 20), max_depth=4)
    except ArtifactMissing:
        known = None
    except FileRefused as exc:
        log.warning(
            "the calibration cache %s is unreadable: it %s; calibrating again (seconds), and replacing it", file, exc
        )
        known = None
    except MonitorError as exc:
        log.warning("%s; calibrating again (seconds), and replacing it", exc)
        known = None
    if known is not None and not isinstance(known, dict):
        log.warning(
            "the calibration cache %s is not a JSON object; calibrating again (seconds), and replacing it", file
        )
    known = known if isinstance(known, dict) else {}
    entry = known.get(key)
    fields = dataclasses.fields(Design)
    if entry is not None and not (
        isinstance(entry, dict)
        and set(entry) == {f.name for f in fields}
        and all(
            type(entry[f.name]) is int if f.type in ("int", int) else type(entry[f.name]) in (int, float)
            for f in fields
        )
        and tuple(entry.get(name) for name in ("target", "drop", "n", "followup", "arl", "recovery_arl")) == args
        and all(
            entry[f.name] > 0 or (f.name == "followup" and entry[f.name] == 0) for f in fields
        )  # lattice steps, thresholds, units
    ):
        log.warning("the calibration cache %s holds a damaged entry for %s; calibrating again (seconds)", file, args)
        entry = None
    if entry is not None:
        result = Design(**entry)
    else:
        result = design(*args)
        known[key] = dataclasses.asdict(result)
        text = json.dumps(known, indent=1)
        try:
            artifacts.write(name, text.encode("utf-8"), what="calibration cache")
        except MonitorError as exc:  # a read-only data dir still judges; it calibrates again next time
            log.warning("could not keep the calibration: %s", exc)
    _KNOWN[args] = result
    return result


_KNOWN: dict[DesignArgs, Design] = {}


def _stored_date(value: dt.date | str) -> dt.date:
    """A date as a caller or the store gives it (a ``datetime.date``, or its ISO text); a stored text that is not
    ``YYYY-MM-DD`` is a :class:`DataError` (the store holds ISO dates only, so one day cannot be written two ways)."""
    if isinstance(value, dt.date):
        return value
    try:
        return iso_day(str(value))
    except ConfigError as exc:
        raise DataError(str(exc)) from exc


def compute_health(
    store: Store,
    model_id: str,
    date: dt.date | str,
    settings: Settings,
    *,
    n: int | None = None,
    followup: int | None = None,
    as_stored: bool = False,
) -> list[HealthRow]:
    """Verdicts of every class of ``model_id`` evaluated on ``date``, each continuing from its latest stored row before ``date``.

    ``n``/``followup``: the day's base sample size and follow-up setting (default: the settings'). With
    ``as_stored`` (a later day recomputed after a backfill) the day is judged under the settings and
    targets its stored rows were judged under. Replaces the model's ``class_health`` rows for ``date``
    (idempotent) and returns them without ``_id``.

    Reads only the counts the verdicts need, in one pass into columns (:func:`count_columns`); the classes that
    share a calibrated test (one target and policy: usually all of them) are judged together
    (:func:`monitor.domain.health.judge.judge_classes`). A class without a stored state replays its history once.
    """
    as_of = _stored_date(date)
    day = as_of.isoformat()
    artifacts = artifacts_for(settings)
    labels = sorted(
        {str(row["label"]) for row in store.rows("class_metrics", model_id, start=day, end=day, fields=["label"])}
    )
    if not labels:
        raise DataError(f"no class metrics of model {model_id} on {day}: run the metrics step for {day} first")
    own = {str(row["label"]): row for row in store.rows("class_health", model_id, start=day, end=day)}
    previous = store.latest_rows_before("class_health", model_id, day, labels)
    # Only the counts the verdicts need: the window, and the days after each class's stored state (all, for a class without one).
    widest = max(
        [settings.window_days, *(int((row.get("judged_under") or {}).get("window_days") or 0) for row in own.values())]
    )
    starts: list[dt.date] | None = [days_before(as_of, widest - 1)]
    for label in labels:
        before = previous.get(label)
        if starts is None or not (before and "flagged" in before and "evaluated_n" in before):
            starts = None
            break
        starts.append(days_after(_stored_date(str(before["date"]))))
    first = min(starts).isoformat() if starts else None
    docs = store.rows("class_metrics", model_id, start=first, end=day, labels=labels, fields=_COUNT_FIELDS)
    history = count_columns(docs, labels)

    # Each class's test and policy; the classes that share them are judged together.
    base = health_policy(settings, n, followup)
    plans: list[tuple[HealthPolicy, Design]] = []
    groups: dict[tuple[Design, HealthPolicy], list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        policy, target = base, settings.target_for(label)
        if as_stored and own.get(label, {}).get("judged_under"):
            policy, target = base.as_judged(own[label]["judged_under"]), float(own[label]["target"])
        d = _cached_design(artifacts, CACHE_KEY, policy.design_args(target, len(labels)))
        plans.append((policy, d))
        groups[(d, policy)].append(i)
    check_counts(history)

    evidence: list[Evidence | None] = [None] * len(labels)
    for (d, policy), members in groups.items():
        stored = [previous.get(labels[i]) for i in members]
        kept = [Carried(_stored_date(str(row["date"])), row) if row and "flagged" in row else None for row in stored]
        for i, judged in zip(
            members, judge_classes(np.asarray(members, dtype=np.int64), kept, history, as_of, d, policy), strict=True
        ):
            evidence[i] = judged
    rows: list[HealthRow] = []
    for label, (policy, _), found in zip(labels, plans, evidence, strict=True):
        assert found is not None
        rows.append(
            {
                "model_id": model_id,
                "date": day,
                "label": label,
                **found,
                "judged_under": policy.judged_under(len(labels)),
            }
        )
    store.replace_day("class_health", model_id, day, rows)
    return rows


_COUNT_FIELDS = ["label", "date", "n", "correct", "followup_n", "followup_correct", "unseen_left"]


def count_columns(docs: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> Counts:
    """The ``class_metrics`` documents (:data:`_COUNT_FIELDS`) of ``labels`` as :class:`Counts`, in one pass."""
    index = {label: i for i, label in enumerate(labels)}
    texts = [str(doc["date"]) for doc in docs]
    ordinals = {text: _stored_date(text).toordinal() for text in set(texts)}
    size = len(texts)

    def column(name: str, missing: int = 0) -> NDArray[np.int64]:
        return np.fromiter(
            (missing if doc.get(name) is None else int(doc[name]) for doc in docs), dtype=np.int64, count=size
        )

    label_arr = np.fromiter((index[str(doc["label"])] for doc in docs), dtype=np.int64, count=size)
    day_arr = np.fromiter((ordinals[text] for text in texts), dtype=np.int64, count=size)
    order = np.lexsort((day_arr, label_arr))  # stable: a repeated date keeps the order it was read in
    columns = [column(name) for name in ("n", "correct", "followup_n", "followup_correct")] + [
        column("unseen_left", -1)
    ]
    return Counts(label_arr[order], day_arr[order], *(c[order] for c in columns))


def followup_requests(store: Store, date: dt.date | str, cap: int, unit: int = 1) -> dict[str, int]:
    """Extra images per class for ``date``'s sample: what the latest verdicts before ``date`` asked for, within ``cap``.

    The latest judged date before ``date`` is used (point-in-time: nothing judged on or after ``date``);
    with several models judged that day a class gets the largest request. When the requests exceed the
    daily ``cap``, :func:`~monitor.domain.health.judge.grant_followup` serves flagged classes and the classes closest
    to their threshold first, and a partial grant is a whole multiple of ``unit``
    (:func:`~monitor.domain.health.calibration.grant_unit`: what the calibration allows for).
    """
    day = _stored_date(date).isoformat()
    judged = store.dates("class_health", before=day)
    if not judged:
        return {}
    rows = [
        row
        for row in store.rows("class_health", None, start=judged[-1], end=judged[-1])
        if int(row.get("followup") or 0) > 0
    ]
    wanted: dict[str, tuple[int, float]] = {}
    for row in rows:
        urgent = float(
            urgency(float(row.get("cusum") or 0.0), float(row.get("cusum_threshold") or 1.0), bool(row.get("flagged")))
        )
        label, extra = str(row["label"]), int(row["followup"])
        # Several models judged that day: the largest request, served as urgently as the most urgent of them (a flag first).
        before = wanted.get(label, (0, -math.inf))
        wanted[label] = (max(before[0], extra), max(before[1], urgent))
    labels = sorted(wanted)  # ties in urgency: by label
    given = grant_followup([wanted[label][0] for label in labels], [wanted[label][1] for label in labels], cap, unit)
    return {label: int(give) for label, give in zip(labels, given, strict=True) if give > 0}


# --- the stage ----------------------------------------------------------------------------


def model_for_date(store: Store, date: dt.date, model_id: str | None) -> str:
    """The model to judge: the one asked for, else the one measured on the latest date <= ``date``.

    When several models were measured that day (a model swap and a re-run), the one the day's run
    last evaluated (``runs.model_id``) wins; failing that, the choice is refused rather than guessed.
    """
    if model_id:
        return model_id
    days = store.dates("class_metrics", before=days_after(date).isoformat())
    if not days:
        raise DataError(f"no class metrics on or before {date}: run `monitor evaluate --date {date}` first")
    day = days[-1]
    candidates = store.models_on("class_metrics", day)
    if len(candidates) == 1:
        return candidates[0]
    ran = {str(doc.get("model_id")) for doc in store.runs_on(day)} & set(candidates)
    if len(ran) == 1:
        return ran.pop()
    raise DataError(f"models {', '.join(candidates)} were all measured on {day}; name the one to judge")


def health_with(ctx: RunContext, store: Store, *, model_id: str | None = None) -> HealthResult:
    """Verdicts per class for ``date`` from the stored history, alerts on transitions, delivery of pending alerts."""
    from monitor.core.settings import check_target_overrides
    from monitor.domain.alerts import deliver_pending, raise_alerts
    from monitor.orchestration.health_stage import compute_health

    settings, date = ctx.settings, ctx.day
    model = model_for_date(store, ctx.date, model_id)
    if settings.target_overrides:  # a misspelt class would silently keep the default target
        check_target_overrides(
            settings,
            {str(row["label"]) for row in store.rows("class_metrics", model, start=date, end=date, fields=["label"])},
        )
    rows = compute_health(store, model, date, settings)
    new_alerts = raise_alerts(store, model, date, rows)
    # Each day continues from the state stored the day before: when a date arrives late (a backfill, a
    # hand re-run), the days already stored after it are recomputed in order, each under its own settings.
    later = store.dates("class_health", model, after=date)
    for day in later:
        new_alerts += raise_alerts(store, model, day, compute_health(store, model, day, settings, as_stored=True))
    delivery = deliver_pending(store, settings.alert_urls)
    summary: HealthResult = {
        "date": date,
        "model_id": model,
        "verdicts": {row["label"]: row["verdict"] for row in rows},
        "flagged": sorted(row["label"] for row in rows if row["verdict"] == Verdict.NEEDS_RETRAINING),
        "new_alerts": len(new_alerts),
        "delivered": delivery.delivered,
        "pending": delivery.pending,
    }
    record_stage(store, ctx, "health", {k: v for k, v in summary.items() if k != "verdicts"})
    summary["classes"] = rows
    return summary


def run_health(settings: Settings, date: str, *, model_id: str | None = None) -> HealthResult:
    ctx = RunContext.for_date(settings, date)
    with open_store(settings) as store:
        summary = health_with(ctx, store, model_id=model_id)
    summary.pop("classes")
    return summary
