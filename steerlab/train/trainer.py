"""`SteerlabTrainer`: transformers' `Trainer` with the arms' hooks and loss terms in ``compute_loss``.

Distribution (DDP via torchrun / accelerate launch), gradient accumulation, checkpointing, resume and
gradient checkpointing are transformers'. What this class adds:

* one training forward per micro-batch under the arms' hook ops (held only while the model is training,
  so evaluation, the monitor and saving never see them), plus one shared no-grad reference forward when
  an arm needs it live — arms whose cache is on read the reference outputs stored before training
  (`steerlab.train.refcache`) instead, and when every such arm does, no reference forward runs at all;
* the LM loss on the label tokens and the arms' terms, each a *sum over tokens divided by a global count*
  (all micro-batches of the optimizer step, all processes; see `Forward`), times the world size because
  DDP averages gradients. So the gradient is the per-token mean over the global batch whatever its split
  into processes and micro-batches, and a 2-process run follows the 1-process curve;
* per-term metrics (``lm_loss`` and every arm's loss keys) averaged like ``loss`` and added to each log;
  a term an arm did not declare in its ``loss_keys`` is an error (it would be missing from metrics.jsonl);
* a non-finite loss or gradient stops the run with `NonFiniteLossError` naming the step and the last
  complete checkpoint (no update is applied, so that checkpoint is untouched);
* the arms' own callbacks (`Arm.callbacks`) and the values they report with each log (`Arm.log_values`);
* one progress bar per run (`RunProgress`) in place of transformers' printing of each log dictionary
  (the values are in metrics.jsonl).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    PrinterCallback,
    ProgressCallback,
    Trainer,
)

from steerlab.data.tokenize import IGNORE_INDEX
from steerlab.hooks import hooked
from steerlab.train.arms.base import Arm, CachedReference, Forward
from steerlab.train.events import TrainingEvents
from steerlab.train.reference import Reference

if TYPE_CHECKING:
    from steerlab.train.refcache import ReferenceCache

COUNT_KEYS = ("label", "assistant", "all", "feat_assistant", "feat_all")
CHECKPOINT_MARKER = "steerlab-complete.json"


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient became NaN/inf; the message names the step and the last good checkpoint."""


def batch_counts(batch: dict[str, Tensor]) -> Tensor:
    """The normalisers of one micro-batch, in `COUNT_KEYS` order (see `Forward`)."""
    labels, assistant, attention = batch["labels"], batch["assistant_mask"], batch["attention_mask"]
    return torch.stack(
        [
            (labels[:, 1:] != IGNORE_INDEX).sum(),
            assistant[:, 1:].sum(),
            attention[:, 1:].sum(),
            assistant.sum(),
            attention.sum(),
        ]
    ).to(torch.float32)


def last_complete_checkpoint(folder: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` under ``folder`` that finished saving (carries the marker file)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    done = [
        p for p in folder.glob("checkpoint-*") if p.name[11:].isdigit() and (p / CHECKPOINT_MARKER).is_file()
    ]
    return max(done, key=lambda p: int(p.name[11:]), default=None)


def _cached(
    arms: Sequence[Arm], inputs: dict[str, Tensor], cache: ReferenceCache | None
) -> CachedReference | None:
    """The cached reference outputs of this batch for the arms that read the cache (None if there are none)."""
    names = [arm.name for arm in arms if arm.needs_reference and arm.cache]
    if not names:
        return None
    if cache is None:
        raise RuntimeError(
            f"arms {names} read the reference cache, but none was built (cache: true needs train())"
        )
    if "example_index" not in inputs:
        raise RuntimeError("the batch has no example_index: the reference cache cannot find its examples")
    return _on_device(cache.fetch(inputs["example_index"], names), inputs["input_ids"].device)


def _on_device(cached: CachedReference, device: torch.device) -> CachedReference:
    """The batch's cached records on the model's device. On CUDA they are copied from pinned memory without
    blocking, before the policy's forward is queued, so the copies overlap it (measured: the launch-bound
    135M model on an H200 paid ~20% per step for ldifs' synchronous copies of five blocks' features)."""
    if device.type != "cuda":
        return cached
    return {
        arm: [{k: t.pin_memory().to(device, non_blocking=True) for k, t in rec.items()} for rec in recs]
        for arm, recs in cached.items()
    }


def arm_loss(
    model: nn.Module,
    inputs: dict[str, Tensor],
    arms: Sequence[Arm],
    reference: Reference | None = None,
    *,
    counts: Tensor | None = None,
    inner: nn.Module | None = None,
    reference_cache: ReferenceCache | None = None,
) -> tuple[Tensor, dict[str, Tensor], Any]:
    """The training loss of one micro-batch: LM loss on label tokens + the weighted arm terms.

    ``model`` is what to call (a DDP wrapper under torchrun), ``inner`` the unwrapped (PEFT) model the hooks
    attach to. Hooks, the reference forward and the cache only serve while ``inner`` is in training mode.
    ``counts`` are the global normalisers (`COUNT_KEYS` order); None means this batch alone. Returns (loss,
    unweighted terms including ``lm_loss``, the policy outputs). Raises RuntimeError when an arm returns a
    term outside its ``loss_keys`` or reads a cache that was not passed.
    """
    inner = model if inner is None else inner
    if counts is None:
        counts = batch_counts(inputs).to(inputs["input_ids"].device).clamp_min(1.0)
    counts_by_name = dict(zip(COUNT_KEYS, counts.unbind(), strict=True))
    training = inner.training
    ops = [op for arm in arms for op in arm.hooks(inner)] if training else []
    model_inputs = {
        "input_ids": inputs["input_ids"],
        "attention_mask": inputs["attention_mask"],
        "use_cache": False,
    }

    ref_logits = ref_captures = None
    if training and any(arm.needs_reference and not arm.cache for arm in arms):
        reference = reference if reference is not None else Reference()
        with torch.no_grad(), reference.active(inner) as ref_model, hooked(ref_model, ops) as ref_session:
            ref_logits = ref_model(**model_inputs).logits
            ref_captures = ref_session.captures
    ref_cached = _cached(arms, inputs, reference_cache) if training else None
    with hooked(inner, ops) as session:
        outputs = model(**model_inputs)

    fwd = Forward(outputs.logits, session.captures, counts_by_name, ref_logits, ref_captures, ref_cached)
    logp = fwd.next_token_logprobs()
    lm_sum = F.nll_loss(
        logp.reshape(-1, logp.shape[-1]),
        inputs["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    terms = {"lm_loss": lm_sum / counts_by_name["label"]}
    loss = terms["lm_loss"]
    for arm in arms:
        for name, value in arm.extra_loss(inner, inputs, fwd).items():
            if name not in type(arm).loss_keys:
                raise RuntimeError(
                    f"arm {arm.name!r} returned loss term {name!r}, not in its loss_keys {type(arm).loss_keys}"
                )
            terms[name] = value
            loss = loss + arm.loss_weights[name] * value
    return loss, terms, outputs


class SteerlabTrainer(Trainer):
    def __init__(
        self,
        *args: Any,
        arms: Sequence[Arm] = (),
        reference: Reference | None = None,
        reference_cache: ReferenceCache | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.arms = list(arms)
        self.reference = reference if reference is not None else Reference()
        self.reference_cache = reference_cache
        self.model_accepts_loss_kwargs = False  # we normalise ourselves (see module docstring)
        self.loss_is_scaled_for_ga = True
        self._counts: Tensor | None = None
        self._acc: dict[str, Tensor] = {}
        self._acc_start: int | None = None
        self.add_callback(_FiniteGradGuard(self))
        from steerlab.train.callbacks import RunProgress

        for printer in (PrinterCallback, ProgressCallback):
            self.remove_callback(printer)
        self.add_callback(RunProgress())
        for arm in self.arms:
            for callback in arm.callbacks():
                self.add_callback(callback)

    # -- normalisers ----------------------------------------------------------------------------------
    def get_batch_samples(
        self, epoch_iterator: Iterator[dict[str, Any]], num_batches: int, device: torch.device
    ) -> tuple[list[dict[str, Any]], None]:  # noqa: D102 - see module docstring
        samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if samples:
            counts = torch.stack([batch_counts(b) for b in samples]).sum(0).to(self.args.device)
            if self.args.world_size > 1:
                counts = self.accelerator.reduce(counts, reduction="sum")
            self._counts = counts.clamp_min(1.0)
        return samples, None

    @property
    def world(self) -> int:
        return max(1, self.args.world_size)

    # -- loss -----------------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Tensor | tuple[Tensor, Any]:
        inner = self.accelerator.unwrap_model(model)
        training = inner.training
        if training and self._counts is not None:
            counts, scale = self._counts, self.world
        else:  # evaluation / a direct call: normalise by this batch alone
            counts, scale = None, 1
        loss, terms, outputs = arm_loss(
            model,
            inputs,
            self.arms,
            self.reference,
            counts=counts,
            inner=inner,
            reference_cache=self.reference_cache,
        )
        self._check_finite(loss, terms)
        if training:
            if self._acc_start is None:
                self._acc_start = self.state.global_step
            for name, value in terms.items():
                self._acc[name] = self._acc.get(name, 0.0) + value.detach()
        loss = loss * scale
        return (loss, outputs) if return_outputs else loss

    def _check_finite(self, loss: Tensor, terms: dict[str, Tensor]) -> None:
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        if self.world > 1:
            bad = self.accelerator.reduce(bad, reduction="sum")
        if bad.item() > 0:
            values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            self.stop_with(f"non-finite loss {float(loss.detach()):.4g} ({values})")

    def stop_with(self, problem: str) -> None:
        step = self.state.global_step + 1
        ckpt = last_complete_checkpoint(self.args.output_dir) if self.args.output_dir else None
        where = (
            f"last good checkpoint: {ckpt} (resume from it with --resume)"
            if ckpt
            else "no checkpoint was saved yet"
        )
        raise NonFiniteLossError(f"training stopped at step {step}: {problem}; {where}")

    # -- logging --------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._acc:
            names = sorted(self._acc)
            values = torch.stack(
                [torch.as_tensor(self._acc[n], device=self.args.device).float() for n in names]
            )
            if self.world > 1:
                values = self.accelerator.reduce(values, reduction="sum")
            steps = max(1, self.state.global_step - (self._acc_start or 0))
            logs.update({n: float(v) / steps for n, v in zip(names, values.tolist(), strict=True)})
            self._acc, self._acc_start = {}, None
        if "loss" in logs:
            for arm in self.arms:
                reported = arm.log_values()
                undeclared = set(reported) - set(type(arm).log_keys)
                if undeclared:
                    raise RuntimeError(
                        f"arm {arm.name!r} reported {sorted(undeclared)}, not in its log_keys {type(arm).log_keys}"
                    )
                logs.update({key: float(value) for key, value in reported.items()})
        super().log(logs, start_time)


class _FiniteGradGuard(TrainingEvents):
    """Refuse to apply an update with a NaN/inf gradient (the weights, and so the next checkpoint, stay finite)."""

    def __init__(self, trainer: SteerlabTrainer) -> None:
        self.trainer = trainer

    def given(self, model: nn.Module | None, event: str) -> nn.Module:
        """The model the event passed, else the trainer's own (RuntimeError when neither exists)."""
        return super().given(model if model is not None else self.trainer.model, event)

    def before_optimizer_step(self, model: nn.Module) -> None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            self.trainer.stop_with("non-finite gradient")
