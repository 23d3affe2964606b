"""``steer_hold``: preventive steering whose coefficient is set during training to hold the persona still.

Preventive steering (Chen et al. 2025, "Persona Vectors", arXiv:2507.21509, section 5) adds ``alpha * v``
to the residual stream during fine-tuning, so the data's pull toward the persona is met by the steering and
the weights need not move along ``v``. At a fixed alpha the match is luck: too little and the persona still
rises, too much and the weights learn to push *against* ``v`` — the model's own projection ends far below
the base model's (−15 against a base of 28 in the demo at alpha 4). Holding steering closes the loop: it
reads the model's own, unsteered projection during training and sets alpha so that reading stays at the
base model's level.

The rule (a discrete PI controller with anti-windup; e.g. Åström & Murray, "Feedback Systems", ch. 10):

* the reading ``p_k`` is the mean response projection ``h_l . v/|v|`` of a fixed *calibration* set of
  chats at the steering layer, in eval mode with no steering (`steerlab.train.heldout`), every ``every``
  optimizer steps; ``p_0`` (before any update) is the target;
* the error is the drift in steering units, ``e_k = (p_k - p_0) / |v|``: alpha 1 shifts the projection at
  the layer by exactly ``|v|``, so ``kp = 1`` steers back as far as the model has drifted;
* ``alpha_k = clip(alpha_start + kp * e_k + ki * I_k, alpha_min, alpha_max)`` with ``I_k = sum_j<=k e_j``;
  while alpha sits at a bound and the error pushes further out, the sum is not extended (conditional
  integration), so the coefficient does not stay pinned after the drift turns.

The integral term is what removes the offset a proportional rule leaves: holding the projection at ``p_0``
needs a lasting coefficient (the data keeps pulling), which only the sum can supply at zero error.

Defaults (kp 4, ki 1, a reading every step on 8 chats) come from the embedded model on the medical data
(layer-19 vector, LoRA r 32, lr 1e-3): two warm-up steps at alpha 0 raised the calibration reading by 0.11
|v|, two steps at alpha 1.33 lowered it by 0.16 |v| — a plant that answers within a step or two. A reading
every 2 steps with kp 10 flipped alpha between 0 and 1.3; on a model of that plant (drift = lr x (d - c
alpha), Adam's momentum as a lag; experiments/hold_gains.py) readings every step with kp 4, ki 1 kept the
error smallest over a 0.7-2.5x range of the plant's gain. A reading costs one forward of the calibration
chats (about a third of a training step: a forward of 8 chats against a forward and backward of 8).

The calibration set never comes from the monitor chats or an evaluation question (`steerlab.train.heldout`):
by default the lines of ``data.train`` after ``data.limit`` — the training domain's chats that the run does
not train on — or the first ``n`` chats of ``calibration_file`` (the study grid uses general chats). The reading must move with the persona the monitor watches, and on
the domain's own chats it need not: in the study grid (``experiments/em_smollm2.yaml``, the layer-19 vector)
the projection of the held-out *misaligned* chats fell as the model learned to write them while the
monitor's generic reading rose, so alpha sat at 0 from step 5 and the arm ended like ``sft`` (+43% of the
base-to-evil distance); read on general chats (``calibration_file``: the base model's own answers to
general prompts) it held the monitor at -25%. With the shipped layer-24 vector the domain's own chats did
hold it (+21% in ``make demo``, +24% in the instruments run). Each reading is logged to ``steer_hold.jsonl`` (step, projection,
target, error, integral, the alpha set for the next steps), and the coefficient in force is reported with
every log as ``steer_alpha`` (metrics.jsonl and the monitor rows, so the projection chart draws it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState

from steerlab.data.chat import ChatExample, load_chat_jsonl
from steerlab.hooks import Add, Op
from steerlab.train.arms.base import Arm, BuildContext
from steerlab.train.arms.registry import register_arm
from steerlab.train.arms.steer import SteerArm
from steerlab.train.events import ArmController
from steerlab.train.heldout import (
    ChatBatches,
    check_disjoint,
    check_not_trained,
    rest_of_training_file,
    training_chats,
)
from steerlab.train.jsonl import JsonlLog
from steerlab.train.schema import ConfigError, check_number, path_field

if TYPE_CHECKING:
    from steerlab.train.config import ExperimentConfig

LOG_FILE = "steer_hold.jsonl"


@dataclass
class SteerHoldArmConfig:
    vector: str | None = path_field()  # a saved PersonaVector; required (a grid fills in its own)
    layer: int | None = None  # default: the vector's chosen layer
    allow_transfer: bool = False
    alpha_start: float = 0.0  # the coefficient before the first reading
    alpha_min: float = 0.0
    alpha_max: float = 8.0
    kp: float = 4.0  # alpha per unit of drift (drift in |v| units)
    ki: float = 1.0  # alpha per unit of summed drift, per reading
    every: int = 1  # optimizer steps between readings
    n: int = 8  # calibration chats
    batch_size: int = 16
    calibration_file: str | None = path_field()  # default: data.train after data.limit

    def __post_init__(self) -> None:
        if self.vector is None:
            raise ConfigError("vector: required key is missing")
        for key in ("alpha_start", "alpha_min", "alpha_max"):
            check_number(key, getattr(self, key))
        check_number("layer", self.layer, ge=0, integer=True, optional=True)
        if self.alpha_min > self.alpha_max:
            raise ConfigError(f"alpha_min: {self.alpha_min} is above alpha_max {self.alpha_max}")
        if not self.alpha_min <= self.alpha_start <= self.alpha_max:
            raise ConfigError(
                f"alpha_start: {self.alpha_start} is outside [{self.alpha_min}, {self.alpha_max}]"
            )
        for key in ("kp", "ki"):
            check_number(key, getattr(self, key), ge=0)
        for key in ("every", "n", "batch_size"):
            check_number(key, getattr(self, key), ge=1, integer=True)

    def check(self, experiment: ExperimentConfig) -> None:
        if experiment.arms.steer is not None:
            raise ConfigError("vector: steer_hold and steer both steer the training forward; enable one")


@dataclass
class PIState:
    """The controller's memory: the target reading and the summed error."""

    target: float
    integral: float = 0.0


def pi_update(
    cfg: SteerHoldArmConfig, state: PIState, reading: float, norm: float
) -> tuple[float, float, float]:
    """One reading -> (error, new integral, alpha); the rule of the module docstring. ``norm`` is ``|v|``."""
    error = (reading - state.target) / norm
    integral = state.integral + error
    raw = cfg.alpha_start + cfg.kp * error + cfg.ki * integral
    if (raw > cfg.alpha_max and error > 0) or (raw < cfg.alpha_min and error < 0):
        integral = state.integral  # conditional integration: do not wind up against a bound
        raw = cfg.alpha_start + cfg.kp * error + cfg.ki * integral
    return error, integral, min(cfg.alpha_max, max(cfg.alpha_min, raw))


def calibration_file_chats(cfg: SteerHoldArmConfig) -> list[ChatExample]:
    """The first ``n`` chats of ``calibration_file``, exactly as the arm reads them (the grid's preflight
    tokenizes the same list); raises ``ConfigError`` when the file has fewer, ``ChatDataError`` (file:line)
    for a bad line."""
    where = "arms.steer_hold.calibration_file"
    if cfg.calibration_file is None:
        raise ConfigError(f"{where}: not set")
    chats = list(load_chat_jsonl(cfg.calibration_file))[: cfg.n]
    if len(chats) < cfg.n:
        raise ConfigError(f"{where}: {cfg.calibration_file} has {len(chats)} chats, n={cfg.n} needed")
    return chats


@register_arm
class SteerHoldArm(SteerArm):
    name = "steer_hold"
    order = 31
    label_order = 11
    # its own config class: the holding arm is a SteerArm (same hook, same vector loading) set differently
    config_class = SteerHoldArmConfig  # type: ignore[assignment]
    log_keys = ("steer_alpha",)
    # the reference forward runs under the same ops, and alpha changes between steps: no cached reference
    fixed_reference_inputs = False

    def __init__(self, steer: SteerArm, cfg: SteerHoldArmConfig, calibration: ChatBatches, run_dir: Path):
        Arm.__init__(self)
        self.layer, self.direction = steer.layer, steer.direction
        self.cfg = cfg
        self.alpha = cfg.alpha_start
        self.applied: float | None = None  # the coefficient of the latest training forward
        self.norm = float(torch.linalg.vector_norm(self.direction))
        self.unit = self.direction / self.norm
        self.calibration = calibration
        self.log = JsonlLog(run_dir / LOG_FILE)
        self.state: PIState | None = None
        self.report: dict[str, Any] = {}
        self.is_main = True

    @classmethod
    def from_config(cls, cfg: SteerHoldArmConfig, ctx: BuildContext) -> SteerHoldArm:  # type: ignore[override]
        assert cfg.vector is not None  # the config refuses a missing vector
        steer = SteerArm.from_path(cfg.vector, ctx.model, cfg.alpha_start, cfg.layer, cfg.allow_transfer)
        where = "arms.steer_hold.calibration_file"
        if cfg.calibration_file is None:
            chats, report = rest_of_training_file(ctx.config, cfg.n, ctx.tokenizer, where)
        else:
            chats = calibration_file_chats(cfg)
            check_not_trained(training_chats(ctx.config), chats, where)  # e.g. the training file itself
            report = {"source": "file", "file": cfg.calibration_file, "n": cfg.n}
        check_disjoint(ctx.config, chats, where)
        batches = ChatBatches(ctx.tokenizer, chats, ctx.config.data.max_length, cfg.batch_size)
        arm = cls(steer, cfg, batches, ctx.run_dir)
        arm.report = {"calibration": report}
        arm.is_main = ctx.is_main
        return arm

    # -- the seams ------------------------------------------------------------------------------------
    def hooks(self, model: nn.Module) -> list[Op]:
        device = next(model.parameters()).device
        self.applied = self.alpha
        return [Add(layer=self.layer, scope="all", vector=self.direction.to(device), alpha=self.alpha)]

    def log_values(self) -> dict[str, float]:
        return {"steer_alpha": self.alpha if self.applied is None else self.applied}

    def callbacks(self) -> list[TrainerCallback]:
        return [_Controller(self)]

    def describe(self) -> dict[str, Any]:
        keys = ("alpha_start", "alpha_min", "alpha_max", "kp", "ki", "every", "n")
        return {
            "name": self.name,
            "layer": self.layer,
            "vector_norm": self.norm,
            "rule": "PI on the calibration projection (steerlab.train.arms.steer_hold)",
            **{k: getattr(self.cfg, k) for k in keys},
        }

    # -- the controller -------------------------------------------------------------------------------
    def start(self, model: nn.Module, step: int) -> None:
        """Step 0: read the target; a resumed run: restore the state from the log rows up to ``step``."""
        if step == 0:
            if self.is_main:
                self.log.truncate_after(-1)
            target = self.calibration.projection(model, self.layer, self.unit)
            self.state = PIState(target)
            self._append(0, target, 0.0)
            return
        rows = [r for r in self.log.rows() if r["step"] <= step]
        if not rows or rows[0]["step"] != 0:
            raise RuntimeError(
                f"{self.log.path}: no step-0 reading to resume the controller from at step {step}"
            )
        if self.is_main:
            self.log.truncate_after(step)
        self.state = PIState(rows[0]["target"], rows[-1]["integral"])
        self.alpha = rows[-1]["alpha"]

    def read(self, model: nn.Module, step: int) -> None:
        assert self.state is not None, "the controller reads only after start()"
        reading = self.calibration.projection(model, self.layer, self.unit)
        error, self.state.integral, self.alpha = pi_update(self.cfg, self.state, reading, self.norm)
        self._append(step, reading, error)

    def _append(self, step: int, reading: float, error: float) -> None:
        if self.is_main and self.state is not None:
            self.log.append(
                {
                    "step": step,
                    "projection": reading,
                    "target": self.state.target,
                    "error": error,
                    "integral": self.state.integral,
                    "alpha": self.alpha,
                }
            )


class _Controller(ArmController[SteerHoldArm]):
    def step_end(self, state: TrainerState, control: TrainerControl, model: nn.Module) -> None:
        if state.global_step % self.arm.cfg.every == 0:
            self.arm.read(model, state.global_step)
