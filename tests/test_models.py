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


def test_tiny_names_load_everywhere_a_name_does():
    """``tiny:<arch>`` is handled in one place (models.load): the same model as tiny_model, any padding side."""
    import torch

    from steerlab.models import load_tokenizer

    loaded = load_model("tiny:qwen2", padding_side="right")
    ids = torch.tensor([[1, 5, 9]])
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, tiny_model("qwen2")(ids).logits)
    assert loaded.tokenizer.padding_side == "right" and loaded.name == "tiny:qwen2"
    assert loaded.model.config.name_or_path == "tiny-qwen2"  # vectors made on tiny_model keep matching
    assert load_tokenizer("tiny:llama").padding_side == "right"
    with pytest.raises(ValueError, match="unknown tiny architecture 'nope'"):
        load_model("tiny:nope")


def test_local_folder_tokenizer_gets_a_pad_token(tmp_path):
    from steerlab.models import load_tokenizer

    tok = tiny_tokenizer()
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    tiny_model("llama").save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.pad_token == loaded.eos_token and loaded.padding_side == "right"


def test_finished_run_errors_name_the_folder(tmp_path):
    from steerlab.models import read_run

    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        read_run(tmp_path)
    (tmp_path / "final").mkdir()
    with pytest.raises(ValueError, match="cannot tell the base model"):
        _ = read_run(tmp_path).base_model
    (tmp_path / "final" / "steerlab.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"steerlab.json: invalid JSON at line 1"):
        read_run(tmp_path)
