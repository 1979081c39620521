"""The sample stage: the date's stratified sample drawn (or reused) into ``samples/<date>.csv`` and the store.

A sample already drawn for the date is reused as long as it was drawn under the same settings and its CSV still
holds what the store recorded; otherwise the stage refuses, and says that ``--force`` draws it again.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from monitor.core.errors import ConfigError, DataError
from monitor.core.settings import Settings
from monitor.orchestration.context import RunContext
from monitor.orchestration.results import SampleResult
from monitor.orchestration.runs import production_model_id, record_stage
from monitor.store import Store, open_store


def check_sample_settings(recorded: dict[str, Any], settings: Settings, date: str) -> None:
    """Refuse to reuse a date's sample that was drawn with other sampling settings (silently evaluating the old one would mislead)."""
    wanted = {"samples_per_class": settings.samples_per_class, "seed": settings.seed, "fresh_days": settings.fresh_days}
    stored = {
        "samples_per_class": recorded.get("n_per_class"),
        "seed": recorded.get("seed"),
        "fresh_days": recorded.get("fresh_days"),
    }
    changed = [name for name in wanted if stored[name] != wanted[name]]
    if changed:
        shown = ", ".join(f"MONITOR_{n.upper()} was {_shown(stored[n])}, now {_shown(wanted[n])}" for n in changed)
        back = ", ".join(
            f"unset MONITOR_{n.upper()}" if stored[n] is None else f"set MONITOR_{n.upper()}={stored[n]}"
            for n in changed
        )
        raise ConfigError(
            f"the sample of {date} was drawn with other settings ({shown}): to evaluate it as drawn, {back}; "
            f"or add --force to draw it again with the current settings"
        )


def _shown(value: object) -> str:
    return "unset" if value is None else str(value)


def sample_with(ctx: RunContext, store: Store, *, force: bool = False) -> SampleResult:
    """Draw (or reuse) the stratified sample for ``date`` and write ``samples/<date>.csv``.

    Classes that the latest verdicts before ``date`` put on watch (or flagged) get follow-up images
    beyond the base N (``followup_samples``, within ``followup_daily_cap``). An existing sample for
    the date is reused unless ``force``: a re-run evaluates the same images.
    """
    from monitor.domain.health.calibration import grant_unit
    from monitor.domain.sampling import draw_sample, record_sample, sample_csv_bytes
    from monitor.orchestration.health_stage import followup_requests

    settings, date, source_uri = ctx.settings, ctx.day, ctx.source_uri
    key = sample_key(date)
    csv_path = ctx.artifacts.location(key)
    recorded = store.sample(source_uri, date, items=True)
    if not force and recorded is not None and ctx.artifacts.exists(key):
        check_sample_settings(recorded, settings, date)
        sample = read_sample(ctx, recorded)
        reused = True
    else:
        if store.count_images(source_uri) == 0:
            raise DataError(f"nothing is indexed for {source_uri}: run `monitor index` first")
        unit = grant_unit(settings.followup_samples)
        requests = (
            followup_requests(store, date, settings.followup_daily_cap, unit) if settings.followup_samples else {}
        )
        # Images the production model evaluated on other dates are never drawn again: each counts once per model.
        model_id = production_model_id(settings)
        sample = draw_sample(
            store,
            source_uri,
            ctx.date,
            settings.samples_per_class,
            settings.seed,
            fresh_days=settings.fresh_days,
            followup=requests,
            followup_unit=unit,
            seen=store.evaluated(model_id, other_than=date),
            first_draw=settings.first_draw,
            model_id=model_id,
        )
        if not sample.items and not sample.unseen_left and not sample.unseen:
            window = f" within {settings.fresh_days} days" if settings.fresh_days else ""
            from monitor.core.image_times import ImageTime

            dated_by = ImageTime.parse(settings.image_time)
            advice = (
                "; if the images were copied after they were collected, date them by a manifest "
                "(MONITOR_IMAGE_TIME=manifest:/path/file.csv, rows path,date) or by object metadata (metadata:KEY)"
                if dated_by.mode == "object"
                else ""
            )
            raise DataError(
                f"no usable image of {source_uri} was created on or before {date}{window} "
                f"(images are dated by {dated_by.describe()}){advice}"
            )
        ctx.artifacts.write(key, sample_csv_bytes(sample), what="sample file")
        record_sample(store, sample, csv_path)
        reused = False
    summary: SampleResult = {
        "date": date,
        "samples_csv": str(csv_path),
        "images": len(sample.items),
        "classes": dict(sample.classes),
        "short_classes": dict(sample.short_classes),
        "followup": dict(sample.followup),
        "exhausted": sorted(
            label for label, left in sample.unseen_left.items() if left == 0 and not sample.classes.get(label)
        ),
        "reused": reused,
    }
    record_stage(store, ctx, "sample", summary)
    return summary


def sample_key(date: str) -> str:
    """The artifact key of the sample of ``date`` (``samples/<date>.csv``)."""
    return f"samples/{date}.csv"


def read_sample(ctx: RunContext, recorded: dict[str, Any]) -> Any:
    """The day's sample file read back from the artifact store and checked against what the store ``recorded`` drawing."""
    from monitor.core.artifacts import ArtifactMissing
    from monitor.domain.sampling import MAX_SAMPLE_CSV_BYTES, parse_sample_csv

    key, date = sample_key(ctx.day), ctx.day
    where = ctx.artifacts.location(key)
    try:
        data = ctx.artifacts.read(key, what="sample file", max_bytes=MAX_SAMPLE_CSV_BYTES)
    except ArtifactMissing:
        raise DataError(
            f"no sample for {date} ({where} is missing): run `monitor sample --date {date}` first"
        ) from None
    sample = parse_sample_csv(data, where, **empty_ok(recorded, ctx.date))
    check_sample_file(sample, recorded, where, date)
    return sample


def check_sample_file(sample: Any, recorded: dict[str, Any], csv_path: Path | str, date: str) -> None:
    """Refuse a sample CSV that no longer holds what the store recorded drawing (a hand edit would silently change the day)."""
    items = recorded.get("items")
    if items is None:
        return
    drawn = sorted((str(i.get("path")), str(i.get("label")), str(i.get("draw") or "base")) for i in items)
    found = sorted((item.image_path, item.label, item.draw) for item in sample.items)
    if drawn != found:
        missing, extra = len(set(drawn) - set(found)), len(set(found) - set(drawn))
        raise DataError(
            f"{csv_path} is not the sample drawn for {date} ({len(found)} rows, {len(drawn)} drawn; {missing} drawn rows missing, "
            f"{extra} not drawn): re-run with --force to draw the sample of {date} again"
        )


def empty_ok(recorded: dict[str, Any], day: dt.date) -> dict[str, Any]:
    """``read_sample_csv`` arguments that accept a header-only file when the store recorded an empty sample (nothing new)."""
    if recorded and not any((recorded.get("classes") or {}).values()):
        return {"date": day, "source": recorded.get("source")}
    return {}


def run_sample(settings: Settings, date: str, *, force: bool = False) -> SampleResult:
    ctx = RunContext.for_date(settings, date)  # before the store is opened: a bad date writes nothing
    with open_store(settings) as store:
        return sample_with(ctx, store, force=force)
