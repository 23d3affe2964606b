"""The persona projection of a model's own answers: how far along the persona vector its responses sit.

For each (prompt, answer) the model reads the chat teacher-forced, the response tokens' residual stream at
the vector's layer is averaged, and that mean is projected on the unit persona direction. The evaluation
reports the mean over answers (with a CI over questions). A model drifting towards the persona raises it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from steerlab.activations import collect_means
from steerlab.vectors import PersonaVector

Messages = list[dict[str, str]]


def answer_projections(model: Any, tokenizer: Any, prompts: Sequence[Messages], answers: Sequence[str],
                       vector: PersonaVector, layer: int | None = None, *, batch_size: int = 16) -> list[float]:
    """Projection of each answer's mean response activation on the unit vector (NaN for an empty answer)."""
    layer = vector.layer if layer is None else layer
    if layer not in vector.layers:
        raise ValueError(f"the persona vector has no layer {layer}; it has {vector.layers}")
    vector.check_model(model, allow_transfer=True)  # fine-tuned weights differ from the base by design
    if not prompts:
        return []
    means = collect_means(model, tokenizer, prompts, answers, variants=["response"], layers=[layer],
                          batch_size=batch_size)["response"][:, 0]
    unit = vector.unit(layer).to(means.dtype)
    return [float(v) for v in means @ unit]


def finite_pairs(values: Sequence[float], groups: Sequence[str]) -> tuple[list[float], list[str]]:
    keep = [(v, g) for v, g in zip(values, groups, strict=True) if math.isfinite(v)]
    return [v for v, _ in keep], [g for _, g in keep]
