"""Loading models by registry name, local folder or hub id.

A registry name (``smollm2-135m-instruct``) resolves to the offline embedded model, converted and cached
by `steerlab.models.embedded`; a local folder loads as is; anything else is treated as a Hugging Face hub id for
users who are online. ``trust_remote_code`` stays off unless the caller asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "smollm2-135m-instruct"


class UnknownModelError(ValueError):
    """The name is neither a registry name, nor a local folder, nor a loadable hub id."""


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str  # the registry name, folder or hub id it was loaded from

    def __iter__(self):  # allows ``model, tokenizer = load_model(...)``
        yield self.model
        yield self.tokenizer


def registry_names() -> list[str]:
    from steerlab.models.embedded import EMBEDDED_MODELS

    return sorted(EMBEDDED_MODELS)


def resolve_model_path(name_or_path: str) -> str:
    """A folder or hub id that transformers can load for ``name_or_path``."""
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


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    padding_side: str = "left",
) -> LoadedModel:
    """Load a causal LM and its tokenizer, in eval mode, with a pad token set (left padding by default)."""
    source = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise UnknownModelError(f"could not load model {name_or_path!r} from {source}: {error}") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.name_or_path = name_or_path
    return LoadedModel(model.to(device).eval(), tokenizer, name_or_path)
