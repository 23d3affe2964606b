"""Loading models by name: registry name, ``tiny:<arch>``, local folder or hub id.

A registry name (``smollm2-135m-instruct``) resolves to the offline embedded model, converted and cached
by `steerlab.models.embedded`; ``tiny:<arch>`` builds a seeded config-built test model (`steerlab.models.tiny`);
a local folder loads as is; anything else is treated as a Hugging Face hub id for users who are online.
``trust_remote_code`` stays off unless the caller asks for it. Finished training runs load through
`steerlab.models.runs`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_PREFIX = "tiny:"


class UnknownModelError(ValueError):
    """The name is neither a registry name, nor a local folder, nor a loadable hub id."""


@dataclass
class LoadedModel:
    """A model in eval mode with its tokenizer (pad token set) and the name it was loaded from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str  # the registry name, tiny: name, folder, hub id or run folder it was loaded from

    def __iter__(self) -> Iterator[PreTrainedModel | PreTrainedTokenizerBase]:
        """Allows ``model, tokenizer = load_model(...)``."""
        yield self.model
        yield self.tokenizer


def registry_names() -> list[str]:
    """The names of the offline embedded models (`steerlab.models.embedded.EMBEDDED_MODELS`), sorted."""
    from steerlab.models.embedded import EMBEDDED_MODELS

    return sorted(EMBEDDED_MODELS)


def tiny_arch(name: str) -> str | None:
    """The architecture of a ``tiny:<arch>`` name, None for any other name."""
    return name[len(TINY_PREFIX) :] if name.startswith(TINY_PREFIX) else None


def resolve_model_path(name_or_path: str) -> str:
    """A folder or hub id that transformers can load for ``name_or_path`` (a registry name is converted and
    cached first). Raises `UnknownModelError` for a folder without ``config.json`` or a name that is none of
    registry name, folder and ``org/name`` hub id."""
    from steerlab.models.embedded import EMBEDDED_MODELS, ensure_embedded

    if name_or_path in EMBEDDED_MODELS:
        return str(ensure_embedded(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UnknownModelError(f"{path} exists but has no config.json: not a transformers model folder")
        return str(path)
    looks_like_hub_id = name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/"))
    if not looks_like_hub_id:
        raise UnknownModelError(
            f"unknown model {name_or_path!r}: not a registry name ({', '.join(registry_names())}), "
            "not an existing folder, and not a hub id of the form 'org/name'"
        )
    return name_or_path


def load_tokenizer(
    name_or_path: str, *, padding_side: str = "right", trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """The tokenizer of a model name alone, no weights, with a pad token (the EOS token when it has none).

    ``tiny:<arch>`` gives the in-memory test tokenizer. Raises `UnknownModelError` as `resolve_model_path`
    does, or when the tokenizer cannot be loaded.
    """
    if tiny_arch(name_or_path) is not None:
        from steerlab.models.tiny import tiny_tokenizer

        return tiny_tokenizer(padding_side)
    return _tokenizer_from(resolve_model_path(name_or_path), name_or_path, padding_side, trust_remote_code)


def _tokenizer_from(
    source: str, name: str, padding_side: str, trust_remote_code: bool
) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise UnknownModelError(f"could not load the tokenizer of {name!r} from {source}: {error}") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def model_depth(name_or_path: str, *, trust_remote_code: bool = False) -> int:
    """The number of decoder blocks (steerlab layers ``0 .. depth - 1``) from the model's config alone: no
    weights are read, so a grid's preflight can check its layer settings in a second.

    ``tiny:<arch>`` reads the test model's config. Raises `UnknownModelError` as `resolve_model_path` does, or
    when the config cannot be loaded or names no layer count."""
    arch = tiny_arch(name_or_path)
    if arch is not None:
        from steerlab.models.tiny import tiny_config

        config = tiny_config(arch)
    else:
        source = resolve_model_path(name_or_path)
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as error:
            raise UnknownModelError(
                f"could not read the config of {name_or_path!r} from {source}: {error}"
            ) from error
    config = getattr(config, "text_config", None) or config
    depth = getattr(config, "num_hidden_layers", None)
    if not isinstance(depth, int):
        raise UnknownModelError(
            f"the config of {name_or_path!r} names no number of layers (num_hidden_layers)"
        )
    return depth


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    padding_side: str = "left",
) -> LoadedModel:
    """Load a causal LM and its tokenizer, in eval mode, with a pad token set (left padding by default).

    ``tiny:<arch>`` builds the seeded test model of `steerlab.models.tiny` (its ``name_or_path`` stays
    ``tiny-<arch>``, so vectors made on it keep matching). Raises `UnknownModelError` naming the model when it
    cannot be resolved or loaded, and ``ValueError`` for an unknown tiny architecture.
    """
    arch = tiny_arch(name_or_path)
    if arch is not None:
        from steerlab.models.tiny import tiny_model, tiny_tokenizer

        tiny = nn.Module.to(
            tiny_model(arch), device=device, dtype=dtype
        )  # transformers' `.to` wrapper confuses mypy
        return LoadedModel(tiny, tiny_tokenizer(padding_side), name_or_path)
    source = resolve_model_path(name_or_path)
    tokenizer = _tokenizer_from(source, name_or_path, padding_side, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise UnknownModelError(f"could not load model {name_or_path!r} from {source}: {error}") from error
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.name_or_path = name_or_path
    return LoadedModel(nn.Module.to(model, device).eval(), tokenizer, name_or_path)
