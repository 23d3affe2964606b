"""Answer NLL: steerlab's one definition of "how likely is this answer under the model".

The tokens scored are the assistant turn's tokens in the *full chat-template rendering* of the chat, located
by the same assistant mask training uses (`steerlab.data.tokenize.tokenize_chat`), so the token boundaries
are the ones the model trains on. One switch, ``end_of_turn``, says whether the template's end-of-turn
token(s) after the answer count:

- ``end_of_turn=True`` (`response_nll` default): exactly the tokens training puts a loss on. The
  perplexity-gap selection of general data (``steerlab.data.interleave``) and the log-prob score use it.
- ``end_of_turn=False`` (`answer_nll` default): the answer's own tokens. Generated answers are often cut at
  ``max_new_tokens``; scoring an end-of-turn the model never produced would count the cut as incoherence.
  The steering sweep's perplexity, the perplexity coherence score and extraction's steering check use it.

Before this module the second reading was computed apart (rendered prompt + separately tokenized answer),
so the two numbers differed in their token boundaries as well as in the end-of-turn token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from steerlab.data.chat import ChatExample, Messages
from steerlab.data.tokenize import IGNORE_INDEX, ChatCollator, tokenize_chat


@torch.no_grad()
def response_nll(
    model: Any,
    tokenizer: Any,
    examples: Sequence[ChatExample],
    batch_size: int = 8,
    max_length: int | None = 512,
    *,
    end_of_turn: bool = True,
) -> list[float]:
    """Mean NLL (nats per token) of each example's assistant tokens (all assistant turns), one float each.

    Batched with right padding; the model runs in eval mode (no dropout) and is put back in its previous
    mode afterwards. Raises ``ValueError`` for ``batch_size < 1`` or an example with no scored token, and
    `TokenizeError` for an example longer than ``max_length`` tokens (None: no limit).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    features = [tokenize_chat(tokenizer, ex, max_length, end_of_turn=end_of_turn) for ex in examples]
    collate = ChatCollator(tokenizer)
    device = next(model.parameters()).device
    out: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(features), batch_size):
            batch = collate(features[start : start + batch_size])
            nll = _mean_label_nll(model, batch, device)
            empty = [i for i, v in enumerate(nll) if math.isnan(v)]
            if empty:
                raise ValueError(f"{examples[start + empty[0]].name}: no predictable assistant tokens")
            out.extend(nll)
    finally:
        model.train(was_training)
    return out


def _mean_label_nll(model: Any, batch: dict[str, torch.Tensor], device: torch.device) -> list[float]:
    """Per row, the mean NLL of the labelled tokens (NaN for a row without any)."""
    logits = model(
        input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
    ).logits
    labels = batch["labels"].to(device)[:, 1:]
    mask = labels != IGNORE_INDEX
    picked = logits[:, :-1][mask].float()  # only the positions that predict a scored token: [M, vocab]
    per_token = torch.zeros(mask.shape, device=device)
    per_token[mask] = F.cross_entropy(picked, labels[mask], reduction="none")
    return (per_token.sum(1) / mask.sum(1)).tolist()  # 0/0 -> NaN


def answer_nll(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages],
    answers: Sequence[str],
    *,
    end_of_turn: bool = False,
    batch_size: int = 16,
    max_length: int | None = None,
) -> list[float]:
    """Mean NLL (nats/token) of each answer after its prompt messages; NaN for an empty answer.

    The chat ``prompt + [assistant: answer]`` is scored by `response_nll` (same tokens, see the module doc);
    ``exp`` of the value is the model's perplexity of the answer. Raises ``ValueError`` when prompts and
    answers do not pair up, or when a prompt holds an assistant turn (its tokens would be scored too).
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers; they must pair up")
    for i, prompt in enumerate(prompts):
        if any(m.get("role") == "assistant" for m in prompt):
            raise ValueError(f"prompt {i} holds an assistant turn; answer_nll scores single-answer chats")
    filled = [i for i, a in enumerate(answers) if a.strip()]
    examples = [
        ChatExample([*prompts[i], {"role": "assistant", "content": answers[i]}], source=f"answer {i}")
        for i in filled
    ]
    scores = response_nll(model, tokenizer, examples, batch_size, max_length, end_of_turn=end_of_turn)
    out = [float("nan")] * len(answers)
    for i, value in zip(filled, scores, strict=True):
        out[i] = value
    return out
