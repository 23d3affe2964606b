"""Following ``model.generate`` from a hook session: each generate call is one sequence.

A forward hook sees one call at a time and cannot tell a new prompt from the next step of the previous
one. ``generate`` can: its input is the whole prompt (a KV cache passed with it covers a prefix of that
input), and every forward call until it returns belongs to that sequence. So while a session is open we
wrap the ``generate`` of the transformers model (an instance attribute, removed when the last session on
that model closes) and tell every open session's program when a generate call begins and ends.
PEFT wrappers reach the same instance (``PeftModel.generate`` calls the base model's), so they are
followed too.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from steerlab.hooks.program import HookProgram, SequenceError

_MISSING = object()
# model -> (programs following it, the instance attribute `generate` had before we wrapped it)
_FOLLOWERS: weakref.WeakKeyDictionary[nn.Module, tuple[list[HookProgram], Any]] = weakref.WeakKeyDictionary()


def generate_inputs(args: tuple, kwargs: dict) -> Tensor:
    """The prompt of a ``generate(inputs=None, ...)`` call: ``inputs_embeds`` when given (decoder-only
    models then decode from the embeddings), else ``input_ids``/``inputs``/the first positional argument.

    Raises `SequenceError` when there is none (generate would start from a lone BOS token the session
    cannot see).
    """
    embeds = kwargs.get("inputs_embeds")
    if isinstance(embeds, Tensor):
        return embeds
    for candidate in (kwargs.get("input_ids"), kwargs.get("inputs"), args[0] if args else None):
        if isinstance(candidate, Tensor):
            return candidate
    raise SequenceError(
        "model.generate was called inside a hook session without input_ids (or inputs_embeds): pass the "
        "prompt explicitly so the session knows where it ends"
    )


def _wrap(model: nn.Module, original: Callable[..., Any]) -> None:
    @functools.wraps(original)
    def generate(*args: Any, **kwargs: Any) -> Any:
        followers = list(_FOLLOWERS.get(model, ((), None))[0])
        inputs = generate_inputs(args, kwargs)
        started: list[HookProgram] = []
        try:
            for program in followers:
                program.begin_generate(inputs)
                started.append(program)
            return original(*args, **kwargs)
        finally:
            for program in started:
                program.end_generate()

    model.__dict__["generate"] = generate  # where nn.Module.__setattr__ would put a function


@contextmanager
def following_generate(model: nn.Module, program: HookProgram) -> Iterator[None]:
    """Tell ``program`` about every ``model.generate`` call while the ``with`` block runs."""
    original = getattr(model, "generate", None)
    if not callable(original):
        yield
        return
    if model not in _FOLLOWERS:
        _FOLLOWERS[model] = ([], model.__dict__.get("generate", _MISSING))
        _wrap(model, original)
    programs = _FOLLOWERS[model][0]
    programs.append(program)
    try:
        yield
    finally:
        programs.remove(program)
        if not programs:
            _, previous = _FOLLOWERS.pop(model)
            if previous is _MISSING:
                model.__dict__.pop("generate", None)
            else:
                model.__dict__["generate"] = previous
