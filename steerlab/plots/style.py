"""One look for every figure: a fixed colour per arm, shared layout defaults and labelled reference lines."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import plotly.graph_objects as go

# Known arms keep their colour in every figure and every report; sft (the undefended baseline) is red.
KNOWN_ARM_COLORS: dict[str, str] = {
    "sft": "#d62728",
    "steer": "#1f77b4",
    "steer_hold": "#17becf",
    "kl": "#2ca02c",
    "ldifs": "#9467bd",
    "interleave": "#ff7f0e",
    "inoculate": "#8c564b",
    "early_stop": "#e377c2",
    "base": "#7f7f7f",
}
SPARE_COLORS = (
    "#17becf",
    "#e377c2",
    "#bcbd22",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
    "#31a354",
    "#756bb1",
)
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
REFERENCE_COLOR = "#555555"
FONT = "Liberation Sans, Arial, Helvetica, sans-serif"


def arm_colors(arms: Iterable[str]) -> dict[str, str]:
    """Arm -> colour. Known arms get fixed colours; others get spare colours in sorted-name order."""
    names = sorted(set(arms))
    colors = {arm: KNOWN_ARM_COLORS[arm] for arm in names if arm in KNOWN_ARM_COLORS}
    spare = [c for c in SPARE_COLORS if c not in colors.values()]
    for i, arm in enumerate(a for a in names if a not in colors):
        colors[arm] = spare[i % len(spare)]
    return colors


def resolve_colors(arms: Iterable[str], colors: Mapping[str, str] | None) -> dict[str, str]:
    """Use the caller's map (the report's one map for all figures), filling in arms it lacks."""
    arms = list(arms)
    out = arm_colors(arms)
    if colors:
        out.update({arm: colors[arm] for arm in arms if arm in colors})
    return out


def finish(fig: go.Figure, title: str, *, height: int = 480, legend_title: str | None = None) -> go.Figure:
    """Shared layout: white template, title, room for a right-hand legend that holds 8+ arms."""
    fig.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0.01, "xanchor": "left"},
        height=height,
        font={"family": FONT, "size": 13},
        hovermode="closest",
        showlegend=True,  # name the arm even when there is only one line
        legend={"title": {"text": legend_title} if legend_title else None, "tracegroupgap": 2},
        margin={"l": 70, "r": 30, "t": 70, "b": 60},
    )
    return fig


def reference_hline(
    fig: go.Figure,
    y: float,
    label: str,
    *,
    dash: str = "dot",
    color: str = REFERENCE_COLOR,
    position: str = "top left",
    **where,
) -> None:
    """A horizontal reference level with its label written on the chart (not only in hover)."""
    fig.add_hline(
        y=y,
        line={"dash": dash, "color": color, "width": 1.5},
        annotation_text=label,
        annotation_position=position,
        annotation_font={"color": color, "size": 12},
        **where,
    )
