"""What each stage returns: the summaries the CLI prints (``--json``), the DAG passes on (XCom) and ``runs`` records.

They are JSON values (dates as ``YYYY-MM-DD`` text, paths as text) because they leave the process; inside it
the run date is a :class:`datetime.date` (:class:`~monitor.orchestration.context.RunContext`). Typed here so
that the CLI and the DAG read named fields, not guessed keys.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

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
