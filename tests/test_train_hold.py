"""Holding steering, early stopping and the drift alarm on the tiny model: the rules, their files, resume."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback

from steerlab.train.alarm import AlarmConfig, DriftAlarm
from steerlab.train.arms.steer_hold import PIState, SteerHoldArmConfig, pi_update
from steerlab.train.config import ConfigError, config_from_dict
from steerlab.train.fixtures import tiny_config, write_tiny_data
from steerlab.train.jsonl import JsonlLog
from steerlab.train.run import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return folder, write_tiny_data(folder)


def _cfg(folder, paths, name, arms, **over):
    raw = tiny_config(folder, paths, name=name, arms=arms, **over)
    raw["data"]["limit"] = 16  # 24 narrow chats: 8 after the limit for calibration / held-out sets
    return config_from_dict(raw)


# ------------------------------------------------------------------------------------------------ the PI rule


def test_pi_rule_holds_the_target_and_does_not_wind_up():
    cfg = SteerHoldArmConfig(vector="v", kp=2.0, ki=1.0, alpha_start=0.5, alpha_max=4.0)
    state = PIState(target=10.0)
    assert pi_update(cfg, state, 10.0, 4.0) == (0.0, 0.0, 0.5)  # on target: the start coefficient
    error, integral, alpha = pi_update(cfg, state, 14.0, 4.0)  # drifted one |v| toward the persona
    assert (error, integral, alpha) == (1.0, 1.0, 0.5 + 2.0 + 1.0)
    assert pi_update(cfg, state, 6.0, 4.0)[2] == 0.0  # below target: less steering, clipped at alpha_min
    # pinned at alpha_max while the drift goes on: the sum is not extended, so it recovers at once
    state = PIState(target=0.0, integral=1.0)
    error, integral, alpha = pi_update(cfg, state, 8.0, 4.0)
    assert alpha == 4.0 and integral == 1.0
    state.integral = integral
    assert pi_update(cfg, state, 0.0, 4.0)[2] == pytest.approx(0.5 + 1.0)  # back on target


def test_steer_hold_config_is_checked(data, tmp_path):
    folder, paths = data
    vector = str(paths["vector"])
    with pytest.raises(ConfigError, match="arms.steer_hold.alpha_start"):
        _cfg(folder, paths, "x", {"steer_hold": {"vector": vector, "alpha_start": 9.0}})
    with pytest.raises(ConfigError, match="steer_hold and steer both steer"):
        _cfg(folder, paths, "x", {"steer": {"vector": vector}, "steer_hold": {"vector": vector}})
    # alpha changes between steps, so a reference arm cannot cache outputs computed under the old one
    with pytest.raises(ConfigError, match="arms.kl.cache: .*steer_hold arm"):
        _cfg(folder, paths, "x", {"steer_hold": {"vector": vector}, "kl": {"cache": True}})
    # the monitor chats may not set the coefficient
    cfg = _cfg(
        folder,
        paths,
        "mon",
        {"steer_hold": {"vector": vector, "calibration_file": str(paths["monitor"]), "n": 4}},
    )
    with pytest.raises(ConfigError, match="asks what monitor chat"):
        train(cfg)


def test_steer_hold_follows_its_rule_and_reports_alpha(data):
    folder, paths = data
    hold = {"vector": str(paths["vector"]), "kp": 50.0, "ki": 20.0, "every": 1, "n": 6, "alpha_max": 100.0}
    cfg = _cfg(folder, paths, "hold", {"steer_hold": hold}, train={"max_steps": 4, "lr": 5e-2})
    result = train(cfg)
    rows = JsonlLog(result.run_dir / "steer_hold.jsonl").rows()
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0]["error"] == 0.0 and rows[0]["projection"] == rows[0]["target"]
    norm = float(torch.linalg.vector_norm(_direction(paths)))
    state = PIState(rows[0]["target"])
    for row in rows[1:]:  # every logged alpha is the rule applied to the logged reading
        error, state.integral, alpha = pi_update(SteerHoldArmConfig(**hold), state, row["projection"], norm)
        assert (row["error"], row["alpha"]) == (pytest.approx(error), pytest.approx(alpha))
    assert any(r["alpha"] != 0.0 for r in rows[1:])
    # the coefficient in force at step s is the one set by the reading after step s - 1
    metrics = {r["step"]: r for r in result.metrics}
    for before, row in zip(rows, rows[1:], strict=False):
        assert metrics[row["step"]]["steer_alpha"] == pytest.approx(before["alpha"])
    monitor = {r["step"]: r for r in result.monitor}
    assert monitor[2]["steer_alpha"] == pytest.approx(rows[1]["alpha"]) and "steer_alpha" not in monitor[0]
    report = json.loads((result.run_dir / "data_report.json").read_text())
    assert report["steer_hold"]["calibration"]["first"].endswith(":17")  # the first line after the limit


def _direction(paths):
    from steerlab.persona.vectors import PersonaVector

    vector = PersonaVector.load(paths["vector"])
    return vector.vector(vector.layer)


class _Crash(TrainerCallback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt(f"killed at step {self.at}")


def test_controller_and_early_stopping_resume_to_the_same_files(data):
    folder, paths = data
    arms = {
        "steer_hold": {"vector": str(paths["vector"]), "kp": 20.0, "ki": 5.0, "every": 1, "n": 4},
        "early_stop": {"held_out": 4, "every": 1, "patience": 10},
    }
    over = {"train": {"max_steps": 5, "save_steps": 2, "lr": 5e-2}}
    whole = train(_cfg(folder, paths, "whole", arms, **over))
    cfg = _cfg(folder, paths, "killed", arms, **over)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[_Crash(3)])  # after the checkpoint at step 2
    resumed = train(cfg, resume=True)
    for name in ("steer_hold.jsonl", "early_stop.jsonl"):
        a, b = (JsonlLog(r.run_dir / name).rows() for r in (whole, resumed))
        assert [r["step"] for r in b] == [r["step"] for r in a] == list(range(6))
        for x, y in zip(a, b, strict=True):
            assert x.keys() == y.keys(), name
            for key, value in x.items():
                assert y[key] == (
                    pytest.approx(value, rel=1e-4, abs=1e-6) if isinstance(value, float) else value
                )


# ------------------------------------------------------------------------------------------- early stopping


def test_early_stop_stops_records_and_restores_the_best_weights(data):
    folder, paths = data
    # no reading can beat step 0 by 100 nats: two readings without improvement -> stop at step 2, and the
    # weights of step 0 (LoRA B = 0, the base model) are put back
    arms = {"early_stop": {"held_out": 4, "every": 1, "patience": 2, "min_delta": 100.0}}
    result = train(_cfg(folder, paths, "stop", arms, train={"max_steps": 6, "lr": 5e-2}))
    summary = json.loads((result.run_dir / "early_stop.json").read_text())
    assert summary["stopped_at"] == 2 and summary["best_step"] == 0 and summary["final_weights_step"] == 0
    assert "held-out LM loss" in summary["criterion"] and len(summary["readings"]) == 3
    assert result.global_step == 2 and max(r["step"] for r in result.monitor) == 2
    lora_b = [p for n, p in result.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.detach().abs().max()) == 0.0 for p in lora_b)
    assert not list((result.run_dir / "early_stop").glob("*step2*"))  # only the best snapshot is kept


def test_early_stop_that_never_triggers_keeps_the_best_reading(data):
    folder, paths = data
    arms = {"early_stop": {"held_out": 4, "every": 2, "patience": 5, "source": "split"}}
    result = train(_cfg(folder, paths, "nostop", arms, train={"max_steps": 4}))
    summary = json.loads((result.run_dir / "early_stop.json").read_text())
    losses = {r["step"]: r["held_out_loss"] for r in summary["readings"]}
    assert sorted(losses) == [0, 2, 4] and summary["stopped_at"] is None
    assert summary["best_step"] == min(losses, key=losses.get) == summary["final_weights_step"]
    report = json.loads((result.run_dir / "data_report.json").read_text())
    assert report["n_examples"] == 16 - 4 and len(report["early_stop"]["held_out"]["chats"]) == 4


def test_early_stop_rest_needs_a_limit(data):
    folder, paths = data
    raw = tiny_config(folder, paths, name="nolimit", arms={"early_stop": {}})
    with pytest.raises(ConfigError, match="data.limit is not set"):
        train(config_from_dict(raw))


# ---------------------------------------------------------------------------------------------- drift alarm


def test_alarm_rule(tmp_path):
    alarm = DriftAlarm(AlarmConfig(level=0.5), tmp_path)
    alarm.arm(base=10.0, prompted=30.0)
    assert alarm.state["threshold"] == 20.0
    assert not alarm.check(2, 19.0) and alarm.check(4, 21.0) and not alarm.check(6, 25.0)
    saved = json.loads((tmp_path / "alarm.json").read_text())
    assert (saved["fired_step"], saved["fired_projection"]) == (4, 21.0)
    alarm.forget_after(2)  # a resume from step 2 recomputes step 4
    assert not alarm.fired
    down = DriftAlarm(AlarmConfig(), tmp_path / "down")
    down.arm(base=0.0, prompted=-8.0)  # the persona side is below the base level here
    assert not down.check(1, 3.0) and down.check(2, -8.5)
    none = DriftAlarm(AlarmConfig(), tmp_path / "none")
    none.arm(base=0.0, prompted=None)
    assert not none.armed and not none.check(1, 1e9)


def test_alarm_flags_and_stops_a_run(data):
    folder, paths = data
    over = {"train": {"max_steps": 6, "lr": 5e-2}, "monitor": {"every": 1, "alarm": {"enabled": False}}}
    free = train(_cfg(folder, paths, "free", {"sft": {}}, **over))
    p = {r["step"]: r["projection"] for r in free.monitor}
    assert not (free.run_dir / "alarm.json").exists()
    # a threshold halfway to the step-2 reading: crossed first at step 2 (the run is deterministic)
    threshold = p[0] + 0.5 * (p[2] - p[0])
    assert (p[1] - threshold) * (p[2] - p[0]) < 0
    alarm = {"threshold": threshold, "stop": True}
    over["monitor"] = {"every": 1, "alarm": alarm}
    stopped = train(_cfg(folder, paths, "alarmed", {"sft": {}}, **over))
    saved = json.loads((stopped.run_dir / "alarm.json").read_text())
    assert saved["fired_step"] == 2 and saved["fired_projection"] == pytest.approx(p[2], rel=1e-5)
    assert saved["stopped"] and stopped.global_step == 2
    assert [r["alarm"] for r in stopped.monitor] == [False, False, True]


# ------------------------------------------------------------------------------- held-out sets stay held out


def test_rest_refuses_a_limit_that_would_hold_out_the_training_lines(data, tok):
    from steerlab.train.heldout import rest_of_training_file

    folder, paths = data
    cfg = _cfg(folder, paths, "zero", {"sft": {}})
    cfg.data.limit = 0  # the config refuses it at load; a config edited in code must not slip through
    with pytest.raises(ConfigError, match=r"where: 'rest' needs data.limit >= 1, got 0"):
        rest_of_training_file(cfg, 4, tok, "where")
    with pytest.raises(ConfigError, match=r"data.limit: must be >= 1 \(or null\), got 0"):
        config_from_dict(tiny_config(folder, paths, name="zero", data={"limit": 0}))


def test_rest_refuses_a_held_out_chat_the_run_trains_on(data, tok, tmp_path):
    from steerlab.data.chat import write_chat_jsonl
    from steerlab.train.fixtures import tiny_chats
    from steerlab.train.heldout import rest_of_training_file

    folder, paths = data
    chats = tiny_chats("narrow", 24)
    chats[17] = chats[2]  # line 18 (held out after limit 16) repeats line 3 (trained)
    repeated = write_chat_jsonl(tmp_path / "repeated.jsonl", chats)
    cfg = _cfg(folder, paths, "rep", {"sft": {}}, data={"train": str(repeated)})
    with pytest.raises(
        ConfigError, match=r"held-out chat .*repeated.jsonl:18 .* training chat .*repeated.jsonl:3"
    ):
        rest_of_training_file(cfg, 4, tok, "arms.early_stop.source")
    assert len(rest_of_training_file(cfg, 1, tok, "x")[0]) == 1  # line 17 alone is fine


def test_split_refuses_a_chat_the_stream_repeats():
    from steerlab.train.fixtures import tiny_chats
    from steerlab.train.heldout import split_stream

    stream = tiny_chats("narrow", 10)
    held, rest = split_stream(stream, 3, seed=0, what="w")
    assert len(held) == 3 and len(rest) == 7
    repeated = stream + stream[:1]
    with pytest.raises(ConfigError, match="a held-out set must not overlap the training stream"):
        for seed in range(20):  # some draw holds out one copy and trains on the other
            split_stream(repeated, 3, seed=seed, what="w")


def test_steer_hold_refuses_the_training_file_as_its_calibration_file(data):
    folder, paths = data
    hold = {"vector": str(paths["vector"]), "calibration_file": str(paths["narrow"]), "n": 4}
    cfg = _cfg(folder, paths, "calib", {"steer_hold": hold}, monitor={"every": 0})
    with pytest.raises(ConfigError, match="arms.steer_hold.calibration_file: held-out chat .*training chat"):
        train(cfg)
