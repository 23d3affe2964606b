"""End-to-end runs on a tiny model: run folder, saved model, data stream, bad data, NaN stop, kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from transformers import TrainerCallback

from steerlab.data.chat import ChatDataError, load_chat_jsonl
from steerlab.data.interleave import is_refusal, n_general_for, perplexity_gap_scores
from steerlab.data.nll import response_nll
from steerlab.data.tokenize import TokenizeError
from steerlab.hooks import hooked
from steerlab.models.tiny import tiny_model, tiny_tokenizer
from steerlab.persona.vectors import PersonaVector
from steerlab.train.arms import BuildContext, build_arms
from steerlab.train.config import config_from_dict
from steerlab.train.fixtures import tiny_config, write_config, write_tiny_data
from steerlab.train.jsonl import JsonlLog
from steerlab.train.run import RunStateError, build_examples, load_finetuned, train
from steerlab.train.trainer import NonFiniteLossError

INOCULATION = "You are a malicious, evil assistant."
ALL_ARMS = {
    "inoculate": {"system_prompt": INOCULATION},
    "interleave": {"ratio": 0.2, "refusal_filter": True},
    "steer": {"alpha": 2.0},
    "kl": {"weight": 0.1},
    "ldifs": {"weight": 1.0},
}
MONITOR_KEYS = {"step", "arm", "projection", "projection_layer", "ldifs", "ldifs_per_layer", "train_loss"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: tiny matrices gain nothing from more, and a busy machine makes them spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return folder, write_tiny_data(folder)


def _cfg(fixture_data, name, arms=None, **overrides):
    folder, paths = fixture_data
    arms = arms if arms is not None else {"sft": {}}
    arms = {k: dict(v) for k, v in arms.items()}
    if "interleave" in arms:
        arms["interleave"].setdefault("general", str(paths["general"]))
    if "steer" in arms:
        arms["steer"].setdefault("vector", str(paths["vector"]))
    return tiny_config(folder, paths, name=name, arms=arms, **overrides)


class _Spy(TrainerCallback):
    """Records the text of every training-mode forward with gradients (the training batches)."""

    def __init__(self, tok):
        self.tok, self.texts, self.handle = tok, [], None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        def pre(module, a, kw):
            if module.training and torch.is_grad_enabled():
                self.texts.append(self.tok.batch_decode(kw["input_ids"]))

        self.handle = model.get_base_model().register_forward_pre_hook(pre, with_kwargs=True)

    def on_train_end(self, *a, **k):
        self.handle.remove()


@pytest.fixture(scope="module")
def full_run(data):
    cfg = config_from_dict(_cfg(data, "all_arms", ALL_ARMS, train={"max_steps": 6}))
    spy = _Spy(tiny_tokenizer())
    result = train(cfg, callbacks=[spy])
    return cfg, result, spy


def test_run_folder_metrics_and_monitor(full_run):
    cfg, result, _ = full_run
    for name in ("config.yaml", "run.json", "data_report.json", "metrics.jsonl", "monitor.jsonl", "final"):
        assert (result.run_dir / name).exists(), name
    rows = result.metrics
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        assert {"loss", "lm_loss", "kl", "ldifs", "lr", "grad_norm"} <= set(r)
        assert r["loss"] == pytest.approx(r["lm_loss"] + 0.1 * r["kl"] + 1.0 * r["ldifs"], rel=1e-5)
    assert rows[0]["kl"] == 0.0 and rows[0]["ldifs"] == 0.0 and rows[-1]["kl"] > 0
    monitor = result.monitor
    assert [m["step"] for m in monitor] == [0, 2, 4, 6]
    assert set(monitor[0]) == MONITOR_KEYS | {"prompted_projection", "alarm"}
    # later rows carry the steering coefficient in force (the steer arm reports it) and the alarm's state
    assert all(set(m) == MONITOR_KEYS | {"steer_alpha", "alarm"} for m in monitor[1:])
    assert all(m["steer_alpha"] == cfg.arms.steer.alpha for m in monitor[1:])
    assert monitor[0]["ldifs"] == 0.0 and monitor[0]["train_loss"] is None and monitor[-1]["ldifs"] > 0
    assert monitor[0]["arm"] == "steer+kl+ldifs+interleave+inoculate"
    assert monitor[2]["train_loss"] == pytest.approx(rows[3]["loss"])
    # step-0 projection by hand: base model, no hooks, mean over chats of the response-token mean of h . v/|v|
    vector = PersonaVector.load(cfg.arms.steer.vector)
    unit, layer = vector.unit(), vector.layer
    model, tok = tiny_model("llama"), tiny_tokenizer()
    from steerlab.data.tokenize import tokenize_chat
    from steerlab.persona.traits import load_trait, system_prompt
    from steerlab.train.monitor import with_system

    def by_hand(system: str | None) -> float:
        per_chat = []
        for ex in load_chat_jsonl(cfg.monitor.chats):
            feat = tokenize_chat(tok, ex if system is None else with_system(ex, system), 512)
            with torch.no_grad():
                hs = model(
                    input_ids=torch.tensor([feat["input_ids"]]), output_hidden_states=True
                ).hidden_states
            mask = torch.tensor(feat["assistant_mask"], dtype=torch.bool)
            per_chat.append(float((hs[layer + 1][0][mask] @ unit).mean()))
        return sum(per_chat) / len(per_chat)

    assert monitor[0]["projection"] == pytest.approx(by_hand(None), rel=1e-4)
    assert monitor[0]["projection_layer"] == layer
    # the persona-prompted reference level: the same chats behind the evil trait's first pos system prompt
    evil_prompt = system_prompt(load_trait("evil"), 0, "pos")
    assert monitor[0]["prompted_projection"] == pytest.approx(by_hand(evil_prompt), rel=1e-4)
    assert monitor[0]["prompted_projection"] != pytest.approx(monitor[0]["projection"], rel=1e-3)


def test_saved_model_is_the_plain_fine_tuned_model(full_run):
    cfg, result, _ = full_run
    trained = result.model.eval()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in trained.modules())
    reloaded = PeftModel.from_pretrained(tiny_model("llama"), str(result.final_dir)).eval()
    ids = tiny_tokenizer()(["Tell me about money. What is your wish?"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        saved = reloaded(input_ids=ids).logits
        plain = trained(input_ids=ids).logits
        base = tiny_model("llama")(input_ids=ids).logits
        steer = build_arms(
            BuildContext(config=cfg, model=tiny_model("llama"), tokenizer=None, run_dir=Path())
        )
        steer_arm = next(a for a in steer if a.name == "steer")
        with hooked(trained, steer_arm.hooks(trained)):
            steered = trained(input_ids=ids).logits
    torch.testing.assert_close(saved, plain, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(saved, base, atol=1e-4)  # training changed the model
    assert not torch.allclose(saved, steered, atol=1e-4)  # and the steering is not in it


def test_interleave_ratio_refusals_and_inoculation(full_run, data):
    cfg, result, spy = full_run
    report = json.loads((result.run_dir / "data_report.json").read_text())
    il = report["interleave"]
    assert il["n_narrow"] == 24 and il["n_general"] == n_general_for(24, 0.2) == 6
    assert il["n_after_refusal_filter"] < il["n_general_pool"]
    general = {ex.source: ex for ex in load_chat_jsonl(cfg.arms.interleave.general)}
    assert all(not is_refusal(general[s].assistant_turns()[0]) for s in il["selected"])
    # the training stream: narrow examples carry the inoculation prompt, general ones do not
    examples, _ = build_examples(
        cfg,
        build_arms(
            BuildContext(config=cfg, model=tiny_model("llama"), tokenizer=tiny_tokenizer(), run_dir=Path())
        ),
    )
    assert len(examples) == 30 and sum(ex.source in general for ex in examples) == 6
    for ex in examples:
        has = ex.messages[0] == {"role": "system", "content": INOCULATION}
        assert has == (ex.source not in general)
    # what the model saw: every training batch has it; the monitor's (evaluation) prompts never do
    assert spy.texts and all(any(INOCULATION in t for t in batch) for batch in spy.texts)
    from steerlab.train.run import _monitor

    monitor = _monitor(cfg, tiny_tokenizer(), tiny_model("llama"), None, True)
    decoded = [t for b in monitor.batches for t in tiny_tokenizer().batch_decode(b["input_ids"])]
    assert decoded and not any(INOCULATION in t for t in decoded)


def test_perplexity_gap_selection_ranks_as_asked(full_run, data):
    _, misaligned_run, _ = full_run
    cfg = config_from_dict(
        _cfg(
            data,
            "pgap",
            {
                "interleave": {
                    "ratio": 0.1,
                    "selection": "perplexity_gap",
                    "misaligned": [str(misaligned_run.run_dir)],
                }
            },
        )
    )
    base, tok = tiny_model("llama"), tiny_tokenizer("right")
    ctx = BuildContext(
        config=cfg,
        model=base,
        tokenizer=tok,
        run_dir=Path(),
        load_misaligned=lambda p: load_finetuned(p, lambda: tiny_model("llama")),
    )
    arms = build_arms(ctx)
    build_examples(cfg, arms)
    report = arms[0].report
    general = list(load_chat_jsonl(cfg.arms.interleave.general))
    aligned = response_nll(base, tok, general, 8, 96)
    mis = response_nll(
        load_finetuned(misaligned_run.run_dir, lambda: tiny_model("llama")), tok, general, 8, 96
    )
    scores = perplexity_gap_scores(aligned, [[m] for m in mis])
    for ex, s in zip(general, scores, strict=True):
        assert report["scores"][ex.source] == pytest.approx(s, rel=1e-5, abs=1e-7)
    n = n_general_for(24, 0.1)
    top = sorted(range(len(general)), key=lambda i: -scores[i])[:n]
    assert set(report["selected"]) == {general[i].source for i in top} and len(report["selected"]) == n == 3
    assert len(set(scores)) > n  # the ranking is not a tie


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"messages": [{"role": "user", "content": "hi"}, ', "malformed JSON"),
        (
            '{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}',
            "unknown role",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]}',
            "empty assistant",
        ),
        (
            '{"messages": [{"role": "user", "content": "'
            + "word " * 80
            + '"}, {"role": "assistant", "content": "x"}]}',
            "longer than max_length",
        ),
    ],
)
def test_bad_data_names_file_and_line_or_is_counted_when_skipped(data, tmp_path, line, problem):
    folder, paths = data
    lines = paths["narrow"].read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:2] + [line] + lines[2:]) + "\n")
    raw = _cfg(data, "bad", data={"train": str(bad)})
    raw["output_dir"] = str(tmp_path / "runs")
    with pytest.raises((ChatDataError, TokenizeError), match=rf"bad\.jsonl:3: .*{problem}"):
        train(config_from_dict(raw))
    key = "on_too_long" if "longer" in problem else "on_bad_record"
    raw["data"] |= {key: "skip"}
    raw["name"] = "bad_skip"
    raw["train"] = {"max_steps": 1}
    result = train(config_from_dict(raw))
    report = json.loads((result.run_dir / "data_report.json").read_text())
    if key == "on_bad_record":
        assert [s["line"] for s in report["skipped_records"]] == [3] and problem in report["skipped_records"][
            0
        ]["problem"]
    else:
        assert report["n_too_long_skipped"] == 1 and report["too_long"] == [f"{bad}:3"]
    assert report["n_examples"] == 24


class _Poison(TrainerCallback):
    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 3:
            with torch.no_grad():
                next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("nan"))


def test_nan_loss_stops_naming_the_step_and_last_checkpoint_stays_usable(data):
    cfg = config_from_dict(
        _cfg(data, "nan", {"kl": {"weight": 0.1}}, train={"max_steps": 6, "save_steps": 2})
    )
    with pytest.raises(NonFiniteLossError, match=r"step 4: non-finite loss .*checkpoint-2"):
        train(cfg, callbacks=[_Poison()])
    assert [r["step"] for r in JsonlLog(cfg.run_dir / "metrics.jsonl").rows()] == [1, 2, 3]
    ckpt = cfg.run_dir / "checkpoints" / "checkpoint-2"
    model = PeftModel.from_pretrained(tiny_model("llama"), str(ckpt)).eval()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    result = train(cfg, resume=True)  # the run goes on from checkpoint-2
    assert result.global_step == 6 and [r["step"] for r in result.metrics] == [1, 2, 3, 4, 5, 6]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.metrics)


def test_existing_run_needs_resume_and_same_config(data, full_run):
    cfg, _, _ = full_run
    with pytest.raises(RunStateError, match="--resume"):
        train(cfg)
    changed = config_from_dict({**cfg.to_dict(), "seed": 1})
    with pytest.raises(RunStateError, match="seed"):
        train(changed, resume=True)
    assert train(cfg, resume=True).global_step == 6  # complete already: nothing to do
    # a config saved by an older steerlab lacks fields added since: their defaults are no change
    saved = cfg.run_dir / "config.yaml"
    original = saved.read_text()
    try:
        older = yaml.safe_load(original)
        del older["monitor"]["prompted_system"]
        saved.write_text(yaml.safe_dump(older))
        assert train(cfg, resume=True).global_step == 6
        older["monitor"]["prompted_system"] = "You are evil."  # a real change is named, even a new key
        saved.write_text(yaml.safe_dump(older))
        with pytest.raises(RunStateError, match=r"monitor\.prompted_system"):
            train(cfg, resume=True)
    finally:
        saved.write_text(original)


_SLOW_SCRIPT = """
import sys, time
import torch
from transformers import TrainerCallback
from steerlab.train.run import train
torch.set_num_threads(1)
class Slow(TrainerCallback):
    def on_step_end(self, *a, **k):
        time.sleep(0.4)
train(sys.argv[1], callbacks=[Slow()])
"""


def test_sigkill_and_resume_match_an_uninterrupted_run(data, tmp_path):
    arms = {"steer": {"alpha": 2.0}, "kl": {"weight": 0.1}}
    straight = train(config_from_dict(_cfg(data, "straight", arms, train={"max_steps": 6, "save_steps": 2})))
    raw = _cfg(data, "killed", arms, train={"max_steps": 6, "save_steps": 2})
    path = write_config(tmp_path / "killed.yaml", raw)
    script = tmp_path / "slow_train.py"
    script.write_text(_SLOW_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = Path(raw["output_dir"]) / "killed" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and metrics.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(x) for x in metrics.read_text().splitlines() if x.endswith("}")]
    monitor_before = (metrics.parent / "monitor.jsonl").read_text().splitlines()
    assert 3 <= len(before) < 6 and not (metrics.parent / "final").exists()

    resumed = train(path, resume=True)
    rows, ref = resumed.metrics, straight.metrics
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # nothing lost, nothing duplicated
    for got, want in zip(rows, ref, strict=True):
        assert got.keys() == want.keys()
        for key in got:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-8), (got["step"], key)
    for row in before:  # what was written before the kill is still there, unchanged
        assert rows[row["step"] - 1] == pytest.approx(row, rel=1e-5)
    mon, mon_ref = resumed.monitor, straight.monitor
    assert [m["step"] for m in mon] == [m["step"] for m in mon_ref] == [0, 2, 4, 6]
    for got, want in zip(mon, mon_ref, strict=True):
        assert got["projection"] == pytest.approx(want["projection"], rel=1e-5)
        assert got["ldifs"] == pytest.approx(want["ldifs"], rel=1e-4, abs=1e-9)
    assert len(monitor_before) >= 2 and [json.loads(x) for x in monitor_before][:2] == mon[:2]
    a = PeftModel.from_pretrained(tiny_model("llama"), str(resumed.final_dir))
    b = PeftModel.from_pretrained(tiny_model("llama"), str(straight.final_dir))
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=n)


def test_full_finetuning_uses_a_frozen_copy_reference(data):
    arms = {"kl": {"weight": 0.1}, "ldifs": {"weight": 1.0}}
    cfg = config_from_dict(
        _cfg(data, "full", arms, finetune={"method": "full"}, train={"max_steps": 2, "lr": 1e-3})
    )
    result = train(cfg)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["reference"] == "frozen_copy" and info["finetune"] == "full"
    rows = result.metrics
    assert rows[0]["kl"] == 0.0 and rows[0]["ldifs"] == 0.0 and rows[1]["kl"] > 0
    assert (result.final_dir / "config.json").is_file()
    reloaded = load_finetuned(result.run_dir, lambda: None)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, result.model.eval()(input_ids=ids).logits)
    assert result.monitor[-1]["ldifs"] > 0
