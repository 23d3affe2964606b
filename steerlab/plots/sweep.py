"""Steering sweep: how the trait score and coherence move as the steering coefficient alpha grows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from steerlab.plots import schema
from steerlab.plots.schema import PlotDataError
from steerlab.plots.style import SPARE_COLORS, finish

TRAIT_COLOR, COHERENCE_COLOR, PERPLEXITY_COLOR = "#b2182b", "#2166ac", "#4d9221"


def steering_sweep_figure(
    rows: Sequence[Mapping[str, Any]],
    *,
    trait: str = "persona",
    score_unit: str = "judge, 0–100",
    coherence_unit: str = "judge, 0–100",
    title: str | None = None,
) -> go.Figure:
    """Alpha vs trait score (with its CI band) on top, coherence below, perplexity in a third panel if given.

    Rows carrying a ``layer`` key are drawn as one line per layer. Raises `PlotDataError` for no rows, a
    malformed row, or an alpha that appears twice for one layer.
    """
    checked = [schema.sweep_row(r, f"sweep row {i}") for i, r in enumerate(rows)]
    if not checked:
        raise PlotDataError("steering_sweep_figure: no sweep rows to plot")
    groups = _by_layer(checked)
    has_coh = any(r["coherence"] is not None for r in checked)
    has_ppl = any(r["perplexity"] is not None for r in checked)
    panels = (
        [f"{trait} trait score"] + (["coherence"] if has_coh else []) + (["perplexity"] if has_ppl else [])
    )
    fig = make_subplots(
        rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.09, subplot_titles=panels
    )
    for i, (layer, group) in enumerate(groups.items()):
        colors = (
            [SPARE_COLORS[i % len(SPARE_COLORS)]] * 3
            if len(groups) > 1
            else [TRAIT_COLOR, COHERENCE_COLOR, PERPLEXITY_COLOR]
        )
        _add_layer(fig, group, f" (layer {layer})" if layer is not None else "", colors, panels)
    fig.update_yaxes(title_text=f"trait score ({score_unit})", row=1, col=1)
    if has_coh:
        fig.update_yaxes(title_text=f"coherence ({coherence_unit})", row=panels.index("coherence") + 1, col=1)
    if has_ppl:
        fig.update_yaxes(title_text="perplexity", type="log", row=panels.index("perplexity") + 1, col=1)
    fig.update_xaxes(title_text="steering coefficient alpha (× unit persona vector)", row=len(panels), col=1)
    for row in range(1, len(panels) + 1):
        fig.add_vline(x=0, line={"color": "#999999", "width": 1}, row=row, col=1)
    return finish(
        fig,
        title or f"Steering sweep: {trait} score and coherence vs alpha",
        height=300 + 170 * len(panels),
        legend_title="series",
    )


def _by_layer(rows: list[dict[str, Any]]) -> dict[int | None, list[dict[str, Any]]]:
    """Rows grouped by ``layer`` (None last), each group sorted by alpha; a repeated alpha raises."""
    groups: dict[int | None, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row.get("layer")].append(row)
    for layer, group in groups.items():
        alphas = [r["alpha"] for r in group]
        dupes = sorted({a for a in alphas if alphas.count(a) > 1})
        if dupes:
            raise PlotDataError(
                f"sweep{'' if layer is None else f' layer {layer}'}: alpha {dupes} appears twice"
            )
        group.sort(key=lambda r: r["alpha"])
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def _add_layer(
    fig: go.Figure, group: list[dict[str, Any]], tag: str, colors: list[str], panels: list[str]
) -> None:
    """One layer's traces: the trait score CI band and line (top panel), coherence and perplexity below."""
    alphas = [r["alpha"] for r in group]
    with_ci = [r for r in group if r["trait_score_ci"] is not None]
    if with_ci:
        band_x = [r["alpha"] for r in with_ci] + [r["alpha"] for r in reversed(with_ci)]
        band_y = [r["trait_score_ci"][1] for r in with_ci] + [
            r["trait_score_ci"][0] for r in reversed(with_ci)
        ]
        fig.add_trace(
            go.Scatter(
                x=band_x,
                y=band_y,
                fill="toself",
                mode="lines",
                fillcolor=_rgba(colors[0], 0.18),
                line={"width": 0},
                name=f"trait score CI{tag}",
                legendgroup=f"trait{tag}",
                hoverinfo="skip",
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scatter(
            x=alphas,
            y=[r["trait_score"] for r in group],
            name=f"trait score{tag}",
            legendgroup=f"trait{tag}",
            mode="lines+markers",
            line={"color": colors[0], "width": 2.5},
            customdata=[_ci_text(r["trait_score_ci"]) for r in group],
            hovertemplate=f"<b>trait score{tag}</b><br>alpha %{{x}}<br>score %{{y:.3g}}<br>CI %{{customdata}}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    for key, color in (("coherence", colors[1]), ("perplexity", colors[2])):
        if key in panels:
            fig.add_trace(
                go.Scatter(
                    x=alphas,
                    y=[r[key] for r in group],
                    name=f"{key}{tag}",
                    mode="lines+markers",
                    line={"color": color, "width": 2, "dash": "dash" if key == "perplexity" else "solid"},
                    hovertemplate=f"<b>{key}{tag}</b><br>alpha %{{x}}<br>{key} %{{y:.3g}}<extra></extra>",
                ),
                row=panels.index(key) + 1,
                col=1,
            )


def _ci_text(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.3g}, {ci[1]:.3g}]"


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
