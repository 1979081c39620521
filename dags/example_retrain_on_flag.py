"""EXAMPLE Airflow DAG ``example_retrain_on_flag``: a retraining hand-off scheduled on class_health_daily's asset.

class_health_daily publishes an event of the asset ``class_health_needs_retraining`` for each date
on which at least one class needs retraining (once per date and model). This DAG runs when such an
event arrives and reads the flagged classes from the event's extra. Its only task logs what it
would retrain: replace it with your own training job (a KubernetesPodOperator, a Vertex AI or
SageMaker job...). Paused when first deployed so that nothing retrains by surprise.
"""

from __future__ import annotations

import logging
from typing import Any

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task

log = logging.getLogger("example_retrain_on_flag")

#: Same name as class_health_daily's outlet: an asset is identified by its name (and URI).
NEEDS_RETRAINING = Asset(name="class_health_needs_retraining", group="class_health")


@dag(
    dag_id="example_retrain_on_flag",
    description="EXAMPLE: consume class_health_needs_retraining events; replace the task with a real training job.",
    schedule=[NEEDS_RETRAINING],
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    tags=["class-health", "example"],
    doc_md=__doc__,
)
def example_retrain_on_flag() -> None:
    @task(task_id="plan_retraining")
    def plan_retraining() -> dict[str, Any]:
        """Collect the classes flagged by the events that triggered this run (several may have queued up)."""
        events = get_current_context()["triggering_asset_events"][NEEDS_RETRAINING]
        flagged: dict[str, list[str]] = {}
        for event in events:
            for label in event.extra.get("flagged", []):
                flagged.setdefault(label, []).append(str(event.extra.get("date")))
        models = sorted({str(event.extra.get("model_id")) for event in events})
        log.info("would retrain %s for classes %s", models, sorted(flagged))
        return {"models": models, "classes": {label: sorted(dates) for label, dates in sorted(flagged.items())}}

    plan_retraining()


example_retrain_on_flag()
