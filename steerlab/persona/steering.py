"""Steering at inference: generate with ``+alpha * v`` added at a layer, or with ``v``'s direction ablated.

The hook ops come from `steerlab.hooks` (``Add``, ``Ablate``); the coefficient sweep that scores steered
answers is an evaluation and lives in `steerlab.evaluate.sweep`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from steerlab.hooks import Ablate, Add, Op
from steerlab.hooks.scopes import Scope
from steerlab.persona.generation import (
    GREEDY,
    GenRequest,
    Messages,
    SamplingSettings,
    chat_messages,
    generate,
)
from steerlab.persona.vectors import PersonaVector

Mode = Literal["add", "ablate"]


def resolve_vector(
    vector: PersonaVector | Tensor,
    layer: int | None,
    model: nn.Module | None = None,
    *,
    allow_transfer: bool = False,
) -> tuple[Tensor, int]:
    """(direction ``[d]`` float32, raw norm, layer) from a PersonaVector (chosen layer by default, checked
    against ``model`` when given) or a raw tensor + layer. Raises ``ValueError`` for a raw tensor without a
    layer, `IncompatibleVectorError` for a vector made for another model."""
    if isinstance(vector, PersonaVector):
        if model is not None:
            vector.check_model(model, allow_transfer=allow_transfer)
        layer = vector.layer if layer is None else layer
        return vector.vector(layer).float(), layer
    if layer is None:
        raise ValueError("pass the layer to steer at when the vector is a plain tensor")
    return vector.float(), layer


def steer_ops(
    direction: Tensor, layer: int, alpha: float, mode: Mode = "add", scope: Scope = "response"
) -> list[Op]:
    """The hook ops for one steering setting: ``add`` puts ``alpha * direction`` (raw norm, residual units) on
    the output of block ``layer`` at the tokens of ``scope``; ``ablate`` projects the direction out
    (`steerlab.hooks.Add` / ``Ablate``; the activation-addition recipe of Turner et al., arXiv:2308.10248).
    Alpha 0 with mode ``add`` means no op at all. Raises ``ValueError`` for another mode."""
    if mode == "add":
        return [] if alpha == 0 else [Add(layer, scope, vector=direction, alpha=float(alpha))]
    if mode == "ablate":
        return [Ablate(layer, scope, vector=direction)]
    raise ValueError(f"steering mode must be 'add' or 'ablate', got {mode!r}")


def as_messages(prompts: Sequence[Messages | str], system: str | None) -> list[Messages]:
    """Message lists for prompts given as questions (with ``system`` in front) or as message lists."""
    return [chat_messages(p, system) if isinstance(p, str) else list(p) for p in prompts]


def generate_steered(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Messages | str],
    vector: PersonaVector | Tensor,
    layer: int | None = None,
    alpha: float = 1.0,
    *,
    mode: Mode = "add",
    scope: Scope = "response",
    system: str | None = None,
    sampling: SamplingSettings = GREEDY,
    allow_transfer: bool = False,
    progress: bool = False,
) -> list[str]:
    """Answers to ``prompts`` (questions or message lists) with the vector added (``alpha``) or ablated,
    seeded, greedy by default (``sampling``). Raises as `resolve_vector` and `steer_ops` do."""
    direction, layer = resolve_vector(vector, layer, model, allow_transfer=allow_transfer)
    requests = [GenRequest(f"p{i}", m) for i, m in enumerate(as_messages(prompts, system))]
    records = generate(
        model,
        tokenizer,
        requests,
        sampling,
        ops=steer_ops(direction, layer, alpha, mode, scope),
        progress=progress,
        desc=f"steer a={alpha:g}",
    )
    return [r["answer"] for r in records]
