"""What the stages of a date share: their notes in ``runs`` and the production model's id."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monitor.core.errors import ModelError
from monitor.core.settings import Settings
from monitor.orchestration.context import RunContext
from monitor.store import Store


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def record_stage(store: Store, ctx: RunContext, stage: str, summary: Mapping[str, Any]) -> None:
    """Note in ``runs`` that ``stage`` finished for (source, date), replacing its previous note, and commit.

    The note carries ``seconds``: the time since the previous stage of this run ended in this process (since the run
    began for the first), which is the stage's own duration whether the stages run in one process or one task each.
    """
    mark = time.monotonic()
    seconds = round(mark - ctx.marks.get("last", ctx.started), 3)
    ctx.marks["last"] = mark
    store.record_stage(ctx.source_uri, ctx.day, stage, {**jsonable(summary), "seconds": seconds}, finished_at=now())


def jsonable(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in summary.items()}


def production_model_id(settings: Settings) -> str:
    """The id of the production model: ``MONITOR_MODEL_ID`` when set (a model served elsewhere, whose predictions are
    imported), else from ``MONITOR_MODEL_DIR``'s weight files, without loading it."""
    from evaluation.model import model_identity

    if settings.model_id:
        return settings.model_id
    if not Path(settings.model_dir).is_dir():
        raise ModelError(
            f"model directory {settings.model_dir} does not exist (set MONITOR_MODEL_DIR to a Hugging Face model "
            "directory, or MONITOR_MODEL_ID to the id of a model served elsewhere whose predictions you import)"
        )
    try:
        return model_identity(settings.model_dir)
    except OSError as exc:
        raise ModelError(f"cannot read the model at {settings.model_dir}: {exc.strerror or exc}") from exc
