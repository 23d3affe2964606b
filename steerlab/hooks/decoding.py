"""Position ids and the hand-written greedy loop that the TransformerLens and nnsight backends share.

transformers' ``generate`` numbers positions over real tokens only; a raw forward (and TransformerBridge)
would otherwise number pad positions, so left-padded rows would disagree with their unpadded selves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict

import torch
from torch import Tensor

# one decoding step: (tokens to run [B, t], attention mask [B, S], their position ids [B, t], KV cache or
# None) -> (logits [B, t, vocab], the cache to pass to the next step, or None without one)
Step = Callable[[Tensor, Tensor, Tensor, object], tuple[Tensor, object]]


class GreedyOptions(TypedDict, total=False):
    """The keyword options every backend's ``greedy_generate`` takes (their defaults: `greedy_settings`)."""

    attention_mask: Tensor | None  # [B, T], 1 on real tokens (left padding); default: all ones
    max_new_tokens: int  # default 16, >= 1
    use_cache: bool  # default True: a KV cache after the prompt; False: re-run the grown sequence


def greedy_settings(input_ids: Tensor, options: GreedyOptions) -> tuple[Tensor, int, bool]:
    """``(attention mask [B, T], max_new_tokens, use_cache)`` with the defaults filled in; ValueError for
    ``max_new_tokens < 1``."""
    mask = options.get("attention_mask")
    max_new_tokens = options.get("max_new_tokens", 16)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return (
        (torch.ones_like(input_ids) if mask is None else mask),
        max_new_tokens,
        options.get("use_cache", True),
    )


def position_ids(attention_mask: Tensor) -> Tensor:
    """[B, S] positions counted over real tokens only (pad positions get 1), as transformers' ``generate``."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)


def greedy_loop(step: Step, input_ids: Tensor, options: GreedyOptions) -> Tensor:
    """Greedy decoding of exactly ``max_new_tokens`` tokens (no EOS stop): [B, T] -> [B, T + new].

    With ``use_cache`` the first step runs the whole prompt and each later one only the newest token with
    the cache the previous step returned; without it every step re-runs the grown sequence. Raises
    ValueError for ``max_new_tokens < 1``.
    """
    mask, max_new_tokens, use_cache = greedy_settings(input_ids, options)
    sequences: Tensor = input_ids
    cache: object = None
    for _ in range(max_new_tokens):
        positions = position_ids(mask)
        if use_cache and cache is not None:
            logits, cache = step(sequences[:, -1:], mask, positions[:, -1:], cache)
        else:
            logits, cache = step(sequences, mask, positions, None)
        next_token = logits[:, -1].argmax(-1, keepdim=True)
        sequences = torch.cat([sequences, next_token], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return sequences
