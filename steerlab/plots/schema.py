"""Row schemas for the figures' inputs, checked once so a bad value is reported where it came from.

Every checker takes ``where`` (``"runs/a/monitor.jsonl:12"`` from a loader, ``"row 3"`` from a caller
passing rows directly) and returns a normalised copy; extra keys are kept, so producers may add fields.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class PlotDataError(ValueError):
    """Input for a figure or the report is malformed; the message names the file, line and key."""


def number(value: Any, where: str, key: str, *, optional: bool = False) -> float | None:
    """A finite float; ``None`` only when optional. Booleans are rejected (JSON true is not 1.0)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlotDataError(f"{where}: key '{key}' must be a number, got {value!r}")
    if not math.isfinite(value):
        raise PlotDataError(f"{where}: key '{key}' must be finite, got {value!r}")
    return float(value)


def integer(value: Any, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlotDataError(f"{where}: key '{key}' must be an integer, got {value!r}")
    return value


def text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise PlotDataError(f"{where}: key '{key}' must be a non-empty string, got {value!r}")
    return value


def interval(value: Any, where: str, key: str) -> tuple[float, float] | None:
    """A confidence interval ``[lo, hi]`` with lo <= hi, or None."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise PlotDataError(f"{where}: key '{key}' must be [lo, hi] or null, got {value!r}")
    lo, hi = (number(v, where, key) for v in value)
    if lo > hi:
        raise PlotDataError(f"{where}: key '{key}' has lo > hi: {value!r}")
    return (lo, hi)


def layer_map(value: Any, where: str, key: str, *, optional: bool = False) -> dict[int, float] | None:
    """``{"<layer>": float}`` (JSON keys are strings) -> ``{layer: float}``, sorted by layer."""
    if value is None and optional:
        return None
    if not isinstance(value, Mapping):
        raise PlotDataError(f"{where}: key '{key}' must be an object {{layer: number}}, got {value!r}")
    out: dict[int, float] = {}
    for raw_layer, raw in value.items():
        try:
            layer = int(raw_layer)
        except (TypeError, ValueError):
            raise PlotDataError(f"{where}: key '{key}' has a non-integer layer {raw_layer!r}") from None
        if layer < 0:
            raise PlotDataError(f"{where}: key '{key}' has a negative layer {raw_layer!r}")
        out[layer] = number(raw, where, f"{key}[{raw_layer}]")
    return dict(sorted(out.items()))


def _require(row: Any, where: str, keys: tuple[str, ...]) -> Mapping:
    if not isinstance(row, Mapping):
        raise PlotDataError(f"{where}: expected an object, got {type(row).__name__}")
    missing = [key for key in keys if key not in row]
    if missing:
        raise PlotDataError(f"{where}: missing key(s) {', '.join(repr(k) for k in missing)}")
    return row


def monitor_row(row: Any, where: str) -> dict[str, Any]:
    """One ``monitor.jsonl`` line: the persona projection (and drift) of one arm at one step."""
    row = _require(row, where, ("step", "arm", "projection", "projection_layer"))
    out = dict(row)
    out["step"] = integer(row["step"], where, "step")
    out["arm"] = text(row["arm"], where, "arm")
    out["projection"] = number(row["projection"], where, "projection")
    out["projection_layer"] = integer(row["projection_layer"], where, "projection_layer")
    out["ldifs"] = number(row.get("ldifs"), where, "ldifs", optional=True)
    out["ldifs_per_layer"] = layer_map(row.get("ldifs_per_layer"), where, "ldifs_per_layer", optional=True)
    out["train_loss"] = number(row.get("train_loss"), where, "train_loss", optional=True)
    out["steer_alpha"] = number(row.get("steer_alpha"), where, "steer_alpha", optional=True)
    return out


def sweep_row(row: Any, where: str) -> dict[str, Any]:
    """One steering-sweep point: trait score and coherence at one steering coefficient alpha."""
    row = _require(row, where, ("alpha", "trait_score"))
    out = dict(row)
    out["alpha"] = number(row["alpha"], where, "alpha")
    out["trait_score"] = number(row["trait_score"], where, "trait_score")
    out["trait_score_ci"] = interval(row.get("trait_score_ci"), where, "trait_score_ci")
    out["coherence"] = number(row.get("coherence"), where, "coherence", optional=True)
    out["perplexity"] = number(row.get("perplexity"), where, "perplexity", optional=True)
    if row.get("layer") is not None:
        out["layer"] = integer(row["layer"], where, "layer")
    return out


def arm_result_row(row: Any, where: str) -> dict[str, Any]:
    """One evaluated arm: general misalignment vs in-domain learning, each with a CI."""
    row = _require(row, where, ("arm", "domain", "general_misalignment", "in_domain"))
    out = dict(row)
    out["arm"] = text(row["arm"], where, "arm")
    out["domain"] = text(row["domain"], where, "domain")
    for key in ("general_misalignment", "in_domain"):
        out[key] = number(row[key], where, key)
        out[f"{key}_ci"] = interval(row.get(f"{key}_ci"), where, f"{key}_ci")
    for key in ("benign_accuracy", "coherence"):
        out[key] = number(row.get(key), where, key, optional=True)
    return out
