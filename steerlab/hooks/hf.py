"""The transformers backend: PyTorch forward hooks on the decoder blocks.

Works on any model `steerlab.models.architectures` can find blocks in, PEFT-wrapped models included. A
pre-hook on the model reads the inputs, the attention mask and the KV cache of each call, a post-hook the
cache it returns, and ``model.generate`` is followed while the session is open (`steerlab.hooks.following`),
so the session knows which sequence each call belongs to and where its prompt ends (the rule:
`HookProgram.call_info`, README "Sessions and sequences"). All hooks are removed when the ``with`` block
exits, however it exits.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Unpack

import torch
from torch import Tensor, nn
from transformers import GenerationConfig

from steerlab.hooks.checkpointing import OutsideCheckpoint, hooks_inside_checkpoint
from steerlab.hooks.decoding import GreedyOptions, greedy_settings
from steerlab.hooks.following import following_generate
from steerlab.hooks.ops import Captures, Op
from steerlab.hooks.program import HookProgram, ProgramSession
from steerlab.hooks.scopes import CallInfo
from steerlab.models.architectures import decoder_blocks, hidden_size, unwrap

_CACHE_KWARGS = ("cache", "past_key_values")
BlockOutput = Tensor | tuple[Tensor, ...]  # what a decoder block returns: the hidden state, alone or first


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


def output_cache(output: object) -> object:
    """The KV cache a transformers forward returned (``cache`` on 5.2x, ``past_key_values`` before)."""
    for name in _CACHE_KWARGS:
        cache = getattr(output, name, None)
        if cache is not None:
            return cache
    return None


def place_call(program: HookProgram, args: tuple, kwargs: dict[str, Any]) -> CallInfo:
    """The `CallInfo` of one transformers forward call, read from its arguments (``input_ids`` or
    ``inputs_embeds`` [B, T, ...], ``attention_mask`` [B, past + T], the KV cache under either name).

    Raises ValueError when the call has no [batch, seq] input, `SequenceError` when the program cannot
    place it (`HookProgram.call_info`)."""
    inputs = kwargs.get("input_ids", args[0] if args else None)
    inputs = inputs if inputs is not None else kwargs.get("inputs_embeds")
    if not isinstance(inputs, Tensor) or inputs.dim() < 2:
        raise ValueError(
            "a hooked model was called without input_ids (or inputs_embeds) as a [batch, seq] tensor"
        )
    cache = next((kwargs[k] for k in _CACHE_KWARGS if kwargs.get(k) is not None), None)
    mask = kwargs.get("attention_mask")
    mask = mask if isinstance(mask, Tensor) and mask.dim() == 2 else None
    batch, seq_len = int(inputs.shape[0]), int(inputs.shape[1])
    return program.call_info(batch, seq_len, _cache_length(cache), mask, cache=cache, inputs=inputs)


class HFHookSession(ProgramSession):
    """A live set of hooks on one model; read ``captures`` after the forward passes."""

    def __init__(self, model: nn.Module, program: HookProgram):
        super().__init__(program)
        self.model = model
        self._info: CallInfo | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._guards: list[OutsideCheckpoint] = []
        self._following = ExitStack()

    def _before_model(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._info = place_call(self.program, args, kwargs)

    def _after_model(self, module: nn.Module, args: tuple, output: object) -> None:
        self.program.bind_cache(output_cache(output))

    def _apply(self, layer: int, output: BlockOutput) -> BlockOutput:
        hidden = output[0] if isinstance(output, tuple) else output
        if self._info is None or self._info.seq_len != hidden.shape[1]:
            raise RuntimeError(
                f"block {layer} ran without the model's forward (or with a different length): call the "
                "model itself inside the hook context"
            )
        new = self.program.run_layer(layer, hidden, self._info, recording=not _in_backward())
        if new is hidden:
            return output
        return (new, *output[1:]) if isinstance(output, tuple) else new

    def _block_hook(
        self, layer: int, guard: OutsideCheckpoint | None
    ) -> Callable[[nn.Module, tuple, BlockOutput], BlockOutput | None]:
        def hook(module: nn.Module, args: tuple, output: BlockOutput) -> BlockOutput | None:
            if guard is not None:
                if guard.inside:  # the checkpointed call: the ops run on its output, outside
                    return None
                if guard.installed and _in_backward():  # its recomputation: it never saw the ops
                    return None
                if getattr(module, "gradient_checkpointing", False) and module.training:
                    raise RuntimeError(
                        f"gradient checkpointing was switched on for block {layer} after the hook session "
                        "opened; on this transformers version the checkpoint would wrap the hooks and "
                        "recompute the block without them. Enable checkpointing before hooked(...)"
                    )
            new = self._apply(layer, output)
            return None if new is output else new

        return hook

    def attach(self) -> None:
        """Register the model pre/post hooks, the block hooks (outside checkpoints) and follow ``generate``.

        Raises `steerlab.models.architectures.UnknownArchitectureError` for a model whose blocks it cannot find.
        """
        base = unwrap(self.model)
        self._following.enter_context(following_generate(base, self.program))
        self._handles.append(base.register_forward_pre_hook(self._before_model, with_kwargs=True))
        self._handles.append(base.register_forward_hook(self._after_model))
        blocks = decoder_blocks(self.model)
        for layer in self.program.layers:
            guard = None
            if hooks_inside_checkpoint(blocks[layer]):
                guard = OutsideCheckpoint(blocks[layer], functools.partial(self._apply, layer))
                guard.install()
                self._guards.append(guard)
            self._handles.append(blocks[layer].register_forward_hook(self._block_hook(layer, guard)))

    def remove(self) -> None:
        """Remove every hook and checkpoint wrapper this session added (safe to call twice)."""
        while self._handles:
            self._handles.pop().remove()
        while self._guards:
            self._guards.pop().remove()
        self._following.close()


@contextmanager
def hooked(
    model: nn.Module,
    ops: Iterable[Op],
    *,
    response_mask: Tensor | None = None,
    prompt_len: int | None = None,
) -> Iterator[HFHookSession]:
    """Run ``ops`` on ``model`` for the duration of the ``with`` block.

    ``response_mask`` (``[B, S]``) or ``prompt_len`` declare the first sequence (see
    `HookProgram.new_sequence`); without them the session follows the calls (README "Sessions and
    sequences"). Raises `steerlab.hooks.SequenceError` from a forward call it cannot place.

    >>> with hooked(model, [Add(layer=5, vector=v, alpha=4.0, scope="response")]) as session:
    ...     model.generate(**inputs)
    ...     model.generate(**other_inputs)  # a new sequence: its own prompt
    """
    program = HookProgram(
        ops,
        n_layers=len(decoder_blocks(model)),
        d_model=hidden_size(model),
        response_mask=response_mask,
        prompt_len=prompt_len,
    )
    session = HFHookSession(model, program)
    try:
        session.attach()
        yield session
    finally:
        session.remove()


# cleared from the model's own generation_config: no EOS stop and no minimum (exactly max_new_tokens are
# decoded), and no sampling knobs (Qwen's configs set temperature/top_p/top_k, which greedy decoding warns on)
_FIXED_LENGTH_GREEDY: dict[str, None] = dict.fromkeys(
    ("min_new_tokens", "eos_token_id", "temperature", "top_p", "top_k")
)


def greedy_config(model: nn.Module, max_new_tokens: int, use_cache: bool) -> GenerationConfig:
    """Greedy decoding of exactly ``max_new_tokens`` tokens with no EOS stop (and no EOS suppression).

    Raises TypeError for a model without a transformers ``generation_config``."""
    base = getattr(model, "generation_config", None)
    if not isinstance(base, GenerationConfig):
        raise TypeError(f"{type(model).__name__} has no transformers generation_config: it cannot generate")
    config = copy.deepcopy(base)
    config.update(do_sample=False, max_new_tokens=max_new_tokens, use_cache=use_cache, **_FIXED_LENGTH_GREEDY)
    return config


def greedy_generate(
    model: nn.Module,
    ops: Iterable[Op],
    input_ids: Tensor,
    **options: Unpack[GreedyOptions],
) -> tuple[Tensor, Captures]:
    """Greedy ``model.generate`` under ``ops``: exactly ``max_new_tokens`` new tokens, no EOS stop;
    (sequences [B, T + new], captures). Options: `GreedyOptions`. Raises TypeError for a model that cannot
    generate, ValueError for ``max_new_tokens < 1``."""
    mask, max_new_tokens, use_cache = greedy_settings(input_ids, options)
    with hooked(model, ops) as session:
        run_generate = getattr(model, "generate", None)  # read inside: the session wraps it
        if not callable(run_generate):
            raise TypeError(f"greedy_generate: {type(model).__name__} has no generate method")
        sequences = run_generate(
            input_ids=input_ids,
            attention_mask=mask,
            generation_config=greedy_config(model, max_new_tokens, use_cache),
        )
    return sequences, session.captures
