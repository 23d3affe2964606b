"""Teacher-forced mean activations at every layer, in one forward pass per batch.

A chat is read as ``render(prompt messages, generation prompt) + answer tokens``: exactly the sequence the
model saw while generating that answer (no end-of-turn token, no trailing template text), so the response
scope is the answer's own tokens and the ``last`` scope is the final token of the generation prompt. The
same construction reads model answers and dataset answers, which keeps projections comparable (screening
subtracts one from the other).

Means come from ``Capture(reduce="mean")`` ops at every layer: running sums inside the hook, so nothing of
size ``[B, T, d]`` is kept per layer and the pass costs about what a plain forward costs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from steerlab.hooks import Capture, hooked
from steerlab.hooks.scopes import ScopeName
from steerlab.models.architectures import num_layers
from steerlab.persona.generation import Messages, render_prompt

VARIANTS = ("response", "prompt", "last")


def encode_chat(tokenizer: PreTrainedTokenizerBase, prompt: Messages, answer: str) -> tuple[list[int], int]:
    """(token ids of prompt + answer, number of prompt tokens)."""
    prompt_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] if answer else []
    return list(prompt_ids) + list(answer_ids), len(prompt_ids)


def _batch(encoded: list[tuple[list[int], int]], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ids, attention mask and response mask."""
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros(len(encoded), width, dtype=torch.long)
    response = torch.zeros(len(encoded), width, dtype=torch.bool)
    for row, (tokens, n_prompt) in enumerate(encoded):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention[row, : len(tokens)] = 1
        response[row, n_prompt : len(tokens)] = True
    return ids, attention, response


@torch.no_grad()
def collect_means(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Messages],
    answers: Sequence[str],
    *,
    variants: Sequence[str] = VARIANTS,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    max_length: int | None = None,
    progress: bool = False,
    desc: str = "activations",
) -> dict[str, Tensor]:
    """Mean residual activation per chat and layer: ``{variant: [N, n_layers_read, d]}`` (float32, CPU).

    ``variants`` are token scopes: ``response`` (mean over the answer's tokens; NaN for an empty answer),
    ``prompt`` (mean over the prompt) and ``last`` (the last prompt token). A chat longer than
    ``max_length`` tokens raises rather than being truncated.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers; they must pair up")
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown activation variant {variant!r}; choose from {VARIANTS}")
    layers = list(range(num_layers(model))) if layers is None else list(layers)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [encode_chat(tokenizer, p, a) for p, a in zip(prompts, answers, strict=True)]
    if max_length is not None:
        for i, (tokens, _) in enumerate(encoded):
            if len(tokens) > max_length:
                raise ValueError(f"chat {i} is {len(tokens)} tokens, longer than max_length={max_length}")
    device = next(model.parameters()).device
    out: dict[str, list[Tensor]] = {v: [] for v in variants}
    for start in tqdm(range(0, len(encoded), batch_size), desc=desc, disable=not progress, unit="batch"):
        ids, attention, response = _batch(encoded[start : start + batch_size], pad_id)
        # `Captures` keys its sums by layer, so each scope gets its own session; all of them hook the same
        # single forward pass.
        with contextlib.ExitStack() as stack:
            sessions = {
                variant: stack.enter_context(
                    hooked(
                        model,
                        [Capture(layer, cast(ScopeName, variant), reduce="mean") for layer in layers],
                        response_mask=response.to(device),
                    )
                )
                for variant in variants
            }
            model(
                input_ids=ids.to(device),
                attention_mask=attention.to(device),
                use_cache=False,
                logits_to_keep=1,
            )
        for variant, session in sessions.items():
            per_layer = [session.captures.mean(layer) for layer in layers]
            out[variant].append(torch.stack(per_layer, dim=1).float().cpu())
    if not encoded:
        raise ValueError("no chats to read")
    return {v: torch.cat(chunks) for v, chunks in out.items()}
