"""Experiment configs: validated on load, errors name the file and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerlab.train.config import ConfigError, config_from_dict, dump_config, load_config

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


BASE = """
name: t
model: {name: "tiny:llama"}
data: {train: data/x.jsonl}
monitor: {chats: data/m.jsonl}
"""


def test_minimal_config_fills_defaults_and_resolves_paths(tmp_path):
    cfg = load_config(_write(tmp_path, BASE + "arms: {kl: {weight: 0.5}, sft: {}}\n"))
    assert cfg.data.train == str((tmp_path / "data" / "x.jsonl").resolve())
    assert cfg.arms.kl.weight == 0.5 and cfg.arms.kl.tokens == "assistant"
    assert cfg.arms.enabled() == ["sft", "kl"] and cfg.arm_label == "kl"
    minimal = {"name": "t", "model": {"name": "m"}, "data": {"train": "x"}, "monitor": {"every": 0}}
    assert config_from_dict(minimal).arm_label == "sft"
    with pytest.raises(ConfigError, match="monitor.chats"):
        config_from_dict({**minimal, "monitor": {}})
    # the resolved dump loads back to the same config
    again = config_from_dict(__import__("yaml").safe_load(dump_config(cfg)))
    assert again == cfg


@pytest.mark.parametrize(
    ("extra", "key", "what"),
    [
        ("arms: {kl: {wieght: 1.0}}\n", "arms.kl.wieght", "unknown key"),
        ("train: {batch_size: four}\n", "train.batch_size", "expected an integer"),
        ("train: {lr: high}\n", "train.lr", "expected a number"),
        ("finetune: {method: qlora}\n", "finetune.method", "one of"),
        ("arms: {steer: {alpha: 2.0}}\n", "arms.steer.vector", "required"),
        ("bogus: 1\n", "bogus", "unknown key"),
        ("arms: {interleave: {general: g.jsonl, ratio: 1.5}}\n", "arms.interleave.ratio", "[0, 1)"),
        ("arms: {ldifs: {layers: [1, x]}}\n", "arms.ldifs.layers[1]", "expected an integer"),
        (
            "arms: {interleave: {general: g.jsonl, selection: perplexity_gap}}\n",
            "arms.interleave.misaligned",
            "misaligned",
        ),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, extra, key, what):
    path = _write(tmp_path, BASE + extra)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and key in message and what in message


def test_invalid_yaml_names_line(tmp_path):
    path = _write(tmp_path, BASE + "train: {lr: [1,\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: invalid YAML at line"):
        load_config(path)


@pytest.mark.parametrize("name", ["tiny_smoke.yaml", "smollm2_medical.yaml"])
def test_shipped_experiments_validate(name):
    cfg = load_config(EXPERIMENTS / name)
    assert Path(cfg.data.train).is_absolute()


def test_an_alarm_set_with_the_monitor_off_is_refused(tmp_path):
    path = _write(tmp_path, BASE.replace("{chats: data/m.jsonl}", "{every: 0, alarm: {level: 0.5}}"))
    with pytest.raises(
        ConfigError, match=r"exp\.yaml: monitor\.alarm: the drift alarm is set but monitor\.every"
    ):
        load_config(path)
    off = BASE.replace("{chats: data/m.jsonl}", "{every: 0, alarm: {enabled: false, level: 0.5}}")
    assert load_config(_write(tmp_path, off)).monitor.every == 0
    # no alarm section: the default alarm is not asked for, and a run without a monitor is valid
    cfg = load_config(_write(tmp_path, BASE.replace("{chats: data/m.jsonl}", "{every: 0}")))
    assert cfg.monitor.every == 0
    # its resolved dump names every default, the alarm's too, and reads back (a resume reads it)
    assert config_from_dict(__import__("yaml").safe_load(dump_config(cfg))) == cfg


def test_a_grid_file_is_named_as_one(tmp_path):
    with pytest.raises(ConfigError, match=r"em_smollm2\.yaml: an experiment grid file .* `steerlab run "):
        load_config(EXPERIMENTS / "em_smollm2.yaml")
