"""Where the decoder blocks live in each architecture.

The hook layer needs the list of decoder blocks; every family keeps it under a different attribute path.
We unwrap PEFT wrappers first, then try the known paths, and when nothing fits we show the module tree so
the user can see what we saw.
"""

from __future__ import annotations

from torch import nn

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
        if hasattr(model, "get_base_model") and callable(model.get_base_model):
            model = model.get_base_model()
        elif type(model).__name__ == "LoraModel" and hasattr(model, "model"):
            model = model.model
    return model


def _resolve(root: nn.Module, path: str) -> nn.Module | None:
    obj = root
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
    """The attribute path (relative to the unwrapped model) of the decoder block list."""
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
    return _resolve(unwrap(model), block_path(model))  # type: ignore[return-value]


def num_layers(model: nn.Module) -> int:
    return len(decoder_blocks(model))


def hidden_size(model: nn.Module) -> int:
    config = unwrap(model).config
    config = getattr(config, "text_config", None) or config
    for key in ("hidden_size", "n_embd", "d_model"):
        if hasattr(config, key):
            return int(getattr(config, key))
    raise UnknownArchitectureError(f"config of {type(model).__name__} has no hidden size field")
