"""The Plotly figures: the overview's class x period heatmap, a class's accuracy over time, confusion bars.

Pure functions from frames to figures, built apart from the pages so tests can check them without
a browser. Accuracy is pooled from counts (:mod:`dashboards.pooling`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboards.components import verdict_colour
from dashboards.pooling import Grain, period_start, pool_by_period
from dashboards.status import UNRANKED, urgency, verdict_changes, verdict_text
from dashboards.style import VERDICT_COLOURS
from monitor.core.verdicts import BY_URGENCY

#: Labels a confusion chart names; the rest are summed as "other".
TOP_CONFUSIONS = 8


def accuracy_floor(target: float) -> float:
    """The bottom of the heatmap's accuracy scale: 20 points below the target (everything lower is as red)."""
    return max(0.0, min(target - 0.2, 0.95))


def accuracy_scale(target: float) -> list[tuple[float, str]]:
    """A colour scale from :func:`accuracy_floor` to 1 that turns at ``target`` (pale), orange 5 points below, green above."""
    low = accuracy_floor(target)

    def at(value: float) -> float:
        return min(1.0, max(0.0, (value - low) / (1.0 - low)))

    return [
        (0.0, "#7f0000"),
        (at(target - 0.05), "#e65100"),
        (at(target - 0.005), "#fff3c4"),
        (at(target), "#f1f8e9"),
        (1.0, "#1b5e20"),
    ]


def heatmap_figure(
    cells: pd.DataFrame,
    labels: Sequence[str],
    periods: Sequence[str],
    *,
    color: str,
    grain: Grain,
    level: float,
    verdicts: pd.DataFrame | None = None,
    target: float = 0.9,
) -> go.Figure:
    """Class x period heatmap: pooled accuracy (``cells`` from :func:`pool_by_period`) or the worst verdict in the period.

    Rows follow ``labels`` top to bottom; cells without data are blank. The accuracy scale turns at ``target``:
    green above it, pale at it, orange 5 points below and deep red 20 below, so that a moderate drop stands out.
    """
    labels = list(labels)
    periods = list(periods)
    if cells.empty:
        acc = pd.DataFrame(np.nan, index=labels, columns=periods)
        text = np.full(acc.shape, "", dtype=object)
    else:
        # Hover texts are formatted per cell before pivoting: a loop over arrays, not DataFrame lookups.
        labelled = cells.assign(
            text=[
                f"{a:.0%} ({int(c)}/{int(n)}), {level:.0%} CI {lo:.0%}–{hi:.0%}" if n > 0 else "no images"
                for a, c, n, lo, hi in zip(
                    cells["accuracy"], cells["correct"], cells["n"], cells["ci_low"], cells["ci_high"]
                )
            ]
        )
        acc = labelled.pivot(index="label", columns="period", values="accuracy").reindex(index=labels, columns=periods)
        text = (
            labelled.pivot(index="label", columns="period", values="text")
            .reindex(index=labels, columns=periods)
            .fillna("")
            .to_numpy(dtype=object)
        )
    period_word = {"day": "day", "week": "week of", "month": "month of"}[grain]
    if color == "verdict":
        codes = pd.DataFrame(np.nan, index=labels, columns=periods)
        if verdicts is not None and not verdicts.empty:
            frame = verdicts.assign(
                period=period_start(verdicts["date"], grain),
                code=verdicts["verdict"].map(urgency).where(lambda c: c < UNRANKED),
            )
            worst = frame.groupby(["label", "period"])["code"].min().unstack()
            codes = worst.reindex(index=labels, columns=periods)
        z = codes.to_numpy(dtype=float)
        vtext = (
            np.vectorize(lambda c: "" if np.isnan(c) else BY_URGENCY[int(c)].text, otypes=[object])(z) if z.size else z
        )
        k = len(BY_URGENCY)
        scale = []
        for code, verdict in enumerate(BY_URGENCY):
            scale += [[code / k, VERDICT_COLOURS[verdict]], [(code + 1) / k, VERDICT_COLOURS[verdict]]]
        trace = go.Heatmap(
            z=z,
            x=periods,
            y=labels,
            zmin=-0.5,
            zmax=k - 0.5,
            colorscale=scale,
            customdata=np.dstack([vtext, text]) if z.size else None,
            hovertemplate=f"<b>%{{y}}</b> · {period_word} %{{x}}<br>worst verdict: %{{customdata[0]}}<br>accuracy %{{customdata[1]}}<extra></extra>",
            colorbar={"tickvals": list(range(k)), "ticktext": [v.text for v in BY_URGENCY], "title": "verdict"},
            xgap=1,
            ygap=1,
            name="verdict",
        )
    else:
        trace = go.Heatmap(
            z=acc.to_numpy(dtype=float),
            x=periods,
            y=labels,
            zmin=accuracy_floor(target),
            zmax=1.0,
            colorscale=accuracy_scale(target),
            customdata=text,
            hovertemplate=f"<b>%{{y}}</b> · {period_word} %{{x}}<br>accuracy %{{customdata}}<extra></extra>",
            colorbar={"title": f"accuracy<br>(target {target:.0%})", "tickformat": ".0%"},
            xgap=1,
            ygap=1,
            name="accuracy",
        )
    figure = go.Figure(trace)
    figure.update_layout(
        height=max(220, 60 + 22 * len(labels)),
        margin={"l": 10, "r": 10, "t": 10, "b": 40},
        yaxis={"type": "category", "autorange": "reversed", "automargin": True, "title": None},
        xaxis={"type": "category", "automargin": True, "title": None, "nticks": 24},
        plot_bgcolor="#f0f4f8",
    )
    return figure


def timeseries_figure(
    label: str, metrics: pd.DataFrame, health: pd.DataFrame, *, level: float, target: float, grain: Grain = "day"
) -> go.Figure:
    """One class over time: accuracy per day (or period) with its Wilson band, the pooled window estimate, target and verdict changes."""
    points = pool_by_period(metrics, grain, level).sort_values("period")  # type: ignore[arg-type]
    points = points[points["n"] > 0]
    x = list(points["period"])
    figure = go.Figure()
    band_name = f"{level:.0%} interval ({grain})"
    figure.add_trace(
        go.Scatter(
            x=x,
            y=points["ci_high"],
            mode="lines",
            line={"width": 0},
            name=f"{band_name} upper",
            showlegend=False,
            hoverinfo="skip",
            legendgroup="band",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=x,
            y=points["ci_low"],
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(47,128,237,0.18)",
            name=band_name,
            legendgroup="band",
            hoverinfo="skip",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=x,
            y=points["accuracy"],
            mode="lines+markers",
            line={"color": "#2f80ed", "width": 1},
            marker={"size": 6},
            name=f"accuracy per {grain}",
            customdata=np.column_stack([points["correct"], points["n"], points["ci_low"], points["ci_high"]])
            if len(points)
            else None,
            hovertemplate="%{x}<br>accuracy %{y:.0%} (%{customdata[0]:.0f}/%{customdata[1]:.0f})<br>"
            + f"{level:.0%} CI "
            + "%{customdata[2]:.0%}–%{customdata[3]:.0%}<extra></extra>",
        )
    )
    rows = health.sort_values("date") if not health.empty else health
    if not rows.empty:
        pooled = rows[pd.notna(rows["pooled_accuracy"])]
        window = (
            int(pooled["window_days"].dropna().iloc[-1])
            if len(pooled) and pooled["window_days"].notna().any()
            else None
        )
        figure.add_trace(
            go.Scatter(
                x=list(pooled["date"]),
                y=pooled["pooled_accuracy"].astype(float),
                mode="lines",
                line={"color": "#102a43", "width": 2, "dash": "dash"},
                name=f"pooled {window}-day estimate" if window else "pooled window estimate",
                customdata=np.column_stack(
                    [
                        pooled["pooled_correct"],
                        pooled["pooled_n"],
                        pooled["ci_low"],
                        pooled["ci_high"],
                        pooled["verdict"],
                    ]
                )
                if len(pooled)
                else None,
                hovertemplate="%{x}<br>pooled %{y:.1%} (%{customdata[0]}/%{customdata[1]})<br>"
                + f"{level:.0%} CI "
                + "%{customdata[2]:.0%}–%{customdata[3]:.0%}<br>verdict %{customdata[4]}<extra></extra>",
            )
        )
        targets = rows["target"].astype(float) if rows["target"].notna().any() else pd.Series(target, index=rows.index)
        target_x = (
            [rows["date"].iloc[0], rows["date"].iloc[-1]]
            if len(x) == 0
            else [min(x[0], rows["date"].iloc[0]), max(x[-1], rows["date"].iloc[-1])]
        )
        target_value = float(targets.dropna().iloc[-1]) if targets.notna().any() else target
        changes = verdict_changes(rows)
    else:
        target_x = [x[0], x[-1]] if x else []
        target_value = target
        changes = rows
    figure.add_trace(
        go.Scatter(
            x=target_x,
            y=[target_value] * len(target_x),
            mode="lines",
            line={"color": "#c62828", "width": 1.5, "dash": "dot"},
            name=f"target {target_value:.0%}",
            hoverinfo="name",
        )
    )
    if changes is not None and not changes.empty:
        changes = changes.assign(y=changes["pooled_accuracy"].astype(float).fillna(target_value))
        # One legend entry per colour shown: the verdict each change led to.
        for verdict, group in changes.groupby("verdict", sort=False):
            figure.add_trace(
                go.Scatter(
                    x=list(group["date"]),
                    y=list(group["y"]),
                    mode="markers",
                    marker={
                        "symbol": "diamond",
                        "size": 13,
                        "color": verdict_colour(verdict, "#999"),
                        "line": {"width": 1, "color": "#102a43"},
                    },
                    name=f"became {verdict_text(verdict)}",
                    legendgroup="verdict change",
                    legendgrouptitle={"text": "verdict changes"},
                    text=[
                        f"{verdict_text(p)} → {verdict_text(v)}"
                        for p, v in zip(group["previous_verdict"], group["verdict"])
                    ],
                    hovertemplate="%{x}<br>%{text}<extra></extra>",
                )
            )
        for day, verdict in zip(changes["date"], changes["verdict"]):
            figure.add_vline(x=day, line={"color": verdict_colour(verdict, "#999"), "width": 1, "dash": "dot"})
    figure.update_layout(
        height=360,
        margin={"l": 10, "r": 10, "t": 30, "b": 30},
        title={"text": f"{label}", "x": 0.01, "font": {"size": 14}},
        yaxis={"range": [0, 1.02], "tickformat": ".0%", "title": "accuracy"},
        xaxis={"type": "date"},
        legend={"orientation": "h", "y": -0.15},
        hovermode="closest",
        plot_bgcolor="white",
    )
    figure.update_yaxes(gridcolor="#e4e7eb")
    figure.update_xaxes(gridcolor="#e4e7eb")
    return figure


def confusion_figure(
    confusions: pd.DataFrame, grain: Grain, label: str, periods: Sequence[str] | None = None
) -> go.Figure:
    """Stacked bars: how many of ``label``'s images were predicted as each other label, per period."""
    figure = go.Figure()
    if not confusions.empty:
        frame = confusions.assign(period=period_start(confusions["date"], grain))  # type: ignore[arg-type]
        top = frame.groupby("pred")["count"].sum().sort_values(ascending=False)
        keep = list(top.index[:TOP_CONFUSIONS])
        frame = frame.assign(pred=frame["pred"].where(frame["pred"].isin(keep), "other"))
        table_ = frame.groupby(["period", "pred"])["count"].sum().unstack(fill_value=0)
        if periods is not None:
            table_ = table_.reindex(list(periods), fill_value=0)
        for pred in keep + (["other"] if "other" in table_.columns else []):
            figure.add_trace(
                go.Bar(
                    x=list(table_.index),
                    y=table_[pred],
                    name=f"as {pred}",
                    hovertemplate=f"%{{x}}: %{{y}} predicted as {pred}<extra></extra>",
                )
            )
    figure.update_layout(
        barmode="stack",
        height=320,
        margin={"l": 10, "r": 10, "t": 30, "b": 30},
        title={"text": f"{label}: mistaken for (per {grain})", "x": 0.01, "font": {"size": 14}},
        yaxis={"title": "wrong predictions"},
        xaxis={"type": "category"},
        legend={"orientation": "h", "y": -0.2},
        plot_bgcolor="white",
    )
    return figure
