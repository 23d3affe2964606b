"""Each arm's loss and hooks against values computed by hand on a tiny LoRA model (no Trainer)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from steerlab.data.tokenize import ChatCollator, tokenize_chat
from steerlab.hooks import Capture, hooked
from steerlab.models.tiny import tiny_model, tiny_tokenizer
from steerlab.train.arms import KLArm, LdifsArm, SteerArm, default_blocks
from steerlab.train.fixtures import tiny_chats, tiny_vector
from steerlab.train.trainer import arm_loss, batch_counts


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: tiny matrices gain nothing from more, and a busy machine makes them spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def batch():
    tok = tiny_tokenizer("right")
    feats = [tokenize_chat(tok, ex, 64) for ex in tiny_chats("narrow", 4)]
    return ChatCollator(tok)(feats)


def _lora(perturb: bool = False):
    torch.manual_seed(0)
    model = get_peft_model(tiny_model("llama"), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    if perturb:
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.train()


def _no_hooks_left(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_kl_and_ldifs_are_exactly_zero_at_step0_with_lora(batch):
    model = _lora()
    vector = tiny_vector(model)
    arms = [SteerArm(vector, alpha=3.0), KLArm(1.0), LdifsArm(1.0, [0, 1, 2])]
    loss, terms, _ = arm_loss(model, batch, arms)
    assert terms["kl"].item() == 0.0
    assert terms["ldifs"].item() == 0.0
    assert terms["lm_loss"].item() > 0 and loss.item() == terms["lm_loss"].item()
    assert _no_hooks_left(model)


@pytest.mark.parametrize("tokens", ["assistant", "all"])
def test_kl_matches_hand_computation(batch, tokens):
    model = _lora(perturb=True)
    _, terms, _ = arm_loss(model, batch, [KLArm(0.5, tokens=tokens)])
    with torch.no_grad():
        p_logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with model.disable_adapter():
            q_logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = batch["assistant_mask"] if tokens == "assistant" else batch["attention_mask"]
    total, n = 0.0, 0
    for b in range(p_logits.shape[0]):
        for t in range(p_logits.shape[1] - 1):
            if mask[b, t + 1]:
                p, q = p_logits[b, t].double().softmax(-1), q_logits[b, t].double().softmax(-1)
                total += float((p * (p.log() - q.log())).sum())
                n += 1
    assert total / n > 1e-4
    assert terms["kl"].item() == pytest.approx(total / n, rel=1e-4)


def _ldifs_by_hand(model, batch, layers):
    with torch.no_grad():
        kw = {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "output_hidden_states": True,
        }
        hs = model(**kw).hidden_states
        with model.disable_adapter():
            ref = model(**kw).hidden_states
    mask = batch["attention_mask"].bool()
    values = []
    for layer in layers:
        h, r = hs[layer + 1][mask].double(), ref[layer + 1][mask].double()
        values.append(((h - r).pow(2).sum(-1) / r.pow(2).sum(-1)).mean())
    return float(torch.stack(values).mean())


def _lora_grads(model):
    return torch.cat(
        [p.grad.flatten() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None]
    )


def test_ldifs_matches_hand_computation_and_alone_gives_a_gradient(batch):
    model = _lora(perturb=True)
    layers = [0, 1]  # not the last block: transformers' last hidden_states entry is after the final norm
    _, terms, _ = arm_loss(model, batch, [LdifsArm(1.0, layers)])
    assert terms["ldifs"].item() == pytest.approx(_ldifs_by_hand(model, batch, layers), rel=1e-4)
    model.zero_grad()
    terms["ldifs"].backward()
    grad = _lora_grads(model)
    assert torch.isfinite(grad).all() and grad.abs().max() > 1e-6
    # ... and it changes the gradient of the full loss
    model.zero_grad()
    arm_loss(model, batch, [])[0].backward()
    plain = _lora_grads(model)
    model.zero_grad()
    arm_loss(model, batch, [LdifsArm(1.0, layers)])[0].backward()
    assert not torch.allclose(_lora_grads(model), plain)


def test_ldifs_gradient_survives_gradient_checkpointing(batch):
    grads = []
    for checkpointing in (False, True):
        model = _lora(perturb=True)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.zero_grad()
        arm_loss(model, batch, [LdifsArm(1.0, [1])])[1]["ldifs"].backward()
        grads.append(_lora_grads(model))
    assert grads[0].abs().max() > 1e-6
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-8)


def test_steer_adds_alpha_v_in_training_forwards_only(batch):
    model = _lora()
    vector = tiny_vector(model, layer=1)
    steer = SteerArm(vector, alpha=2.5)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        with hooked(model, [*steer.hooks(model), Capture(layer=1)]) as steered:
            model(**inputs)
        with hooked(model, [Capture(layer=1)]) as plain:
            model(**inputs)
        plain_logits = model(**inputs).logits
    mask = batch["attention_mask"].bool()
    diff = (steered.captures.get(1) - plain.captures.get(1))[mask]
    torch.testing.assert_close(diff, (2.5 * vector.vector(1)).expand_as(diff), rtol=1e-5, atol=1e-5)
    # in training mode the trainer's forward is steered; in eval mode (evaluation, monitor) it is not
    with torch.no_grad():
        train_logits = arm_loss(model, batch, [steer])[2].logits
        model.eval()
        eval_logits = arm_loss(model, batch, [steer])[2].logits
    assert not torch.allclose(train_logits, plain_logits)
    torch.testing.assert_close(eval_logits, plain_logits, rtol=0, atol=0)
    assert _no_hooks_left(model)


def test_global_normalisers_make_micro_batches_add_up(batch):
    """Terms of two half batches, each normalised by the whole batch's counts, sum to the whole batch's."""
    model = _lora(perturb=True)
    arms = [SteerArm(tiny_vector(model), 2.0), KLArm(1.0), LdifsArm(1.0, [0, 2])]
    counts = batch_counts(batch)
    with torch.no_grad():
        whole = arm_loss(model, batch, arms, counts=counts)[1]
        halves = [
            arm_loss(model, {k: v[s] for k, v in batch.items()}, arms, counts=counts)[1]
            for s in (slice(0, 2), slice(2, 4))
        ]
    for name in ("lm_loss", "kl", "ldifs"):
        assert float(halves[0][name] + halves[1][name]) == pytest.approx(float(whole[name]), rel=1e-5)
    lm = F.cross_entropy(
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        .logits[:, :-1]
        .transpose(1, 2),
        batch["labels"][:, 1:],
        ignore_index=-100,
    )
    assert float(arm_loss(model, batch, [])[1]["lm_loss"].detach()) == pytest.approx(float(lm), rel=1e-5)


def test_default_blocks_are_evenly_spaced():
    assert default_blocks(30, 5) == [0, 7, 14, 22, 29]
    assert default_blocks(3, 5) == [0, 1, 2]
    assert default_blocks(12, 1) == [11]
