"""The nnsight 0.8 backend: the same ops, run on the block outputs inside an nnsight ``trace``.

nnsight 0.8 executes the body of a ``trace`` against real values (interleaved with the model's forward),
so ``blocks[l].output`` is a real tensor there and `HookProgram.run_layer` — the same ops code as every
backend — runs on it unchanged; assigning ``blocks[l].output`` replaces the block's output. Blocks that
return a tuple (older transformers, some architectures) get their first element replaced. Captures are
recorded into the program's `Captures` from inside the trace, so they come back as real tensors.

Wrapping a model with ``nnsight.NNsight`` swaps every submodule's ``forward`` for an nnsight controller
(transparent outside a trace, but not free); `nnsight_model` therefore wraps a deep copy unless asked not
to. Build the wrapper once per model.
"""

from __future__ import annotations

import copy as copy_module
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from steerlab.hooks.ops import Captures, Op
from steerlab.hooks.program import HookProgram
from steerlab.models.architectures import decoder_blocks, hidden_size


@dataclass
class NNsightResult:
    output: Any  # the model's output (e.g. CausalLMOutputWithPast)
    captures: Captures


def nnsight_model(model: nn.Module, *, copy: bool = True):
    """An ``nnsight.NNsight`` wrapper around ``model`` (a deep copy unless ``copy=False``)."""
    from nnsight import NNsight

    return NNsight(copy_module.deepcopy(model) if copy else model)


def _underlying(wrapped) -> nn.Module:
    return wrapped._module


def block_envoys(wrapped) -> list:
    """The envoys of the decoder blocks, found by the module path of `decoder_blocks` (PEFT included)."""
    module = _underlying(wrapped)
    blocks = decoder_blocks(module)
    path = next((name for name, sub in module.named_modules() if sub is blocks), None)
    if path is None:
        raise ValueError(f"cannot locate the decoder blocks of {type(module).__name__} in its module tree")
    envoy = wrapped
    for part in path.split("."):
        envoy = getattr(envoy, part)
    return [envoy[i] for i in range(len(blocks))]


def _cache_length(cache: object) -> int:
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    raise TypeError(f"unsupported KV cache type {type(cache).__name__}; use a transformers Cache object")


def new_program(wrapped, ops: Iterable[Op], response_mask: Tensor | None = None) -> HookProgram:
    module = _underlying(wrapped)
    return HookProgram(
        ops, n_layers=len(decoder_blocks(module)), d_model=hidden_size(module), response_mask=response_mask
    )


def _intervene(blocks: list, program: HookProgram, info) -> None:
    """Inside a trace: run each hooked layer's ops on the block output, in execution order."""
    for layer in program.layers:
        output = blocks[layer].output
        hidden = output[0] if isinstance(output, tuple) else output
        new = program.run_layer(layer, hidden, info)
        if new is not hidden:
            blocks[layer].output = (new, *output[1:]) if isinstance(output, tuple) else new


def run_program(
    wrapped,
    program: HookProgram,
    input_ids: Tensor,
    *,
    attention_mask: Tensor | None = None,
    blocks: list | None = None,
    **forward_kwargs: Any,
) -> Any:
    """One forward call of ``wrapped`` under ``program`` (which keeps its state across calls); returns the output."""
    blocks = blocks if blocks is not None else block_envoys(wrapped)
    batch, seq_len = int(input_ids.shape[0]), int(input_ids.shape[1])
    past_len = _cache_length(forward_kwargs.get("cache", forward_kwargs.get("past_key_values")))
    mask = attention_mask if isinstance(attention_mask, Tensor) and attention_mask.dim() == 2 else None
    info = program.call_info(batch, seq_len, past_len, mask)
    if attention_mask is not None:
        forward_kwargs["attention_mask"] = attention_mask
    with wrapped.trace(input_ids, **forward_kwargs):
        _intervene(blocks, program, info)
        output = wrapped.output.save()
    return output


def trace(
    wrapped,
    ops: Iterable[Op],
    input_ids: Tensor,
    *,
    attention_mask: Tensor | None = None,
    response_mask: Tensor | None = None,
    **forward_kwargs: Any,
) -> NNsightResult:
    """Run ``ops`` during one forward pass of the nnsight-wrapped model."""
    program = new_program(wrapped, ops, response_mask)
    output = run_program(wrapped, program, input_ids, attention_mask=attention_mask, **forward_kwargs)
    return NNsightResult(output=output, captures=program.captures)


def greedy_generate(
    wrapped,
    ops: Iterable[Op],
    input_ids: Tensor,
    *,
    attention_mask: Tensor | None = None,
    max_new_tokens: int = 16,
    use_cache: bool = True,
) -> tuple[Tensor, Captures]:
    """Greedy decoding with one trace per step, with or without a KV cache; returns (sequences, captures).

    Positions follow the attention mask (left padding), as in transformers' ``generate``; no early stop
    on EOS, so every row gets ``max_new_tokens`` new tokens.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    program = new_program(wrapped, ops)
    blocks = block_envoys(wrapped)
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    sequences, cache = input_ids, None
    for _ in range(max_new_tokens):
        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as transformers' generate
        if use_cache and cache is not None:
            step_ids, step_positions = sequences[:, -1:], positions[:, -1:]
            kwargs: dict[str, Any] = {"cache": cache, "use_cache": True}
        else:
            step_ids, step_positions = sequences, positions
            kwargs = {"use_cache": use_cache}
        output = run_program(
            wrapped,
            program,
            step_ids,
            attention_mask=mask,
            position_ids=step_positions,
            blocks=blocks,
            **kwargs,
        )
        cache = output.cache if use_cache else None
        next_token = output.logits[:, -1].argmax(-1, keepdim=True)
        sequences = torch.cat([sequences, next_token], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return sequences, program.captures
