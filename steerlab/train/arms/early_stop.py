"""``early_stop``: stop fine-tuning when a held-out in-domain loss stops improving (a baseline defense).

"Overtrained, Not Misaligned" (arXiv:2605.12199) reports that emergent misalignment comes with training
past the point where the narrow task is learned, and that stopping early removed it while keeping 93% of
the task performance. This arm is that baseline with the textbook criterion (Prechelt 1998, "Early
Stopping — But When?"; transformers' ``EarlyStoppingCallback`` + ``load_best_model_at_end``):

* the criterion is the mean next-token NLL of the assistant tokens of ``held_out`` chats of the training
  domain (`steerlab.train.heldout`: by default the lines of ``data.train`` after ``data.limit``, which the
  run does not train on; ``source: split`` takes them out of the training stream instead), read every
  ``every`` optimizer steps, at step 0 and at the last step, with no arm's ops active;
* a reading counts as better when it is below the best so far by more than ``min_delta`` nats; after
  ``patience`` readings in a row that are not better, training stops;
* with ``restore_best`` (default) the weights of the best reading are put back before the run ends, so
  ``final/`` is the model at ``best_step`` (also when training ran to its end without stopping).

The run folder records it: ``early_stop.jsonl`` (one row per reading) and ``early_stop.json`` (criterion,
settings, ``stopped_at`` — null when training ran to its end —, ``best_step``, ``final_weights_step``).
The best weights (the trainable parameters only: the adapter under LoRA) are kept in ``early_stop/`` so a
resumed run restores them too; snapshots no checkpoint can resume to any more are deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState

from steerlab.data.chat import ChatExample
from steerlab.io import atomic_path, write_json
from steerlab.train.arms.base import Arm, BuildContext
from steerlab.train.arms.registry import register_arm
from steerlab.train.events import ArmController
from steerlab.train.heldout import ChatBatches, check_disjoint, rest_of_training_file, split_stream
from steerlab.train.jsonl import JsonlLog
from steerlab.train.schema import check_number

LOG_FILE = "early_stop.jsonl"
SUMMARY_FILE = "early_stop.json"
SNAPSHOTS = "early_stop"


@dataclass
class EarlyStopArmConfig:
    held_out: int = 32  # chats in the held-out set
    source: Literal["rest", "split"] = "rest"
    every: int = 4  # optimizer steps between readings
    patience: int = 2  # readings in a row without improvement before stopping
    min_delta: float = 0.0  # nats
    restore_best: bool = True
    batch_size: int = 16

    def __post_init__(self) -> None:
        for key in ("held_out", "every", "patience", "batch_size"):
            check_number(key, getattr(self, key), ge=1, integer=True)
        check_number("min_delta", self.min_delta, ge=0)


@register_arm
class EarlyStopArm(Arm):
    name = "early_stop"
    order = 5  # before inoculate and interleave: a split takes plain narrow chats
    label_order = 65
    config_class = EarlyStopArmConfig

    def __init__(self, cfg: EarlyStopArmConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg
        self.experiment = ctx.config
        self.tokenizer = ctx.tokenizer
        self.run_dir = Path(ctx.run_dir)
        self.is_main = ctx.is_main
        self.held: ChatBatches | None = None
        self.report: dict[str, Any] = {}
        # the rule's state
        self.best_step: int | None = None
        self.best_loss = float("inf")
        self.bad = 0
        self.stopped_at: int | None = None
        self.final_weights_step: int | None = None
        self.snapshot: dict[str, torch.Tensor] | None = None
        self.kept_for_resume: int | None = None  # the best step as of the last saved checkpoint

    @classmethod
    def from_config(cls, cfg: EarlyStopArmConfig, ctx: BuildContext) -> EarlyStopArm:
        arm = cls(cfg, ctx)
        if cfg.source == "rest":
            chats, report = rest_of_training_file(
                ctx.config, cfg.held_out, ctx.tokenizer, "arms.early_stop.source"
            )
            arm._hold_out(chats, report)
        return arm

    def _hold_out(self, chats: Sequence[ChatExample], report: dict[str, Any]) -> None:
        check_disjoint(self.experiment, chats, "arms.early_stop.source")
        d = self.experiment.data
        self.held = ChatBatches(self.tokenizer, chats, d.max_length, self.cfg.batch_size, d.train_on)
        self.report = {"held_out": report}

    def transform_data(self, examples: Sequence[ChatExample]) -> list[ChatExample]:
        if self.cfg.source == "rest":
            return list(examples)
        held, rest = split_stream(
            examples, self.cfg.held_out, self.experiment.seed, "arms.early_stop.held_out"
        )
        self._hold_out(held, {"source": "split", "n": len(held), "seed": self.experiment.seed})
        self.report["held_out"]["chats"] = [ex.name for ex in held]
        return rest

    def callbacks(self) -> list[TrainerCallback]:
        return [_EarlyStopping(self)]

    def criterion(self) -> str:
        return (
            f"held-out LM loss (mean NLL per assistant token, nats) on {self.held.n if self.held else '?'} "
            f"chats ({self.cfg.source}); stop after {self.cfg.patience} readings every {self.cfg.every} "
            f"steps without an improvement over {self.cfg.min_delta}"
        )

    def describe(self) -> dict[str, Any]:
        keys = ("held_out", "source", "every", "patience", "min_delta", "restore_best")
        return {"name": self.name, "criterion": self.criterion(), **{k: getattr(self.cfg, k) for k in keys}}

    # -- files ----------------------------------------------------------------------------------------
    @property
    def log(self) -> JsonlLog:
        return JsonlLog(self.run_dir / LOG_FILE)

    def _snapshot_path(self, step: int) -> Path:
        return self.run_dir / SNAPSHOTS / f"best-step{step}.safetensors"

    def _take_snapshot(self, model: nn.Module, step: int) -> None:
        self.snapshot = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
        if self.is_main:
            path = self._snapshot_path(step)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                save_file(
                    {n: t.contiguous() for n, t in self.snapshot.items()}, str(tmp), {"step": str(step)}
                )
            self._prune(keep={step, self.kept_for_resume})

    def _prune(self, keep: set[int | None]) -> None:
        for path in (self.run_dir / SNAPSHOTS).glob("best-step*.safetensors"):
            if int(path.stem.removeprefix("best-step")) not in keep:
                path.unlink(missing_ok=True)

    def _restore(self, model: nn.Module, step: int) -> None:
        assert self.snapshot is not None and self.best_step is not None
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.snapshot.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))
        self.final_weights_step = self.best_step

    def write_summary(self, last_step: int) -> None:
        if not self.is_main:
            return
        write_json(
            self.run_dir / SUMMARY_FILE,
            {
                "criterion": self.criterion(),
                "settings": self.describe(),
                "readings": self.log.rows(),
                "best_step": self.best_step,
                "best_loss": self.best_loss,
                "stopped_at": self.stopped_at,
                "last_step": last_step,
                "final_weights_step": self.final_weights_step
                if self.final_weights_step is not None
                else last_step,
            },
        )

    # -- the rule -------------------------------------------------------------------------------------
    def start(self, model: nn.Module, step: int) -> None:
        if step == 0:
            if self.is_main:
                self.log.truncate_after(-1)
            self.read(model, 0, is_last=False)
            return
        rows = [r for r in self.log.rows() if r["step"] <= step]
        if not rows:
            raise RuntimeError(
                f"{self.run_dir / LOG_FILE}: no reading to resume early stopping from at {step}"
            )
        if self.is_main:
            self.log.truncate_after(step)
        last = rows[-1]
        self.best_step, self.best_loss, self.bad = last["best_step"], last["best_loss"], last["bad"]
        path = self._snapshot_path(self.best_step)
        if not path.is_file():
            raise RuntimeError(
                f"{path} is missing: the best weights of step {self.best_step} cannot be restored"
            )
        self.snapshot = load_file(str(path))
        self.kept_for_resume = self.best_step

    def read(self, model: nn.Module, step: int, is_last: bool) -> bool:
        """One reading; True when training should stop now (the best weights are then back in ``model``)."""
        assert self.held is not None, "the held-out set is built before training"
        loss = self.held.lm_loss(model)
        if loss < self.best_loss - self.cfg.min_delta:
            self.best_step, self.best_loss, self.bad = step, loss, 0
            if self.cfg.restore_best:
                self._take_snapshot(model, step)
        else:
            self.bad += 1
        stop = self.bad >= self.cfg.patience and not is_last
        if self.is_main:
            row = {
                "step": step,
                "held_out_loss": loss,
                "best_step": self.best_step,
                "best_loss": self.best_loss,
            }
            self.log.append(row | {"bad": self.bad, "stop": stop})
        if stop:
            self.stopped_at = step
        if (stop or is_last) and self.cfg.restore_best and self.best_step != step:
            self._restore(model, step)
        return stop

    def saved(self) -> None:
        """A checkpoint is complete: only the current best snapshot can be resumed to from now on."""
        self.kept_for_resume = self.best_step
        if self.is_main and self.cfg.restore_best:
            self._prune(keep={self.best_step})


class _EarlyStopping(ArmController[EarlyStopArm]):
    def step_end(self, state: TrainerState, control: TrainerControl, model: nn.Module) -> None:
        step, last = state.global_step, state.global_step >= state.max_steps
        if (step % self.arm.cfg.every == 0 or last) and self.arm.read(model, step, last):
            control.should_training_stop = True
            control.should_log = True  # the monitor and metrics get a row at the stopping step

    def saved(self, state: TrainerState) -> None:
        self.arm.saved()

    def end(self, state: TrainerState, model: nn.Module) -> None:
        self.arm.write_summary(state.global_step)
