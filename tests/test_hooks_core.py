"""The hf hook layer: ops math, scopes, safety (removal on error, gradients, checkpointing, PEFT), bad input."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from steerlab.hooks import Ablate, Add, Capture, SetProjection, hooked
from steerlab.hooks.scopes import CallInfo, resolve
from steerlab.models.architectures import UnknownArchitectureError, decoder_blocks
from steerlab.models.tiny import tiny_model


def _hooks_left(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def enable_checkpointing(model: torch.nn.Module, *, reentrant: bool) -> None:
    """Gradient checkpointing by the name this transformers has (``activation_`` from 5.2x on)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": reentrant})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})


def _inputs(tok, texts=("you are an evil assistant", "hi")):
    return tok(list(texts), return_tensors="pt", padding=True)


def test_add_matches_hand_injection(llama, tok):
    enc = _inputs(tok)
    v = torch.randn(32)
    with torch.no_grad():
        hidden = llama(**enc, output_hidden_states=True).hidden_states
    with hooked(llama, [Capture(1)]) as session, torch.no_grad():
        llama(**enc)
    assert torch.allclose(session.captures.get(1), hidden[2], atol=1e-6)

    # steering block 0 by hand: run the remaining blocks on hidden_states[1] + alpha*v is what the hook does
    captured = {}
    with hooked(llama, [Add(0, vector=v, alpha=2.0), Capture(0)]) as session, torch.no_grad():
        llama(**enc)
    captured = session.captures.get(0)
    valid = enc["attention_mask"].bool()
    assert torch.allclose(captured[valid], hidden[1][valid] + 2.0 * v, atol=1e-5)


def test_ablate_and_set_projection_math():
    h = torch.randn(2, 3, 8)
    v = torch.randn(8)
    u = v / v.norm()
    mask = torch.tensor([[True, False, True], [True, True, False]])
    out = Ablate(0, vector=v).apply(h, mask)
    assert torch.allclose((out @ u)[mask], torch.zeros(int(mask.sum())), atol=1e-6)
    assert torch.equal(out[~mask], h[~mask])
    out = SetProjection(0, vector=v, value=3.5).apply(h, mask)
    assert torch.allclose((out @ u)[mask], torch.full((int(mask.sum()),), 3.5), atol=1e-5)
    assert torch.allclose(out - h, ((out - h) @ u).unsqueeze(-1) * u, atol=1e-6)  # moves only along u


@pytest.mark.parametrize("padding", ["left", "right"])
def test_scopes_under_padding(padding):
    attention = (
        torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
        if padding == "left"
        else torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    )
    info = CallInfo(batch=2, seq_len=5, attention_mask=attention, prompt_len=5)
    assert torch.equal(resolve("all", info, torch.device("cpu")), attention.bool())
    last = resolve("last", info, torch.device("cpu"))
    expected_last = [4, 4] if padding == "left" else [2, 4]
    assert [int(row.nonzero()) for row in last] == expected_last
    assert not resolve("response", info, torch.device("cpu")).any()
    # decoding: one new token after 5 cached positions is response, not prompt, not last
    step = CallInfo(batch=2, seq_len=1, past_len=5, attention_mask=torch.ones(2, 6), prompt_len=5)
    assert resolve("response", step, torch.device("cpu")).all()
    assert not resolve("prompt", step, torch.device("cpu")).any()
    assert not resolve("last", step, torch.device("cpu")).any()


def test_explicit_response_mask_and_window():
    response = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]]).bool()
    info = CallInfo(
        batch=2, seq_len=4, attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]), response_mask=response
    )
    assert torch.equal(resolve("response", info, torch.device("cpu")), response)
    assert [int(r.nonzero()) for r in resolve("last", info, torch.device("cpu"))] == [1, 0]
    later = CallInfo(batch=2, seq_len=2, past_len=3, response_mask=response)
    assert resolve(response, later, torch.device("cpu")).tolist() == [[True, False], [False, False]]


@pytest.mark.parametrize("scope", ["all", "prompt", "response", "last"])
def test_cached_generation_equals_uncached(llama, tok, scope):
    enc = _inputs(tok)
    v = torch.randn(32) * 3
    outputs = []
    for use_cache in (True, False):
        with hooked(llama, [Add(1, scope=scope, vector=v, alpha=4.0)]):
            outputs.append(llama.generate(**enc, max_new_tokens=6, do_sample=False, use_cache=use_cache))
    assert torch.equal(outputs[0], outputs[1])
    plain = llama.generate(**enc, max_new_tokens=6, do_sample=False)
    if scope in ("all", "response"):
        assert not torch.equal(outputs[0], plain), "steering should change greedy output"


def test_response_scope_fires_on_every_decoded_token(llama, tok):
    enc = _inputs(tok)
    with hooked(llama, [Capture(1, scope="response")]) as session:
        llama.generate(**enc, max_new_tokens=5, do_sample=False)
    calls = session.captures.calls(1)
    assert len(calls) == 5  # prefill + 4 decode steps (the 5th token is never fed back)
    assert not calls[0][1].any() and all(mask.all() for _, mask in calls[1:])


def test_hooks_removed_when_an_exception_is_raised(llama, tok):
    before = _hooks_left(llama)
    with (
        pytest.raises(RuntimeError, match="boom"),
        hooked(llama, [Add(0, vector=torch.ones(32)), Capture(2)]),
    ):
        assert _hooks_left(llama) > before
        raise RuntimeError("boom")
    assert _hooks_left(llama) == before == 0


def test_hooks_removed_when_a_hook_fails(llama, tok):
    bad = torch.tensor([[True, False]])  # wrong batch size for a batch of 2
    with pytest.raises(ValueError, match="batch"), hooked(llama, [Add(0, scope=bad, vector=torch.ones(32))]):
        llama(**_inputs(tok))
    assert _hooks_left(llama) == 0


def test_gradient_flows_through_steered_block(llama, tok):
    enc = _inputs(tok)
    llama.train()
    v = torch.randn(32, requires_grad=True)
    with hooked(llama, [Add(1, vector=v, alpha=1.5)]):
        loss = llama(**enc).logits.pow(2).mean()
    loss.backward()
    first_block = decoder_blocks(llama)[0]
    grads = [p.grad for p in first_block.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert v.grad is not None and v.grad.abs().sum() > 0


def test_gradient_checkpointing_same_grads_and_single_capture(tok):
    enc = _inputs(tok)
    v = torch.randn(32)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model("llama").train()
        if checkpointing:
            enable_checkpointing(model, reentrant=False)
        with hooked(model, [Add(1, vector=v, alpha=2.0), Capture(1, detach=False)]) as session:
            loss = model(**enc).logits.pow(2).mean() + session.captures.get(1).pow(2).mean()
            loss.backward()
        assert len(session.captures.calls(1)) == 1
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
@pytest.mark.parametrize("kind", ["ablate", "set"])
def test_checkpointing_backward_after_the_session_closed(tok, kind, reentrant):
    """Issue 11 case 3: steerlab's loss calls backward() after ``hooked`` exits. On transformers that
    checkpoint ``__call__`` (before 5.23) the recomputed block used to run without its op."""
    enc = _inputs(tok)
    v = torch.randn(32, generator=torch.Generator().manual_seed(0))
    op = Ablate(1, vector=v) if kind == "ablate" else SetProjection(1, vector=v, value=2.0)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model("llama").train()
        if checkpointing:
            enable_checkpointing(model, reentrant=reentrant)
        with hooked(model, [op]):
            loss = model(**enc).logits.pow(2).mean()
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    error = ((grads[1] - grads[0]).norm() / grads[0].norm()).item()
    assert error <= 1e-5, f"{kind}, reentrant={reentrant}: relative gradient error {error:.2e}"


def test_peft_lora_wrapped_model(llama, tok):
    enc = _inputs(tok)
    v = torch.randn(32)
    with hooked(llama, [Add(1, vector=v, alpha=3.0)]), torch.no_grad():
        expected = llama(**enc).logits
    peft_model = get_peft_model(llama, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    with hooked(peft_model, [Add(1, vector=v, alpha=3.0), Capture(1)]) as session, torch.no_grad():
        got = peft_model(**enc).logits
    assert torch.allclose(got, expected, atol=1e-5)  # LoRA B starts at zero
    assert session.captures.get(1).shape == (2, enc["input_ids"].shape[1], 32)
    assert _hooks_left(peft_model) == 0


def test_bad_input_is_named(llama):
    with (
        pytest.raises(ValueError, match="width 16 does not match the model's hidden size 32"),
        hooked(llama, [Add(0, vector=torch.ones(16))]),
    ):
        pass
    with (
        pytest.raises(IndexError, match="layer 7 is out of range: the model has 3 decoder blocks"),
        hooked(llama, [Capture(7)]),
    ):
        pass
    with pytest.raises(ValueError, match="unknown token scope 'middle'"):
        Capture(0, scope="middle")
    with pytest.raises(ValueError, match="1-D tensor"):
        Add(0, vector=torch.ones(2, 32))
    with pytest.raises(ValueError, match="zero"):
        Ablate(0, vector=torch.zeros(32))
    assert _hooks_left(llama) == 0


def test_unknown_architecture_shows_module_tree():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(UnknownArchitectureError, match=r"Module tree:\n<root>: Sequential"):
        decoder_blocks(model)


@pytest.mark.parametrize(
    "arch", ["llama", "qwen2", "mistral", "gemma", "gemma2", "gemma3_text", "phi", "gpt2", "gpt_neox", "opt"]
)
def test_block_location_per_architecture(arch, tok):
    model = tiny_model(arch, layers=2)
    enc = _inputs(tok)
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states
    with hooked(model, [Capture(0)]) as session, torch.no_grad():
        model(**enc)
    assert len(decoder_blocks(model)) == 2
    assert torch.allclose(session.captures.get(0), hidden[1], atol=1e-5)


def test_two_captures_at_one_layer_need_distinct_keys(llama, tok):
    enc = _inputs(tok)
    with (
        pytest.raises(ValueError, match="same key"),
        hooked(llama, [Capture(1, scope="prompt", reduce="mean"), Capture(1, scope="all", reduce="mean")]),
    ):
        pass
    ops = [
        Capture(1, scope="last", reduce="mean", key="last"),
        Capture(1, scope="all", reduce="mean", key="all"),
    ]
    with hooked(llama, ops) as session, torch.no_grad():
        llama(**enc)
    hidden = session.captures
    assert not torch.allclose(hidden.mean("last"), hidden.mean("all"))
    assert hidden.counts("last").tolist() == [1.0, 1.0]
