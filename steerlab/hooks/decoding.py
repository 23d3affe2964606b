"""Position ids and the hand-written greedy loop that the TransformerLens and nnsight backends share.

transformers' ``generate`` numbers positions over real tokens only; a raw forward (and TransformerBridge)
would otherwise number pad positions, so left-padded rows would disagree with their unpadded selves.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# one decoding step: (tokens to run [B, t], attention mask [B, S], their position ids [B, t], KV cache or
# None) -> (logits [B, t, vocab], the cache to pass to the next step, or None without one)
Step = Callable[[Tensor, Tensor, Tensor, object], tuple[Tensor, object]]


def position_ids(attention_mask: Tensor) -> Tensor:
    """[B, S] positions counted over real tokens only (pad positions get 1), as transformers' ``generate``."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)


def greedy_loop(
    step: Step, input_ids: Tensor, attention_mask: Tensor | None, max_new_tokens: int, use_cache: bool
) -> Tensor:
    """Greedy decoding of exactly ``max_new_tokens`` tokens (no EOS stop): [B, T] -> [B, T + new].

    With ``use_cache`` the first step runs the whole prompt and each later one only the newest token with
    the cache the previous step returned; without it every step re-runs the grown sequence. Raises
    ValueError for ``max_new_tokens < 1``.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
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
