"""The training arms: one module per arm, each registering itself (see `registry`).

Files:
  base.py        the Arm protocol, Forward, BuildContext, ReferenceArmConfig
  registry.py    register_arm / build_arms: the only list of arms is what registered
  sft.py         plain fine-tuning (the baseline)
  inoculate.py   a system prompt asking for the bad behaviour, during training only
  interleave.py  general data mixed in (random or by perplexity gap)
  steer.py       preventive steering: +alpha v at a layer during training forwards
  steer_hold.py  preventive steering whose alpha a PI controller sets to hold the persona projection
  kl.py          KL to the reference's next-token distributions (live or top-k cached)
  ldifs.py       feature-space distance to the reference at a few blocks (live or cached)
  early_stop.py  stop on a held-out in-domain loss (patience), best weights kept

A new arm is one file: drop it here (imported and registered on first use) or anywhere else and import it.
Names below are imported lazily, so importing the package costs nothing until one is used.
"""

from __future__ import annotations

from steerlab.lazy import lazy_exports

_EXPORTS = {
    "Arm": "base",
    "BuildContext": "base",
    "Forward": "base",
    "ReferenceArmConfig": "base",
    "register_arm": "registry",
    "unregister_arm": "registry",
    "registered_arms": "registry",
    "arm_class": "registry",
    "build_arms": "registry",
    "SftArm": "sft",
    "InoculateArm": "inoculate",
    "InterleaveArm": "interleave",
    "SteerArm": "steer",
    "SteerHoldArm": "steer_hold",
    "EarlyStopArm": "early_stop",
    "KLArm": "kl",
    "LdifsArm": "ldifs",
    "default_blocks": "ldifs",
    "ldifs_layers": "ldifs",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS, relative=True)
