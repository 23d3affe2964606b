"""Two small sections of a grid file: what each cell asks of a machine, and how the dry run sizes a real GPU.

``resources`` (top level, and per arm beside ``run``/``domains``) is what every cell asks the engine for::

    resources: {cpus: 8, gpus: 1, memory_gb: 64, max_retries: 2}

``cpus`` left out means: all cores / ``--jobs`` on a local run, 1 on a cluster. ``max_retries`` is how often a
cell whose worker died (killed, out of memory, node lost) is started again; it resumes from its last
complete checkpoint. An error raised by the cell itself is never retried: it would fail the same way.

``dry_run`` says what `steerlab run GRID --dry-run` builds and assumes (see `steerlab.experiment.dryrun`)::

    dry_run:
      architecture: configs/qwen2.5-7b-instruct.json   # the real model's config.json (no weights)
      layers: 4          # the tiny stand-in of the same architecture
      hidden: 64
      gpu: {name: H100-SXM-80GB, memory_gb: 80, tflops: 989, mfu: 0.35, bandwidth_tbs: 3.35}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# train.schema imports no torch: this module (and the engine) still load without it
from steerlab.train.schema import ConfigError, as_mapping


@dataclass(frozen=True)
class Resources:
    """What one cell asks of a node. Units: CPU cores, GPUs, GiB of host memory."""

    cpus: float | None = None  # None: cores // jobs on a local run, 1 on a cluster
    gpus: float = 0.0
    memory_gb: float | None = None
    max_retries: int = 2

    def describe(self) -> str:
        parts = [f"{self.cpus:g} CPU" if self.cpus is not None else "CPU: default"]
        parts.append(f"{self.gpus:g} GPU")
        if self.memory_gb is not None:
            parts.append(f"{self.memory_gb:g} GiB memory")
        return ", ".join(parts)


@dataclass(frozen=True)
class GpuSpec:
    """The GPU the dry run sizes cells for. Units: GiB, dense bf16 TFLOP/s, fraction, TB/s."""

    name: str = "H100-SXM-80GB"
    memory_gb: float = 80.0
    tflops: float = 989.0  # NVIDIA H100 SXM datasheet, dense BF16 tensor core
    mfu: float = 0.35  # share of peak a LoRA fine-tune reaches: an assumption, not a measurement
    bandwidth_tbs: float = 3.35  # HBM3 bandwidth (datasheet): decoding reads every weight once per token


@dataclass(frozen=True)
class DryRunSettings:
    """The tiny stand-in's shape and the real architecture it mirrors."""

    architecture: Path | None = None  # a transformers config.json; None: the model folder's own
    layers: int = 4
    hidden: int = 64
    heads: int | None = None  # default: keep the real model's heads : kv-heads ratio, head size 8 or more
    intermediate: int | None = None  # default: hidden x the real model's intermediate/hidden ratio
    chars_per_token: float = 4.0  # the real tokenizer's characters per token on English text (assumed)
    gpu: GpuSpec = field(default_factory=GpuSpec)


def _number(value: Any, where: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ConfigError(f"{where}: must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return float(value)


def _integer(value: Any, where: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _check_keys(spec: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def parse_resources(value: Any, where: str, base: Resources | None = None) -> Resources:
    """``value`` over ``base`` (the grid's own request, for an arm's); errors name ``where`` and the key."""
    spec = as_mapping(value, where)
    _check_keys(spec, {f.name for f in dataclasses.fields(Resources)}, where)
    out = base or Resources()
    changes: dict[str, Any] = {}
    if "cpus" in spec:
        changes["cpus"] = (
            None if spec["cpus"] is None else _number(spec["cpus"], f"{where}.cpus", strict=True)
        )
    if "gpus" in spec:
        changes["gpus"] = _number(spec["gpus"], f"{where}.gpus")
    if "memory_gb" in spec:
        memory = spec["memory_gb"]
        changes["memory_gb"] = None if memory is None else _number(memory, f"{where}.memory_gb", strict=True)
    if "max_retries" in spec:
        changes["max_retries"] = _integer(spec["max_retries"], f"{where}.max_retries", minimum=0)
    return dataclasses.replace(out, **changes)


def parse_dry_run(value: Any, where: str, base: Path) -> DryRunSettings:
    """The ``dry_run`` section; ``architecture`` is resolved against the grid file's folder and must exist."""
    spec = as_mapping(value, where)
    _check_keys(spec, {f.name for f in dataclasses.fields(DryRunSettings)}, where)
    changes: dict[str, Any] = {}
    if spec.get("architecture") is not None:
        arch = (base / str(spec["architecture"])).resolve()
        if not arch.is_file():
            raise ConfigError(f"{where}.architecture: {arch} does not exist")
        changes["architecture"] = arch
    for key in ("layers", "hidden"):
        if key in spec:
            changes[key] = _integer(spec[key], f"{where}.{key}", minimum=1)
    for key in ("heads", "intermediate"):
        if spec.get(key) is not None:
            changes[key] = _integer(spec[key], f"{where}.{key}", minimum=1)
    if "chars_per_token" in spec:
        changes["chars_per_token"] = _number(spec["chars_per_token"], f"{where}.chars_per_token", strict=True)
    if "gpu" in spec:
        gpu = as_mapping(spec["gpu"], f"{where}.gpu")
        _check_keys(gpu, {f.name for f in dataclasses.fields(GpuSpec)}, f"{where}.gpu")
        gpu_changes: dict[str, Any] = {}
        for key in ("memory_gb", "tflops", "mfu", "bandwidth_tbs"):
            if key in gpu:
                gpu_changes[key] = _number(gpu[key], f"{where}.gpu.{key}", strict=True)
        if "name" in gpu:
            gpu_changes["name"] = str(gpu["name"])
        if gpu_changes.get("mfu", 0.5) > 1:
            raise ConfigError(f"{where}.gpu.mfu: a share of peak, must be <= 1, got {gpu_changes['mfu']}")
        changes["gpu"] = dataclasses.replace(GpuSpec(), **gpu_changes)
    return dataclasses.replace(DryRunSettings(), **changes)
