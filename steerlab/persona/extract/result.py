"""Saving an extraction (vector + probe judge) and summarising its statistics for logs and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steerlab.persona.extract.config import ExtractResult


def save_result(result: ExtractResult, out: str | Path) -> tuple[Path, Path]:
    """Save the vector at ``out`` (``.safetensors`` + ``.json``) and its probe judge at ``<out>.probe``."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".safetensors", ".json") else out
    probe_path = result.probe.save(Path(f"{stem}.probe"))
    result.vector.meta.stats["probe"]["file"] = probe_path.name
    return result.vector.save(stem), probe_path


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary(stats: dict[str, Any]) -> str:
    """A few lines for logs and the CLI."""
    at = stats["at_chosen_layer"]
    lines = [
        f"chosen layer {stats['chosen_layer']}: {stats['choice_reason']}",
        f"held-out AUROC at the chosen layer, all evaluation pairs: system prompt {at['auroc_system']:.3f}, "
        f"text-only {at['auroc_text']:.3f}",
        f"probe judge (layer {stats['probe']['layer']}): held-out accuracy "
        f"{stats['probe']['heldout']['accuracy']:.3f}, AUROC {stats['probe']['heldout']['auroc']:.3f}",
        f"answers: {json.dumps(stats['counts'])}",
        f"seconds: {json.dumps(stats['seconds'])}",
    ]
    if stats.get("filter"):
        lines.insert(2, f"judge filtering: {json.dumps(stats['filter'])}")
        lines.insert(
            2,
            "held-out AUROC at the chosen layer, judge-confirmed evaluation pairs: system prompt "
            f"{_fmt(at.get('auroc_system_confirmed_eval'))}, text-only {_fmt(at.get('auroc_text_confirmed_eval'))}",
        )
    return "\n".join(lines)
