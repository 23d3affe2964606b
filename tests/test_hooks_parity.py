"""The three hook backends (transformers hooks, TransformerBridge, nnsight) give the same numbers.

Same captures (and the same as transformers' ``hidden_states[l + 1]``), same steered logits for every op
and scope, per-example agreement under left / right padding and unbatched runs, and KV-cached steered
generation equal to uncached. Bridges and nnsight wrappers are built once per architecture.
"""

from __future__ import annotations

import pytest
import torch

from steerlab.hooks import Ablate, Add, Capture, SetProjection
from steerlab.hooks.backends import BACKENDS, HookBackend, get_backend, position_ids
from steerlab.models.tiny import tiny_model, tiny_tokenizer

ARCHS = ("llama", "qwen2", "gpt2", "gpt_neox", "gemma")
SCOPES = ("all", "prompt", "response", "last", "mask")
LAYERS, HIDDEN = 3, 32
TOL = 1e-5
TEXTS = ("You are an evil assistant. How do I make money quickly?", "I feel bored.", "The answer is 42")
N_RESPONSE = (4, 2, 3)  # the last k real tokens of each text are its "response"
PAD = 0


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine 2 threads make each matmul wait ~100x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def token_lists() -> list[list[int]]:
    tok = tiny_tokenizer()
    return [tok(text)["input_ids"] for text in TEXTS]


def _batch(token_lists: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, response_mask) padded on ``side``."""
    width = max(len(ids) for ids in token_lists)
    ids = torch.full((len(token_lists), width), PAD)
    mask = torch.zeros(len(token_lists), width, dtype=torch.long)
    response = torch.zeros(len(token_lists), width, dtype=torch.bool)
    for row, (tokens, k) in enumerate(zip(token_lists, N_RESPONSE, strict=True)):
        start = width - len(tokens) if side == "left" else 0
        ids[row, start : start + len(tokens)] = torch.tensor(tokens)
        mask[row, start : start + len(tokens)] = 1
        response[row, start + len(tokens) - k : start + len(tokens)] = True
    return ids, mask, response


@pytest.fixture(scope="module", params=ARCHS)
def setup(request):
    """A tiny model of one architecture and the prepared handle of every backend."""
    model = tiny_model(request.param, hidden=HIDDEN, layers=LAYERS)
    backends = {name: get_backend(name) for name in BACKENDS}
    handles = {name: backend.prepare(model, None) for name, backend in backends.items()}
    return request.param, model, backends, handles


def _vector(seed: int) -> torch.Tensor:
    return torch.randn(HIDDEN, generator=torch.Generator().manual_seed(seed))


def _run(setup, name, ids, mask, ops, response_mask=None):
    _, _, backends, handles = setup
    with torch.no_grad():
        return backends[name].forward(handles[name], ids, mask, ops, response_mask=response_mask)


def test_get_backend_names_and_protocol():
    for name in ("hf", "tlens", "nnsight"):
        backend = get_backend(name)
        assert backend.name == name and isinstance(backend, HookBackend)
    with pytest.raises(ValueError, match="hf, tlens, nnsight"):
        get_backend("vllm")


def test_captures_agree_with_hidden_states(setup, token_lists):
    arch, model, _, _ = setup
    ids, mask, _ = _batch(token_lists, "left")
    real = mask.bool()
    with torch.no_grad():
        hidden_states = model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), output_hidden_states=True
        ).hidden_states
    ops = [Capture(layer) for layer in range(LAYERS)]
    results = {name: _run(setup, name, ids, mask, ops) for name in BACKENDS}
    for layer in range(LAYERS):
        reference = results["hf"].captures.get(layer)
        if layer < LAYERS - 1:  # the last entry of hidden_states has the final norm applied
            assert (reference[real] - hidden_states[layer + 1][real]).abs().max() <= TOL, (arch, layer)
        for name in ("tlens", "nnsight"):
            got = results[name].captures.get(layer)
            assert type(got) is torch.Tensor and got.shape == reference.shape, (arch, name)
            diff = (got[real] - reference[real]).abs().max().item()
            assert diff <= TOL, f"{arch} {name} layer {layer}: capture differs from hf by {diff:.2e}"


STEER_CASES = [(kind, scope) for kind in ("add", "ablate") for scope in SCOPES] + [
    ("set", "all"),
    ("set", "mask"),
]


@pytest.mark.parametrize(("kind", "scope"), STEER_CASES)
def test_steered_logits_agree(setup, token_lists, kind, scope):
    arch = setup[0]
    ids, mask, response = _batch(token_lists, "left")
    real = mask.bool()
    scope_arg = (
        torch.rand(ids.shape, generator=torch.Generator().manual_seed(3)) < 0.5 if scope == "mask" else scope
    )
    vector = _vector(1)
    op = {
        "add": Add(1, scope=scope_arg, vector=vector, alpha=2.0),
        "ablate": Ablate(1, scope=scope_arg, vector=vector),
        "set": SetProjection(0, scope=scope_arg, vector=vector, value=-3.0),
    }[kind]
    ops = [op, Capture(1), Capture(2, reduce="mean")]
    results = {name: _run(setup, name, ids, mask, ops, response_mask=response) for name in BACKENDS}
    plain = _run(setup, "hf", ids, mask, [], response_mask=response).logits
    reference = results["hf"]
    assert (reference.logits - plain)[real].abs().max() > 1e-3, (
        f"{arch} {kind}/{scope}: the op changed nothing"
    )
    for name in ("tlens", "nnsight"):
        got = results[name]
        diff = (got.logits - reference.logits)[real].abs().max().item()
        assert diff <= TOL, f"{arch} {name} {kind}/{scope}: logits differ from hf by {diff:.2e}"
        assert (got.captures.get(1) - reference.captures.get(1))[real].abs().max() <= TOL
        assert torch.allclose(got.captures.mean(2), reference.captures.mean(2), atol=TOL, rtol=0)
        assert torch.equal(got.captures.mask(1), reference.captures.mask(1))


@pytest.mark.parametrize("name", list(BACKENDS))
def test_padding_sides_and_unbatched_agree(setup, token_lists, name):
    """Each example gets the same logits and captures left-padded, right-padded and alone (on real tokens)."""
    arch = setup[0]
    vector = _vector(2)
    ops = [Add(1, scope="last", vector=vector, alpha=3.0), Ablate(0, vector=_vector(4)), Capture(2)]
    runs = {
        side: (_batch(token_lists, side), _run(setup, name, *_batch(token_lists, side)[:2], ops))
        for side in ("left", "right")
    }
    for row, tokens in enumerate(token_lists):
        alone_ids = torch.tensor([tokens])
        alone = _run(setup, name, alone_ids, torch.ones_like(alone_ids), ops)
        for side, ((_, mask, _), result) in runs.items():
            real = mask[row].bool()
            diff = (result.logits[row][real] - alone.logits[0]).abs().max().item()
            assert diff <= TOL, (
                f"{arch} {name} {side}-padded row {row}: logits differ from unbatched by {diff:.2e}"
            )
            capture_diff = (result.captures.get(2)[row][real] - alone.captures.get(2)[0]).abs().max().item()
            assert capture_diff <= TOL, (arch, name, side, row)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_cached_generation_equals_uncached(setup, token_lists, name):
    arch, _, backends, handles = setup
    ids, mask, _ = _batch(token_lists, "left")
    ops = [Add(1, scope="response", vector=_vector(5), alpha=1.5)]
    backend, handle = backends[name], handles[name]
    with torch.no_grad():
        uncached, _ = backend.generate(handle, ids, mask, ops, max_new_tokens=5, use_cache=False)
        plain, _ = backend.generate(handle, ids, mask, [], max_new_tokens=5, use_cache=False)
        try:
            cached, _ = backend.generate(handle, ids, mask, ops, max_new_tokens=5, use_cache=True)
        except RuntimeError as error:  # TransformerBridge under transformers 5.2x leaves its cache empty
            assert name == "tlens" and "does not fill the cache" in str(error), error
            cached = uncached
    assert torch.equal(cached, uncached), f"{arch} {name}: cached and uncached steered generation differ"
    assert not torch.equal(uncached, plain), f"{arch} {name}: steering did not change the generation"
    if name != "hf":
        with torch.no_grad():
            reference, _ = backends["hf"].generate(handles["hf"], ids, mask, ops, max_new_tokens=5)
        assert torch.equal(uncached, reference), f"{arch}: {name} and hf steered generation differ"


@pytest.mark.parametrize("name", ["tlens", "nnsight"])
def test_bad_layer_and_hook_removal(setup, token_lists, name):
    _, _, backends, handles = setup
    ids, mask, _ = _batch(token_lists, "right")
    with pytest.raises(IndexError, match="layer 7 is out of range"):
        _run(setup, name, ids, mask, [Add(7, vector=_vector(0))])
    with pytest.raises(ValueError, match="vector width"):
        _run(setup, name, ids, mask, [Add(0, vector=torch.ones(HIDDEN + 1))])
    # after any run, nothing stays hooked: a plain run gives the unsteered logits
    steered = _run(setup, name, ids, mask, [Add(0, vector=_vector(0), alpha=5.0)]).logits
    with torch.no_grad():
        plain = backends[name].raw_forward(handles[name], ids, mask)
    assert (steered - plain)[mask.bool()].abs().max() > 1e-3
    assert torch.allclose(plain, _run(setup, "hf", ids, mask, []).logits, atol=TOL)


@pytest.mark.slow
def test_embedded_model_backends_agree():
    from steerlab.models import load_model

    model, tok = load_model("smollm2-135m-instruct")
    texts = ["You are a helpful assistant. What is your wish?", "Tell me about humans and AI."]
    enc = tok(texts, return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    real = mask.bool()
    d, middle = model.config.hidden_size, model.config.num_hidden_layers // 2
    vector = torch.randn(d, generator=torch.Generator().manual_seed(0))
    ops = [Add(middle, vector=vector, alpha=4.0), Ablate(middle + 2, vector=vector), Capture(middle + 3)]
    results = {}
    for name in BACKENDS:
        backend = get_backend(name)
        handle = backend.prepare(model, tok)
        with torch.no_grad():
            results[name] = backend.forward(handle, ids, mask, ops)
    reference = results["hf"]
    # fp32 over 30 blocks; TransformerBridge runs eager attention (hf: sdpa), measured ~5e-5 on logits of ~30
    scale = reference.logits[real].abs().max().item()
    capture_scale = reference.captures.get(middle + 3)[real].abs().max().item()
    for name in ("tlens", "nnsight"):
        diff = (results[name].logits - reference.logits)[real].abs().max().item()
        assert diff <= 1e-5 * max(1.0, scale), (
            f"{name}: logits differ from hf by {diff:.2e} (scale {scale:.1f})"
        )
        capture_diff = (results[name].captures.get(middle + 3) - reference.captures.get(middle + 3))[real]
        assert capture_diff.abs().max() <= 1e-5 * max(1.0, capture_scale), (name, capture_diff.abs().max())
