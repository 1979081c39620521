"""The one verdict type: what a class's health is on a date.

A :class:`Verdict` is a ``str`` (``Verdict.WATCH == "watch"``), so stored rows, JSON and the CLI keep plain
strings and compare equal to members. Two orders matter and both live here: the **code** order that the
array form of the verdict rule returns (:func:`monitor.domain.health.detector.verdict_codes`), and the **urgency** order
in which people read them (the dashboard's "worst first", its colours and its legend).
"""

from __future__ import annotations

from enum import StrEnum


class Verdict(StrEnum):
    HEALTHY = "healthy"
    WATCH = "watch"
    NEEDS_RETRAINING = "needs_retraining"
    INSUFFICIENT_DATA = "insufficient_data"

    @property
    def code(self) -> int:
        """The verdict's code in :func:`monitor.domain.health.detector.verdict_codes` (its place in the class body)."""
        return list(Verdict).index(self)

    @classmethod
    def from_code(cls, code: int) -> Verdict:
        return list(cls)[int(code)]

    @property
    def urgency(self) -> int:
        """0 for the most urgent (:data:`BY_URGENCY`)."""
        return BY_URGENCY.index(self)

    @property
    def text(self) -> str:
        """For people: ``needs retraining``."""
        return self.value.replace("_", " ")


#: From the most to the least urgent: what "worst first" sorts by.
BY_URGENCY: tuple[Verdict, ...] = (Verdict.NEEDS_RETRAINING, Verdict.WATCH, Verdict.INSUFFICIENT_DATA, Verdict.HEALTHY)
#: Verdicts that ask for attention (shown as flagged on the dashboard's overview).
ATTENTION: tuple[Verdict, ...] = (Verdict.NEEDS_RETRAINING, Verdict.WATCH)


class ComparisonVerdict(StrEnum):
    """What a candidate's comparison with production says (:func:`monitor.domain.compare.judge`); a ``str`` like :class:`Verdict`."""

    PROMOTE = "promote"
    REJECT = "reject"
    INSUFFICIENT_DATA = "insufficient_data"
