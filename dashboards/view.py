"""The resolved view: the URL state checked against the store, and the choices a page makes from the data.

Unlike :mod:`dashboards.state`, this module **queries data** (through
:class:`~dashboards.data.DashboardData`): :func:`resolve` looks up the model, its evaluated dates and
its classes; :func:`latest_status` reads where each class stands at the range's end, and
:func:`worst_first` ranks the classes by that and their accuracy when a page must pick one for the
user. The pages then query their own content for the view they are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import pandas as pd

from dashboards.data import DashboardData
from dashboards.pooling import Grain, auto_grain, range_pooled_accuracy
from dashboards.records import ModelInfo
from dashboards.state import ViewState, clamp_range, shown
from dashboards.status import class_status, rank_classes

#: Unknown classes of a shared link named one by one in its notice; the rest are counted.
UNKNOWN_LISTED = 10


@dataclass(frozen=True)
class View:
    """The URL state resolved against the store: the model, its history bounds and the range shown."""

    state: ViewState
    model: ModelInfo
    first: str
    last: str
    start: str
    end: str
    labels: tuple[str, ...]  # every class with metrics for this model
    chosen: tuple[str, ...]  # the classes filter, restricted to known classes (empty: all)
    notices: tuple[str, ...]
    level: float

    @property
    def shown_labels(self) -> list[str]:
        """The classes the page covers: the chosen ones, or every class."""
        return list(self.chosen) if self.chosen else list(self.labels)

    def grain(self, auto: Grain | None = None) -> Grain:
        """The grain the URL asks for; for ``auto``, the argument or else one by the range's length (:func:`auto_grain`)."""
        if self.state.grain != "auto":
            return cast(Grain, self.state.grain)
        return auto or auto_grain(self.start, self.end)


def resolve(data: DashboardData, state: ViewState) -> View | None:
    """Check the URL state against the store; None when the store has no results at all (the empty state)."""
    model = data.model(state.model)
    if model is None:
        return None
    bounds = data.date_bounds(model.model_id)
    if bounds is None:
        return None
    first, last = bounds
    start, end, clamped = clamp_range(state, first, last)
    notices = [*state.problems, *clamped]
    labels = tuple(data.labels(model.model_id))
    known = set(labels)
    unknown = [label for label in state.classes if label not in known]
    if unknown:
        listed = ", ".join(shown(label) for label in unknown[:UNKNOWN_LISTED])
        more = f" and {len(unknown) - UNKNOWN_LISTED:,} more" if len(unknown) > UNKNOWN_LISTED else ""
        notices.append(
            f"no results for class{'es' if len(unknown) > 1 else ''} {listed}{more} with model {model.model_id}"
        )
    chosen = tuple(label for label in state.classes if label in known)
    return View(
        state=state,
        model=model,
        first=first,
        last=last,
        start=start,
        end=end,
        labels=labels,
        chosen=chosen,
        notices=tuple(notices),
        level=data.settings.confidence_level,
    )


def latest_status(
    data: DashboardData, view: View, labels: list[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The health rows of ``labels`` (None: every class) up to the range's end, and each class's status as of then."""
    health = data.health(view.model.model_id, None, view.end, labels)
    return health, class_status(health, as_of=view.end)


def worst_first(data: DashboardData, view: View, status: pd.DataFrame) -> list[str]:
    """Every class of the model, the most urgent first: by ``status``, then by its pooled accuracy over the range."""
    accuracy = range_pooled_accuracy(data.metrics(view.model.model_id, view.start, view.end))
    return rank_classes(status, accuracy, view.labels, "worst")
