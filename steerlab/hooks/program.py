"""A hook program: the ops of one session grouped by layer, plus the state every backend shares.

Backends only differ in *how* they reach the residual stream at block ``l``; they all call
`HookProgram.run_layer` with the hidden state and a `CallInfo`, so steering, ablation and capture are the
same code — and the same numbers — under transformers hooks, TransformerBridge and nnsight.

The program also follows the *sequences* of a session (see `HookProgram.call_info`): which forward call
belongs to which sequence and where that sequence's prompt ends. That is the one place where the rule
lives; the backends only report what each call looks like (its width, its KV-cache length, the cache
object, its inputs) and when a ``generate`` call begins and ends.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steerlab.hooks import scopes
from steerlab.hooks.ops import Capture, Captures, Op

_BOUNDARY_SCOPES = ("prompt", "response", "last")


class SequenceError(RuntimeError):
    """A hook session cannot tell where the prompt of the sequence being run ends (it never guesses)."""


@dataclass
class _Sequence:
    """What a session knows about the sequence it is running."""

    prompt_end: int | None  # absolute position where the response starts (None: response_mask decides)
    response_mask: Tensor | None = None  # [B, S] over the whole sequence, True on response tokens
    declared: bool = False  # told by the caller or by a generate call: every call is read against it
    batch: int | None = None  # input rows; generate may repeat each (beam search, num_return_sequences)
    from_generate: bool = False
    length: int = 0  # positions seen so far (cache length + width of the latest call)
    cache: Any = None  # weak reference to the KV cache the sequence lives in, when it has one
    inputs: Tensor | None = None  # input of the latest call without a cache (ids or embeddings)


def _weak(cache: object) -> Any:
    if cache is None:
        return None
    try:
        return weakref.ref(cache)
    except TypeError:  # e.g. legacy tuple caches: length alone must do
        return None


def _extends(previous: Tensor | None, current: Tensor | None) -> bool:
    """True when ``current`` is ``previous`` plus at least one more position (an uncached decoding step)."""
    if previous is None or current is None or current.dim() < 2 or previous.dim() < 2:
        return False
    if current.shape[0] != previous.shape[0] or current.shape[1] <= previous.shape[1]:
        return False
    if current.shape[2:] != previous.shape[2:]:
        return False
    head = current[:, : previous.shape[1]]
    return bool(torch.equal(head.to(previous.device), previous))


class HookProgram:
    """The ops of one session grouped by layer, the captures, and the sequence the session is in.

    Raises TypeError for something that is not an op, IndexError for a layer outside the model
    (``0 .. n_layers - 1``), ValueError for a vector whose width is not ``d_model`` or two Captures that
    record under one key.
    """

    def __init__(
        self,
        ops: Iterable[Op],
        *,
        n_layers: int,
        d_model: int,
        response_mask: Tensor | None = None,
        prompt_len: int | None = None,
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
        # Only prompt/response/last depend on where a prompt ends; 'all' and explicit masks never ask.
        self.needs_boundary = any(
            isinstance(op.scope, str) and op.scope in _BOUNDARY_SCOPES for op in self.ops
        )
        self._sequence: _Sequence | None = None
        self._generating = 0
        self.new_sequence(response_mask, prompt_len=prompt_len)

    @property
    def layers(self) -> Sequence[int]:
        """The layers that hold at least one op, ascending."""
        return sorted(self.by_layer)

    @property
    def prompt_len(self) -> int | None:
        """Where the current sequence's prompt ends (absolute position), if the session knows it."""
        return None if self._sequence is None else self._sequence.prompt_end

    @property
    def response_mask(self) -> Tensor | None:
        """The ``[B, S]`` response mask the current sequence was declared with, if any."""
        return None if self._sequence is None else self._sequence.response_mask

    # -- sequence boundaries --------------------------------------------------------------------------
    def new_sequence(self, response_mask: Tensor | None = None, *, prompt_len: int | None = None) -> None:
        """Start a new sequence before the next forward call.

        With no argument the session forgets the previous sequence: the next call without a KV cache is a
        new prompt (all of it), whatever it looks like. ``prompt_len`` (the absolute width of the prompt,
        cached prefix and padding included) or ``response_mask`` (``[B, S]`` over the whole sequence)
        *declare* the sequence: every later call — uncached re-runs, cached steps, a cache prefilled
        elsewhere — is read against it until the next ``new_sequence`` or ``generate``.

        Raises ValueError for a negative ``prompt_len`` or a mask that is not ``[B, S]``.
        """
        if prompt_len is not None and (isinstance(prompt_len, bool) or int(prompt_len) < 0):
            raise ValueError(f"prompt_len must be a non-negative int, got {prompt_len!r}")
        if response_mask is not None and (not isinstance(response_mask, Tensor) or response_mask.dim() != 2):
            shape = tuple(response_mask.shape) if isinstance(response_mask, Tensor) else response_mask
            raise ValueError(f"response_mask must be a [batch, seq] boolean tensor, got {shape!r}")
        if prompt_len is None and response_mask is None:
            self._sequence = None
            return
        batch = None if response_mask is None else int(response_mask.shape[0])
        prompt_end = None if prompt_len is None else int(prompt_len)
        self._sequence = _Sequence(prompt_end, response_mask, declared=True, batch=batch)

    def begin_generate(self, inputs: Tensor) -> None:
        """A ``generate`` call starts: a new sequence whose prompt is all of ``inputs`` ([B, P] ids or
        [B, P, d] embeddings; a KV cache passed to it covers a prefix of those P positions).

        Raises `SequenceError` for a generate inside a generate of the same session."""
        if self._generating:  # a generate inside a generate (e.g. an assistant model on the same weights)
            raise SequenceError(
                "model.generate was called while another generate of the same hook session was running; "
                "steer each model in its own session"
            )
        batch, width = int(inputs.shape[0]), int(inputs.shape[1])
        self._sequence = _Sequence(width, declared=True, batch=batch, from_generate=True, inputs=inputs)
        self._generating += 1

    def end_generate(self) -> None:
        """The ``generate`` call returned: its sequence stays current (a caller may continue its cache),
        but a later uncached call is no longer read against it without being told."""
        self._generating -= 1
        if self._sequence is not None:
            self._sequence.declared = False

    def call_info(
        self,
        batch: int,
        seq_len: int,
        past_len: int,
        attention_mask: Tensor | None,
        *,
        cache: object = None,
        inputs: Tensor | None = None,
    ) -> scopes.CallInfo:
        """Place one forward call in its sequence and build its CallInfo.

        ``batch``/``seq_len``: the call's rows and new positions; ``past_len``: positions already in its KV
        cache; ``cache``: that cache object (to recognise the sequence it continues); ``inputs``: its token
        ids (or embeddings). The rule (README, "Sessions and sequences"):

        * inside ``generate`` the sequence is the generate call's: its prompt is all of the generate input;
        * a declared sequence (``new_sequence(prompt_len=…)`` / ``response_mask``) reads every call;
        * otherwise a call without a KV cache starts a new sequence that is all prompt, and a cached call
          continues the sequence whose cache it carries (positions after the prompt are response).

        Raises `SequenceError` (when an op's scope needs the boundary) for a call it cannot place: a cache
        the session did not fill (a prefilled prefix), or an uncached call that re-runs the previous
        sequence with tokens added (an uncached decoding step, or a new prompt that happens to extend it).
        """
        seq = self._place(batch, seq_len, past_len, cache, inputs)
        if cache is not None and (seq.cache is None or seq.cache() is not cache):
            seq.cache = _weak(cache)
        if past_len == 0 and inputs is not None and not seq.from_generate:
            seq.inputs = inputs
        seq.length = past_len + seq_len
        self._sequence = seq
        expand = 1
        if seq.from_generate and seq.batch and batch != seq.batch:
            if batch % seq.batch:
                raise SequenceError(
                    f"a forward call of generate has {batch} rows, not a multiple of the {seq.batch} input rows"
                )
            expand = batch // seq.batch  # generate repeats each row (beam search, num_return_sequences)
        return scopes.CallInfo(
            batch=batch,
            seq_len=seq_len,
            past_len=past_len,
            attention_mask=attention_mask,
            prompt_len=seq.prompt_end,
            response_mask=seq.response_mask,
            expand=expand,
        )

    def _place(
        self, batch: int, seq_len: int, past_len: int, cache: object, inputs: Tensor | None
    ) -> _Sequence:
        """The sequence a forward call belongs to (the rule of `call_info`); raises `SequenceError`."""
        seq = self._sequence
        if seq is not None and (seq.declared or self._generating):
            return seq
        if past_len == 0:
            if (
                seq is not None
                and seq.inputs is not None
                and inputs is not None
                and self.needs_boundary
                and _extends(seq.inputs, inputs)
            ):
                added = int(inputs.shape[1]) - int(seq.inputs.shape[1])
                raise SequenceError(
                    f"this forward call re-runs the previous sequence ({seq.inputs.shape[1]} positions) with "
                    f"{added} more and no KV cache, so the hook session cannot tell whether it is the next "
                    "step of an uncached decoding loop or a new prompt. Say which: "
                    f"session.new_sequence(prompt_len={seq.prompt_end}) to keep the prompt (positions "
                    f"from {seq.prompt_end} on are response), or session.new_sequence() for a new prompt"
                )
            return _Sequence(seq_len, batch=batch)

        if seq is not None and self._continues(seq, past_len, cache):
            return seq
        if self.needs_boundary:
            raise SequenceError(
                f"this forward call continues a KV cache of {past_len} positions that this hook "
                "session did not fill (a prefilled prefix cache, or another cache), so it cannot "
                "know where the prompt ends. Pass the cache to model.generate(..., past_key_values="
                "cache) with the whole prompt as input_ids, which the session follows, or declare "
                "the prompt first: session.new_sequence(prompt_len=<prompt width, cached prefix "
                "included>)"
            )
        return _Sequence(past_len + seq_len, batch=batch)

    @staticmethod
    def _continues(seq: _Sequence, past_len: int, cache: object) -> bool:
        """A cached call continues ``seq`` when it carries the cache the sequence filled (a cache cropped
        back, as assisted decoding does, still continues it); with no cache object to compare, when the
        cache holds exactly the positions the session has seen."""
        if seq.cache is not None and cache is not None:
            return seq.cache() is cache and past_len <= seq.length
        return past_len == seq.length

    def bind_cache(self, cache: object) -> None:
        """After a forward call: the KV cache it returned belongs to the current sequence."""
        if self._sequence is not None and cache is not None:
            self._sequence.cache = _weak(cache)

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


class ProgramSession:
    """What every backend's session shares: the `HookProgram` it runs, its captures, new sequences."""

    def __init__(self, program: HookProgram) -> None:
        self.program = program

    @property
    def captures(self) -> Captures:
        """What the session's Capture ops recorded so far."""
        return self.program.captures

    def new_sequence(self, response_mask: Tensor | None = None, *, prompt_len: int | None = None) -> None:
        """Start a new sequence before the next call; see `HookProgram.new_sequence`."""
        self.program.new_sequence(response_mask, prompt_len=prompt_len)
