"""Mean negative log-likelihood of the assistant tokens, per example, under a model.

Feeds the perplexity-gap selection of general data (``steerlab.data.interleave``). The mask comes from
``tokenize_chat`` so the NLL covers exactly the tokens training would put a loss on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from steerlab.data.chat import ChatExample
from steerlab.data.tokenize import IGNORE_INDEX, ChatCollator, tokenize_chat


@torch.no_grad()
def response_nll(
    model: Any, tokenizer: Any, examples: Sequence[ChatExample], batch_size: int = 8, max_length: int = 512
) -> list[float]:
    """Mean NLL (nats per token) of each example's assistant tokens, batched with right padding.

    The model runs in eval mode (no dropout) and is put back in its previous mode afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    features = [tokenize_chat(tokenizer, ex, max_length) for ex in examples]
    collate = ChatCollator(tokenizer)
    device = next(model.parameters()).device
    out: list[float] = []
    was_training = model.training
    model.eval()
    try:
        _batched_nll(model, features, examples, collate, device, batch_size, out)
    finally:
        model.train(was_training)
    return out


def _batched_nll(model, features, examples, collate, device, batch_size, out) -> None:
    for b in range(0, len(features), batch_size):
        batch = collate(features[b : b + batch_size])
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits.float()
        labels = batch["labels"].to(device)[:, 1:]
        nll = F.cross_entropy(
            logits[:, :-1].transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
        )
        mask = (labels != IGNORE_INDEX).float()
        empty = (mask.sum(1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"{examples[b + empty[0]].name}: no predictable assistant tokens")
        out.extend((nll * mask).sum(1).div(mask.sum(1)).tolist())
