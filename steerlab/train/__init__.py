"""Fine-tuning with in-training defenses: one trainer, composable arms, and a persona monitor.

Files:
  config.py     YAML experiment configs, validated on load (errors name the file and key path)
  arms/         one module per arm (sft, steer, kl, ldifs, interleave, inoculate) + the Arm protocol
  trainer.py    SteerlabTrainer: transformers' Trainer + the arms' hooks and loss terms
  reference.py  the model before training (LoRA adapter disabled, or a frozen copy)
  monitor.py    PersonaMonitor: persona projection + LDIFS distance across training
  callbacks.py  metrics JSONL and complete-checkpoint bookkeeping
  jsonl.py      append-only logs that survive a kill and a resume
  run.py        one run from a config: run folder, data stream, resume
  fixtures.py   tiny data, vector and config for tests and experiments/tiny_smoke.yaml

Names are imported lazily so that ``import steerlab.train`` stays cheap.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "train": "steerlab.train.run",
    "RunResult": "steerlab.train.run",
    "load_config": "steerlab.train.config",
    "ExperimentConfig": "steerlab.train.config",
    "ConfigError": "steerlab.train.config",
    "SteerlabTrainer": "steerlab.train.trainer",
    "NonFiniteLossError": "steerlab.train.trainer",
    "PersonaMonitor": "steerlab.train.monitor",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'steerlab.train' has no attribute {name!r}")
