"""A new arm is one file: a toy arm defined here registers itself without touching any steerlab file.

It has its own config dataclass, an extra loss term and ``needs_reference = True``; the test finds its config
validated from YAML, its loss term in metrics.jsonl and its reference model built under LoRA and under
full fine-tuning. The registry refuses malformed and duplicate entries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import pytest
import torch
from torch import Tensor, nn

from steerlab.train.arms import Arm, BuildContext, Forward, register_arm, unregister_arm
from steerlab.train.arms.registry import arm_class, registered_arms
from steerlab.train.config import ConfigError, config_from_dict, load_config
from steerlab.train.fixtures import tiny_config, write_config, write_tiny_data
from steerlab.train.run import train
from steerlab.train.schema import ConfigError as SchemaConfigError


@dataclass
class ToyArmConfig:
    weight: float = 0.5
    scale: float = 2.0
    reduce: Literal["mean", "sum"] = "mean"

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise SchemaConfigError(f"scale: must be > 0, got {self.scale}")


class ToyArm(Arm):
    """Loss += weight * mean over real tokens of (scale * (max logit - reference max logit))^2."""

    name = "toy"
    order = 70
    config_class = ToyArmConfig
    loss_keys = ("toy_gap",)
    needs_reference = True

    def __init__(self, weight: float, scale: float) -> None:
        super().__init__()
        self.loss_weights = {"toy_gap": weight}
        self.scale = scale
        self.reference_calls = 0

    @classmethod
    def from_config(cls, cfg: ToyArmConfig, ctx: BuildContext) -> ToyArm:
        return cls(cfg.weight, cfg.scale)

    def extra_loss(self, model: nn.Module, batch: dict[str, Tensor], fwd: Forward) -> dict[str, Tensor]:
        assert fwd.ref_logits is not None
        self.reference_calls += 1
        gap = self.scale * (fwd.logits.max(-1).values - fwd.ref_logits.max(-1).values)
        mask = batch["attention_mask"].float()
        return {"toy_gap": (gap.pow(2) * mask).sum() / fwd.counts["feat_all"]}


@pytest.fixture(scope="module")
def toy():
    register_arm(ToyArm)
    yield ToyArm
    unregister_arm("toy")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return folder, write_tiny_data(folder)


def test_toy_arm_config_is_validated_from_yaml(toy, data, tmp_path):
    folder, paths = data
    raw = tiny_config(folder, paths, name="toy_cfg", arms={"sft": {}, "toy": {"scale": 3.0}})
    cfg = load_config(write_config(tmp_path / "ok.yaml", raw))
    assert isinstance(cfg.arms.toy, ToyArmConfig) and cfg.arms.toy.scale == 3.0 and cfg.arms.toy.weight == 0.5
    assert cfg.arm_label == "toy" and cfg.arms.enabled() == ["sft", "toy"]
    for section, key, what in [
        ({"scael": 1.0}, "arms.toy.scael", "unknown key"),
        ({"scale": "big"}, "arms.toy.scale", "expected a number"),
        ({"reduce": "max"}, "arms.toy.reduce", "one of"),
        ({"scale": -1.0}, "arms.toy.scale", "must be > 0"),
    ]:
        path = write_config(tmp_path / "bad.yaml", {**raw, "arms": {"toy": section}})
        with pytest.raises(ConfigError) as info:
            load_config(path)
        message = str(info.value)
        assert message.startswith(f"{path}: {key}: ") and what in message, message
    # an arm nobody registered is an unknown key under arms, naming the registered ones
    with pytest.raises(ConfigError, match=r"bad\.yaml: arms\.toyy: unknown key .*toy"):
        load_config(write_config(tmp_path / "bad.yaml", {**raw, "arms": {"toyy": {}}}))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_toy_arm_trains_logs_its_term_and_gets_a_reference(toy, data, method):
    folder, paths = data
    cfg = config_from_dict(
        tiny_config(
            folder,
            paths,
            name=f"toy_{method}",
            arms={"toy": {"weight": 0.5}},
            finetune={"method": method},
            train={"max_steps": 3, "lr": 1e-2 if method == "lora" else 1e-3},
            monitor={"every": 0},
        )
    )
    result = train(cfg)
    rows = result.metrics
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all("toy_gap" in r for r in rows)
    assert rows[0]["toy_gap"] == 0.0 and rows[-1]["toy_gap"] > 0  # the reference is the model before training
    for r in rows:
        assert r["loss"] == pytest.approx(r["lm_loss"] + 0.5 * r["toy_gap"], rel=1e-5)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["reference"] == ("adapter_disabled" if method == "lora" else "frozen_copy")
    assert info["arm"] == "toy"


def test_registry_refuses_malformed_and_duplicate_arms(toy):
    assert arm_class("toy") is ToyArm and ToyArm in registered_arms()

    def arm(**attrs: Any) -> type:
        base = {
            "name": "other",
            "order": 71,
            "config_class": ToyArmConfig,
            "loss_keys": ("other",),
            "from_config": classmethod(lambda cls, cfg, ctx: cls()),
        }
        return type("Other", (Arm,), base | attrs)

    cases = [
        (arm(name="toy"), "name 'toy' is taken"),
        (arm(order=70), "order 70 is taken"),
        (arm(loss_keys=("toy_gap",)), "loss keys ['toy_gap']"),
        (arm(loss_keys=("loss",)), "shadow the trainer's own metrics"),
        (arm(name="Bad Name"), "lower-case"),
        (arm(config_class=dict), "expected a dataclass"),
        (
            arm(config_class=dataclass(type("C", (), {"__annotations__": {"x": complex}, "x": 1j}))),
            "not supported",
        ),
        (type("NoBuild", (Arm,), {"name": "nob", "order": 72, "config_class": ToyArmConfig}), "from_config"),
        (int, "not an Arm subclass"),
    ]
    for cls, problem in cases:
        with pytest.raises(TypeError, match="cannot register arm") as info:
            register_arm(cls)
        assert problem in str(info.value), (problem, str(info.value))
    assert [c.name for c in registered_arms()].count("toy") == 1


def test_an_undeclared_loss_term_is_an_error_not_a_silent_drop(toy, data):
    from steerlab.train.trainer import arm_loss

    class Sneaky(ToyArm):
        def extra_loss(self, model, batch, fwd):
            return {"toy_gap": torch.zeros(()), "toy_other": torch.zeros(())}

    from peft import LoraConfig, get_peft_model

    from steerlab.data.tokenize import ChatCollator, tokenize_chat
    from steerlab.models.tiny import tiny_model, tiny_tokenizer
    from steerlab.train.fixtures import tiny_chats

    tok = tiny_tokenizer("right")
    batch = ChatCollator(tok)([tokenize_chat(tok, ex, 64) for ex in tiny_chats("narrow", 2)])
    model = get_peft_model(tiny_model("llama"), LoraConfig(r=2, target_modules="all-linear")).train()
    with pytest.raises(RuntimeError, match="'toy_other', not in its loss_keys"):
        arm_loss(model, batch, [Sneaky(0.5, 1.0)])
