"""Token scopes: which positions of a forward call an operation touches.

A scope is one of ``"all"``, ``"prompt"``, ``"response"``, ``"last"`` or an explicit ``[B, T]`` boolean
mask over the whole sequence. Scopes are resolved per forward call from a `CallInfo`, so they stay correct
under left and right padding and during KV-cached decoding, where each call sees only the newest token:

* ``all``       every non-padding position of the call;
* ``prompt``    positions before the response (see below);
* ``response``  positions of the response; while generating, every decoded token;
* ``last``      the last prompt token (the position that predicts the first response token); during
                cached decoding it fires on no new token, so cached and uncached generation agree;
* mask          ``mask[:, past:past + T]`` of an explicit mask that covers the whole sequence; positions
                beyond its width are off.

Where the response starts is the session's business (`steerlab.hooks.program.HookProgram.call_info`, and
the README's "Sessions and sequences"): it gives each call the absolute ``prompt_len`` of its sequence, or
an explicit ``response_mask`` (teacher-forced chats), which wins.

Inside ``generate`` a forward call may have ``expand`` times the input rows (beam search,
``num_return_sequences``: each input row repeated in place); whole-sequence masks given for the input
rows are repeated the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

ScopeName = Literal["all", "prompt", "response", "last"]
Scope = ScopeName | Tensor
SCOPE_NAMES: tuple[str, ...] = ("all", "prompt", "response", "last")


@dataclass(frozen=True)
class CallInfo:
    """What the hook layer knows about the forward call being run."""

    batch: int
    seq_len: int  # T: positions in this call
    past_len: int = 0  # positions already in the KV cache before this call
    attention_mask: Tensor | None = None  # [B, past_len + T] (or [B, T]); 1 = real token
    prompt_len: int | None = None  # absolute width of the prompt, when known
    response_mask: Tensor | None = None  # [B, S] over the whole sequence, True on response tokens
    expand: int = 1  # call rows per input row (generate's beam search / num_return_sequences)

    def valid(self, device: torch.device) -> Tensor:
        """[B, T] True on non-padding positions of this call."""
        if self.attention_mask is None:
            return torch.ones(self.batch, self.seq_len, dtype=torch.bool, device=device)
        return self.attention_mask[:, -self.seq_len :].to(device=device, dtype=torch.bool)


def check_scope(scope: Scope) -> None:
    """ValueError for a scope that is neither a known name nor a ``[B, T]`` mask."""
    if isinstance(scope, Tensor):
        if scope.dim() != 2:
            raise ValueError(f"an explicit scope mask must be [batch, seq], got shape {tuple(scope.shape)}")
        return
    if scope not in SCOPE_NAMES:
        raise ValueError(f"unknown token scope {scope!r}; use one of {SCOPE_NAMES} or a [B, T] mask")


def _window(mask: Tensor, info: CallInfo, device: torch.device) -> Tensor:
    """The part of a whole-sequence mask that this call covers; positions past its width are False."""
    if info.expand > 1 and mask.shape[0] * info.expand == info.batch:
        mask = mask.repeat_interleave(info.expand, dim=0)
    if mask.shape[0] != info.batch:
        raise ValueError(f"scope mask has batch {mask.shape[0]} but the forward call has batch {info.batch}")
    window = mask[:, info.past_len : info.past_len + info.seq_len].to(device=device, dtype=torch.bool)
    missing = info.seq_len - window.shape[1]
    if missing > 0:
        window = torch.cat([window, window.new_zeros(info.batch, missing)], dim=1)
    return window


def _response_positions(info: CallInfo, device: torch.device) -> Tensor:
    if info.response_mask is not None:
        return _window(info.response_mask, info, device)
    positions = torch.arange(info.past_len, info.past_len + info.seq_len, device=device)
    start = info.prompt_len if info.prompt_len is not None else info.past_len + info.seq_len
    return (positions >= start).unsqueeze(0).expand(info.batch, -1)


def resolve(scope: Scope, info: CallInfo, device: torch.device) -> Tensor:
    """A [B, T] boolean mask of the positions of this call that ``scope`` selects (padding never).

    Raises ValueError for an unknown scope or an explicit mask whose batch does not fit the call."""
    valid = info.valid(device)
    if isinstance(scope, Tensor):
        return _window(scope, info, device) & valid
    if scope == "all":
        return valid
    if scope == "response":
        return _response_positions(info, device) & valid
    if scope == "prompt":
        return ~_response_positions(info, device) & valid
    if scope == "last":
        prompt = ~_response_positions(info, device) & valid
        positions = torch.arange(info.seq_len, device=device).expand(info.batch, -1)
        last = torch.where(prompt, positions, -1).amax(dim=1, keepdim=True)
        return (positions == last) & prompt
    raise ValueError(f"unknown token scope {scope!r}")
