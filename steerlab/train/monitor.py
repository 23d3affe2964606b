"""The persona monitor: where the model's persona goes during training (a Trainer callback).

Every ``every`` steps (and at step 0, before any update, and at the last step) it writes one row to
``runs/<name>/monitor.jsonl``::

    {"step", "arm", "projection", "projection_layer", "ldifs", "ldifs_per_layer": {layer: value}, "train_loss"}

Why fixed reference chats, teacher-forced, rather than the model's own generations: the measurement is
then cheap (one forward per batch), deterministic, and compares every step on exactly the same tokens, so
a change in the curve is a change in the model, not in what it happened to sample. The chats are a
held-out set (prompt + a fixed response) read from ``monitor.chats``; they never pass through the arms, so
no inoculation prompt or interleaved data reaches them.

* ``projection``: at the vector's layer, each chat's mean over its response tokens of ``h . v/||v||``,
  averaged over chats (the persona-vectors convention: projection of the mean response activation).
* ``ldifs`` / ``ldifs_per_layer``: the LDIFS feature distance (`steerlab.train.arms.ldifs`) between the
  model and the reference (the model before training) over all tokens; ``ldifs`` is the mean over blocks.
  The reference features are computed once and cached in ``monitor_reference.safetensors``, so a resumed
  full fine-tuning run needs no frozen copy.
* ``train_loss``: the loss the trainer logged at that step (null at step 0).
* ``prompted_projection`` (step 0 only, when ``prompted_system`` is given): the projection of the same
  chats with that system prompt (the trait-eliciting one) in front, read from the model before training:
  the level a model that has taken on the persona would sit at, the chart's second reference line.

* values the run's arms report with each log (`Arm.log_values`), e.g. ``steer_alpha``: the steering
  coefficient in force during the step (the projection chart draws it); absent at step 0;
* ``alarm`` (with the drift alarm on, `steerlab.train.alarm`): true from the reading that crossed the
  alarm's threshold on; ``alarm.json`` holds the threshold, the step and the value.

A run that ends between monitored steps (early stopping, the alarm) gets a last row at its final step
(``train_loss`` null), so the chart's last point is the model the run saved.

The model is put in eval mode for the measurement, and no hook of any arm is active (arms hold their ops
only inside the trainer's training forward).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import (
    PreTrainedTokenizerBase,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from steerlab.data.chat import ChatExample, load_chat_jsonl
from steerlab.data.tokenize import ChatCollator, tokenize_chat
from steerlab.hooks import Capture, hooked
from steerlab.io import atomic_path
from steerlab.linalg import unit_vector
from steerlab.train.alarm import DriftAlarm
from steerlab.train.arms.ldifs import feature_distance, ldifs_layers
from steerlab.train.arms.registry import all_log_keys
from steerlab.train.events import TrainingEvents
from steerlab.train.jsonl import JsonlLog
from steerlab.train.reference import Reference

if TYPE_CHECKING:
    from steerlab.train.config import ExperimentConfig

log = logging.getLogger(__name__)


def with_system(example: ChatExample, system: str) -> ChatExample:
    """The chat with ``system`` as its system message (replacing one it already has)."""
    rest = [m for m in example.messages if m["role"] != "system"]
    return ChatExample([{"role": "system", "content": system}, *rest], source=example.source)


class PersonaMonitor(TrainingEvents):
    def __init__(
        self,
        *,
        tokenizer: PreTrainedTokenizerBase,
        chats: Sequence[ChatExample],
        log_path: str | Path,
        reference_cache: str | Path,
        arm: str,
        every: int,
        max_length: int,
        batch_size: int = 8,
        vector: Tensor | None = None,
        projection_layer: int | None = None,
        ldifs_layers: Sequence[int] = (),
        reference: Reference | None = None,
        is_main: bool = True,
        prompted_system: str | None = None,
        alarm: DriftAlarm | None = None,
    ) -> None:
        if not chats:
            raise ValueError("the monitor needs at least one reference chat")
        if vector is not None and projection_layer is None:
            raise ValueError("a monitor vector needs its layer")
        collate = ChatCollator(tokenizer)

        def batches(examples: Sequence[ChatExample], length: int) -> list[dict[str, Tensor]]:
            features = [tokenize_chat(tokenizer, ex, length) for ex in examples]
            return [collate(features[i : i + batch_size]) for i in range(0, len(features), batch_size)]

        self.batches = batches(chats, max_length)
        self.prompted_batches: list[dict[str, Tensor]] = []
        if prompted_system is not None and vector is not None:
            # the system prompt is extra context for a reference reading, not training data: give it room
            room = max_length + len(tokenizer(prompted_system, add_special_tokens=False)["input_ids"]) + 16
            self.prompted_batches = batches([with_system(ex, prompted_system) for ex in chats], room)
        # (layer, unit direction) of the persona vector, when there is one
        self.probe: tuple[int, Tensor] | None = None
        if vector is not None and projection_layer is not None:
            self.probe = (projection_layer, unit_vector(vector))
        self.ldifs_layers = sorted(set(ldifs_layers))
        self.layers = sorted(set(self.ldifs_layers) | ({self.probe[0]} if self.probe is not None else set()))
        self.log = JsonlLog(log_path)
        self.reference_cache = Path(reference_cache)
        self.reference = reference
        self.arm = arm
        self.every = every
        self.is_main = is_main
        self._ref_features: list[dict[int, Tensor]] | None = None
        self._pending: int | None = None
        self.alarm = alarm if vector is not None else None

    # -- measuring ------------------------------------------------------------------------------------
    @torch.no_grad()
    def _features(
        self, model: nn.Module, batches: list[dict[str, Tensor]] | None = None
    ) -> list[dict[int, Tensor]]:
        device = next(model.parameters()).device
        ops = [Capture(layer=layer, scope="all", reduce="none") for layer in self.layers]
        out = []
        for batch in self.batches if batches is None else batches:
            with hooked(model, ops) as session:
                model(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    use_cache=False,
                )
            out.append({layer: session.captures.get(layer).float().cpu() for layer in self.layers})
        return out

    def _reference_features(self, model: nn.Module, step: int) -> list[dict[int, Tensor]]:
        if self._ref_features is not None:
            return self._ref_features
        if self.reference_cache.is_file():
            flat = load_file(str(self.reference_cache))
            self._ref_features = [
                {layer: flat[f"batch{i}.layer{layer}"] for layer in self.layers}
                for i in range(len(self.batches))
            ]
            return self._ref_features
        if self.reference is not None:
            with self.reference.active(model) as ref_model:
                feats = self._features(ref_model)
        elif step == 0:
            feats = self._features(model)  # before the first update the model is its own reference
        else:
            raise RuntimeError(
                f"{self.reference_cache} is missing and there is no reference model to rebuild it"
            )
        flat = {
            f"batch{i}.layer{layer}": t.contiguous() for i, fs in enumerate(feats) for layer, t in fs.items()
        }
        with atomic_path(self.reference_cache) as tmp:
            save_file(flat, str(tmp))
        self._ref_features = feats
        return feats

    def measure(self, model: nn.Module, step: int) -> dict[str, Any]:
        """Projection and LDIFS distance of ``model`` (eval mode, no hooks) on the reference chats."""
        was_training = model.training
        model.eval()
        try:
            ref = self._reference_features(model, step)
            feats = self._features(model)
        finally:
            model.train(was_training)
        row: dict[str, Any] = {
            "projection": None,
            "projection_layer": self.probe[0] if self.probe is not None else None,
        }
        if self.probe is not None:
            row["projection"] = self._projection(self.batches, feats)
        per_layer = {}
        n_tokens = sum(float(b["attention_mask"].sum()) for b in self.batches)
        for layer in self.ldifs_layers:
            total = sum(
                float(feature_distance(fs[layer], rs[layer], b["attention_mask"].bool()))
                for b, fs, rs in zip(self.batches, feats, ref, strict=True)
            )
            per_layer[str(layer)] = total / n_tokens
        row["ldifs"] = sum(per_layer.values()) / len(per_layer) if per_layer else None
        row["ldifs_per_layer"] = per_layer
        return row

    def _projection(self, batches: list[dict[str, Tensor]], feats: list[dict[int, Tensor]]) -> float:
        """Mean over chats of the response-mean projection at the vector's layer; RuntimeError without one."""
        if self.probe is None:
            raise RuntimeError("the monitor was built without a persona vector: there is no projection")
        layer, unit = self.probe
        per_chat = []
        for batch, fs in zip(batches, feats, strict=True):
            mask = batch["assistant_mask"].float()
            proj = fs[layer] @ unit
            per_chat.append((proj * mask).sum(1) / mask.sum(1))
        return float(torch.cat(per_chat).mean())

    def prompted_projection(self, model: nn.Module) -> float | None:
        """Projection of the reference chats with the trait-eliciting system prompt (model as given)."""
        if not self.prompted_batches:
            return None
        was_training = model.training
        model.eval()
        try:
            feats = self._features(model, self.prompted_batches)
        finally:
            model.train(was_training)
        return self._projection(self.prompted_batches, feats)

    def _write(
        self,
        model: nn.Module,
        step: int,
        train_loss: float | None,
        extra: dict[str, float] | None = None,
        control: Any = None,
    ) -> None:
        if step in self.log.steps():
            return  # written before a kill; the resumed run does not duplicate it
        row = {"step": step, "arm": self.arm, **self.measure(model, step), "train_loss": train_loss}
        row.update(extra or {})
        if step == 0 and self.prompted_batches:
            row["prompted_projection"] = self.prompted_projection(model)
        if self.alarm is not None:
            if step == 0:
                self.alarm.arm(row["projection"], row.get("prompted_projection"))
            elif self.alarm.check(step, row["projection"]):
                log.warning(
                    "drift alarm: step %d projection %.3f crossed %.3f%s",
                    step,
                    row["projection"],
                    self.alarm.threshold,
                    "; stopping the run" if self.alarm.cfg.stop else "",
                )
                if self.alarm.cfg.stop and control is not None:
                    control.should_training_stop = True
            row["alarm"] = self.alarm.fired
        self.log.append(row)
        log.info("monitor step %d: projection=%s ldifs=%s", step, row["projection"], row["ldifs"])

    def _resume_alarm(self, step: int) -> None:
        """A resumed run: the alarm's step-0 threshold from alarm.json (or the step-0 row), later firings undone."""
        if self.alarm is None:
            return
        self.alarm.resume()
        if self.alarm.state is None:
            first = next((r for r in self.log.rows() if r.get("step") == 0), None)
            if first is not None:
                self.alarm.arm(first["projection"], first.get("prompted_projection"))
        self.alarm.forget_after(step)

    # -- training events ------------------------------------------------------------------------------
    def begin(self, args: TrainingArguments, state: TrainerState, model: nn.Module) -> None:
        if not self.is_main or self.every == 0:
            return
        if state.global_step == 0:
            self._write(model, 0, None)
        else:
            self._resume_alarm(state.global_step)

    def step_end(self, state: TrainerState, control: TrainerControl, model: nn.Module) -> None:
        if self.every > 0 and (state.global_step % self.every == 0 or state.global_step >= state.max_steps):
            control.should_log = True  # the row takes the loss logged at this step
            self._pending = state.global_step

    def logged(
        self, state: TrainerState, control: TrainerControl, logs: dict[str, float], model: nn.Module
    ) -> None:
        if self._pending == state.global_step and logs and "loss" in logs:
            self._pending = None
            if self.is_main:
                extra = {key: float(logs[key]) for key in all_log_keys() if key in logs}
                self._write(model, state.global_step, float(logs["loss"]), extra, control)

    def end(self, state: TrainerState, model: nn.Module) -> None:
        if self.is_main and self.every > 0 and state.global_step > 0:
            self._write(model, state.global_step, None)  # no-op when the row exists


# ------------------------------------------------------------------------------------------- from a config


def _projection_vector(
    cfg: ExperimentConfig, model: nn.Module
) -> tuple[Tensor | None, int | None, str | None]:
    """The monitor's vector, its layer and the persona-prompted system prompt (all None without a vector)."""
    from steerlab.persona.vectors import PersonaVector

    mon = cfg.monitor
    steer = cfg.arms.steer or cfg.arms.steer_hold  # the steering arms' vector, layer and transfer flag
    path = mon.vector or (steer.vector if steer is not None else None)
    if path is None:
        return None, None, None
    pv = PersonaVector.load(path)
    pv.check_model(model, allow_transfer=bool(steer and steer.allow_transfer))
    if mon.layer is not None:
        layer = mon.layer
    elif mon.vector is None and steer is not None and steer.layer is not None:
        layer = steer.layer
    else:
        layer = pv.layer
    prompted = mon.prompted_system if mon.prompted_system is not None else _trait_prompt(pv.meta.trait)
    return pv.vector(layer), layer, prompted


def _trait_prompt(trait: str | None) -> str | None:
    """The first pos system prompt of a packaged trait, or None (with a log line) for any other trait."""
    from steerlab.persona.traits import available_traits, persona_prompt

    if not trait or trait not in available_traits():
        log.info("monitor: trait %r is not packaged; no persona-prompted reference level", trait)
        return None
    return persona_prompt(trait)


def build_monitor(
    cfg: ExperimentConfig,
    tokenizer: PreTrainedTokenizerBase,
    model: nn.Module,
    reference: Reference | None,
    is_main: bool,
) -> PersonaMonitor | None:
    """The monitor a config asks for (None with ``monitor.every: 0``).

    The vector is ``monitor.vector``, else the steer arm's; raises `ConfigError` without ``monitor.chats``.
    """
    from steerlab.train.config import ConfigError

    mon = cfg.monitor
    if mon.every == 0:
        return None
    if mon.chats is None:
        raise ConfigError(
            "monitor.chats: the monitor needs held-out reference chats (or set monitor.every: 0)"
        )
    vector, layer, prompted = _projection_vector(cfg, model)
    alarm = None
    if mon.alarm.enabled:
        if mon.alarm.stop and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(
                "monitor.alarm.stop: the monitor reads on the main process only, so it cannot stop a "
                "multi-process run; set stop: false (the alarm still flags)"
            )
        alarm = DriftAlarm(mon.alarm, cfg.run_dir, is_main)
    return PersonaMonitor(
        tokenizer=tokenizer,
        chats=list(load_chat_jsonl(mon.chats))[: mon.limit],
        log_path=cfg.run_dir / "monitor.jsonl",
        reference_cache=cfg.run_dir / "monitor_reference.safetensors",
        arm=cfg.arm_label,
        every=mon.every,
        max_length=cfg.data.max_length,
        batch_size=mon.batch_size,
        vector=vector,
        projection_layer=layer,
        ldifs_layers=mon.ldifs_layers or ldifs_layers(cfg, model),
        reference=reference,
        is_main=is_main,
        prompted_system=prompted or None,
        alarm=alarm,
    )
