"""Screening histogram: projection differences over a training set, with the flagged tail shaded and counted."""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go

from steerlab.plots import schema
from steerlab.plots.schema import PlotDataError
from steerlab.plots.style import REFERENCE_COLOR, finish

KEPT_COLOR, FLAGGED_COLOR = "#9ecae1", "#d62728"


def screening_figure(
    diffs: Sequence[float],
    *,
    flagged: Sequence[bool] | None = None,
    threshold: float | None = None,
    bins: int = 40,
    trait: str = "persona",
    title: str | None = None,
) -> go.Figure:
    """Histogram of per-example projection differences; flagged examples stacked in red with their count.

    Give ``flagged`` (one bool per example, as in the screening CSV) or ``threshold`` (flag ``diff >=
    threshold``); with ``flagged`` alone the threshold line sits at the smallest flagged value.
    """
    diffs = [schema.number(v, f"projection diff {i}", "projection_diff") for i, v in enumerate(diffs)]
    if not diffs:
        raise PlotDataError("screening_figure: no projection differences to plot")
    if flagged is None:
        if threshold is None:
            raise PlotDataError("screening_figure: give either 'flagged' or 'threshold'")
        flagged = [d >= threshold for d in diffs]
    flagged = list(flagged)
    if len(flagged) != len(diffs):
        raise PlotDataError(f"screening_figure: {len(flagged)} flags for {len(diffs)} projection differences")
    if threshold is None and any(flagged):
        threshold = min(d for d, f in zip(diffs, flagged, strict=True) if f)
    lo, hi = min(diffs), max(diffs)
    size = (hi - lo) / bins if hi > lo else 1.0
    xbins = {"start": lo - 1e-9 * max(1.0, abs(lo)), "end": hi + size, "size": size}
    n_flag = sum(flagged)
    fig = go.Figure()
    for name, keep, color in (
        (f"kept ({len(diffs) - n_flag})", False, KEPT_COLOR),
        (f"flagged ({n_flag})", True, FLAGGED_COLOR),
    ):
        values = [d for d, f in zip(diffs, flagged, strict=True) if f is keep]
        fig.add_trace(
            go.Histogram(
                x=values,
                xbins=xbins,
                autobinx=False,
                name=name,
                marker={"color": color, "line": {"width": 0.5, "color": "white"}},
                hovertemplate=f"<b>{name.split(' ')[0]}</b><br>projection diff %{{x}}<br>examples %{{y}}<extra></extra>",
            )
        )
    if threshold is not None:
        share = 100.0 * n_flag / len(diffs)
        fig.add_vrect(
            x0=threshold, x1=hi + size, fillcolor=FLAGGED_COLOR, opacity=0.08, line_width=0, layer="below"
        )
        fig.add_vline(
            x=threshold,
            line={"color": REFERENCE_COLOR, "dash": "dash", "width": 1.5},
            annotation_text=f"threshold {threshold:.3g}: {n_flag} of {len(diffs)} flagged ({share:.1f}%)",
            annotation_position="top left",
            annotation_font={"size": 12, "color": FLAGGED_COLOR},
        )
    fig.update_layout(barmode="stack", bargap=0.02)
    fig.update_xaxes(
        title_text=f"{trait} projection difference (training response − model's own, residual units)"
    )
    fig.update_yaxes(
        title_text="training examples (count)", type="log" if _skewed(diffs, xbins) else "linear"
    )
    return finish(
        fig,
        title or f"Screening: {trait} projection difference per training example",
        legend_title="examples",
    )


def _skewed(diffs: list[float], xbins: dict[str, float]) -> bool:
    """Log counts when the tallest bin dwarfs the tail, so a handful of flagged examples stays visible."""
    counts: dict[int, int] = {}
    for d in diffs:
        k = math.floor((d - xbins["start"]) / xbins["size"])
        counts[k] = counts.get(k, 0) + 1
    return max(counts.values()) > 50 * max(1, min(counts.values()))
