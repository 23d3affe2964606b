"""Cached reference outputs: exact where they should be, checked against the data, safe across kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from steerlab.data.tokenize import ChatCollator, tokenize_chat
from steerlab.models.tiny import tiny_model, tiny_tokenizer
from steerlab.train.arms import Arm, KLArm, LdifsArm, register_arm, unregister_arm
from steerlab.train.arms.kl import top_k_kl, top_k_record
from steerlab.train.config import ConfigError, config_from_dict
from steerlab.train.fixtures import tiny_chats, tiny_config, write_config, write_tiny_data
from steerlab.train.refcache import MANIFEST, CacheBuilder, ReferenceCacheError, open_or_build
from steerlab.train.reference import Reference
from steerlab.train.run import train
from steerlab.train.trainer import arm_loss, batch_counts

VOCAB = 384  # the tiny tokenizer's


@pytest.fixture(scope="module")
def features():
    tok = tiny_tokenizer("right")
    feats = [tokenize_chat(tok, ex, 64) for ex in tiny_chats("narrow", 6)]
    return [f | {"example_index": i, "example_source": f"narrow:{i + 1}"} for i, f in enumerate(feats)]


def _batch(features, rows):
    tok = tiny_tokenizer("right")
    batch = ChatCollator(tok)(
        [{k: v for k, v in features[i].items() if not k.startswith("example_")} for i in rows]
    )
    return batch | {"example_index": torch.tensor(rows)}


def _lora():
    torch.manual_seed(0)
    model = get_peft_model(tiny_model("llama"), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    return model.train()


def _perturb(model):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def _cache(tmp_path, arms, model, features, name="cache", tokenizer=None):
    builder = CacheBuilder(
        tmp_path / name, arms, model, Reference(), tokenizer or tiny_tokenizer("right"), features, 4
    )
    return open_or_build(builder)


def _cached_twin(arm):
    twin = type(arm).__new__(type(arm))
    twin.__dict__.update(arm.__dict__)
    twin.cache = True
    return twin


class _CountingReference(Reference):
    calls = 0

    def active(self, policy):
        self.calls += 1
        return super().active(policy)


def _grads(model):
    return torch.cat(
        [p.grad.flatten() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None]
    )


@pytest.mark.parametrize(
    "live",
    [
        KLArm(1.0, "assistant", top_k=None),
        KLArm(1.0, "all", top_k=VOCAB),
        LdifsArm(1.0, [0, 1], "all", "float32"),
    ],
    ids=["kl-assistant-full-vocab", "kl-all-k=vocab", "ldifs-float32"],
)
def test_cache_equals_live_loss_and_gradient(tmp_path, features, live):
    model = _lora()
    cache = _cache(tmp_path, [_cached_twin(live)], model, features)  # built before training: LoRA B = 0
    _perturb(model)
    batch = _batch(features, [5, 1, 3])  # another order and padding than the cache pass
    counts = batch_counts(batch)
    results, forwards = [], []
    for arm in (live, _cached_twin(live)):
        model.zero_grad()
        reference = _CountingReference()
        loss, terms, _ = arm_loss(model, batch, [arm], reference, counts=counts, reference_cache=cache)
        loss.backward()
        results.append((terms[live.name].detach(), _grads(model)))
        forwards.append(reference.calls)
    assert forwards == [1, 0]  # the cached arm runs no reference forward
    (live_value, live_grad), (cached_value, cached_grad) = results
    assert live_value > 1e-4
    assert float(cached_value) == pytest.approx(float(live_value), rel=1e-5)
    torch.testing.assert_close(cached_grad, live_grad, rtol=1e-4, atol=1e-7)


def test_top_k_kl_is_a_lower_bound_that_tightens_with_k():
    gen = torch.Generator().manual_seed(0)
    p_logits, q_logits = torch.randn(5, 50, generator=gen) * 3, torch.randn(5, 50, generator=gen) * 3
    logq = q_logits.log_softmax(-1)
    full = (p_logits.softmax(-1) * (p_logits.log_softmax(-1) - logq)).sum(-1)
    values = []
    for k in (1, 5, 20, 49, 50):
        rec = top_k_record(logq, k)
        logp_k = p_logits.log_softmax(-1).gather(-1, rec["ids"].long())
        values.append(top_k_kl(logp_k, rec["logprobs"], rec["log_rest"]))
        assert (values[-1] <= full + 1e-5).all() and (values[-1] >= -1e-6).all()
    torch.testing.assert_close(values[-1], full, rtol=1e-5, atol=1e-6)
    assert float(values[0].sum()) < float(values[2].sum()) < float(full.sum())


def test_float16_ldifs_cache_is_close_to_live(tmp_path, features):
    model = _lora()
    live = LdifsArm(1.0, [0, 2], "all", "float16")
    cache = _cache(tmp_path, [_cached_twin(live)], model, features)
    _perturb(model)
    batch = _batch(features, [0, 2])
    with torch.no_grad():
        want = arm_loss(model, batch, [live])[1]["ldifs"]
        got = arm_loss(model, batch, [_cached_twin(live)], reference_cache=cache)[1]["ldifs"]
    assert float(got) == pytest.approx(float(want), rel=1e-3)


def test_changed_data_or_tokenizer_is_refused_never_reused(tmp_path, features):
    model = _lora()
    arms = [_cached_twin(KLArm(1.0, top_k=8))]
    _cache(tmp_path, arms, model, features)
    manifest = (tmp_path / "cache" / MANIFEST).read_text()
    changed = [dict(f) for f in features]
    changed[4] = changed[4] | {"input_ids": [*changed[4]["input_ids"][:-1], 7]}
    with pytest.raises(ReferenceCacheError, match=r"example 4 \(narrow:5\) tokenizes differently.*Delete"):
        _cache(tmp_path, arms, model, changed)
    with pytest.raises(ReferenceCacheError, match="6 tokenized examples then, 5 now"):
        _cache(tmp_path, arms, model, features[:5])
    other_tok = tiny_tokenizer("right")
    other_tok.chat_template = (other_tok.chat_template or "") + " "
    with pytest.raises(ReferenceCacheError, match="the tokenizer changed"):
        _cache(tmp_path, arms, model, features, tokenizer=other_tok)
    with pytest.raises(ReferenceCacheError, match="settings changed"):
        _cache(tmp_path, [_cached_twin(KLArm(1.0, top_k=16))], model, features)
    assert (tmp_path / "cache" / MANIFEST).read_text() == manifest  # refused, not rebuilt


@dataclass
class _AugConfig:
    p: float = 0.1


class _Augment(Arm):
    """An arm whose hooks would change the reference's input every step (sampled noise)."""

    name = "augment_test"
    order = 80
    config_class = _AugConfig
    fixed_reference_inputs = False

    @classmethod
    def from_config(cls, cfg, ctx):
        return cls()


def test_caching_invalid_with_an_arm_that_changes_the_reference_input_per_step():
    register_arm(_Augment)
    try:
        raw = {
            "name": "t",
            "model": {"name": "tiny:llama"},
            "data": {"train": "x.jsonl"},
            "monitor": {"every": 0},
            "arms": {"augment_test": {}, "kl": {"cache": True}},
        }
        with pytest.raises(
            ConfigError, match=r"exp\.yaml: arms\.kl\.cache: caching .* invalid with the augment_test arm"
        ):
            config_from_dict(raw, source="exp.yaml")
        config_from_dict(raw | {"arms": {"augment_test": {}, "kl": {"cache": False}}})  # live is fine
    finally:
        unregister_arm("augment_test")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return folder, write_tiny_data(folder)


CACHED = {
    "steer": {"alpha": 2.0},
    "kl": {"weight": 0.1, "cache": True},
    "ldifs": {"weight": 1.0, "cache": True},
}


def _cfg(data, name, arms, **train):
    folder, paths = data
    arms = {k: dict(v) for k, v in arms.items()}
    if "steer" in arms:
        arms["steer"]["vector"] = str(paths["vector"])
    return tiny_config(folder, paths, name=name, arms=arms, train={"max_steps": 6, "save_steps": 2, **train})


@pytest.mark.parametrize("method", ["lora", "full"])
def test_cached_run_follows_the_live_run(data, method):
    """With every token kept (top_k: null, float32 features) a cached run is the live run.

    Under full fine-tuning the cached run keeps no frozen copy: its cache comes from the untrained policy.
    """
    exact = {
        **CACHED,
        "kl": {**CACHED["kl"], "top_k": None},
        "ldifs": {**CACHED["ldifs"], "cache_dtype": "float32"},
    }
    live = {k: {kk: vv for kk, vv in v.items() if kk != "cache"} for k, v in CACHED.items()}
    extra = {"finetune": {"method": method}} if method == "full" else {}
    lr = {"lr": 1e-3} if method == "full" else {}
    runs = [
        train(config_from_dict(_cfg(data, f"{name}_{method}", arms, **lr) | extra))
        for name, arms in (("live", live), ("exact", exact))
    ]
    for got, want in zip(runs[1].metrics, runs[0].metrics, strict=True):
        for key in ("loss", "lm_loss", "kl", "ldifs", "grad_norm"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-9), (got["step"], key)
    assert runs[0].metrics[-1]["kl"] > 1e-6
    info = [json.loads((run.run_dir / "run.json").read_text()) for run in runs]
    assert {a["name"]: a.get("cache") for a in info[1]["arms"]} == {"steer": None, "kl": True, "ldifs": True}
    if method == "full":
        assert (info[0]["reference"], info[1]["reference"]) == ("frozen_copy", "cache")
    manifest = json.loads((runs[1].run_dir / "reference_cache" / MANIFEST).read_text())
    assert len(manifest["record"]["examples"]) == 24 and manifest["bytes"] > 0


_SCRIPT = """
import sys, time
import torch
from transformers import TrainerCallback
import steerlab.train.refcache as refcache
from steerlab.train.run import train
torch.set_num_threads(1)
mode = sys.argv[2]
if mode == "build":  # slow cache build, one small shard per batch: killed between shards
    refcache.SHARD_BYTES = 1
    write = refcache.CacheBuilder._write_shard
    def slow_write(self, *a, **k):
        out = write(self, *a, **k)
        time.sleep(1.0)
        return out
    refcache.CacheBuilder._write_shard = slow_write
class Slow(TrainerCallback):
    def on_step_end(self, *a, **k):
        if mode == "train":
            time.sleep(0.4)
train(sys.argv[1], callbacks=[Slow()])
"""


def _kill_when(script, path, mode, ready, timeout=240):
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), mode],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_sigkill_in_training_and_in_the_cache_build_resume_to_the_same_run(data, tmp_path):
    straight = train(config_from_dict(_cfg(data, "cached_straight", CACHED)))
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)

    # killed mid-training: the resumed run reuses the cache as it is (same files) and ends where straight did
    raw = _cfg(data, "cached_killed", CACHED)
    path = write_config(tmp_path / "killed.yaml", raw)
    run_dir = Path(raw["output_dir"]) / "cached_killed"
    metrics = run_dir / "metrics.jsonl"
    _kill_when(script, path, "train", lambda: metrics.is_file() and metrics.read_text().count("\n") >= 3)
    assert not (run_dir / "final").exists()
    before = _files(run_dir / "reference_cache")
    resumed = train(path, resume=True)
    assert _files(run_dir / "reference_cache") == before  # reused, not rebuilt or rewritten

    # killed mid-build: no manifest (never read half-written); the rerun keeps the complete shards
    raw = _cfg(data, "cached_build_killed", CACHED)
    path = write_config(tmp_path / "build_killed.yaml", raw)
    cache_dir = Path(raw["output_dir"]) / "cached_build_killed" / "reference_cache"
    _kill_when(
        script, path, "build", lambda: cache_dir.is_dir() and len(list(cache_dir.glob("shard-*"))) >= 2
    )
    assert not (cache_dir / MANIFEST).exists()
    rebuilt = train(path, resume=True)
    manifest = json.loads((cache_dir / MANIFEST).read_text())
    assert manifest["shards_reused"] >= 2 and not list(cache_dir.glob(".*.tmp"))

    for run in (resumed, rebuilt):
        assert [r["step"] for r in run.metrics] == [1, 2, 3, 4, 5, 6]
        for got, want in zip(run.metrics, straight.metrics, strict=True):
            assert got.keys() == want.keys()
            for key in got:
                assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-8), (got["step"], key)
