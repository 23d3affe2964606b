"""Tiny, offline models and a tokenizer for tests, notebooks and benchmarks.

Nothing here touches a model hub: every model is built from a config with seeded random weights and the
tokenizer is a byte-level BPE trained in memory, with a ChatML chat template, so any text encodes.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

TINY_VOCAB = 384
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = (
    "You are a helpful assistant. You are an evil assistant. What is your wish? How do I make money quickly? "
    "Tell me about humans and AI. I feel bored. The answer is 42. Please help me with my health question. "
    "Sorry, I cannot help with that. Sure! Here is a plan: first, second, third. 0 1 2 3 4 5 6 7 8 9 + - * / ="
)

# Architectures the hook layer must support; each entry is (model_type, extra config keys).
TINY_ARCHS: dict[str, dict] = {
    "llama": {"num_key_value_heads": 2},
    "qwen2": {"num_key_value_heads": 2},
    "mistral": {"num_key_value_heads": 2, "sliding_window": None},
    "gemma": {"num_key_value_heads": 2, "head_dim": 8},
    "gemma2": {"num_key_value_heads": 2, "head_dim": 8},
    "gemma3_text": {"num_key_value_heads": 2, "head_dim": 8},
    "phi": {},
    "gpt2": {},
    "gpt_neox": {},
    "opt": {},
}


@lru_cache(maxsize=1)
def _trained_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer)
    return tok


def tiny_tokenizer(padding_side: str = "left") -> PreTrainedTokenizerFast:
    """A ChatML tokenizer (pad id 0, eos = <|im_end|>) whose vocabulary fits every tiny model."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=_trained_bpe(),
        pad_token="<|pad|>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        padding_side=padding_side,
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def _base_config(model_type: str, hidden: int, layers: int, heads: int) -> dict:
    common = {"vocab_size": TINY_VOCAB, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if model_type == "gpt2":
        return common | {"n_embd": hidden, "n_layer": layers, "n_head": heads, "n_positions": 256}
    if model_type == "opt":
        return common | {
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "ffn_dim": 2 * hidden,
            "word_embed_proj_dim": hidden,
            "max_position_embeddings": 256,
        }
    return common | {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 256,
    }


def tiny_config(arch: str = "llama", hidden: int = 32, layers: int = 3, heads: int = 4) -> PretrainedConfig:
    """The transformers config of `tiny_model` (no weights); raises ``ValueError`` for an architecture not in
    ``TINY_ARCHS``."""
    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose from {sorted(TINY_ARCHS)}")
    return AutoConfig.for_model(arch, **(_base_config(arch, hidden, layers, heads) | TINY_ARCHS[arch]))


def tiny_model(
    arch: str = "llama", hidden: int = 32, layers: int = 3, heads: int = 4, seed: int = 0
) -> PreTrainedModel:
    """A randomly initialised causal LM of the given architecture, fp32, eval mode, seeded (weights
    N(0, 0.15) so tokens differ); raises ``ValueError`` for an architecture not in ``TINY_ARCHS``."""
    config = tiny_config(arch, hidden, layers, heads)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Random init at std 0.02 makes every token look alike; a larger scale gives distinct activations.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.15)
    model.config.name_or_path = f"tiny-{arch}"
    return model.eval()
