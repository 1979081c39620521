"""The run detail page (``/run``): one date's per-class table, and what was skipped or failed that day."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pandas as pd
from dash import dcc, html

from dashboards import ids
from dashboards.components import badge, card, date_dropdown, fmt_acc, fmt_ci, notices, summary_line, table
from dashboards.data import DashboardData
from dashboards.records import UNUSABLE_FIELDS
from dashboards.state import href, pick_date
from dashboards.status import urgency
from dashboards.view import View


def _count_rows(counts: dict[str, Any] | None) -> list[list[str]]:
    """Rows of (reason, images), the most frequent reason first."""
    return [
        [str(reason), str(count)]
        for reason, count in sorted((counts or {}).items(), key=lambda kv: (-int(kv[1] or 0), kv[0]))
    ]


def run_page(data: DashboardData, view: View) -> list[Any]:
    """For one date: the per-class table and what was skipped or failed."""
    model_id = view.model.model_id
    metrics_range = data.metrics(model_id, view.start, view.end)
    dates = sorted(metrics_range["date"].unique())
    messages: list[str] = []
    date = pick_date(view.state.date, dates)
    if view.state.date and view.state.date not in dates:
        messages.append(f"No run of {model_id} on {view.state.date} in this range; showing {date or 'nothing'}.")
    if date is None:
        return [summary_line(view), notices(messages + ["No runs in this range."])]
    day_metrics = data.metrics(model_id, date, date, list(view.chosen) or None)
    day_health = data.health(model_id, date, date, list(view.chosen) or None).set_index("label")
    frame = day_metrics.set_index("label").sort_index()
    frame = frame.assign(
        verdict=day_health["verdict"].reindex(frame.index),
        reason=day_health["reason"].reindex(frame.index),
        _sev=day_health["verdict"].reindex(frame.index).map(urgency),
    ).sort_values(["_sev", "accuracy"], na_position="last")
    rows = [
        [
            dcc.Link(str(label), href=href(ids.PATH_CLASS, view.state, classes=(str(label),))),
            str(int(r["n"])),
            str(int(r["correct"])),
            str(int(r["failed"])),
            fmt_acc(r["accuracy"]),
            fmt_ci(r["ci_low"], r["ci_high"]),
            badge(r["verdict"]) if isinstance(r["verdict"], str) else "–",
            str(r["reason"]) if isinstance(r["reason"], str) else "",
        ]
        for label, r in frame.iterrows()
    ]
    runs = data.runs(date)
    skipped: dict[str, int] = {}
    failed: dict[str, int] = {}
    stages: list[list[str]] = []
    for run in runs:
        for reason, count in (run.get("skipped") or {}).items():
            skipped[reason] = skipped.get(reason, 0) + int(count)
        for reason, count in (run.get("failed") or {}).items():
            failed[reason] = failed.get(reason, 0) + int(count)
        for stage, info in sorted(
            (run.get("stages") or {}).items(), key=lambda kv: str((kv[1] or {}).get("finished_at"))
        ):
            stages.append(
                [
                    str(run.get("source")),
                    stage,
                    str((info or {}).get("finished_at", "–"))[:19],
                    str((info or {}).get("seconds", "–")),
                ]
            )
    failed_images = data.failed_predictions(date)
    sources = sorted({str(run.get("source")) for run in runs if run.get("source")})
    skipped_images = (
        data.unusable_images(sources, limit=200) if sources else pd.DataFrame(columns=list(UNUSABLE_FIELDS))
    )
    return [
        summary_line(view, None, [html.Span(["Run of ", html.B(date, id="run-date")])]),
        notices(messages),
        html.Div(
            [
                date_dropdown(dates, date, "Run date"),
                html.A(
                    "HTML report of this date",
                    href=f"{ids.PATH_REPORT}?date={date}&model={quote(view.model.model_id)}",
                    id=ids.RUN_REPORT,
                    target="_blank",
                ),
            ],
            className="controls-row",
        ),
        card(
            f"Per class on {date}",
            html.Div(
                table(
                    ["class", "n", "correct", "failed", "accuracy", f"{view.level:.0%} CI", "verdict", "evidence"],
                    rows,
                    id=ids.RUN_TABLE,
                    numeric=(1, 2, 3, 4, 5),
                ),
                className="scroll",
            ),
        ),
        card(
            "Skipped images",
            table(["reason", "images"], _count_rows(skipped), numeric=(1,), narrow=True)
            if skipped
            else html.P("Nothing was skipped when the source was indexed.", className="muted"),
            table(
                ["path", "status", "reason"],
                [[str(r["path"]), str(r["status"]), str(r["reason"])] for r in skipped_images.to_dict("records")],
            )
            if not skipped_images.empty
            else None,
            id=ids.RUN_SKIPPED,
        ),
        card(
            "Failed images",
            table(["reason", "images"], _count_rows(failed), numeric=(1,), narrow=True) if failed else None,
            table(
                ["path", "class", "error"],
                [
                    [str(r["image_path"]), str(r["label"]), str(r["error"])]
                    for r in failed_images.head(200).to_dict("records")
                ],
            )
            if not failed_images.empty
            else html.P(f"No image failed on {date}.", className="muted"),
            id=ids.RUN_FAILED,
        ),
        card(
            "Stages",
            table(["source", "stage", "finished at (UTC)", "seconds"], stages, numeric=(3,), export=f"stages-{date}")
            if stages
            else html.P("No run record for this date.", className="muted"),
        ),
    ]
