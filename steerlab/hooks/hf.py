"""The transformers backend: PyTorch forward hooks on the decoder blocks.

Works on any model `steerlab.models.architectures` can find blocks in, PEFT-wrapped models included. A pre-hook
on the model reads the attention mask and the KV-cache length of each call, so token scopes stay right
under padding and cached decoding. All hooks are removed when the ``with`` block exits, however it exits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from steerlab.hooks.ops import Op
from steerlab.hooks.program import HookProgram
from steerlab.models.architectures import decoder_blocks, hidden_size, unwrap

_CACHE_KWARGS = ("cache", "past_key_values")


def _in_backward() -> bool:
    """True while autograd recomputes a checkpointed block (captures must not be recorded twice)."""
    return torch._C._current_graph_task_id() != -1


def _cache_length(cache: object) -> int:
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    if isinstance(cache, tuple | list) and cache and isinstance(cache[0], tuple | list):  # legacy tuples
        return int(cache[0][0].shape[-2])
    return 0


class HFHookSession:
    """A live set of hooks on one model; read ``captures`` after the forward passes."""

    def __init__(self, model: nn.Module, program: HookProgram):
        self.model = model
        self.program = program
        self._info = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def captures(self):
        return self.program.captures

    def new_sequence(self, response_mask: Tensor | None = None) -> None:
        self.program.new_sequence(response_mask)

    def _before_model(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        batch, seq_len = ids.shape[:2] if ids is not None else embeds.shape[:2]
        cache = next((kwargs[k] for k in _CACHE_KWARGS if kwargs.get(k) is not None), None)
        mask = kwargs.get("attention_mask")
        mask = mask if isinstance(mask, Tensor) and mask.dim() == 2 else None
        self._info = self.program.call_info(int(batch), int(seq_len), _cache_length(cache), mask)

    def _block_hook(self, layer: int):
        def hook(module: nn.Module, args: tuple, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if self._info is None or self._info.seq_len != hidden.shape[1]:
                raise RuntimeError(
                    f"block {layer} ran without the model's forward (or with a different length): call the "
                    "model itself inside the hook context"
                )
            new = self.program.run_layer(layer, hidden, self._info, recording=not _in_backward())
            if new is hidden:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    def attach(self) -> None:
        base = unwrap(self.model)
        self._handles.append(base.register_forward_pre_hook(self._before_model, with_kwargs=True))
        blocks = decoder_blocks(self.model)
        for layer in self.program.layers:
            self._handles.append(blocks[layer].register_forward_hook(self._block_hook(layer)))

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()


@contextmanager
def hooked(
    model: nn.Module, ops: Iterable[Op], *, response_mask: Tensor | None = None
) -> Iterator[HFHookSession]:
    """Run ``ops`` on ``model`` for the duration of the ``with`` block.

    >>> with hooked(model, [Add(layer=5, vector=v, alpha=4.0, scope="response")]) as session:
    ...     model.generate(**inputs)
    """
    program = HookProgram(
        ops, n_layers=len(decoder_blocks(model)), d_model=hidden_size(model), response_mask=response_mask
    )
    session = HFHookSession(model, program)
    try:
        session.attach()
        yield session
    finally:
        session.remove()
