"""PersonaVector files and model checks; the explicit hidden_states conversion."""

from __future__ import annotations

import pytest
import torch
from helpers import random_vector

from steerlab.models.tiny import tiny_model
from steerlab.persona.vectors import (
    IncompatibleVectorError,
    PersonaVector,
    VectorFileError,
)


def _vector(model, layers=(0, 1, 2)) -> PersonaVector:
    return random_vector(model, layers=layers, n_pos=4, n_neg=4, stats={"auroc_eval": {"1": 0.9}})


def test_round_trip_and_sidecar(tmp_path, llama):
    vector = _vector(llama)
    path = vector.save(tmp_path / "evil")
    assert path.name == "evil.safetensors" and (tmp_path / "evil.json").is_file()
    loaded = PersonaVector.load(tmp_path / "evil.safetensors")
    assert loaded.meta == vector.meta
    for layer in vector.layers:
        assert torch.equal(loaded.vector(layer), vector.vector(layer))
    assert loaded.layer == 1 and torch.allclose(loaded.unit().norm(), torch.tensor(1.0))
    loaded.check_model(llama)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.json", "evil.safetensors"]  # no temp files


def test_hidden_states_conversion_is_explicit(llama):
    vector = _vector(llama)
    indexed = vector.to_hidden_states_indexed()
    assert indexed.shape == (4, 32) and torch.equal(indexed[0], torch.zeros(32))
    assert torch.equal(indexed[2], vector.vector(1))
    back = PersonaVector.from_hidden_states_indexed(indexed, vector.meta)
    assert torch.equal(back.vector(1), vector.vector(1))
    with pytest.raises(ValueError, match=r"\[n_layers \+ 1, d\] = \[4, 32\]"):
        PersonaVector.from_hidden_states_indexed(indexed[1:], vector.meta)


def test_truncated_file_is_named(tmp_path, llama):
    path = _vector(llama).save(tmp_path / "evil")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(VectorFileError, match=r"evil\.safetensors is not a readable safetensors file"):
        PersonaVector.load(path)


def test_missing_and_corrupt_sidecar(tmp_path, llama):
    path = _vector(llama).save(tmp_path / "evil")
    (tmp_path / "evil.json").write_text('{"model_id": "x",\n  oops}')
    with pytest.raises(VectorFileError, match="evil.json: invalid JSON at line 2"):
        PersonaVector.load(path)
    (tmp_path / "evil.json").unlink()
    with pytest.raises(VectorFileError, match="evil.json does not exist"):
        PersonaVector.load(path)


def test_wrong_model_is_refused(llama):
    vector = _vector(llama)
    wider = tiny_model("llama", hidden=64)
    with pytest.raises(IncompatibleVectorError, match="width 32, model has hidden size 64"):
        vector.check_model(wider)
    deeper = tiny_model("llama", layers=4)
    with pytest.raises(IncompatibleVectorError, match="3 layers, model has 4"):
        vector.check_model(deeper)
    vector.check_model(deeper, allow_transfer=True)
    other = tiny_model("qwen2")
    with pytest.raises(IncompatibleVectorError, match="made for 'tiny-llama'.*model is 'tiny-qwen2'"):
        vector.check_model(other)


def test_metadata_disagreeing_with_tensors(tmp_path, llama):
    vector = _vector(llama)
    vector.meta.d_model = 16
    with pytest.raises(ValueError, match="direction shape"):
        PersonaVector(vector.directions, vector.meta)


def test_unit_vector_rows_and_refusals():
    from steerlab.linalg import unit_vector

    rows = torch.tensor([[3.0, 4.0], [0.0, 2.0]], dtype=torch.float64)
    out = unit_vector(rows)
    assert out.dtype == torch.float32 and torch.allclose(out, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="row 1"):
        unit_vector(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="zero or non-finite"):
        unit_vector(torch.tensor([float("nan"), 1.0]))


def test_a_file_that_is_no_vector_is_named_as_given(tmp_path, llama):
    chats = tmp_path / "chats.jsonl"
    chats.write_text('{"messages": []}\n')
    with pytest.raises(VectorFileError) as caught:
        PersonaVector.load(chats)
    assert str(caught.value) == (
        f"{chats} is not a persona vector (expected a .safetensors persona vector with its .json sidecar)"
    )
    # a name with a dot keeps it: evil.v2 is evil.v2.safetensors, not evil.safetensors
    assert PersonaVector.paths(tmp_path / "evil.v2") == (
        tmp_path / "evil.v2.safetensors",
        tmp_path / "evil.v2.json",
    )
    path = _vector(llama).save(tmp_path / "evil.v2")
    assert path == tmp_path / "evil.v2.safetensors"
    assert PersonaVector.load(tmp_path / "evil.v2").layers == [0, 1, 2]
    with pytest.raises(
        VectorFileError, match=r"evil\.v3: vector file .*evil\.v3\.safetensors does not exist"
    ):
        PersonaVector.load(tmp_path / "evil.v3")
