"""Representation drift over training: LDIFS distance to the base model's features, per layer and arm."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from steerlab.plots.projection import Runs, as_runs, line_names, series
from steerlab.plots.schema import PlotDataError
from steerlab.plots.style import DASHES, finish, resolve_colors

MAX_PANELS = 12  # more layers than this: one heatmap per line instead of one panel per layer


def drift_figure(
    runs: Runs | Sequence[Mapping[str, Any]],
    *,
    colors: Mapping[str, str] | None = None,
    title: str = "Representation drift across training (LDIFS)",
) -> go.Figure:
    """LDIFS distance vs step: one panel per layer (a line per arm), or per-arm heatmaps when layers are many.

    Rows without ``ldifs_per_layer`` (not measured at that step) are left out; if no row has per-layer
    values the total ``ldifs`` is drawn in one panel.
    """
    lines = series(as_runs(runs))
    names = line_names(lines)
    per_layer = [
        (name, arm, [r for r in rows if r["ldifs_per_layer"]])
        for (_, arm, rows), name in zip(lines, names, strict=True)
    ]
    per_layer = [item for item in per_layer if item[2]]
    if per_layer:
        layers = sorted({layer for _, _, rows in per_layer for r in rows for layer in r["ldifs_per_layer"]})
        if len(layers) > MAX_PANELS:
            return _heatmaps(per_layer, layers, title)
        return _panels(per_layer, layers, resolve_colors([a for _, a, _ in per_layer], colors), title)
    totals = [
        (name, arm, [r for r in rows if r["ldifs"] is not None])
        for (_, arm, rows), name in zip(lines, names, strict=True)
    ]
    totals = [item for item in totals if item[2]]
    if not totals:
        raise PlotDataError("drift_figure: no monitor row has 'ldifs' or 'ldifs_per_layer' values")
    palette = resolve_colors([a for _, a, _ in totals], colors)
    fig = go.Figure()
    for name, arm, rows in totals:
        fig.add_trace(
            _line(
                name, arm, palette[arm], [r["step"] for r in rows], [r["ldifs"] for r in rows], "all layers"
            )
        )
    fig.update_xaxes(title_text="training step (optimizer updates)")
    fig.update_yaxes(title_text="LDIFS distance (mean squared feature distance)", rangemode="tozero")
    return finish(fig, title, legend_title="arm")


def _line(
    name: str,
    arm: str,
    color: str,
    x: list,
    y: list,
    layer: str,
    dash: str = "solid",
    showlegend: bool = True,
) -> go.Scatter:
    return go.Scatter(
        x=x,
        y=y,
        name=name,
        legendgroup=name,
        showlegend=showlegend,
        mode="lines+markers" if len(x) <= 60 else "lines",
        line={"color": color, "dash": dash, "width": 2},
        marker={"size": 4},
        hovertemplate=f"<b>{name}</b><br>{layer}<br>step %{{x}}<br>LDIFS %{{y:.4g}}<extra></extra>",
    )


def _panels(per_layer: list, layers: list[int], palette: dict[str, str], title: str) -> go.Figure:
    cols = min(len(layers), 3 if len(layers) > 4 else len(layers))
    n_rows = math.ceil(len(layers) / cols)
    fig = make_subplots(
        rows=n_rows,
        cols=cols,
        shared_xaxes=True,
        shared_yaxes=True,
        subplot_titles=[f"layer {layer}" for layer in layers],
        vertical_spacing=0.12 if n_rows > 1 else 0.1,
        horizontal_spacing=0.05,
    )
    dashes: dict[str, str] = {}
    per_arm: dict[str, int] = {}
    for name, arm, _ in per_layer:
        dashes[name] = DASHES[per_arm.get(arm, 0) % len(DASHES)]
        per_arm[arm] = per_arm.get(arm, 0) + 1
    in_legend: set[str] = set()
    for i, layer in enumerate(layers):
        row, col = i // cols + 1, i % cols + 1
        for name, arm, rows in per_layer:
            pts = [(r["step"], r["ldifs_per_layer"][layer]) for r in rows if layer in r["ldifs_per_layer"]]
            if not pts:
                continue
            fig.add_trace(
                _line(
                    name,
                    arm,
                    palette[arm],
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    f"layer {layer}",
                    dashes[name],
                    showlegend=name not in in_legend,
                ),
                row=row,
                col=col,
            )
            in_legend.add(name)
        if row == n_rows:
            fig.update_xaxes(title_text="training step", row=row, col=col)
        if col == 1:
            fig.update_yaxes(title_text="LDIFS distance", row=row, col=col)
    fig.update_yaxes(rangemode="tozero")
    return finish(
        fig,
        title + " — per layer, mean squared feature distance to the base model",
        height=max(380, 260 * n_rows + 120),
        legend_title="arm",
    )


def _heatmaps(per_layer: list, layers: list[int], title: str) -> go.Figure:
    fig = make_subplots(
        rows=len(per_layer),
        cols=1,
        shared_xaxes=True,
        subplot_titles=[n for n, _, _ in per_layer],
        vertical_spacing=min(0.08, 0.4 / len(per_layer)),
    )
    zmax = max(v for _, _, rows in per_layer for r in rows for v in r["ldifs_per_layer"].values())
    for i, (name, _, rows) in enumerate(per_layer, start=1):
        z = [[r["ldifs_per_layer"].get(layer) for r in rows] for layer in layers]
        fig.add_trace(
            go.Heatmap(
                x=[r["step"] for r in rows],
                y=layers,
                z=z,
                zmin=0,
                zmax=zmax,
                coloraxis="coloraxis",
                name=name,
                hovertemplate=f"<b>{name}</b><br>step %{{x}}<br>layer %{{y}}<br>LDIFS %{{z:.4g}}<extra></extra>",
            ),
            row=i,
            col=1,
        )
        fig.update_yaxes(title_text="layer", row=i, col=1)
    fig.update_xaxes(title_text="training step (optimizer updates)", row=len(per_layer), col=1)
    fig.update_layout(coloraxis={"colorscale": "Viridis", "colorbar": {"title": {"text": "LDIFS"}}})
    return finish(fig, title + " — layer × step", height=max(380, 170 * len(per_layer) + 140))
