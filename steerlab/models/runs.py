"""Finished training runs as models, loaded without importing the trainer.

A run folder is ``runs/<name>/`` holding ``final/`` (what `steerlab.train` saves at the end), a ``final/``
folder itself, or any adapter or full-model folder. ``final/`` holds a LoRA adapter (``adapter_config.json``)
or a full fine-tuned model (``config.json``), and ``steerlab.json`` naming the base model. The base is named by
``final/steerlab.json`` (``base_model``), else the run's ``config.yaml`` (``model.name``), else the adapter's
``base_model_name_or_path``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import yaml
from torch import nn
from transformers import PreTrainedModel

from steerlab.io import read_json
from steerlab.models.load import LoadedModel, load_model


@dataclass
class RunFiles:
    """What a finished run's folder says: ``run_dir`` (None for a bare ``final/`` or adapter folder), the
    ``final`` folder with the weights, ``info`` (``final/steerlab.json``) and ``config`` (``config.yaml``)."""

    run_dir: Path | None
    final: Path
    info: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def base_model(self) -> str:
        """The base model's name; raises ``ValueError`` naming the folder when no file names it."""
        name = self.info.get("base_model") or (self.config.get("model") or {}).get("name")
        if not name and (self.final / "adapter_config.json").is_file():
            name = _read_json(self.final / "adapter_config.json").get("base_model_name_or_path")
        if not name:
            raise ValueError(
                f"{self.final}: cannot tell the base model (no steerlab.json, config.yaml or adapter_config.json)"
            )
        return str(name)


def _read_json(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def is_run_dir(path: str | Path) -> bool:
    """True for a folder holding ``final/``, an adapter (``adapter_config.json``) or ``steerlab.json``."""
    path = Path(path)
    return path.is_dir() and (
        (path / "final").is_dir()
        or (path / "adapter_config.json").is_file()
        or (path / "steerlab.json").is_file()
    )


def read_run(path: str | Path) -> RunFiles:
    """The files of a finished run (see `RunFiles`); raises ``ValueError`` naming a malformed file and
    ``FileNotFoundError`` when ``path`` is not a run folder (`is_run_dir`)."""
    path = Path(path).expanduser()
    if not is_run_dir(path):
        raise FileNotFoundError(f"{path} is neither a run folder with final/, nor an adapter or model folder")
    if (path / "final").is_dir():
        run_dir, final = path, path / "final"
    elif path.name == "final" and (path.parent / "config.yaml").is_file():
        run_dir, final = path.parent, path
    else:
        run_dir, final = None, path
    info = _read_json(final / "steerlab.json") if (final / "steerlab.json").is_file() else {}
    config: dict[str, Any] = {}
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        if not isinstance(config, dict):
            raise ValueError(f"{run_dir / 'config.yaml'}: expected a mapping, got {type(config).__name__}")
    return RunFiles(run_dir, final, info, config)


def load_finetuned(path: str | Path, base_factory: Callable[[], nn.Module]) -> nn.Module:
    """A fine-tuned model from a run folder (its ``final/``) or a model/adapter folder, in eval mode.

    An adapter is put on ``base_factory()`` (peft); a full model loads as is. Raises ``FileNotFoundError``
    when ``path`` holds neither.
    """
    path = Path(path)
    if (path / "final").is_dir():
        path = path / "final"
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        return PeftModel.from_pretrained(base_factory(), str(path)).eval()
    if (path / "config.json").is_file():
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(path)).eval()
    raise FileNotFoundError(f"{path} is neither a run folder with final/, nor an adapter or model folder")


def load_run(
    path: str | Path | RunFiles, *, dtype: torch.dtype = torch.float32, padding_side: str = "left"
) -> LoadedModel:
    """The fine-tuned model of a finished run with its base model's tokenizer, in eval mode.

    An adapter is merged into its base (same function, no per-layer LoRA detour when sampling). Raises as
    `read_run`, `RunFiles.base_model` and `load_model` do.
    """
    files = path if isinstance(path, RunFiles) else read_run(path)
    base = load_model(files.base_model, dtype=dtype, padding_side=padding_side)
    tuned = load_finetuned(files.final, lambda: base.model)
    merge = getattr(tuned, "merge_and_unload", None)
    model = merge().eval() if callable(merge) else tuned
    # a merged adapter and a full fine-tuned folder are both transformers models
    return LoadedModel(cast(PreTrainedModel, model), base.tokenizer, str(files.run_dir or files.final))
