"""Where the decoder blocks live in each architecture.

The hook layer needs the list of decoder blocks; every family keeps it under a different attribute path.
We unwrap PEFT wrappers first, then try the known paths, and when nothing fits we show the module tree so
the user can see what we saw.
"""

from __future__ import annotations

from torch import nn
from transformers import PretrainedConfig

# Attribute paths from the causal-LM top module to its block list, most common first.
BLOCK_PATHS: tuple[str, ...] = (
    "model.layers",  # Llama, Qwen2, Mistral, Gemma 1/2/3 text, Phi, Phi-3
    "model.language_model.layers",  # Gemma 3 multimodal and other VLM wrappers
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "layers",  # a bare decoder (e.g. LlamaModel)
    "h",  # a bare GPT-2 model
)


class UnknownArchitectureError(ValueError):
    """Raised when no decoder block list can be found in a model."""


def unwrap(model: nn.Module) -> nn.Module:
    """Strip PEFT and similar wrappers so we see the underlying transformers model."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        get_base = getattr(model, "get_base_model", None)
        inner = get_base() if callable(get_base) else None
        if inner is None and type(model).__name__ == "LoraModel":
            inner = getattr(model, "model", None)
        if isinstance(inner, nn.Module):
            model = inner
    return model


def model_config(model: nn.Module) -> PretrainedConfig:
    """The transformers config of a (possibly PEFT-wrapped) model; raises `UnknownArchitectureError` when it
    has none."""
    config = getattr(unwrap(model), "config", None)
    if not isinstance(config, PretrainedConfig):
        raise UnknownArchitectureError(f"{type(model).__name__} has no transformers config")
    return config


def _resolve(root: nn.Module, path: str) -> object:
    obj: object = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def module_tree(model: nn.Module, depth: int = 3) -> str:
    """A short indented listing of module names and types, for error messages."""
    lines: list[str] = []
    for name, module in model.named_modules():
        level = name.count(".") + 1 if name else 0
        if level > depth:
            continue
        kind = f"ModuleList[{len(module)}]" if isinstance(module, nn.ModuleList) else type(module).__name__
        lines.append(f"{'  ' * level}{name or '<root>'}: {kind}")
    return "\n".join(lines[:60]) + ("\n  ..." if len(lines) > 60 else "")


def block_path(model: nn.Module) -> str:
    """The attribute path (relative to the unwrapped model) of the decoder block list; raises
    `UnknownArchitectureError` with the model's module tree when none of ``BLOCK_PATHS`` holds one."""
    base = unwrap(model)
    for path in BLOCK_PATHS:
        blocks = _resolve(base, path)
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
            return path
    raise UnknownArchitectureError(
        f"cannot find the decoder blocks of {type(base).__name__}; tried {', '.join(BLOCK_PATHS)}.\n"
        f"Module tree:\n{module_tree(base)}"
    )


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a (possibly PEFT-wrapped) causal LM, in order."""
    blocks = _resolve(unwrap(model), block_path(model))
    assert isinstance(blocks, nn.ModuleList)  # block_path only returns a path to a ModuleList
    return blocks


def num_layers(model: nn.Module) -> int:
    """The number of decoder blocks (steerlab layers ``0 .. num_layers - 1``)."""
    return len(decoder_blocks(model))


def hidden_size(model: nn.Module) -> int:
    """The residual-stream width ``d``; raises `UnknownArchitectureError` when the config names none."""
    config = model_config(model)
    config = getattr(config, "text_config", None) or config
    for key in ("hidden_size", "n_embd", "d_model"):
        if hasattr(config, key):
            return int(getattr(config, key))
    raise UnknownArchitectureError(f"config of {type(model).__name__} has no hidden size field")
