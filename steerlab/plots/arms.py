"""Arms compared: general misalignment against the in-domain measure, so each defense's trade-off is visible.

The x axis is each row's ``in_domain``, named by its ``in_domain_metric`` (`schema.in_domain_label`): a judge's
misaligned rate, a log-prob gap or a benign accuracy, never a generic "learning"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from steerlab.plots import schema
from steerlab.plots.schema import PlotDataError, in_domain_label
from steerlab.plots.style import finish, resolve_colors

SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star", "cross", "pentagon")


def arms_figure(
    rows: Sequence[Mapping[str, Any]],
    *,
    colors: Mapping[str, str] | None = None,
    title: str = "Arms compared: general misaligned rate vs the in-domain measure",
) -> go.Figure:
    """One point per (arm, domain) with CI error bars in x and y; one panel per finetuning domain, its x axis
    named by the domain's ``in_domain_metric`` (panels share one x scale only when they share the measure).

    Better is down (less general misalignment) and right (more of the fine-tuning task, by that measure).
    Raises `PlotDataError` when one domain's rows mix measures (their points would share an axis).
    """
    rows = [schema.arm_result_row(r, f"results row {i}") for i, r in enumerate(rows)]
    if not rows:
        raise PlotDataError("arms_figure: no result rows to plot")
    seen: set[tuple[str, str]] = set()
    for row in rows:
        key = (row["arm"], row["domain"])
        if key in seen:
            raise PlotDataError(f"results: arm {key[0]!r} in domain {key[1]!r} appears twice")
        seen.add(key)
    domains = sorted({r["domain"] for r in rows})
    measures = {d: _measure(rows, d) for d in domains}
    palette = resolve_colors([r["arm"] for r in rows], colors)
    fig = make_subplots(
        rows=1,
        cols=len(domains),
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=[f"domain: {d}" for d in domains],
    )
    in_legend: set[str] = set()
    labelled = len(palette) <= 4  # with more arms, labels collide: legend and hover name them
    for col, domain in enumerate(domains, start=1):
        for row in sorted((r for r in rows if r["domain"] == domain), key=lambda r: r["arm"]):
            arm = row["arm"]
            fig.add_trace(
                go.Scatter(
                    x=[row["in_domain"]],
                    y=[row["general_misalignment"]],
                    name=arm,
                    legendgroup=arm,
                    showlegend=arm not in in_legend,
                    mode="markers+text" if labelled else "markers",
                    text=[arm] if labelled else None,
                    textposition="top right",
                    textfont={"color": palette[arm], "size": 11},
                    marker={
                        "color": palette[arm],
                        "size": 12,
                        "symbol": SYMBOLS[(col - 1) % len(SYMBOLS)],
                        "line": {"color": "white", "width": 1},
                    },
                    error_x=_bar(row["in_domain"], row["in_domain_ci"], palette[arm]),
                    error_y=_bar(row["general_misalignment"], row["general_misalignment_ci"], palette[arm]),
                    hovertemplate=_hover(row),
                ),
                row=1,
                col=col,
            )
            in_legend.add(arm)
        fig.update_xaxes(title_text=in_domain_label(measures[domain]), row=1, col=col)
    fig.update_yaxes(title_text="general misaligned rate (judge)", rangemode="tozero", row=1, col=1)
    if len(set(measures.values())) == 1:  # one measure: the same in-domain scale in every domain panel
        for col in range(2, len(domains) + 1):
            fig.update_xaxes(matches="x", row=1, col=col)
    fig.add_annotation(
        xref="paper",
        yref="paper",
        x=1.0,
        y=-0.2,
        xanchor="right",
        showarrow=False,
        text="better: lower (stays aligned) and further right (task still learned, by the panel's measure)",
        font={"size": 11, "color": "#555555"},
    )
    finish(fig, title, height=500, legend_title="arm")
    fig.update_layout(margin={"b": 90})
    return fig


def _measure(rows: Sequence[Mapping[str, Any]], domain: str) -> str | None:
    found = {r.get("in_domain_metric") for r in rows if r["domain"] == domain}
    if len(found) > 1:
        names = ", ".join(sorted(str(m) for m in found))
        raise PlotDataError(f"results: domain {domain!r} mixes in-domain measures ({names}) on one axis")
    return found.pop()


def _bar(value: float, ci: tuple[float, float] | None, color: str) -> dict[str, Any]:
    if ci is None:
        return {"visible": False}
    return {
        "type": "data",
        "symmetric": False,
        "array": [max(ci[1] - value, 0.0)],
        "arrayminus": [max(value - ci[0], 0.0)],
        "color": color,
        "thickness": 1.5,
        "width": 4,
        "visible": True,
    }


def _hover(row: dict[str, Any]) -> str:
    def fmt(key: str) -> str:
        ci = row.get(f"{key}_ci")
        return f"{row[key]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    lines = [
        f"<b>{row['arm']}</b> · {row['domain']}",
        f"general misaligned rate (judge) {fmt('general_misalignment')}",
        f"{in_domain_label(row.get('in_domain_metric'))} {fmt('in_domain')}",
    ]
    lines += [
        f"{k.replace('_', ' ')} {row[k]:.3f}" for k in ("benign_accuracy", "coherence") if row[k] is not None
    ]
    return "<br>".join(lines) + "<extra></extra>"
