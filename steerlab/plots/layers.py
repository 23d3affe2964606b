"""Where the trait lives: held-out separation (AUROC) and steering effect per layer, from an extraction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from steerlab.plots import schema
from steerlab.plots.schema import PlotDataError
from steerlab.plots.style import finish, reference_hline

# stats key -> legend label; each curve is optional, but a present one must be {layer: number}.
AUROC_CURVES = {
    "auroc_eval": ("with system prompt", "#1f77b4", "solid"),
    "auroc_eval_text_only": ("text only (no system prompt)", "#ff7f0e", "dash"),
}
EFFECT_CURVE = "steer_effect"


def curves_from_extraction(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Map an extraction sidecar's ``stats`` (``layer_curves`` lists, ``steering_effect``) to this figure's keys.

    `steerlab.persona.extract` stores curves as lists over all layers; the figure takes ``{layer: value}`` maps.
    Keys the figure already understands are kept as they are.
    """
    curves = stats.get("layer_curves")
    out = dict(stats)
    if isinstance(curves, Mapping):
        for source_key, key in (("auroc_system", "auroc_eval"), ("auroc_text", "auroc_eval_text_only")):
            values = curves.get(source_key)
            if key not in out and isinstance(values, list):
                out[key] = {layer: v for layer, v in enumerate(values) if v is not None}
    effect = stats.get("steering_effect")
    if EFFECT_CURVE not in out and isinstance(effect, Mapping):
        out[EFFECT_CURVE] = {layer: v for layer, v in effect.items() if v is not None}
    return out


def layer_separation_figure(
    stats: Mapping[str, Any],
    *,
    chosen_layer: int | None = None,
    trait: str = "persona",
    source: str = "stats",
    title: str | None = None,
) -> go.Figure:
    """Held-out AUROC per layer (two readings) above the steering effect per layer; the chosen layer marked.

    ``stats`` is a vector sidecar's ``stats`` object; ``chosen_layer`` falls back to ``stats['chosen_layer']``.
    Raises `PlotDataError` for stats that are not an object, hold none of the curves, or an AUROC outside [0, 1].
    """
    aurocs, effect, stats = _curves(stats, source)
    if chosen_layer is None and stats.get("chosen_layer") is not None:
        chosen_layer = schema.integer(stats["chosen_layer"], source, "chosen_layer")
    n_rows = int(bool(aurocs)) + int(effect is not None)
    fig = make_subplots(rows=n_rows, cols=1, shared_xaxes=True, vertical_spacing=0.1)
    row = 1
    if aurocs:
        _add_aurocs(fig, aurocs, row)
        row += 1
    if effect is not None:
        fig.add_trace(
            go.Bar(
                x=list(effect),
                y=list(effect.values()),
                name="steering effect",
                marker={"color": "#6a51a3"},
                hovertemplate="<b>steering effect</b><br>layer %{x}<br>Δ trait score %{y:.3g}<extra></extra>",
            ),
            row=row,
            col=1,
        )
        fig.update_yaxes(title_text="steering effect<br>(Δ trait score)", row=row, col=1)
    fig.update_xaxes(
        title_text="layer (output of decoder block l)", dtick=_dtick(aurocs, effect), row=n_rows, col=1
    )
    if chosen_layer is not None:
        fig.add_vline(x=chosen_layer, line={"color": "#d62728", "width": 2, "dash": "dot"}, row="all", col=1)
        fig.add_annotation(
            x=chosen_layer,
            y=1.0,
            xref="x",
            yref="paper",
            yanchor="bottom",
            showarrow=False,
            text=f"chosen layer {chosen_layer}",
            font={"color": "#d62728", "size": 12},
        )
    height = 520 if n_rows == 2 else 400
    return finish(
        fig, title or f"{trait.capitalize()} vector: separation and steering effect by layer", height=height
    )


def _curves(
    stats: Mapping[str, Any], source: str
) -> tuple[dict[str, dict[int, float]], dict[int, float] | None, dict[str, Any]]:
    """The checked AUROC curves and steering-effect curve of ``stats`` (and the stats read); raises
    `PlotDataError` naming ``source`` and the key."""
    if not isinstance(stats, Mapping):
        raise PlotDataError(f"{source}: expected an object of per-layer curves, got {type(stats).__name__}")
    read = curves_from_extraction(stats)
    aurocs = {
        key: schema.layer_map(read[key], source, key) for key in AUROC_CURVES if read.get(key) is not None
    }
    effect = (
        schema.layer_map(read[EFFECT_CURVE], source, EFFECT_CURVE)
        if read.get(EFFECT_CURVE) is not None
        else None
    )
    if not aurocs and effect is None:
        wanted = ", ".join(repr(k) for k in (*AUROC_CURVES, EFFECT_CURVE))
        raise PlotDataError(f"{source}: none of the per-layer curves {wanted} is present")
    for key, curve in aurocs.items():
        bad = {layer: v for layer, v in curve.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise PlotDataError(
                f"{source}: key '{key}' has AUROC values outside [0, 1] at layers {sorted(bad)}"
            )
    return aurocs, effect, read


def _add_aurocs(fig: go.Figure, aurocs: dict[str, dict[int, float]], row: int) -> None:
    """The AUROC curves in panel ``row``, with the chance line and an axis that starts near the lowest value."""
    for key, curve in aurocs.items():
        label, color, dash = AUROC_CURVES[key]
        fig.add_trace(
            go.Scatter(
                x=list(curve),
                y=list(curve.values()),
                name=f"AUROC, {label}",
                mode="lines+markers",
                line={"color": color, "dash": dash, "width": 2.5},
                marker={"size": 6},
                hovertemplate=f"<b>AUROC, {label}</b><br>layer %{{x}}<br>AUROC %{{y:.3f}}<extra></extra>",
            ),
            row=row,
            col=1,
        )
    reference_hline(fig, 0.5, "chance (0.5)", row=row, col=1, position="bottom right")
    low = min(0.4, min(v for curve in aurocs.values() for v in curve.values()) - 0.02)
    fig.update_yaxes(title_text="held-out AUROC", range=[low, 1.02], row=row, col=1)


def _dtick(aurocs: dict[str, dict[int, float]], effect: dict[int, float] | None) -> int:
    layers = {layer for curve in aurocs.values() for layer in curve} | set(effect or {})
    return 1 if len(layers) <= 16 else 2 if len(layers) <= 32 else 4
