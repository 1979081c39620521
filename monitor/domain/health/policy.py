"""The settings a day of class health is judged under (:class:`HealthPolicy`), and their stored form (``judged_under``).

Built from the settings at the edge (:func:`monitor.orchestration.health_stage.health_policy`), so the calculators
take these few numbers and never the settings. A change of the class count or of a setting applies from the day it
happens and never rewrites a stored day: a recomputed day is judged under the policy stored with its rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from typing_extensions import TypedDict  # pydantic reads these on Python 3.11 (the schemas)

from monitor.domain.health.calibration import required_arl

#: The arguments of :func:`monitor.domain.health.calibration.design`: target, drop, n, followup, arl, recovery_arl.
DesignArgs = tuple[float, float, int, int, float, float]


class JudgedUnder(TypedDict):
    """The settings a day was judged under, as stored with each of its ``class_health`` rows."""

    drop_to_detect: float
    false_alarms_per_year: float
    false_recoveries_per_year: float
    samples_per_class: int
    followup_samples: int
    window_days: int
    min_samples: int
    confidence_level: float
    classes: int


@dataclass(frozen=True)
class HealthPolicy:
    """The numbers one day's verdicts depend on (beyond each class's target); the fields of :class:`JudgedUnder`."""

    drop_to_detect: float
    false_alarms_per_year: float
    false_recoveries_per_year: float
    samples_per_class: int  # the day's base draw per class
    followup_samples: int  # the day's follow-up setting
    window_days: int
    min_samples: int
    confidence_level: float

    def design_args(self, target: float, classes: int) -> DesignArgs:
        """What :func:`~monitor.domain.health.calibration.design` calibrates for a class ``target`` among ``classes``."""
        return (
            round(target, 10),
            round(self.drop_to_detect, 10),
            self.samples_per_class,
            self.followup_samples,
            required_arl(classes, self.false_alarms_per_year),
            365.0 / self.false_recoveries_per_year,
        )

    def judged_under(self, classes: int) -> JudgedUnder:
        """This policy as stored with a day's rows, with the number of classes judged that day."""
        return JudgedUnder(
            drop_to_detect=self.drop_to_detect,
            false_alarms_per_year=self.false_alarms_per_year,
            false_recoveries_per_year=self.false_recoveries_per_year,
            samples_per_class=self.samples_per_class,
            followup_samples=self.followup_samples,
            window_days=self.window_days,
            min_samples=self.min_samples,
            confidence_level=self.confidence_level,
            classes=classes,
        )

    def as_judged(self, stored: Mapping[str, Any]) -> HealthPolicy:
        """The policy a stored ``judged_under`` records (its sample sizes required); a value it lacks stays this policy's."""
        kept = {f.name: stored[f.name] for f in dataclasses.fields(self) if f.name in stored}
        kept.update(
            samples_per_class=int(stored["samples_per_class"]), followup_samples=int(stored["followup_samples"])
        )
        return dataclasses.replace(self, **kept)
