"""Models: loading by registry name, folder, hub id or ``tiny:`` name (`load`), the embedded SmolLM2 cache
(`embedded`), where each architecture keeps its decoder blocks (`architectures`) and config-built tiny models
for tests and dry runs (`tiny`)."""

from steerlab.models.load import (
    DEFAULT_MODEL,
    LoadedModel,
    UnknownModelError,
    load_model,
    registry_names,
    resolve_model_path,
)

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "UnknownModelError",
    "load_model",
    "registry_names",
    "resolve_model_path",
]
