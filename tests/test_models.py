"""Model loading by name: clear errors for names that are neither registry, folder nor hub id."""

from __future__ import annotations

import pytest

from steerlab.models import UnknownModelError, load_model, resolve_model_path
from steerlab.models.tiny import tiny_model, tiny_tokenizer


def test_unknown_name_lists_the_registry():
    with pytest.raises(UnknownModelError, match="unknown model 'no-such-model'.*smollm2-135m-instruct"):
        resolve_model_path("no-such-model")


def test_folder_without_config(tmp_path):
    with pytest.raises(UnknownModelError, match="has no config.json"):
        resolve_model_path(str(tmp_path))


def test_local_folder_loads(tmp_path):
    model = tiny_model("qwen2")
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    model_, tok = loaded
    assert type(model_).__name__ == "Qwen2ForCausalLM" and tok.padding_side == "left" and not model_.training
