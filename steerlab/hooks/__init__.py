"""The one hook layer: capture, add, ablate and set-projection on the residual stream, in token scopes.

Files:
  scopes.py     which positions an op touches (all / prompt / response / last / mask), per forward call
  ops.py        the ops themselves (pure tensor functions) and the Captures they record into
  program.py    the ops of one session grouped by layer + the sequences it follows (where prompts end)
  following.py  each model.generate call inside a session is one sequence
  checkpointing.py  ops stay outside gradient checkpointing on transformers that checkpoint __call__
  hf.py         backend: PyTorch forward hooks on transformers decoder blocks (PEFT included)
  tlens.py      backend: TransformerLens 4 TransformerBridge hook points
  nnsight_backend.py  backend: nnsight interventions
  backends.py   one functional interface over the three (forward / generate) for parity and benchmarks
"""

from steerlab.hooks.hf import HFHookSession, hooked
from steerlab.hooks.ops import Ablate, Add, Capture, Captures, Op, SetProjection
from steerlab.hooks.program import SequenceError
from steerlab.hooks.scopes import SCOPE_NAMES, CallInfo, Scope

__all__ = [
    "SCOPE_NAMES",
    "Ablate",
    "Add",
    "CallInfo",
    "Capture",
    "Captures",
    "HFHookSession",
    "Op",
    "Scope",
    "SequenceError",
    "SetProjection",
    "hooked",
]
