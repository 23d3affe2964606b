"""Models: loading by registry name, ``tiny:`` name, folder or hub id (`load`), finished training runs
(`runs`), the embedded SmolLM2 cache (`embedded`), where each architecture keeps its decoder blocks
(`architectures`) and config-built tiny models for tests and dry runs (`tiny`)."""

from steerlab.models.load import (
    DEFAULT_MODEL,
    LoadedModel,
    UnknownModelError,
    load_model,
    load_tokenizer,
    model_depth,
    registry_names,
    resolve_model_path,
)
from steerlab.models.runs import RunFiles, is_run_dir, load_finetuned, load_run, read_run

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "RunFiles",
    "UnknownModelError",
    "is_run_dir",
    "load_finetuned",
    "load_model",
    "load_run",
    "load_tokenizer",
    "model_depth",
    "read_run",
    "registry_names",
    "resolve_model_path",
]
