"""The reference model of the kl and ldifs arms and the monitor: the model before fine-tuning.

Under LoRA it is the same module with the adapter disabled (``PeftModel.disable_adapter``), so no second
copy is held in memory; under full fine-tuning (or when a config asks for it) it is a frozen deep copy
made before training. Either way it runs in eval mode and callers wrap it in ``torch.no_grad``.
`make_reference` decides which, from the enabled arms that declare ``needs_reference``. When every such arm
reads the reference cache, full fine-tuning keeps no copy at all: the cache is built from the policy
itself before its first update (`Reference.untrained_policy`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from steerlab.train.config import ExperimentConfig


class Reference:
    """The model before training: ``frozen`` is a frozen copy, or None for the adapter-disabled policy."""

    def __init__(self, frozen: nn.Module | None = None, *, untrained: bool = False) -> None:
        self.frozen = frozen
        self.untrained = untrained
        if frozen is not None:
            frozen.eval().requires_grad_(False)

    @property
    def kind(self) -> str:
        if self.untrained:
            return "untrained_policy"
        return "frozen_copy" if self.frozen is not None else "adapter_disabled"

    @classmethod
    def untrained_policy(cls) -> Reference:
        """The policy itself, in eval mode: the reference only until the first update (the cache pass)."""
        return cls(untrained=True)

    @classmethod
    def frozen_copy(cls, base: nn.Module) -> Reference:
        """A frozen copy of ``base`` (call before an adapter is attached or any step is taken)."""
        return cls(copy.deepcopy(base))

    @contextlib.contextmanager
    def active(self, policy: nn.Module) -> Iterator[nn.Module]:
        """Yield a module whose forward is the reference; ``policy`` is the (PEFT) model being trained."""
        if self.untrained:
            was_training = policy.training
            try:
                yield policy.eval()
            finally:
                policy.train(was_training)
            return
        if self.frozen is not None:
            device = next(policy.parameters()).device
            if next(self.frozen.parameters()).device != device:  # the trainer moved the policy (GPU)
                self.frozen.to(device)
            yield self.frozen
            return
        disable_adapter = getattr(policy, "disable_adapter", None)
        if not callable(disable_adapter):
            raise TypeError(
                f"the adapter-disabled reference needs a PEFT model, got {type(policy).__name__}; "
                "use a frozen copy under full fine-tuning"
            )
        was_training = policy.training
        policy.eval()
        try:
            with disable_adapter():
                yield policy
        finally:
            policy.train(was_training)


def make_reference(cfg: ExperimentConfig, base: nn.Module) -> Reference | None:
    """The model before training for the enabled arms that need one (``needs_reference``).

    LoRA: the adapter disabled, unless an arm asks for ``reference: frozen_copy``; full fine-tuning: a
    frozen copy when an arm needs the reference live (or asks for a copy), else None (the monitor then
    takes its reference features at step 0, and the reference cache is built from the untrained policy).
    Call before the adapter is attached.
    """
    from steerlab.train.arms.registry import arm_class

    sections = [section for name, section in cfg.arms.items() if arm_class(name).needs_reference]
    wants = {getattr(section, "reference", "auto") for section in sections}
    live = any(not getattr(section, "cache", False) for section in sections)
    if cfg.finetune.method == "full":
        return Reference.frozen_copy(base) if live or "frozen_copy" in wants else None
    return Reference.frozen_copy(base) if "frozen_copy" in wants else Reference()
