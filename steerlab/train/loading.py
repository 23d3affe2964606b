"""The models of a run: the base model and tokenizer of a config and its LoRA adapter. Loading itself
(names, ``tiny:<arch>``, finished runs, tokenizers alone) is `steerlab.models`' job; this module re-exports
``load_tokenizer`` and ``load_finetuned`` for the trainer's callers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from steerlab.models.load import load_model, load_tokenizer, tiny_arch
from steerlab.models.runs import load_finetuned

if TYPE_CHECKING:
    from steerlab.train.config import ExperimentConfig, ModelConfig

__all__ = ["DTYPES", "attach_adapter", "load_base", "load_finetuned", "load_tokenizer"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_base(model_cfg: ModelConfig) -> tuple[nn.Module, Any]:
    """The base model and tokenizer of a config, through `steerlab.models.load_model` (``tiny:<arch>``: the
    seeded test model with a right-padding tokenizer, as training has always read it)."""
    side = "right" if tiny_arch(model_cfg.name) is not None else "left"
    loaded = load_model(model_cfg.name, dtype=DTYPES[model_cfg.dtype], padding_side=side)
    return loaded.model, loaded.tokenizer


def attach_adapter(model: nn.Module, cfg: ExperimentConfig) -> nn.Module:
    """The model to train: a LoRA-wrapped ``model`` (peft) or, under full fine-tuning, ``model`` itself."""
    if cfg.finetune.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    ft = cfg.finetune
    lora = LoraConfig(
        r=ft.r,
        lora_alpha=ft.alpha,  # type: ignore[arg-type]  # peft annotates int; it only scales by alpha / r
        lora_dropout=ft.dropout,
        target_modules=ft.target_modules,
        use_rslora=ft.rslora,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)
