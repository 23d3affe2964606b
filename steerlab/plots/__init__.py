"""Figures for persona vectors and training runs; each function returns a plotly ``go.Figure``.

Figures only draw: the numbers come from upstream files (monitor logs, vector sidecars, sweeps,
evaluations, screening CSVs), which `steerlab.plots.io` loads and validates. One colour per arm
(`arm_colors`) keeps arms recognisable across figures.
"""

from steerlab.plots.arms import arms_figure
from steerlab.plots.drift import drift_figure
from steerlab.plots.io import (
    ScreeningTable,
    VectorStats,
    load_arm_results,
    load_monitor,
    load_monitor_runs,
    load_screening,
    load_sweep,
    load_vector_stats,
)
from steerlab.plots.layers import layer_separation_figure
from steerlab.plots.projection import projection_figure
from steerlab.plots.schema import PlotDataError
from steerlab.plots.screening import screening_figure
from steerlab.plots.style import KNOWN_ARM_COLORS, arm_colors
from steerlab.plots.sweep import steering_sweep_figure

__all__ = [
    "KNOWN_ARM_COLORS",
    "PlotDataError",
    "ScreeningTable",
    "VectorStats",
    "arm_colors",
    "arms_figure",
    "drift_figure",
    "layer_separation_figure",
    "load_arm_results",
    "load_monitor",
    "load_monitor_runs",
    "load_screening",
    "load_sweep",
    "load_vector_stats",
    "projection_figure",
    "screening_figure",
    "steering_sweep_figure",
]
