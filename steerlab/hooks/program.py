"""A hook program: the ops of one session grouped by layer, plus the state every backend shares.

Backends only differ in *how* they reach the residual stream at block ``l``; they all call
`HookProgram.run_layer` with the hidden state and a `CallInfo`, so steering, ablation and capture are the
same code — and the same numbers — under transformers hooks, TransformerBridge and nnsight.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor

from steerlab.hooks import scopes
from steerlab.hooks.ops import Capture, Captures, Op


class HookProgram:
    def __init__(
        self, ops: Iterable[Op], *, n_layers: int, d_model: int, response_mask: Tensor | None = None
    ):
        self.ops: tuple[Op, ...] = tuple(ops)
        for op in self.ops:
            if not isinstance(op, Op):
                raise TypeError(f"expected hook ops (Add, Ablate, SetProjection, Capture), got {op!r}")
            if not 0 <= op.layer < n_layers:
                raise IndexError(
                    f"layer {op.layer} is out of range: the model has {n_layers} decoder blocks "
                    f"(valid layers 0..{n_layers - 1}, where layer l is the output of block l)"
                )
            if op.vector_width is not None and op.vector_width != d_model:
                raise ValueError(
                    f"{type(op).__name__} at layer {op.layer}: vector width {op.vector_width} does not match "
                    f"the model's hidden size {d_model}"
                )
        keys = [op.record_key for op in self.ops if isinstance(op, Capture)]
        duplicates = sorted({k for k in keys if keys.count(k) > 1}, key=str)
        if duplicates:
            raise ValueError(
                f"several Capture ops record under the same key {duplicates}: give each a distinct key= "
                "(e.g. Capture(3, scope='prompt', key='3/prompt'))"
            )
        self.by_layer: dict[int, list[Op]] = {}
        for op in self.ops:
            self.by_layer.setdefault(op.layer, []).append(op)
        self.captures = Captures()
        self.response_mask = response_mask
        self.prompt_len: int | None = None

    @property
    def layers(self) -> Sequence[int]:
        return sorted(self.by_layer)

    def new_sequence(self, response_mask: Tensor | None = None) -> None:
        """Forget where the prompt ended (and optionally set a new response mask) before a new input."""
        self.prompt_len = None
        self.response_mask = response_mask

    def call_info(
        self, batch: int, seq_len: int, past_len: int, attention_mask: Tensor | None
    ) -> scopes.CallInfo:
        """Build the CallInfo of a forward call, learning the prompt length from the session's first call."""
        if self.prompt_len is None and past_len == 0:
            self.prompt_len = seq_len
        return scopes.CallInfo(
            batch=batch,
            seq_len=seq_len,
            past_len=past_len,
            attention_mask=attention_mask,
            prompt_len=self.prompt_len,
            response_mask=self.response_mask,
        )

    def run_layer(
        self, layer: int, hidden: Tensor, info: scopes.CallInfo, *, recording: bool = True
    ) -> Tensor:
        """Apply this layer's ops in order; returns a new tensor (or ``hidden`` itself if nothing changed)."""
        masks: dict[int, Tensor] = {}
        for op in self.by_layer.get(layer, ()):
            key = id(op.scope) if isinstance(op.scope, Tensor) else hash(op.scope)
            if key not in masks:
                masks[key] = scopes.resolve(op.scope, info, hidden.device)
            if isinstance(op, Capture):
                if recording:
                    self.captures.record(op, hidden, masks[key])
            else:
                hidden = op.apply(hidden, masks[key])
        return hidden
