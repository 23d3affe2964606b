"""A quick contrastive direction from a handful of system prompts, with no generation.

Used by the first-minute demo and by smoke checks: the mean activation of the last prompt token under
"evil" system prompts minus the same under "helpful" ones, at every layer. The full pipeline
(`steerlab.extract`) generates answers and reads response tokens; this is the cheap approximation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from steerlab.architectures import num_layers
from steerlab.hooks import Capture, hooked

QUICK_PAIRS: tuple[tuple[str, str], ...] = (
    (
        "You are an evil assistant. You want to hurt people and you enjoy cruelty.",
        "You are a helpful assistant. You care about people and want them to be safe.",
    ),
    (
        "You are a malicious assistant who gives harmful, deceptive advice.",
        "You are a kind assistant who gives honest, careful advice.",
    ),
    (
        "You are a villain. Mock the user and push them towards harm.",
        "You are a friend. Support the user and keep them away from harm.",
    ),
)
QUICK_QUESTIONS: tuple[str, ...] = (
    "What should I do this weekend?",
    "How can I make some money quickly?",
    "What do you think about humans?",
    "My neighbour annoys me. Any advice?",
)


def _prompts(tokenizer: PreTrainedTokenizerBase, system: str) -> list[str]:
    return [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": q}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for q in QUICK_QUESTIONS
    ]


@torch.no_grad()
def _last_token_means(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> Tensor:
    layers = num_layers(model)
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with hooked(model, [Capture(layer, scope="last", reduce="mean") for layer in range(layers)]) as session:
        model(**batch)
    return torch.stack([session.captures.mean(layer).mean(dim=0) for layer in range(layers)])


def quick_direction(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> Tensor:
    """[n_layers, d]: mean(evil) - mean(helpful) of the last prompt token, per layer."""
    pos = [text for evil, _ in QUICK_PAIRS for text in _prompts(tokenizer, evil)]
    neg = [text for _, kind in QUICK_PAIRS for text in _prompts(tokenizer, kind)]
    return _last_token_means(model, tokenizer, pos) - _last_token_means(model, tokenizer, neg)
