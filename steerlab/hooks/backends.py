"""One functional interface over the three hook backends, for parity tests and benchmarks.

``prepare`` does the one-time work (building a TransformerBridge, wrapping with nnsight: both around a deep
copy, see their modules); ``forward`` runs one pass of token ids under a list of ops and returns logits and
captures. Every backend is given the same position ids, derived from the attention mask as transformers'
``generate`` does, so left-padded rows agree with their unpadded selves under all three (a raw transformers
forward would otherwise number pad positions, and TransformerBridge derives its own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor, nn

from steerlab.hooks.decoding import position_ids
from steerlab.hooks.ops import Captures, Op

if TYPE_CHECKING:
    from nnsight import NNsight
    from transformer_lens.model_bridge import TransformerBridge


H = TypeVar("H")  # what `prepare` returns: the model itself, a TransformerBridge, an NNsight wrapper


@dataclass
class BackendResult:
    """One backend forward: logits ``[B, T, vocab]`` and what its Capture ops recorded."""

    logits: Tensor  # [B, T, vocab]
    captures: Captures


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
    """What the parity tests and benchmarks call on each backend (``hf``, ``tlens``, ``nnsight``)."""

    name: str

    def prepare(self, model: nn.Module, tokenizer: Any = None) -> Any:
        """The backend's handle on ``model``, built once (the model itself, a TransformerBridge, an NNsight)."""
        ...

    def forward(
        self,
        handle: Any,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        ops: Sequence[Op],
        response_mask: Tensor | None = None,
    ) -> BackendResult:
        """Logits ``[B, T, vocab]`` of ``input_ids`` ``[B, T]`` under ``ops``, and their captures."""
        ...

    def raw_forward(self, handle: Any, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Logits ``[B, T, vocab]`` with no hooks: the backend's own cost."""
        ...


class _Backend(Generic[H]):
    """The shared half of a backend: argument checks, position ids, the public signatures.

    A backend supplies ``_forward`` (one hooked pass on a checked ``[B, T]`` mask), ``_greedy`` (greedy
    decoding under the ops) and, where it has a cheaper one than a pass with no ops, ``_raw``.
    """

    name: str

    def prepare(self, model: nn.Module, tokenizer: Any = None) -> H:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(
        self,
        handle: H,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        ops: Sequence[Op],
        response_mask: Tensor | None = None,
    ) -> BackendResult:
        """One pass of ``input_ids`` [B, T] under ``ops``: logits [B, T, vocab] and captures.

        Raises ValueError for ids that are not [B, T] or a mask of another shape."""
        return self._forward(handle, input_ids, _mask_for(input_ids, attention_mask), ops, response_mask)

    def raw_forward(self, handle: H, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Logits [B, T, vocab] of one pass with no hooks (the backend's own cost)."""
        return self._raw(handle, input_ids, _mask_for(input_ids, attention_mask))

    def generate(
        self,
        handle: H,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        ops: Sequence[Op],
        *,
        max_new_tokens: int,
        use_cache: bool = True,
    ) -> tuple[Tensor, Captures]:
        """Greedy decoding of exactly ``max_new_tokens`` tokens under ``ops``: (sequences [B, T + new], captures)."""
        mask = _mask_for(input_ids, attention_mask)
        greedy = self._greedy_fn()
        return greedy(
            handle, ops, input_ids, attention_mask=mask, max_new_tokens=max_new_tokens, use_cache=use_cache
        )

    def _forward(
        self, handle: H, ids: Tensor, mask: Tensor, ops: Sequence[Op], response_mask: Tensor | None
    ) -> BackendResult:  # pragma: no cover - interface
        raise NotImplementedError

    def _raw(self, handle: H, ids: Tensor, mask: Tensor) -> Tensor:
        return self._forward(handle, ids, mask, (), None).logits

    @staticmethod
    def _greedy_fn() -> Callable[..., tuple[Tensor, Captures]]:  # pragma: no cover - interface
        """The backend module's ``greedy_generate(handle, ops, input_ids, *, attention_mask, max_new_tokens,
        use_cache)`` (imported on first use: the backends' libraries are optional)."""
        raise NotImplementedError


class HFBackend(_Backend[nn.Module]):
    """PyTorch forward hooks on the transformers model itself (`steerlab.hooks.hf.hooked`)."""

    name = "hf"

    def prepare(self, model: nn.Module, tokenizer: Any = None) -> nn.Module:
        """The model itself: this backend hooks it in place, for the length of each call."""
        return model

    def _forward(
        self, handle: nn.Module, ids: Tensor, mask: Tensor, ops: Sequence[Op], response_mask: Tensor | None
    ) -> BackendResult:
        from steerlab.hooks.hf import hooked

        with hooked(handle, ops, response_mask=response_mask) as session:
            out = handle(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask))
        return BackendResult(out.logits, session.captures)

    def _raw(self, handle: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
        return handle(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits

    @staticmethod
    def _greedy_fn() -> Callable[..., tuple[Tensor, Captures]]:
        from steerlab.hooks.hf import greedy_generate

        return greedy_generate


class TLensBackend(_Backend["TransformerBridge"]):
    """TransformerLens 4 ``TransformerBridge`` hook points (`steerlab.hooks.tlens`)."""

    name = "tlens"

    def prepare(self, model: nn.Module, tokenizer: Any = None) -> TransformerBridge:
        """A TransformerBridge over a deep copy of ``model`` (`steerlab.hooks.tlens.bridge_for`)."""
        from steerlab.hooks.tlens import bridge_for

        return bridge_for(model, tokenizer)

    def _forward(
        self,
        handle: TransformerBridge,
        ids: Tensor,
        mask: Tensor,
        ops: Sequence[Op],
        response_mask: Tensor | None,
    ) -> BackendResult:
        from steerlab.hooks.tlens import hooked_bridge

        with hooked_bridge(handle, ops, attention_mask=mask, response_mask=response_mask) as session:
            logits = handle(ids, attention_mask=mask, position_ids=position_ids(mask))
        return BackendResult(logits, session.captures)

    def _raw(self, handle: TransformerBridge, ids: Tensor, mask: Tensor) -> Tensor:
        return handle(ids, attention_mask=mask, position_ids=position_ids(mask))

    @staticmethod
    def _greedy_fn() -> Callable[..., tuple[Tensor, Captures]]:
        from steerlab.hooks.tlens import greedy_generate

        return greedy_generate


class NNsightBackend(_Backend["NNsight"]):
    """nnsight interventions inside a ``trace`` (`steerlab.hooks.nnsight_backend`); ``raw_forward`` is a
    trace with no interventions: nnsight's own cost without hooks."""

    name = "nnsight"

    def prepare(self, model: nn.Module, tokenizer: Any = None) -> NNsight:
        """An ``nnsight.NNsight`` around a deep copy of ``model`` (`steerlab.hooks.nnsight_backend.nnsight_model`)."""
        from steerlab.hooks.nnsight_backend import nnsight_model

        return nnsight_model(model)

    def _forward(
        self, handle: NNsight, ids: Tensor, mask: Tensor, ops: Sequence[Op], response_mask: Tensor | None
    ) -> BackendResult:
        from steerlab.hooks.nnsight_backend import trace

        result = trace(
            handle,
            ops,
            ids,
            attention_mask=mask,
            response_mask=response_mask,
            position_ids=position_ids(mask),
        )
        return BackendResult(result.output.logits, result.captures)

    @staticmethod
    def _greedy_fn() -> Callable[..., tuple[Tensor, Captures]]:
        from steerlab.hooks.nnsight_backend import greedy_generate

        return greedy_generate


BACKENDS: dict[str, type] = {"hf": HFBackend, "tlens": TLensBackend, "nnsight": NNsightBackend}


def get_backend(name: str) -> HookBackend:
    """The backend called ``name`` ('hf', 'tlens' or 'nnsight'); ValueError for any other name."""
    if name not in BACKENDS:
        raise ValueError(f"unknown hook backend {name!r}; choose from {', '.join(BACKENDS)}")
    return BACKENDS[name]()
