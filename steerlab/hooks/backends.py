"""One functional interface over the three hook backends, for parity tests and benchmarks.

``prepare`` does the one-time work (building a TransformerBridge, wrapping with nnsight: both around a deep
copy, see their modules); ``forward`` runs one pass of token ids under a list of ops and returns logits and
captures. Every backend is given the same position ids, derived from the attention mask as transformers'
``generate`` does, so left-padded rows agree with their unpadded selves under all three (a raw transformers
forward would otherwise number pad positions, and TransformerBridge derives its own).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from transformers import GenerationConfig

from steerlab.hooks.ops import Captures, Op

if TYPE_CHECKING:
    from nnsight import NNsight
    from transformer_lens.model_bridge import TransformerBridge


@dataclass
class BackendResult:
    logits: Tensor  # [B, T, vocab]
    captures: Captures


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions counted over real tokens only (pad positions get 1), as transformers' ``generate``."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)


def _mask_for(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        return torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match input_ids {tuple(input_ids.shape)}"
        )
    return attention_mask


@runtime_checkable
class HookBackend(Protocol):
    name: str

    def prepare(self, model: nn.Module, tokenizer: Any = None) -> Any: ...

    def forward(
        self,
        handle: Any,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        ops: Sequence[Op],
        response_mask: Tensor | None = None,
    ) -> BackendResult: ...

    def raw_forward(self, handle: Any, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor: ...


def _greedy_config(model: nn.Module, max_new_tokens: int, use_cache: bool) -> GenerationConfig:
    """Greedy decoding of exactly ``max_new_tokens`` tokens with no EOS stop (and no EOS suppression).

    Raises TypeError for a model without a transformers ``generation_config``."""
    base = getattr(model, "generation_config", None)
    if not isinstance(base, GenerationConfig):
        raise TypeError(f"{type(model).__name__} has no transformers generation_config: it cannot generate")
    config = copy.deepcopy(base)
    config.update(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        min_new_tokens=None,
        eos_token_id=None,
        use_cache=use_cache,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    return config


class HFBackend:
    """PyTorch forward hooks on the transformers model itself (`steerlab.hooks.hf.hooked`)."""

    name = "hf"

    def prepare(self, model: nn.Module, tokenizer: Any = None) -> nn.Module:
        return model

    def forward(
        self,
        handle: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        ops: Sequence[Op],
        response_mask: Tensor | None = None,
    ) -> BackendResult:
        from steerlab.hooks.hf import hooked

        mask = _mask_for(input_ids, attention_mask)
        with hooked(handle, ops, response_mask=response_mask) as session:
            out = handle(input_ids=input_ids, attention_mask=mask, position_ids=position_ids(mask))
        return BackendResult(out.logits, session.captures)

    def raw_forward(self, handle: nn.Module, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        mask = _mask_for(input_ids, attention_mask)
        return handle(input_ids=input_ids, attention_mask=mask, position_ids=position_ids(mask)).logits

    def generate(
        self,
        handle: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        ops: Sequence[Op],
        *,
        max_new_tokens: int,
        use_cache: bool = True,
    ) -> tuple[Tensor, Captures]:
        """Greedy ``model.generate`` under the hooks; returns (sequences, captures)."""
        from steerlab.hooks.hf import hooked

        mask = _mask_for(input_ids, attention_mask)
        with hooked(handle, ops) as session:
            run_generate = getattr(handle, "generate", None)  # read inside: the session wraps it
            if not callable(run_generate):
                raise TypeError(f"HFBackend.generate: {type(handle).__name__} has no generate method")
            sequences = run_generate(
                input_ids=input_ids,
                attention_mask=mask,
                generation_config=_greedy_config(handle, max_new_tokens, use_cache),
            )
        return sequences, session.captures


class TLensBackend:
    """TransformerLens 4 ``TransformerBridge`` hook points (`steerlab.hooks.tlens`)."""

    name = "tlens"

    def prepare(self, model: nn.Module, tokenizer: Any = None) -> TransformerBridge:
        from steerlab.hooks.tlens import bridge_for

        return bridge_for(model, tokenizer)

    def forward(
        self,
        handle: TransformerBridge,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        ops: Sequence[Op],
        response_mask: Tensor | None = None,
    ) -> BackendResult:
        from steerlab.hooks.tlens import hooked_bridge

        mask = _mask_for(input_ids, attention_mask)
        with hooked_bridge(handle, ops, attention_mask=mask, response_mask=response_mask) as session:
            logits = handle(input_ids, attention_mask=mask, position_ids=position_ids(mask))
        return BackendResult(logits, session.captures)

    def raw_forward(
        self, handle: TransformerBridge, input_ids: Tensor, attention_mask: Tensor | None
    ) -> Tensor:
        mask = _mask_for(input_ids, attention_mask)
        return handle(input_ids, attention_mask=mask, position_ids=position_ids(mask))

    def generate(
        self,
        handle: TransformerBridge,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        ops: Sequence[Op],
        *,
        max_new_tokens: int,
        use_cache: bool = True,
    ) -> tuple[Tensor, Captures]:
        """Greedy decoding through the bridge, with or without its KV cache; returns (sequences, captures)."""
        from steerlab.hooks.tlens import greedy_generate

        mask = _mask_for(input_ids, attention_mask)
        return greedy_generate(
            handle, ops, input_ids, attention_mask=mask, max_new_tokens=max_new_tokens, use_cache=use_cache
        )


class NNsightBackend:
    """nnsight interventions inside a ``trace`` (`steerlab.hooks.nnsight_backend`)."""

    name = "nnsight"

    def prepare(self, model: nn.Module, tokenizer: Any = None) -> NNsight:
        from steerlab.hooks.nnsight_backend import nnsight_model

        return nnsight_model(model)

    def forward(
        self,
        handle: NNsight,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        ops: Sequence[Op],
        response_mask: Tensor | None = None,
    ) -> BackendResult:
        from steerlab.hooks.nnsight_backend import trace

        mask = _mask_for(input_ids, attention_mask)
        result = trace(
            handle,
            ops,
            input_ids,
            attention_mask=mask,
            response_mask=response_mask,
            position_ids=position_ids(mask),
        )
        return BackendResult(result.output.logits, result.captures)

    def raw_forward(self, handle: NNsight, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """A trace with no interventions: nnsight's own cost without hooks."""
        return self.forward(handle, input_ids, attention_mask, ()).logits

    def generate(
        self,
        handle: NNsight,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        ops: Sequence[Op],
        *,
        max_new_tokens: int,
        use_cache: bool = True,
    ) -> tuple[Tensor, Captures]:
        """Greedy decoding, one trace per step; returns (sequences, captures)."""
        from steerlab.hooks.nnsight_backend import greedy_generate

        mask = _mask_for(input_ids, attention_mask)
        return greedy_generate(
            handle, ops, input_ids, attention_mask=mask, max_new_tokens=max_new_tokens, use_cache=use_cache
        )


BACKENDS: dict[str, type] = {"hf": HFBackend, "tlens": TLensBackend, "nnsight": NNsightBackend}


def get_backend(name: str) -> HookBackend:
    """The backend called ``name`` ('hf', 'tlens' or 'nnsight')."""
    if name not in BACKENDS:
        raise ValueError(f"unknown hook backend {name!r}; choose from {', '.join(BACKENDS)}")
    return BACKENDS[name]()
