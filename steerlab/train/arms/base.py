"""The Arm protocol: a training defense is a small object with at most three seams.

1. ``transform_data(examples) -> examples``: how it changes the data stream (before tokenization);
2. ``hooks(model) -> list[Op]``: hook-layer ops held during the *training* forward passes only;
3. ``extra_loss(model, batch, fwd) -> {name: value}``: terms added to the loss, each multiplied by
   ``loss_weights[name]``; every name must be one of the class's ``loss_keys`` (they go to metrics.jsonl).

Two optional hooks serve arms that act on the training *loop* rather than on one forward pass:
``callbacks()`` gives transformers `TrainerCallback`s the trainer adds (a controller that re-sets the
steering coefficient between steps, an early-stopping rule), and ``log_values()`` gives values that are not
loss terms — e.g. the steering coefficient in force — reported with every logged step under the class's
``log_keys`` (metrics.jsonl and the monitor rows).

An arm class also declares, as class attributes, everything the rest of the trainer needs to know about it
(see `steerlab.train.arms.registry`): its ``name`` (the key under ``arms:``), ``order`` (where it sits in
the data stream), ``config_class`` (the dataclass its YAML section is read into), ``loss_keys``,
``needs_reference`` and, for reference arms, whether its reference outputs may be cached.

Loss terms are returned already normalised so that summing them over micro-batches, gradient-accumulation
steps and processes gives the per-token mean over the whole optimizer step: an arm divides its sum over
tokens by the matching global count in ``fwd.counts`` (see `Forward`). That is what makes a 2-process run
match a 1-process run with the same global batch.

Arms that compare against the model before fine-tuning set ``needs_reference``; the trainer then runs one
shared no-grad reference forward per micro-batch (with the same ops, so step-0 identities hold for any arm
combination) and hands its logits and captures to every arm — or, for arms whose cache is on, the outputs
stored by the one pass before training (`steerlab.train.refcache`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from steerlab.data.chat import ChatExample
from steerlab.hooks import Captures, Op
from steerlab.train.schema import ConfigError, check_number

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from steerlab.train.config import ExperimentConfig

# what arms receive from the cache: per arm name, one dict of tensors per example of the micro-batch
CachedReference = dict[str, list[dict[str, Tensor]]]


@dataclass
class Forward:
    """One training micro-batch's forward pass, as arms see it.

    ``counts`` are global (all micro-batches of the optimizer step, all processes) normalisers:
    ``label`` positions predicting a loss token, ``assistant``/``all`` positions predicting an assistant /
    any real token (next-token terms), ``feat_assistant``/``feat_all`` assistant / real tokens (feature terms).
    ``ref_cached`` holds the cached reference outputs of arms whose cache is on (else None).
    """

    logits: Tensor  # [B, T, V] policy
    captures: Captures
    counts: dict[str, Tensor]
    ref_logits: Tensor | None = None  # [B, T, V] reference, no grad
    ref_captures: Captures | None = None
    ref_cached: CachedReference | None = None
    _logprobs: Tensor | None = field(default=None, repr=False)

    def next_token_logprobs(self) -> Tensor:
        """[B, T-1, V] float32 log-softmax of the policy's next-token logits, computed once per forward.

        The LM loss and every next-token arm term share it (one log-softmax over the vocabulary, not one
        per term: at a 49k vocabulary that pass is a visible share of a step).
        """
        if self._logprobs is None:
            self._logprobs = F.log_softmax(self.logits[:, :-1].float(), dim=-1)
        return self._logprobs


@dataclass
class BuildContext:
    """What arms may need when they are built (before the adapter is attached)."""

    config: ExperimentConfig
    model: nn.Module  # the base (aligned) model
    tokenizer: PreTrainedTokenizerBase | None  # None where an arm needs none
    run_dir: Path
    load_misaligned: Callable[[str], nn.Module] = field(default=None)  # type: ignore[assignment]
    is_main: bool = True


@dataclass
class ReferenceArmConfig:
    """The settings every arm comparing against the reference model shares.

    ``reference``: ``auto`` (LoRA: the adapter disabled; full fine-tuning: a frozen copy), or one of them
    explicitly. ``cache``: compute the reference outputs once before training instead of every step.
    """

    weight: float = 1.0  # lambda
    reference: Literal["auto", "adapter_disabled", "frozen_copy"] = "auto"
    cache: bool = False

    def __post_init__(self) -> None:
        check_number("weight", self.weight, ge=0)

    def check(self, experiment: ExperimentConfig) -> None:
        """Cross-section checks (raise `ConfigError` with a key relative to this section)."""
        if self.reference == "adapter_disabled" and experiment.finetune.method == "full":
            raise ConfigError("reference: 'adapter_disabled' needs finetune.method: lora")


class Arm:
    """Base class with the no-op seams; subclasses override what they need and register themselves."""

    name: ClassVar[str] = "arm"
    order: ClassVar[float]  # position in the data stream (and in hook and loss order); unique
    label_order: ClassVar[float | None] = None  # position of the name in a run's label; default: order
    config_class: ClassVar[type]  # the dataclass read from ``arms.<name>``
    loss_keys: ClassVar[tuple[str, ...]] = ()  # the terms extra_loss may return (logged to metrics.jsonl)
    log_keys: ClassVar[tuple[str, ...]] = ()  # values log_values reports (metrics.jsonl, monitor rows)
    needs_reference: ClassVar[bool] = False
    # False for an arm whose reference input changes from step to step (e.g. sampled augmentation in its
    # hooks): caching reference outputs is then invalid, and the config says so at load
    fixed_reference_inputs: ClassVar[bool] = True
    cacheable: ClassVar[bool] = False  # implements `cache_record` (its config then has a ``cache`` key)
    loss_weights: dict[str, float]
    cache: bool = False  # this instance reads its reference outputs from the cache

    def __init__(self) -> None:
        self.loss_weights = {}

    @classmethod
    def from_config(cls, cfg: Any, ctx: BuildContext) -> Arm:
        """Build the arm from its validated config section (an instance of ``config_class``); raises what the
        arm's checks raise (ValueError, ConfigError, IncompatibleVectorError), NotImplementedError here."""
        raise NotImplementedError(f"{cls.__name__} must define from_config")

    def transform_data(self, examples: Sequence[ChatExample]) -> list[ChatExample]:
        """The training stream after this arm (before tokenization); default: unchanged."""
        return list(examples)

    def hooks(self, model: nn.Module) -> list[Op]:
        """Hook-layer ops for the training forward (and the reference forward) of ``model``."""
        return []

    def extra_loss(self, model: nn.Module, batch: dict[str, Tensor], fwd: Forward) -> dict[str, Tensor]:
        """Scalar loss terms ``{loss_key: value}`` (unweighted, globally normalised; see module docstring)."""
        return {}

    def log_values(self) -> dict[str, float]:
        """Values to report with each logged step, ``{log_key: value}`` (keys from ``log_keys``)."""
        return {}

    def callbacks(self) -> list[TrainerCallback]:
        """Trainer callbacks this arm needs (added by `SteerlabTrainer` after the run's own)."""
        return []

    def cache_record(
        self, batch: dict[str, Tensor], ref_logits: Tensor, ref_captures: Captures
    ) -> list[dict[str, Tensor]]:
        """What to keep from one reference forward, one dict of tensors per example (cacheable arms);
        NotImplementedError for an arm that cannot cache."""
        raise NotImplementedError(f"arm {self.name!r} cannot cache its reference outputs")

    def cache_settings(self) -> dict[str, Any]:
        """What the cached outputs depend on besides the data and the reference (checked on reuse)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """What the run log records about this arm."""
        return {"name": self.name}
