"""steerlab's exported control vector, applied by llama.cpp itself, moves the logits as steerlab's ``Add`` does.

The exported GGUF (``steerlab.persona.gguf``) is read back and laid out as llama.cpp's own loader
(``common_control_vector_load``) does — ``direction.N`` at offset ``(N - 1) * n_embd`` of a buffer that starts
at layer 1 — and handed to ``llama_set_adapter_cvec`` through llama-cpp-python. The change of the next-token
logits on the embedded model's GGUF is then compared with the change steerlab's ``Add`` makes at the same
layer on the de-quantized model: the export's layer convention is held by a real runtime, not by a reading
of its source.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (make judge-server-deps)"
)

from steerlab.hooks import Add, hooked  # noqa: E402
from steerlab.judges.gguf_models import ensure_gguf  # noqa: E402
from steerlab.persona.gguf import export_gguf, read_gguf  # noqa: E402
from steerlab.persona.vectors import PersonaVector  # noqa: E402

pytestmark = pytest.mark.slow
VECTOR = "vectors/smollm2-135m-instruct/evil.safetensors"
ALPHA = 4.0


def _llama_logits(llm, tokens: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)


def _apply(llm, path) -> None:
    """Load a control-vector file into ``llm`` the way llama.cpp's common loader does."""
    directions, _ = read_gguf(path)
    n_embd, n_layer = llm.n_embd(), llm._model.n_layer() if hasattr(llm._model, "n_layer") else None
    n_layer = n_layer or int(llm.metadata["llama.block_count"])
    data = np.zeros(n_embd * n_layer, dtype=np.float32)
    for layer, direction in directions.items():
        data[(layer - 1) * n_embd : layer * n_embd] += direction
    ptr = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    rc = llama_cpp.llama_set_adapter_cvec(llm.ctx, ptr, data.size, n_embd, 1, n_layer)
    assert rc == 0, f"llama_set_adapter_cvec returned {rc}"


@pytest.fixture(scope="module")
def models():
    from steerlab.models import load_model

    loaded = load_model("smollm2-135m-instruct")
    llm = llama_cpp.Llama(
        model_path=str(ensure_gguf("smollm2-135m-instruct")),
        n_ctx=256,
        n_threads=2,
        logits_all=True,  # the Python-side logits (scores) are kept only with logits_all
        verbose=False,
    )
    yield loaded.model.eval(), loaded.tokenizer, llm
    llm.close()


def test_llama_cpp_control_vector_matches_steerlab_add(models, tmp_path):
    model, tokenizer, llm = models
    vector = PersonaVector.load(VECTOR)
    layer = vector.layer
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What do you think about humans?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]  # the same ids go to both runtimes
    ids = torch.tensor([tokens])

    def hf_delta(at: int) -> np.ndarray:
        with torch.no_grad():
            base = model(ids).logits[0, -1]
            with hooked(model, [Add(at, "all", vector=vector.vector(layer), alpha=ALPHA)]):
                steered = model(ids).logits[0, -1]
        return (steered - base).double().numpy()

    base = _llama_logits(llm, tokens)
    path = export_gguf(vector, tmp_path / "evil.gguf", scale=ALPHA)
    _apply(llm, path)
    try:
        steered = _llama_logits(llm, tokens)
    finally:
        llama_cpp.llama_set_adapter_cvec(llm.ctx, None, 0, llm.n_embd(), -1, -1)
    cpp_delta = steered - base
    with torch.no_grad():
        hf_base = model(ids).logits[0, -1].double().numpy()
    assert np.corrcoef(base, hf_base)[0, 1] > 0.99, "the GGUF and the de-quantized model disagree"
    corr = {at: float(np.corrcoef(cpp_delta, hf_delta(at))[0, 1]) for at in (layer - 1, layer, layer + 1)}
    print(f"logit-change correlation llama.cpp vs steerlab Add by steerlab layer: {corr}")
    assert corr[layer] >= 0.95, corr
    assert corr[layer] > corr[layer - 1] and corr[layer] > corr[layer + 1], corr  # the layer, not a neighbour
    assert np.abs(cpp_delta).max() > 0.5  # the vector did move the logits
