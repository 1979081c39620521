"""What each stage returns: the summaries the CLI prints (``--json``), the DAG passes on (XCom) and ``runs`` records.

They are JSON values (dates as ``YYYY-MM-DD`` text, paths as text) because they leave the process; inside it
the run date is a :class:`datetime.date` (:class:`~monitor.orchestration.context.RunContext`). Typed here so
that the CLI and the DAG read named fields, not guessed keys.
"""

from __future__ import annotations

from typing import (
    Any,
    NotRequired,  # pydantic reads these on Python 3.11 (the schemas)
)

from typing_extensions import TypedDict

from monitor.domain.health.judge import HealthRow


class IndexResult(TypedDict):
    """What one listing of the source changed in ``images``."""

    source: str
    listed: int
    new: int
    updated: int
    unchanged: int
    missing: int
    reappeared: int
    unusable: dict[str, int]  # reason -> images
    labels: dict[str, int]  # class -> usable images
    wrote_nothing: bool


class SampleResult(TypedDict):
    """The date's sample: its file, how many images per class, the follow-up and the classes with nothing new."""

    date: str
    samples_csv: str
    images: int
    classes: dict[str, int]
    short_classes: dict[str, int]
    followup: dict[str, int]
    exhausted: list[str]
    reused: bool


class ModelPredictions(TypedDict):
    """One model's predictions of the date's sample."""

    predictions: str
    model_id: str
    ok: int
    failed: dict[str, int]  # error -> images
    reused: bool


class PredictResult(ModelPredictions):
    """The production model's predictions of the date, and each candidate's."""

    date: str
    candidates: list[ModelPredictions]


class ClassCounts(TypedDict):
    """One class's counts of the date (``class_metrics``), as the metrics stage reports them."""

    label: str
    n: int
    correct: int
    failed: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None


class MetricsResult(TypedDict):
    date: str
    model_id: str
    classes: list[ClassCounts]
    recounted: int  # predictions left out: images the model had evaluated already


class HealthResult(TypedDict):
    """The date's verdicts and what alerting did; ``classes`` (the stored rows) only where a caller shows them."""

    date: str
    model_id: str
    verdicts: dict[str, str]
    flagged: list[str]
    new_alerts: int
    delivered: int
    pending: int
    classes: NotRequired[list[HealthRow]]


class JudgedClass(ClassCounts):
    verdict: str | None


class EvaluateResult(TypedDict):
    """A whole day (``monitor evaluate``): what each stage did, the counts and verdicts per class."""

    date: str
    model: str
    source: str
    samples_csv: str
    predictions: str
    sampled: int
    short_classes: dict[str, int]
    followup: dict[str, int]
    classes: list[JudgedClass]
    skipped: dict[str, int]
    failed: dict[str, int]
    flagged: list[str]
    new_alerts: int
    pending_alerts: int
    health: list[HealthRow]


class CandidateAdded(TypedDict):
    model_dir: str
    model_id: str
    added: bool


class CandidateRemoved(TypedDict):
    model_dir: str
    removed: bool


#: One candidate directory and where it is configured (``from`` is a keyword, hence this form).
CandidateListing = TypedDict("CandidateListing", {"model_dir": str, "model_id": "str | None", "from": str})


# --- the other objects the CLI prints under --json (monitor.orchestration.schemas) --------------------------------


class HealthOutput(TypedDict):
    """``monitor health --json``: the date shown and each class's stored row."""

    date: str
    classes: list[HealthRow]


class AlertRow(TypedDict):
    """One stored alert as ``monitor alerts --json`` lists it (ISO dates; fields beyond these may be present)."""

    model_id: str
    label: str
    date: str
    kind: str
    delivered: bool
    message: NotRequired[str]
    attempts: NotRequired[int]
    alert_id: NotRequired[str]


class AlertsOutput(TypedDict):
    alerts: list[AlertRow]


class CandidateList(TypedDict):
    """``monitor candidate list --json``."""

    candidates: list[CandidateListing]


class StoreInfo(TypedDict):
    """``monitor store info --json``: the store, its documents per collection, and its engine's own facts."""

    store: str
    documents: dict[str, int]


class StoreRestored(TypedDict):
    """``monitor store restore --json``."""

    store: str
    restored_from: str
    commit: int
    committed_at: str


class SourceBuilt(TypedDict):
    """``monitor demo --source-only --json``: the default image source built (or found)."""

    source: str
    images: int
    written: int
    dated: str | None


class DemoResult(TypedDict):
    """``monitor demo --json``: the simulated days and what the last one says."""

    first_date: str
    last_date: str
    drop_date: str
    degraded: str
    severity: dict[str, float]
    flagged: list[str]
    first_flagged: dict[str, str]  # class -> the first day it was flagged
    days_to_flag: dict[str, int]  # the degraded class -> days from the drop to its flag
    health: list[HealthRow]
    daily: list[dict[str, Any]]
    model: str
    candidate: str | None


class ErrorDetail(TypedDict):
    exit_code: int
    type: str
    message: str


class ErrorOutput(TypedDict):
    """Any command's failure under ``--json``."""

    error: ErrorDetail


# --- the read-only API of the dashboard server (/api/v1, dashboards/api.py) ----------------------------------------


class ModelEntry(TypedDict):
    model_id: str
    name: str
    labels: list[str]
    first_date: str | None
    last_date: str | None


class ApiModels(TypedDict):
    """``GET /api/v1/models``: every model with results, the most recently evaluated first."""

    models: list[ModelEntry]


class ApiHealth(TypedDict):
    """``GET /api/v1/health``: one model's verdicts of one date (the latest by default), as ``monitor health --json``."""

    model_id: str
    date: str
    classes: list[HealthRow]


class ApiHistory(TypedDict):
    """``GET /api/v1/history``: one class of one model over a date range: its daily counts and its daily verdicts."""

    model_id: str
    label: str
    start: str | None
    end: str | None
    metrics: list[ClassCounts]
    health: list[HealthRow]


class ApiAlerts(TypedDict):
    """``GET /api/v1/alerts``: stored alerts, newest first."""

    alerts: list[AlertRow]


class ApiRuns(TypedDict):
    """``GET /api/v1/runs``: the run notes of a date (one per source): each stage's summary, finish time, seconds."""

    date: str
    runs: list[dict[str, Any]]


class ApiErrorDetail(TypedDict):
    status: int
    type: str
    message: str


class ApiError(TypedDict):
    """Any API error: its HTTP status, the kind of error and one line saying what was wrong."""

    error: ApiErrorDetail


class RangeDay(TypedDict):
    """One date of ``monitor evaluate --from D1 --to D2``: evaluated now, or found complete and skipped."""

    date: str
    status: str  # "evaluated" | "skipped"
    sampled: int | None
    flagged: list[str]


class RangeResult(TypedDict):
    """``monitor evaluate --from D1 --to D2 --json``: every date of the range, oldest first."""

    start: str
    end: str
    dates: list[RangeDay]


class ImportResult(TypedDict):
    """``monitor predictions import --json``: the imported predictions, and the day's metrics and verdicts from them."""

    date: str
    model_id: str
    predictions: str
    rows: int
    classes: list[ClassCounts]
    flagged: list[str]
    new_alerts: int
    pending_alerts: int
