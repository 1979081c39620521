"""A self-contained HTML report of one date: the verdicts, what the evidence says, what to do, the alerts and the run.

``monitor report --date D --out report.html`` writes it; the dashboard serves it at ``/report?date=D`` (linked from
the run page). One file with its style inline, no script and nothing fetched: it can be mailed, attached to a
ticket or archived, and reads the same offline. Every text from the store is HTML-escaped.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import TYPE_CHECKING, Any

import pandas as pd

from dashboards.components import fmt_acc, fmt_ci, fmt_num
from dashboards.pages.overview import NEXT_STEPS, plain_summary
from dashboards.status import as_verdict, class_status
from dashboards.style import VERDICT_COLOURS
from monitor.core.errors import DataError
from monitor.core.verdicts import BY_URGENCY, Verdict

if TYPE_CHECKING:
    from dashboards.data import DashboardData

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933; margin: 24px auto; max-width: 1100px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th { text-align: left; color: #486581; border-bottom: 2px solid #d9e2ec; padding: 4px 8px; }
td { border-bottom: 1px solid #f0f4f8; padding: 4px 8px; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: white; font-size: 12px; white-space: nowrap; }
.bar { background: #e4e7eb; width: 120px; height: 10px; position: relative; display: inline-block; }
.bar span { position: absolute; top: 0; left: 0; height: 10px; }
.bar i { position: absolute; top: -2px; width: 2px; height: 14px; background: #102a43; }
.notice { background: #fff4e5; border: 1px solid #f0a202; border-radius: 6px; padding: 8px 12px; }
.muted { color: #627d98; font-size: 13px; }
"""


def _badge(verdict: Any) -> str:
    known = as_verdict(verdict)
    colour = VERDICT_COLOURS[known] if known else "#627d98"
    text = known.text if known else "no verdict"
    return f'<span class="badge" style="background:{colour}">{escape(text)}</span>'


def _bar(accuracy: Any, target: Any) -> str:
    """Accuracy as a bar with the target as a tick (no script, no image)."""
    try:
        value, goal = float(accuracy), float(target)
    except (TypeError, ValueError):
        return ""
    if pd.isna(value) or pd.isna(goal):
        return ""
    colour = "#2e7d32" if value >= goal else "#c62828"
    return (
        f'<span class="bar"><span style="width:{max(0.0, min(value, 1.0)) * 100:.1f}%;background:{colour}"></span>'
        f'<i style="left:{goal * 100:.1f}%"></i></span>'
    )


def render_report(data: DashboardData, date: str | None = None, model: str | None = None) -> str:
    """The report of ``date`` (default: the model's latest judged date) for ``model`` (default: the latest evaluated)."""
    info = data.model(model)
    if info is None:
        raise DataError(f"the store holds no results yet ({data.describe()}): run `monitor evaluate` first")
    rows = data.latest_health(info.model_id) if date is None else data.health_rows(info.model_id, date, date)
    if not rows:
        raise DataError(f"model {info.model_id} has no verdicts on {date}: run `monitor evaluate --date {date}` first")
    day = str(rows[0]["date"])
    history = data.health(info.model_id, None, day)
    status = class_status(history, as_of=day)
    status = status[status["date"] == day] if "date" in status else status
    order: dict[Verdict | None, int] = {verdict: i for i, verdict in enumerate(BY_URGENCY)}
    ranked = sorted(status.index, key=lambda label: (order.get(as_verdict(status.loc[label, "verdict"]), 9), label))
    counts = {verdict: int((status["verdict"] == verdict.value).sum()) for verdict in BY_URGENCY}
    flagged = [label for label in ranked if status.loc[label, "verdict"] == Verdict.NEEDS_RETRAINING]
    metrics = {str(m["label"]): m for m in data.metric_rows(info.model_id, day, day)}
    alerts = data.alerts(info.model_id, day, day)
    runs = data.runs(day)

    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Class health on {escape(day)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Class health on {escape(day)}</h1>",
        f'<p class="muted">Model {escape(info.model_id)} · {len(status)} classes · '
        + " · ".join(f"{n} {escape(v.text)}" for v, n in counts.items() if n)
        + "</p>",
    ]
    if flagged:
        parts.append('<div class="notice"><p><b>What the evidence says.</b> ')
        parts += [escape(plain_summary(label, status.loc[label])) + " " for label in flagged]
        parts.append("</p><p><b>What to do next:</b></p><ol>")
        parts += [f"<li>{escape(step)}</li>" for step in NEXT_STEPS]
        parts.append("</ol></div>")
    else:
        parts.append("<p>No class needs retraining on this date.</p>")
    parts.append(
        "<h2>Classes, most urgent first</h2><table><thead><tr><th>class</th><th>verdict</th><th>since</th>"
        "<th>pooled accuracy</th><th></th><th>interval</th><th>target</th><th>P(below target)</th>"
        "<th>today</th><th>evidence</th></tr></thead><tbody>"
    )
    for label in ranked:
        row = status.loc[label]
        today = metrics.get(str(label), {})
        parts.append(
            f"<tr><td>{escape(str(label))}</td><td>{_badge(row.get('verdict'))}</td>"
            f"<td>{escape(str(row.get('since') or '–'))}</td>"
            f'<td class="num">{fmt_acc(row.get("pooled_accuracy"))}</td>'
            f"<td>{_bar(row.get('pooled_accuracy'), row.get('target'))}</td>"
            f'<td class="num">{fmt_ci(row.get("ci_low"), row.get("ci_high"))}</td>'
            f'<td class="num">{fmt_acc(row.get("target"))}</td>'
            f'<td class="num">{fmt_num(row.get("prob_below_target"))}</td>'
            f'<td class="num">{escape(str(today.get("correct", "–")))}/{escape(str(today.get("n", "–")))}</td>'
            f"<td>{escape(str(row.get('reason') or ''))}</td></tr>"
        )
    parts.append("</tbody></table>")
    parts.append("<h2>Alerts of the date</h2>")
    if alerts.empty:
        parts.append('<p class="muted">None.</p>')
    else:
        parts.append(
            "<table><thead><tr><th>class</th><th>kind</th><th>delivered</th><th>message</th></tr></thead><tbody>"
        )
        for alert in alerts.to_dict("records"):
            parts.append(
                f"<tr><td>{escape(str(alert.get('label')))}</td><td>{escape(str(alert.get('kind')).replace('_', ' '))}</td>"
                f"<td>{'yes' if alert.get('delivered') else 'pending'}</td><td>{escape(str(alert.get('message') or ''))}</td></tr>"
            )
        parts.append("</tbody></table>")
    parts.append("<h2>The run</h2>")
    stages = [
        (str(run.get("source")), stage, note)
        for run in runs
        for stage, note in sorted((run.get("stages") or {}).items())
        if isinstance(note, dict)
    ]
    if stages:
        parts.append(
            "<table><thead><tr><th>source</th><th>stage</th><th>finished (UTC)</th><th>seconds</th></tr></thead><tbody>"
        )
        for source, stage, note in stages:
            parts.append(
                f"<tr><td>{escape(source)}</td><td>{escape(stage)}</td><td>{escape(str(note.get('finished_at', '–')))}</td>"
                f'<td class="num">{escape(str(note.get("seconds", "–")))}</td></tr>'
            )
        parts.append("</tbody></table>")
    else:
        parts.append('<p class="muted">No run notes for this date.</p>')
    made = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f'<p class="muted">Made {made} from {escape(data.describe())}.</p></body></html>')
    return "\n".join(parts)
