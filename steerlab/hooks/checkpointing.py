"""Keeping block hooks outside gradient checkpointing on transformers that checkpoint ``__call__``.

Before transformers 5.23, ``GradientCheckpointingLayer.__call__`` checkpoints ``nn.Module.__call__`` — the
block's forward hooks included. The backward pass then recomputes the block *with whatever hooks are
attached at that moment*. steerlab's training loss calls ``backward()`` after the ``hooked`` context has
closed, so the recomputed block ran without its Ablate/SetProjection: silently wrong gradients under
reentrant checkpointing, a ``CheckpointError`` (different saved tensors) under non-reentrant. Later
releases (5.23 on) checkpoint ``forward`` instead, so hooks run once, outside (exact).

On the older layout we give each hooked block a checkpoint function that runs the checkpointed call with
the session's hook standing aside and then applies the ops to its output, outside the checkpoint — which
is what the newer layout does. The recomputation then never involves the hook, attached or not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

_MISSING = object()


def hooks_inside_checkpoint(block: nn.Module) -> bool:
    """True when this block's checkpointing (if switched on) would wrap its forward hooks."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # pragma: no cover - transformers without the class
        return False
    return isinstance(block, GradientCheckpointingLayer) and "__call__" in GradientCheckpointingLayer.__dict__


class OutsideCheckpoint:
    """Installs, on one block, a checkpoint function that applies ``after`` outside the checkpoint.

    ``after(output) -> output`` is the session's hook body; ``self.inside`` is True while the checkpointed
    call runs, so the block's own forward hook must then stand aside.
    """

    def __init__(self, block: nn.Module, after: Callable[[Any], Any]):
        self.block = block
        self.after = after
        self.inside = 0
        self._previous = block.__dict__.get("_gradient_checkpointing_func", _MISSING)

    @property
    def installed(self) -> bool:
        """True when checkpointing is on for the block (transformers set its checkpoint function)."""
        return self._previous is not _MISSING

    def install(self) -> None:
        """Wrap the block's checkpoint function (nothing to do when checkpointing is off)."""
        if not self.installed:  # checkpointing not switched on: nothing to wrap (the hook guards the rest)
            return
        original = self._previous

        def checkpoint_then_hook(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            self.inside += 1
            try:
                output = original(function, *args, **kwargs)
            finally:
                self.inside -= 1
            return self.after(output)

        # Through __dict__, where transformers keeps it (nn.Module types its attributes as Tensor | Module).
        self.block.__dict__["_gradient_checkpointing_func"] = checkpoint_then_hook

    def remove(self) -> None:
        """Give the block back its own checkpoint function."""
        if self.installed:
            self.block.__dict__["_gradient_checkpointing_func"] = self._previous
