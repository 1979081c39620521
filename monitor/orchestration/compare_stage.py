"""The compare stage: a candidate beside production over its days of predictions, computed and stored.

The I/O around the pure calculator :mod:`monitor.domain.compare`: the candidates and their days come from
the prediction files (:class:`evaluation.predictions.PredictionFiles`), the paired counts from Spark SQL
(:func:`evaluation.metrics.paired_counts_spark`; the pandas reference without a JVM), the classes the
candidate must fix from production's stored health, and the result goes to the store's ``comparisons``
collection, one document per (candidate model id, last date pooled): a re-run of a date replaces it. The
dashboard reads those documents and computes nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import pandas as pd
from typing_extensions import TypedDict  # pydantic reads these on Python 3.11 (the schemas)

from evaluation.predictions import PredictionFiles
from monitor.core.artifacts import artifacts_for
from monitor.core.dates import days_after
from monitor.core.errors import DataError
from monitor.core.settings import Settings, safe_name
from monitor.core.verdicts import ComparisonVerdict, Verdict
from monitor.domain.compare import Comparison, ComparisonRecord, compare_counts, discordant_images, gallery
from monitor.orchestration.context import RunContext
from monitor.store import Store, open_store

#: Discordant images kept with a stored comparison (the dashboard's gallery).
GALLERY_SIZE = 48

Engine = Literal["spark", "pandas"]


class CompareRun(TypedDict):
    """What :func:`run_compare` returns (the DAG's event, ``--json``): each comparison without its per-class rows."""

    date: str
    comparisons: list[ComparisonRecord]
    ready: list[str]


def resolve_candidate(files: PredictionFiles, candidate: str) -> str:
    """The candidate model id that ``candidate`` names: a full id (``name@checksum``) or a name only one stored candidate has."""
    known = files.candidates()
    exact = [m for m in known if m == candidate or safe_name(m) == candidate]
    found = exact or [m for m in known if m.split("@")[0] == candidate]
    if len(found) == 1:
        return found[0]
    if not known:
        raise DataError(
            f"no candidate has predictions under {files.candidates_dir}: add one "
            "(MONITOR_CANDIDATE_MODEL_DIRS or `monitor candidate add DIR`) and run `monitor evaluate`"
        )
    if not found:
        raise DataError(f"no candidate {candidate!r} has predictions; known: {', '.join(known)}")
    raise DataError(f"{candidate!r} names several candidates ({', '.join(found)}); give the full model id")


def paired_predictions(
    files: PredictionFiles, candidate: str, since: dt.date | None, until: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Production's and the candidate's predictions on the days both have from ``since`` to ``until``, and those days."""
    first, last = since.isoformat() if since else None, until.isoformat()
    production_days = set(files.dates())
    days = [
        day
        for day in files.dates(candidate)
        if (first is None or day >= first) and day <= last and day in production_days
    ]
    if not days:
        raise DataError(
            f"candidate {candidate} and production have no predictions of the same day between {first or 'the start'} and {last}"
        )
    production = pd.concat([files.read(files.production(day)) for day in days], ignore_index=True)
    ours = pd.concat([files.read(files.candidate(day, candidate)) for day in days], ignore_index=True)
    models = sorted(production["model_id"].unique())
    if len(models) != 1:
        raise DataError(
            f"production changed model between {days[0]} and {days[-1]} ({', '.join(models)}); compare from the day of the last change with --since"
        )
    return production, ours, days


def flagged_classes(store: Store, production: str, until: dt.date, labels: list[str]) -> list[str]:
    """The classes production's latest verdicts on or before ``until`` flag (``needs_retraining``): what a candidate must fix."""
    latest = store.latest_rows_before("class_health", production, days_after(until).isoformat(), labels)
    return sorted(label for label, row in latest.items() if row.get("verdict") == Verdict.NEEDS_RETRAINING)


def compare_with(
    settings: Settings,
    store: Store,
    candidate: str,
    *,
    since: dt.date | None = None,
    until: dt.date,
    engine: Engine = "spark",
    spark: Any = None,
    flagged: list[str] | None = None,
    gallery_size: int = 0,
) -> Comparison:
    """``candidate`` beside production over ``since..until`` (default: from its first day); reads, stores nothing.

    ``flagged``: the classes the candidate must fix (default :func:`flagged_classes`). ``engine``: Spark SQL counts
    (``spark`` or a new session) or the pandas reference. ``gallery_size``: discordant images to keep (``discordant``).
    """
    from evaluation.metrics import paired_counts_pandas, paired_counts_spark

    files = PredictionFiles(artifacts_for(settings))
    model = resolve_candidate(files, candidate)
    production, ours, days = paired_predictions(files, model, since, until)
    production_id = str(production["model_id"].iloc[0])
    labels = sorted(set(production["label"]) | set(ours["label"]))
    if flagged is None:
        flagged = flagged_classes(store, production_id, until, labels)
    if engine == "spark":
        from evaluation.spark import spark_for

        session = spark or spark_for(settings)
        counts = paired_counts_spark(session, production, ours, labels=labels)
    else:
        counts = paired_counts_pandas(production, ours, labels=labels)
    result = compare_counts(
        counts,
        production=production_id,
        candidate=model,
        days=days,
        flagged=flagged,
        alpha=settings.compare_alpha,
        margin=settings.noninferiority_margin,
        confidence=settings.confidence_level,
        min_samples=settings.min_samples,
    )
    if gallery_size:
        result.discordant = gallery(discordant_images(production, ours, limit=gallery_size))
    return result


def save(store: Store, comparison: Comparison) -> None:
    """Store ``comparison`` as the ``comparisons`` document of (its candidate, its last date), replacing any earlier one."""
    store.save_comparison({"date": comparison.end, **comparison.to_dict()})


def compare_and_save(
    settings: Settings,
    candidate: str,
    *,
    since: dt.date | None = None,
    until: dt.date,
    engine: Engine = "spark",
    spark: Any = None,
) -> Comparison:
    """:func:`compare_with` with the dashboard's gallery, stored (:func:`save`) and committed; returned without its gallery.

    The comparison reads a read-only store; the writer's store is opened only to save a result, so a comparison
    that fails (an unknown candidate, no paired days) writes nothing, not even an empty store.
    """
    with open_store(settings, read_only=True) as store:
        result = compare_with(
            settings, store, candidate, since=since, until=until, engine=engine, spark=spark, gallery_size=GALLERY_SIZE
        )
    with open_store(settings) as store:
        save(store, result)
        store.commit()
    result.discordant = None
    return result


def run_compare(
    settings: Settings,
    date: str | dt.date,
    *,
    candidate: str | None = None,
    since: dt.date | None = None,
    engine: Engine = "spark",
) -> CompareRun:
    """Compare ``candidate`` (default: every candidate with predictions on ``date``) beside production up to ``date``, and store each.

    ``since`` defaults to the candidate's first day of predictions. ``ready`` lists the candidates whose verdict is ``promote``.
    """
    ctx = RunContext.for_date(settings, date)
    files = PredictionFiles(ctx.artifacts)
    names = [candidate] if candidate else [m for m in files.candidates() if files.exists(files.candidate(ctx.day, m))]
    comparisons: list[ComparisonRecord] = []
    for name in names:
        record = compare_and_save(settings, name, since=since, until=ctx.date, engine=engine).to_dict()
        del record["classes"]
        comparisons.append(record)
    return {
        "date": ctx.day,
        "comparisons": comparisons,
        "ready": [c["candidate"] for c in comparisons if c["verdict"] == ComparisonVerdict.PROMOTE],
    }
