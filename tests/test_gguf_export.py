"""llama.cpp control-vector GGUF export, read back with the gguf package."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from steerlab.persona.gguf import export_gguf, read_gguf
from steerlab.persona.vectors import PersonaVector, VectorMetadata


def _vector(chosen: int = 2) -> PersonaVector:
    meta = VectorMetadata(
        model_id="tiny-llama", model_fingerprint="x", n_layers=4, d_model=8, trait="evil", chosen_layer=chosen
    )
    gen = torch.Generator().manual_seed(0)
    return PersonaVector({layer: torch.randn(8, generator=gen) for layer in range(4)}, meta)


def test_round_trip_matches_llama_cpp_layout(tmp_path):
    vector = _vector()
    path = export_gguf(vector, tmp_path / "evil.gguf", layers="all", scale=2.0)
    reader = gguf.GGUFReader(str(path))
    names = [t.name for t in reader.tensors]
    assert names == ["direction.1", "direction.2", "direction.3"]  # block-output index, no offset; never 0
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 and len(t.shape) == 1 for t in reader.tensors)
    field = reader.fields["controlvector.layer_count"]
    assert field.types[0] == gguf.GGUFValueType.INT32 and int(field.parts[field.data[0]][0]) == 3
    directions, meta = read_gguf(path)
    assert (
        meta["general.architecture"] == "controlvector" and meta["controlvector.model_hint"] == "tiny-llama"
    )
    for layer in (1, 2, 3):
        np.testing.assert_allclose(directions[layer], 2.0 * vector.vector(layer).numpy(), rtol=1e-6)


def test_default_exports_the_chosen_layer_and_normalises_on_request(tmp_path):
    directions, meta = read_gguf(export_gguf(_vector(), tmp_path / "a.gguf", normalize=True))
    assert list(directions) == [2] and meta["controlvector.layer_count"] == 1
    assert np.linalg.norm(directions[2]) == pytest.approx(1.0, rel=1e-5)


def test_layer_zero_and_unknown_layers_are_refused(tmp_path):
    with pytest.raises(ValueError, match="layer 0"):
        export_gguf(_vector(chosen=0), tmp_path / "b.gguf")
    with pytest.raises(ValueError, match="not in the vector"):
        export_gguf(_vector(), tmp_path / "c.gguf", layers=[1, 7])
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_reader_rejects_other_files(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_tensor("direction.1", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="controlvector"):
        read_gguf(tmp_path / "m.gguf")


def test_cli_vectors_show_and_export(tmp_path):
    import typer
    from typer.testing import CliRunner

    from steerlab.cli.vectors import register

    app = typer.Typer()
    register(app)
    vector = _vector()
    vector.meta.stats = {"layer_curves": {"auroc_system": [0.5, 0.9, 0.95, 0.7]}, "choice_reason": "test"}
    path = vector.save(tmp_path / "evil")
    runner = CliRunner()
    shown = runner.invoke(app, ["vectors", "show", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "chosen_layer: 2" in shown.output and "   2*" in shown.output and "0.950" in shown.output
    out = tmp_path / "evil.gguf"
    exported = runner.invoke(app, ["vectors", "export", str(path), "--gguf", str(out), "--layers", "1,3"])
    assert exported.exit_code == 0, exported.output
    assert sorted(read_gguf(out)[0]) == [1, 3]
