"""Projections of activations onto a persona direction.

The projection of an activation ``h`` on a direction ``v`` is ``h . v / |v|``: how far along the unit
direction the activation sits, in the residual stream's own units. This is the monitor signal of the
persona-vector work (higher = more of the trait) and the quantity data screening compares.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from steerlab.linalg import unit_vector
from steerlab.persona.activations import collect_means
from steerlab.persona.generation import Messages
from steerlab.persona.vectors import PersonaVector


def project(activations: Tensor, vector: Tensor) -> Tensor:
    """``activations [..., d]`` projected on the unit direction of ``vector [d]`` -> ``[...]`` (float32, in
    residual-stream units). Raises ``ValueError`` for widths that differ or a zero vector."""
    if activations.shape[-1] != vector.shape[-1]:
        raise ValueError(f"activation width {activations.shape[-1]} != vector width {vector.shape[-1]}")
    return activations.float() @ unit_vector(vector)


def project_layers(activations: Tensor, vectors: Tensor) -> Tensor:
    """``activations [N, L, d]`` on per-layer unit directions of ``vectors [L, d]`` -> ``[N, L]`` (float32);
    raises ``ValueError`` naming the layer row of a zero vector."""
    return torch.einsum("nld,ld->nl", activations.float(), unit_vector(vectors))


def chat_projections(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Messages],
    answers: Sequence[str],
    vector: PersonaVector | Tensor,
    layer: int | None = None,
    *,
    variant: str = "response",
    batch_size: int = 16,
    progress: bool = False,
) -> list[float]:
    """Projection of each chat's mean ``variant`` activation (default: the answer's tokens) at ``layer``.

    ``vector`` may be a `PersonaVector` (``layer`` defaults to its chosen layer, and the model is checked
    against it) or a raw ``[d]`` tensor (``layer`` required). Empty answers give NaN. Raises ``ValueError``
    when a raw tensor comes without a layer, `IncompatibleVectorError` for a vector made for another model.
    """
    if isinstance(vector, PersonaVector):
        vector.check_model(model)
        layer = vector.layer if layer is None else layer
        direction = vector.vector(layer)
    else:
        if layer is None:
            raise ValueError("pass the layer to project at when the vector is a plain tensor")
        direction = vector
    means = collect_means(
        model,
        tokenizer,
        prompts,
        answers,
        variants=(variant,),
        layers=[layer],
        batch_size=batch_size,
        progress=progress,
        desc="projecting",
    )
    return project(means[variant][:, 0], direction).tolist()
