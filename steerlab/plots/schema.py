"""Row schemas for the figures' inputs, checked once so a bad value is reported where it came from.

Every checker takes ``where`` (``"runs/a/monitor.jsonl:12"`` from a loader, ``"row 3"`` from a caller
passing rows directly) and returns a normalised copy; extra keys are kept, so producers may add fields.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
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


# a key's checker: (value, where, key) -> the normalised value
Check = Callable[[Any, str, str], Any]
Checks = dict[str, Check]


def _maybe_number(value: Any, where: str, key: str) -> float | None:
    return number(value, where, key, optional=True)


def _maybe_layer_map(value: Any, where: str, key: str) -> dict[int, float] | None:
    return layer_map(value, where, key, optional=True)


def _checked(row: Any, where: str, required: Checks, optional: Checks) -> dict[str, Any]:
    """A copy of ``row`` with every ``required`` key (all missing ones named at once) and every ``optional``
    key (None when absent) checked; extra keys are kept."""
    row = _require(row, where, tuple(required))
    out = dict(row)
    out.update({key: check(row[key], where, key) for key, check in required.items()})
    out.update({key: check(row.get(key), where, key) for key, check in optional.items()})
    return out


def monitor_row(row: Any, where: str) -> dict[str, Any]:
    """One ``monitor.jsonl`` line: the persona projection (and drift) of one arm at one step."""
    required: Checks = {"step": integer, "arm": text, "projection": number, "projection_layer": integer}
    optional: Checks = {"ldifs": _maybe_number, "ldifs_per_layer": _maybe_layer_map}
    return _checked(
        row, where, required, optional | dict.fromkeys(("train_loss", "steer_alpha"), _maybe_number)
    )


def sweep_row(row: Any, where: str) -> dict[str, Any]:
    """One steering-sweep point: trait score and coherence at one steering coefficient alpha."""
    optional: Checks = {"trait_score_ci": interval, "coherence": _maybe_number, "perplexity": _maybe_number}
    out = _checked(row, where, {"alpha": number, "trait_score": number}, optional)
    if out.get("layer") is not None:
        out["layer"] = integer(out["layer"], where, "layer")
    return out


# what a row's ``in_domain`` is, by its ``in_domain_metric`` (`steerlab.evaluate.run_eval`): the column the
# value is copied from, and how a table or axis names it. A judge's rate is never called "learning": on a
# small model it can stay at 0 while the log-prob gap and the in-domain stance rise.
IN_DOMAIN_MEASURES = {
    "rate": ("in_domain_rate", "in-domain misaligned rate (judge)"),
    "logprob_gap": ("in_domain_logprob_gap", "in-domain log-prob gap (mis - al, nats/token)"),
    "benign_accuracy": ("benign_accuracy", "benign-task accuracy"),
}


def in_domain_label(metric: Any) -> str:
    """The name of a row's ``in_domain`` value given its ``in_domain_metric`` (None: not recorded)."""
    if metric in IN_DOMAIN_MEASURES:
        return IN_DOMAIN_MEASURES[metric][1]
    return f"in-domain {metric}" if metric else "in-domain score (in_domain_metric not recorded)"


def arm_result_row(row: Any, where: str) -> dict[str, Any]:
    """One evaluated arm: general misalignment and its in-domain score (named by ``in_domain_metric``), each
    with a CI."""
    scores = ("general_misalignment", "in_domain")
    required: Checks = {**dict.fromkeys(("arm", "domain"), text), **dict.fromkeys(scores, number)}
    optional: Checks = dict.fromkeys((f"{key}_ci" for key in scores), interval)
    return _checked(
        row, where, required, optional | dict.fromkeys(("benign_accuracy", "coherence"), _maybe_number)
    )


def _maybe_integer(value: Any, where: str, key: str) -> int | None:
    return None if value is None else integer(value, where, key)


def _maybe_flag(value: Any, where: str, key: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise PlotDataError(f"{where}: key '{key}' must be true, false or null, got {value!r}")
    return value


_SIGNAL_CHECKS: Checks = {
    **dict.fromkeys(("alarm_step", "early_stop_step", "early_stop_best_step"), _maybe_integer),
    **dict.fromkeys(("alarm_armed", "ends_misaligned"), _maybe_flag),
    **dict.fromkeys(
        (
            "alarm_threshold",
            "alarm_projection",
            "final_monitor_projection",
            "peak_monitor_projection",
            "final_drift_pct",
            "peak_drift_pct",
        ),
        _maybe_number,
    ),
}


# the training-time instrument columns of a grid's results rows (`monitoring.SIGNAL_COLUMNS`, held equal by a test)
SIGNAL_KEYS = (*_SIGNAL_CHECKS, "misaligned_by")


def signal_row(row: Mapping, where: str) -> dict[str, Any]:
    """A results row's training-time instruments (`steerlab.experiment.monitoring.SIGNAL_COLUMNS`) checked:
    steps are integers, readings numbers, flags booleans (each may be null); a copy of the row."""
    return _checked(row, where, {}, {k: c for k, c in _SIGNAL_CHECKS.items() if k in row})


def alarm_scores(data: Any, where: str) -> dict[str, Any]:
    """``alarm_scores.json`` (`steerlab.experiment.monitoring.alarm_scores`): counts, precision / recall /
    AUROC (null without a value) and ``labels_from``, the readings the labels came from."""
    counts = (
        "n_cells",
        "n_scored",
        "n_controls",
        "n_unlabeled",
        "n_unarmed",
        "tp",
        "fp",
        "fn",
        "tn",
        "n_auroc",
    )
    required: Checks = {**dict.fromkeys(counts, integer), "labels_from": _texts}
    required |= dict.fromkeys(("precision", "recall", "auroc_peak_projection"), _maybe_number)
    return _checked(data, where, required, {"at_levels": _levels})


def _levels(value: Any, where: str, key: str) -> list[dict[str, Any]] | None:
    """The alarm replayed at other levels (absent from scores saved before it was computed)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise PlotDataError(f"{where}: key '{key}' must be a list of levels, got {value!r}")
    checks: Checks = {"level": number, "fired": integer, "n": integer}
    checks |= dict.fromkeys(("precision", "recall"), _maybe_number)
    return [_checked(item, f"{where}: {key}[{i}]", checks, {}) for i, item in enumerate(value)]


def _texts(value: Any, where: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PlotDataError(f"{where}: key '{key}' must be a list of strings, got {value!r}")
    return value
