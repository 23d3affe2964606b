"""The main chart: persona projection across training, one line per arm, against two reference levels.

When monitor rows carry the steering coefficient in force (``steer_alpha``: fixed for ``steer``, set by the
controller for ``steer_hold``), a panel under the chart draws it on the same step axis.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from statistics import fmean
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from steerlab.plots import schema
from steerlab.plots.schema import PlotDataError
from steerlab.plots.style import DASHES, finish, reference_hline, resolve_colors

Runs = Mapping[str, Sequence[Mapping[str, Any]]]


def as_runs(runs: Runs | Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Accept ``{run name: rows}`` or one list of rows (one unnamed run); validate every row."""
    if not isinstance(runs, Mapping):
        runs = {"": runs}
    return {
        name: [schema.monitor_row(r, f"run {name!r} row {i}") for i, r in enumerate(rows)]
        for name, rows in runs.items()
    }


def series(runs: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """``(run, arm, rows sorted by step)`` per line; a repeated step within one line is an error."""
    out = []
    for run, rows in runs.items():
        by_arm: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_arm[row["arm"]].append(row)
        for arm, arm_rows in sorted(by_arm.items()):
            arm_rows.sort(key=lambda r: r["step"])
            steps = [r["step"] for r in arm_rows]
            dupes = sorted({s for s in steps if steps.count(s) > 1})
            if dupes:
                raise PlotDataError(f"run {run!r} arm {arm!r}: step(s) {dupes} logged more than once")
            out.append((run, arm, arm_rows))
    return out


def line_names(lines: list[tuple[str, str, list]]) -> list[str]:
    """Arm name alone when each arm appears once; ``arm (run)`` when several runs share an arm."""
    arms = [arm for _, arm, _ in lines]
    return [arm if arms.count(arm) == 1 or not run else f"{arm} ({run})" for run, arm, _ in lines]


def base_level_from_step0(lines: list[tuple[str, str, list]]) -> float | None:
    """Mean projection at step 0 over all lines: every arm starts from the same base model."""
    values = [rows[0]["projection"] for _, _, rows in lines if rows and rows[0]["step"] == 0]
    return fmean(values) if values else None


def projection_figure(
    runs: Runs | Sequence[Mapping[str, Any]],
    *,
    base_level: float | None = None,
    prompted_level: float | None = None,
    show_base: bool = True,
    colors: Mapping[str, str] | None = None,
    trait: str = "persona",
    title: str | None = None,
) -> go.Figure:
    """Persona projection vs training step per arm, with the base model's and the prompted level marked.

    ``base_level`` defaults to the step-0 projection; ``prompted_level`` is the projection when the base
    model is given the trait's system prompt (e.g. from the vector's stats) and is drawn only if given.
    """
    lines = series(as_runs(runs))
    if not lines:
        raise PlotDataError("projection_figure: no monitor rows to plot")
    palette = resolve_colors([arm for _, arm, _ in lines], colors)
    layers = sorted({r["projection_layer"] for _, _, rows in lines for r in rows})
    seen: dict[str, int] = defaultdict(int)
    steered = any(r.get("steer_alpha") is not None for _, _, rows in lines for r in rows)
    top = {"row": 1, "col": 1} if steered else {}
    fig = (
        make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.07, row_heights=[0.72, 0.28])
        if steered
        else go.Figure()
    )
    for (run, arm, rows), name in zip(lines, line_names(lines), strict=True):
        dash = DASHES[seen[arm] % len(DASHES)]
        seen[arm] += 1
        _add_run(fig, run, arm, rows, name, palette[arm], dash, top)
    if base_level is None and show_base:
        base_level = base_level_from_step0(lines)
    if show_base and base_level is not None:
        reference_hline(
            fig, base_level, f"base model (step 0): {base_level:.2f}", position="bottom left", **top
        )
    if prompted_level is not None:
        reference_hline(
            fig,
            prompted_level,
            f"base model + {trait} system prompt: {prompted_level:.2f}",
            dash="dash",
            color="#b2182b",
            position="top left",
            **top,
        )
    layer_text = f"layer {layers[0]}" if len(layers) == 1 else f"layers {', '.join(map(str, layers))}"
    fig.update_xaxes(rangemode="tozero")
    fig.update_xaxes(
        title_text="training step (optimizer updates)", **({"row": 2, "col": 1} if steered else {})
    )
    fig.update_yaxes(title_text=f"{trait} projection ({layer_text}, residual-stream units)", **top)
    if steered:
        fig.update_yaxes(title_text="steering alpha", rangemode="tozero", row=2, col=1)
    return finish(
        fig,
        title or f"{trait.capitalize()} projection across training",
        legend_title="arm",
        height=620 if steered else 480,
    )


def _add_run(
    fig: go.Figure,
    run: str,
    arm: str,
    rows: list[dict[str, Any]],
    name: str,
    color: str,
    dash: str,
    top: dict[str, int],
) -> None:
    """One run's projection line (in the top panel when steered) and, under it, its steering alpha when logged."""
    fig.add_trace(
        go.Scatter(
            x=[r["step"] for r in rows],
            y=[r["projection"] for r in rows],
            name=name,
            mode="lines+markers" if len(rows) <= 60 else "lines",
            legendgroup=arm,
            line={"color": color, "dash": dash, "width": 2.5},
            marker={"size": 5},
            customdata=[[run or "-", r["projection_layer"], _fmt(r["train_loss"])] for r in rows],
            hovertemplate=(
                "<b>%{fullData.name}</b><br>step %{x}<br>projection %{y:.3f}"
                "<br>layer %{customdata[1]}<br>train loss %{customdata[2]}<br>run %{customdata[0]}"
                "<extra></extra>"
            ),
        ),
        **top,
    )
    alpha_rows = [r for r in rows if r.get("steer_alpha") is not None]
    if alpha_rows:
        fig.add_trace(
            go.Scatter(
                x=[r["step"] for r in alpha_rows],
                y=[r["steer_alpha"] for r in alpha_rows],
                name=f"{name} alpha",
                mode="lines+markers",
                legendgroup=arm,
                showlegend=False,
                line={"color": color, "dash": dash, "width": 2, "shape": "hv"},
                marker={"size": 4},
                hovertemplate=f"<b>{name}</b><br>step %{{x}}<br>alpha %{{y:.2f}}<extra></extra>",
            ),
            row=2,
            col=1,
        )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
