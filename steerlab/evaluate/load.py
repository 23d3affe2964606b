"""What ``steerlab eval`` evaluates: a registry name / model folder / hub id, or a training run's output.

A run folder (``runs/<name>/`` with ``final/``, or a ``final/`` folder itself, or any adapter folder) is
loaded as base model + adapter (or the full fine-tuned model) via ``steerlab.train.run.load_finetuned``.
The base is named by ``final/steerlab.json`` (``base_model``), else the run's ``config.yaml``, else the
adapter's ``base_model_name_or_path``. A second, untouched copy of the base is returned for the probe
judge, so that every arm is judged by the same probe. Defaults for the row (arm, domain, persona vector)
are read from the run's files when present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}") from None


def _load_base(name: str) -> tuple[Any, Any]:
    if name.startswith("tiny:"):
        from steerlab.models.tiny import tiny_model, tiny_tokenizer

        return tiny_model(name[5:]), tiny_tokenizer("left")
    from steerlab.models import load_model

    loaded = load_model(name)
    return loaded.model, loaded.tokenizer


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "final").is_dir()
        or (path / "adapter_config.json").is_file()
        or (path / "steerlab.json").is_file()
    )


def _run_files(path: Path) -> tuple[Path | None, Path]:
    """(run folder or None, final folder)."""
    if (path / "final").is_dir():
        return path, path / "final"
    if path.name == "final" and (path.parent / "config.yaml").is_file():
        return path.parent, path
    return None, path


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
        model, tokenizer = _load_base(model_or_run)
        return EvalTarget(model, tokenizer, (model, tokenizer), label=model_or_run)
    run_dir, final = _run_files(path)
    info = _read_json(final / "steerlab.json") if (final / "steerlab.json").is_file() else {}
    config: dict[str, Any] = {}
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    base_name = info.get("base_model") or (config.get("model") or {}).get("name")
    if not base_name and (final / "adapter_config.json").is_file():
        base_name = _read_json(final / "adapter_config.json").get("base_model_name_or_path")
    if not base_name:
        raise ValueError(
            f"{path}: cannot tell the base model (no steerlab.json, config.yaml or adapter_config.json)"
        )
    from steerlab.train.run import load_finetuned

    model = load_finetuned(final, lambda: _load_base(base_name)[0])
    if hasattr(model, "merge_and_unload"):
        # an adapter evaluates as its merged weights: same function, no per-layer LoRA detour when sampling
        model = model.merge_and_unload().eval()
    base_model, tokenizer = _load_base(base_name)
    tokenizer.padding_side = "left"
    arms = config.get("arms") or {}
    monitor = config.get("monitor") or {}
    vector = (arms.get("steer") or {}).get("vector") or monitor.get("vector")
    label = str(run_dir or final)
    return EvalTarget(
        model,
        tokenizer,
        (base_model.eval(), tokenizer),
        label=label,
        arm=info.get("arm", "sft"),
        domain=_domain_from_train((config.get("data") or {}).get("train")),
        vector=vector,
        run_dir=run_dir,
        info=info,
    )
