"""The nnsight backend: the same ops, run on the block outputs inside an nnsight ``trace``.

nnsight (0.5 on) executes the body of a ``trace`` against real values (interleaved with the model's forward),
so ``blocks[l].output`` is a real tensor there and `HookProgram.run_layer` — the same ops code as every
backend — runs on it unchanged; assigning ``blocks[l].output`` replaces the block's output. Blocks that
return a tuple (older transformers, some architectures) get their first element replaced. Captures are
recorded into the program's `Captures` from inside the trace, so they come back as real tensors.

`hooked_nnsight` opens a session (`NNsightHookSession`): ``session.forward`` is one trace,
``session.generate`` runs transformers' own decoding with each forward step traced, and the session places
every call in its sequence as the transformers backend does. nnsight 0.5 (the declared floor) and 0.8 are
tested.

Wrapping a model with ``nnsight.NNsight`` swaps every submodule's ``forward`` for an nnsight controller
(transparent outside a trace, but not free); `nnsight_model` therefore wraps a deep copy unless asked not
to. Build the wrapper once per model.
"""

from __future__ import annotations

import copy as copy_module
import inspect
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Unpack

from torch import Tensor, nn

from steerlab.hooks.decoding import GreedyOptions, greedy_loop, greedy_settings
from steerlab.hooks.following import generate_inputs
from steerlab.hooks.hf import output_cache, place_call
from steerlab.hooks.ops import Captures, Op
from steerlab.hooks.program import HookProgram, ProgramSession
from steerlab.hooks.scopes import CallInfo
from steerlab.models.architectures import decoder_blocks, hidden_size

if TYPE_CHECKING:
    from nnsight import NNsight  # no type information: NNsight and its Envoys read as Any to mypy


@dataclass
class NNsightResult:
    """One traced forward: the model's own output and what the Capture ops recorded."""

    output: Any  # the model's output (e.g. CausalLMOutputWithPast)
    captures: Captures


def nnsight_model(model: nn.Module, *, copy: bool = True) -> NNsight:
    """An ``nnsight.NNsight`` wrapper around ``model`` (a deep copy unless ``copy=False``)."""
    from nnsight import NNsight

    return NNsight(copy_module.deepcopy(model) if copy else model)


def _underlying(wrapped: NNsight) -> nn.Module:
    module: nn.Module = wrapped._module
    return module


def block_envoys(wrapped: NNsight) -> list[Any]:
    """The envoys of the decoder blocks, found by the module path of `decoder_blocks` (PEFT included).

    Raises ValueError when the blocks are not in the wrapped model's module tree."""
    module = _underlying(wrapped)
    blocks = decoder_blocks(module)
    path = next((name for name, sub in module.named_modules() if sub is blocks), None)
    if path is None:
        raise ValueError(f"cannot locate the decoder blocks of {type(module).__name__} in its module tree")
    envoy = wrapped
    for part in path.split("."):
        envoy = getattr(envoy, part)
    return [envoy[i] for i in range(len(blocks))]


def new_program(
    wrapped: NNsight, ops: Iterable[Op], response_mask: Tensor | None = None, prompt_len: int | None = None
) -> HookProgram:
    """The `HookProgram` of ``ops`` for the wrapped model's depth and width (raises as `HookProgram` does)."""
    module = _underlying(wrapped)
    return HookProgram(
        ops,
        n_layers=len(decoder_blocks(module)),
        d_model=hidden_size(module),
        response_mask=response_mask,
        prompt_len=prompt_len,
    )


def _intervene(blocks: list[Any], program: HookProgram, info: CallInfo) -> None:
    """Inside a trace: run each hooked layer's ops on the block output, in execution order."""
    for layer in program.layers:
        output = blocks[layer].output
        hidden = output[0] if isinstance(output, tuple) else output
        new = program.run_layer(layer, hidden, info)
        if new is not hidden:
            blocks[layer].output = (new, *output[1:]) if isinstance(output, tuple) else new


_MISSING = object()


def cache_kwarg(model: nn.Module) -> str:
    """The name this transformers model's forward takes its KV cache by (``cache`` from 5.2x on)."""
    parameters = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


class NNsightHookSession(ProgramSession):
    """A hook program run through nnsight traces; one ``forward`` or ``generate`` call at a time.

    The session places every call in its sequence exactly as the transformers backend does
    (`HookProgram.call_info`): ``forward`` reports the call's inputs and KV cache, ``generate`` runs
    transformers' own decoding (greedy, sampling, beam search, a prefilled ``cache=``) with each forward
    step traced by nnsight, and tells the program that one generate call is one sequence.
    """

    def __init__(self, wrapped: NNsight, program: HookProgram):
        super().__init__(program)
        self.wrapped = wrapped
        self.blocks = block_envoys(wrapped)

    def forward(self, input_ids: Tensor | None = None, **kwargs: Any) -> Any:
        """One forward call of the wrapped model (``input_ids`` or ``inputs_embeds`` [B, T], and the model's
        keyword arguments: ``attention_mask`` [B, past + T], ``cache``/``past_key_values``, ...) under the
        session's ops; returns the model's output."""
        args = () if input_ids is None else (input_ids,)
        return self._traced(args, kwargs)

    def _traced(self, args: tuple, kwargs: dict) -> Any:
        info = place_call(self.program, args, kwargs)
        if not args and isinstance(
            kwargs.get("input_ids"), Tensor
        ):  # nnsight 0.5 runs no model on kwargs alone
            kwargs = dict(kwargs)
            args = (kwargs.pop("input_ids"),)
        with self.wrapped.trace(*args, **kwargs):
            _intervene(self.blocks, self.program, info)
            output = self.wrapped.output.save()
        self.program.bind_cache(output_cache(output))
        return output

    def generate(self, input_ids: Tensor | None = None, **generate_kwargs: Any) -> Any:
        """``model.generate`` of the wrapped transformers model, every forward step one nnsight trace.

        Takes what transformers' ``generate`` takes (``attention_mask``, ``max_new_tokens``, ``do_sample``,
        ``num_beams``, ``num_return_sequences``, ``cache=``/``past_key_values=`` a prefilled prefix, ...)
        and returns what it returns. One call is one sequence whose prompt is all of ``input_ids``.
        Raises TypeError for a wrapped model without ``generate``, `SequenceError` as `HookProgram` does.
        """
        module = _underlying(self.wrapped)
        run_generate = getattr(module, "generate", None)
        if not callable(run_generate):
            raise TypeError(f"NNsightHookSession.generate: {type(module).__name__} has no generate method")
        args = () if input_ids is None else (input_ids,)
        self.program.begin_generate(generate_inputs(args, generate_kwargs))
        previous = module.__dict__.get("forward", _MISSING)
        plain_forward = module.forward
        stepping = False

        def traced_forward(*call_args: Any, **call_kwargs: Any) -> Any:
            nonlocal stepping
            if stepping:  # the traced call itself: run the model
                return plain_forward(*call_args, **call_kwargs)
            stepping = True
            try:
                return self._traced(call_args, call_kwargs)
            finally:
                stepping = False

        module.forward = traced_forward
        try:
            return run_generate(*args, **generate_kwargs)
        finally:
            if previous is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous
            self.program.end_generate()


@contextmanager
def hooked_nnsight(
    wrapped: NNsight,
    ops: Iterable[Op],
    *,
    response_mask: Tensor | None = None,
    prompt_len: int | None = None,
) -> Iterator[NNsightHookSession]:
    """A session of ``ops`` on an nnsight-wrapped model (see `nnsight_model`): call ``session.forward``
    and ``session.generate`` inside the ``with`` block. ``response_mask``/``prompt_len`` declare the first
    sequence (`HookProgram.new_sequence`). Nothing stays attached after a trace, so exit is trivial.
    """
    yield NNsightHookSession(wrapped, new_program(wrapped, ops, response_mask, prompt_len))


def trace(
    wrapped: NNsight,
    ops: Iterable[Op],
    input_ids: Tensor,
    *,
    attention_mask: Tensor | None = None,
    response_mask: Tensor | None = None,
    **forward_kwargs: Any,
) -> NNsightResult:
    """Run ``ops`` during one forward pass of the nnsight-wrapped model."""
    if attention_mask is not None:
        forward_kwargs["attention_mask"] = attention_mask
    with hooked_nnsight(wrapped, ops, response_mask=response_mask) as session:
        output = session.forward(input_ids, **forward_kwargs)
    return NNsightResult(output=output, captures=session.captures)


def greedy_generate(
    wrapped: NNsight,
    ops: Iterable[Op],
    input_ids: Tensor,
    **options: Unpack[GreedyOptions],
) -> tuple[Tensor, Captures]:
    """Greedy decoding by a hand-written loop of traces, with or without a KV cache; (sequences, captures).

    Positions follow the attention mask (left padding), as in transformers' ``generate``; no early stop
    on EOS, so every row gets ``max_new_tokens`` new tokens. The prompt is declared to the session, so
    uncached steps (which re-run the grown sequence) are read against it. Options: `GreedyOptions`.
    """
    use_cache = greedy_settings(input_ids, options)[2]
    cache_name = cache_kwarg(_underlying(wrapped))
    with hooked_nnsight(wrapped, ops, prompt_len=int(input_ids.shape[1])) as session:

        def step(tokens: Tensor, mask: Tensor, positions: Tensor, cache: object) -> tuple[Tensor, object]:
            kwargs: dict[str, Any] = {"use_cache": use_cache}
            if cache is not None:
                kwargs[cache_name] = cache
            output = session.forward(tokens, attention_mask=mask, position_ids=positions, **kwargs)
            return output.logits, output_cache(output) if use_cache else None

        sequences = greedy_loop(step, input_ids, options)
    return sequences, session.captures
