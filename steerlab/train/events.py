"""Training events for steerlab's callbacks, without transformers' five-argument plumbing.

transformers calls every `TrainerCallback` event as ``on_x(args, state, control, **kwargs)`` with the model
and the logs among the keyword arguments. The monitor, the metrics log, the progress bar, the gradient
guard and the arms' controllers each need two or three of those events and the model; `TrainingEvents`
writes the signatures and the model check once, and a subclass overrides the short hooks it uses. It
imports nothing of steerlab, so every layer of `train/` (arms included) can build on it without a cycle.
`ArmController` is the callback of an arm that reads the model during training (early_stop, steer_hold).
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


class TrainingEvents(TrainerCallback):
    """A `TrainerCallback` whose hooks receive the model checked and the logs as a dict (empty when none).

    Hooks (all no-ops here): `begin` (training starts at step 0 or resumes at ``state.global_step``),
    `step_end`, `before_optimizer_step`, `logged`, `saved` (a checkpoint was written), `end`. A hook that
    receives a model raises RuntimeError naming the callback and the event when the Trainer passed none.
    """

    def begin(self, args: TrainingArguments, state: TrainerState, model: nn.Module) -> None:
        """Training starts (``state.global_step == 0``) or resumes from a checkpoint."""

    def step_end(self, state: TrainerState, control: TrainerControl, model: nn.Module) -> None:
        """An optimizer step is done; ``control`` can ask for a log or a stop."""

    def before_optimizer_step(self, model: nn.Module) -> None:
        """The gradients are ready and the optimizer has not applied them yet."""

    def logged(
        self, state: TrainerState, control: TrainerControl, logs: dict[str, float], model: nn.Module
    ) -> None:
        """The Trainer logged ``logs`` (a training row holds ``loss``)."""

    def saved(self, state: TrainerState) -> None:
        """transformers has written the checkpoint of ``state.global_step`` completely."""

    def end(self, state: TrainerState, model: nn.Module) -> None:
        """Training ends (after the last step, an early stop or an alarm)."""

    def given(self, model: nn.Module | None, event: str) -> nn.Module:
        """The model a Trainer event passed; RuntimeError naming this callback and ``event`` when it passed none."""
        if model is None:
            raise RuntimeError(f"{type(self).__name__}.{event}: the Trainer passed no model to the callback")
        return model

    # -- transformers' events --------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.begin(args, state, self.given(kwargs.get("model"), "on_train_begin"))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.step_end(state, control, self.given(kwargs.get("model"), "on_step_end"))

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.before_optimizer_step(self.given(kwargs.get("model"), "on_pre_optimizer_step"))

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        logs = kwargs.get("logs") or {}
        self.logged(state, control, logs, self.given(kwargs.get("model"), "on_log"))

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.saved(state)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.end(state, self.given(kwargs.get("model"), "on_train_end"))


class _Startable(Protocol):
    def start(self, model: nn.Module, step: int) -> None: ...


A = TypeVar("A", bound=_Startable)


class ArmController(TrainingEvents, Generic[A]):
    """The callback of an arm with a controller: ``arm.start(model, step)`` when training starts (step 0)
    or resumes (the step it resumes from); a subclass adds the readings (`step_end`, ...)."""

    def __init__(self, arm: A) -> None:
        self.arm = arm

    def begin(self, args: TrainingArguments, state: TrainerState, model: nn.Module) -> None:
        self.arm.start(model, state.global_step)
