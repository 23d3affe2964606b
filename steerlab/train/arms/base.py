"""The Arm protocol: a training defense is a small object with at most three seams.

1. ``transform_data(examples) -> examples``: how it changes the data stream (before tokenization);
2. ``hooks(model) -> list[Op]``: hook-layer ops held during the *training* forward passes only;
3. ``extra_loss(model, batch, fwd) -> {name: value}``: terms added to the loss, each multiplied by
   ``loss_weights[name]``.

Loss terms are returned already normalised so that summing them over micro-batches, gradient-accumulation
steps and processes gives the per-token mean over the whole optimizer step: an arm divides its sum over
tokens by the matching global count in ``fwd.counts`` (see `Forward`). That is what makes a 2-process run
match a 1-process run with the same global batch.

Arms that compare against the model before fine-tuning set ``needs_reference``; the trainer then runs one
shared no-grad reference forward per micro-batch (with the same ops, so step-0 identities hold for any arm
combination) and hands its logits and captures to every arm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from steerlab.data.chat import ChatExample
from steerlab.hooks import Captures, Op

# The order in which arms see the data stream: inoculation marks the narrow data only, then general data
# is mixed in (general answers are good behaviour; they get no inoculation prompt).
ARM_ORDER: tuple[str, ...] = ("sft", "inoculate", "interleave", "steer", "kl", "ldifs")


@dataclass
class Forward:
    """One training micro-batch's forward pass, as arms see it.

    ``counts`` are global (all micro-batches of the optimizer step, all processes) normalisers:
    ``label`` positions predicting a loss token, ``assistant``/``all`` positions predicting an assistant /
    any real token (next-token terms), ``feat_assistant``/``feat_all`` assistant / real tokens (feature terms).
    """

    logits: Tensor  # [B, T, V] policy
    captures: Captures
    counts: dict[str, Tensor]
    ref_logits: Tensor | None = None  # [B, T, V] reference, no grad
    ref_captures: Captures | None = None


@dataclass
class BuildContext:
    """What arms may need when they are built (before the adapter is attached)."""

    config: Any  # ExperimentConfig
    model: nn.Module  # the base (aligned) model
    tokenizer: Any
    run_dir: Path
    load_misaligned: Callable[[str], nn.Module] = field(default=None)  # type: ignore[assignment]
    is_main: bool = True


class Arm:
    """Base class with the no-op seams; subclasses override what they need."""

    name: ClassVar[str] = "arm"
    needs_reference: ClassVar[bool] = False
    loss_weights: dict[str, float]

    def __init__(self) -> None:
        self.loss_weights = {}

    def transform_data(self, examples: Sequence[ChatExample]) -> list[ChatExample]:
        return list(examples)

    def hooks(self, model: nn.Module) -> list[Op]:
        return []

    def extra_loss(self, model: nn.Module, batch: dict[str, Tensor], fwd: Forward) -> dict[str, Tensor]:
        return {}

    def describe(self) -> dict[str, Any]:
        """What the run log records about this arm."""
        return {"name": self.name}
