"""What ``steerlab eval`` evaluates: a model name (registry, ``tiny:``, folder, hub id) or a finished run.

Runs load through `steerlab.models.runs` (evaluation never imports the trainer). A second, untouched copy of
the base is returned for the probe judge, so that every arm is judged by the same probe. Defaults for the
row (arm, domain, persona vector) are read from the run's files when present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.models import load_model
from steerlab.models.runs import is_run_dir, load_run, read_run


@dataclass
class EvalTarget:
    model: Any
    tokenizer: Any
    base: tuple[Any, Any]  # (base model, tokenizer) for the probe judge
    label: str
    arm: str = "base"
    domain: str | None = None
    vector: str | None = None
    run_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _domain_from_train(train: str | None) -> str | None:
    if not train:
        return None
    stem = Path(train).stem
    for suffix in ("_train_aligned", "_train"):
        stem = stem.removesuffix(suffix)
    return stem


def load_target(model_or_run: str) -> EvalTarget:
    """Load the model to evaluate and the base for the judge; raises naming what it could not find."""
    path = Path(model_or_run).expanduser()
    if not is_run_dir(path):
        model, tokenizer = load_model(model_or_run)
        return EvalTarget(model, tokenizer, (model, tokenizer), label=model_or_run)
    files = read_run(path)
    tuned = load_run(files)
    base_model, tokenizer = load_model(files.base_model)
    arms = files.config.get("arms") or {}
    monitor = files.config.get("monitor") or {}
    return EvalTarget(
        tuned.model,
        tokenizer,
        (base_model.eval(), tokenizer),
        label=tuned.name,
        arm=files.info.get("arm", "sft"),
        domain=_domain_from_train((files.config.get("data") or {}).get("train")),
        vector=(arms.get("steer") or {}).get("vector") or monitor.get("vector"),
        run_dir=files.run_dir,
        info=files.info,
    )
