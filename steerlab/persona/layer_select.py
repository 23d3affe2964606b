"""Which layer a persona vector should be read and steered at, and why.

Two measurements per layer:

(a) held-out separation — AUROC of the projection on the layer's direction between pos- and neg-prompted
    answers to the *evaluation* questions (never used for extraction). Read two ways: with the system prompt
    in context (as extraction reads them) and text-only (the answer after the bare question), which asks
    whether the direction sees the *answer* and not just the instruction.
(b) steering effect — change of the trait score of answers to evaluation questions (no system prompt) when
    ``+alpha * v`` is added at the layer, for one fixed ``alpha``, on a subset of layers (it costs
    generation).

Rule (`choose_layer`): eligible layers are those whose system-prompt AUROC is >= ``min_auroc`` (if none,
the five best). Among eligible layers with a steering measurement, take the largest steering effect;
without one, take the best AUROC (ties: text-only AUROC, then the earlier layer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score
from torch import Tensor

from steerlab.persona.projection import project_layers


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """AUROC of scores with pos as the positive class (NaN if a side is empty)."""
    pos, neg = [p for p in pos if math.isfinite(p)], [n for n in neg if math.isfinite(n)]
    if not pos or not neg:
        return float("nan")
    return float(roc_auc_score([1] * len(pos) + [0] * len(neg), list(pos) + list(neg)))


def auroc_per_layer(pos: Tensor, neg: Tensor, vectors: Tensor) -> list[float]:
    """AUROC per layer of projections: ``pos [Np, L, d]``, ``neg [Nn, L, d]`` on ``vectors [L, d]``."""
    p, n = project_layers(pos, vectors), project_layers(neg, vectors)
    return [auroc(p[:, layer].tolist(), n[:, layer].tolist()) for layer in range(vectors.shape[0])]


def spread(candidates: Sequence[int], k: int) -> list[int]:
    """``k`` layers evenly spread over ``candidates`` (sorted), always including both ends."""
    candidates = sorted(candidates)
    if k >= len(candidates):
        return candidates
    if k <= 1:
        return [candidates[len(candidates) // 2]]
    idx = np.linspace(0, len(candidates) - 1, k).round().astype(int)
    return sorted({candidates[i] for i in idx})


def eligible_layers(
    auroc_system: Sequence[float], min_auroc: float, *, exclude: Sequence[int] = ()
) -> list[int]:
    """Layers (not in ``exclude``) whose held-out AUROC with the system prompt reaches ``min_auroc``; when
    none does, the five best finite ones, so a choice is always possible."""
    layers = [i for i, a in enumerate(auroc_system) if math.isfinite(a) and i not in exclude]
    good = [i for i in layers if auroc_system[i] >= min_auroc]
    return good or sorted(sorted(layers, key=lambda i: -auroc_system[i])[:5])


def choose_layer(
    auroc_system: Sequence[float],
    auroc_text: Sequence[float],
    steering: dict[int, float] | None = None,
    *,
    min_auroc: float = 0.9,
    exclude: Sequence[int] = (),
) -> tuple[int, str]:
    """(layer, reason) by the rule in the module doc. ``auroc_*`` are per-layer lists (0-1, NaN for unread
    layers); ``steering`` maps a layer to its trait-score change (0-100 points). Raises ``ValueError`` when no
    layer has a finite AUROC."""
    eligible = eligible_layers(auroc_system, min_auroc, exclude=exclude)
    if not eligible:
        raise ValueError("no layer has a finite AUROC; cannot choose a layer")
    floor = (
        f"AUROC >= {min_auroc:.2f}" if any(auroc_system[i] >= min_auroc for i in eligible) else "top-5 AUROC"
    )
    measured = {
        layer: effect
        for layer, effect in (steering or {}).items()
        if layer in eligible and math.isfinite(effect)
    }
    if measured:
        layer = max(measured, key=lambda i: (measured[i], auroc_system[i], -i))
        return layer, (
            f"largest steering effect ({measured[layer]:+.1f} trait points) among the {len(measured)} steered "
            f"layers with {floor}; held-out AUROC {auroc_system[layer]:.3f} with the system prompt, "
            f"{auroc_text[layer]:.3f} text-only"
        )

    def key(i: int) -> tuple[float, float, int]:
        text = auroc_text[i] if math.isfinite(auroc_text[i]) else -1.0
        return (auroc_system[i], text, -i)

    layer = max(eligible, key=key)
    return layer, (
        f"best held-out AUROC with the system prompt ({auroc_system[layer]:.3f}; text-only "
        f"{auroc_text[layer]:.3f}); no steering measurement"
    )
