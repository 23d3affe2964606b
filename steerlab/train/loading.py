"""The models of a run: the base model and tokenizer of a config, a LoRA adapter, a finished run.

``tiny:<arch>`` names a seeded test model (`steerlab.models.tiny`); any other name goes through
`steerlab.models.load_model` (registry name, local folder or hub id).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from steerlab.train.config import ExperimentConfig, ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(name: str) -> Any:
    """The tokenizer of a model name alone, no weights (``tiny:<arch>``: the in-memory test tokenizer)."""
    if name.startswith("tiny:"):
        from steerlab.models.tiny import tiny_tokenizer

        return tiny_tokenizer("right")
    from transformers import AutoTokenizer

    from steerlab.models import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(name))


def load_base(model_cfg: ModelConfig) -> tuple[nn.Module, Any]:
    """The base model and tokenizer of a config (``tiny:<arch>`` builds a seeded test model)."""
    if model_cfg.name.startswith("tiny:"):
        from steerlab.models.tiny import tiny_model

        return tiny_model(model_cfg.name[5:]), load_tokenizer(model_cfg.name)
    from steerlab.models import load_model

    loaded = load_model(model_cfg.name, dtype=DTYPES[model_cfg.dtype])
    return loaded.model, loaded.tokenizer


def load_finetuned(path: str | Path, base_factory: Callable[[], nn.Module]) -> nn.Module:
    """A fine-tuned model from a run folder (its ``final/``) or a model/adapter folder, in eval mode.

    Raises FileNotFoundError when ``path`` holds none of them.
    """
    path = Path(path)
    if (path / "final").is_dir():
        path = path / "final"
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        return PeftModel.from_pretrained(base_factory(), str(path)).eval()
    if (path / "config.json").is_file():
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(path)).eval()
    raise FileNotFoundError(f"{path} is neither a run folder with final/, nor an adapter or model folder")


def attach_adapter(model: nn.Module, cfg: ExperimentConfig) -> nn.Module:
    """The model to train: a LoRA-wrapped ``model`` (peft) or, under full fine-tuning, ``model`` itself."""
    if cfg.finetune.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    ft = cfg.finetune
    lora = LoraConfig(
        r=ft.r,
        lora_alpha=ft.alpha,
        lora_dropout=ft.dropout,
        target_modules=ft.target_modules,
        use_rslora=ft.rslora,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)
