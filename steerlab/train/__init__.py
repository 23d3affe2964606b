"""Fine-tuning with in-training defenses: one trainer, composable arms, and a persona monitor.

Files:
  schema.py     the YAML -> dataclass validator (errors name the key path)
  config.py     experiment configs, validated on load; the arms' sections come from the registry
  arms/         the arm registry and one self-registering module per arm (a new arm is one file)
  loading.py    the base model and tokenizer of a config, the LoRA adapter, finished runs
  dataset.py    the training stream: chats -> arms' data transforms -> tokens -> indexed batches
  reference.py  the model before training (LoRA adapter disabled, or a frozen copy) and which one
  refcache.py   cached reference outputs: one pass before training, checked against the data on reuse
  trainer.py    SteerlabTrainer: transformers' Trainer + the arms' hooks and loss terms
  monitor.py    PersonaMonitor: persona projection + LDIFS distance across training
  callbacks.py  metrics JSONL and complete-checkpoint bookkeeping
  jsonl.py      append-only logs that survive a kill and a resume
  rundir.py     the run folder: create, check, resume, save the final model
  arguments.py  transformers' TrainingArguments from a config
  run.py        one run from a config: the wiring of the above
  fixtures.py   tiny data, vector and config for tests and experiments/tiny_smoke.yaml

Names are imported lazily so that ``import steerlab.train`` stays cheap.
"""

from __future__ import annotations

from steerlab.lazy import lazy_exports

_EXPORTS = {
    "train": "steerlab.train.run",
    "RunResult": "steerlab.train.rundir",
    "register_arm": "steerlab.train.arms.registry",
    "ReferenceCacheError": "steerlab.train.refcache",
    "load_config": "steerlab.train.config",
    "ExperimentConfig": "steerlab.train.config",
    "ConfigError": "steerlab.train.config",
    "SteerlabTrainer": "steerlab.train.trainer",
    "NonFiniteLossError": "steerlab.train.trainer",
    "PersonaMonitor": "steerlab.train.monitor",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
