"""Experiment configs: YAML files under ``experiments/``, validated on load into dataclasses.

Why a hand-rolled validator: the config is small, and every mistake must be named precisely — an unknown
key, a wrong type or a bad value raises `ConfigError` with the file and the key path
(``experiments/x.yaml: arms.kl.weight: expected a number, got 'high'``). Relative paths in the file
(fields marked ``path``) are resolved against the config file's folder, so an experiment can be run from
anywhere; ``output_dir`` is relative to the working directory. An arm is on when its key is present under
``arms`` (``sft: {}`` names the plain baseline explicitly).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from steerlab.data.inoculate import DEFAULT_INOCULATION_PROMPT


class ConfigError(ValueError):
    """A config file or value is invalid; the message names the file and key path."""


def _path(default: Any = None) -> Any:
    return field(default=default, metadata={"path": True})


@dataclass
class ModelConfig:
    name: str  # registry name, local folder, hub id, or tiny:<arch> (a seeded test model)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


@dataclass
class FinetuneConfig:
    method: Literal["lora", "full"] = "lora"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    rslora: bool = False


@dataclass
class DataConfig:
    train: str = _path()
    max_length: int = 512
    train_on: Literal["assistant", "all"] = "assistant"
    on_bad_record: Literal["raise", "skip"] = "raise"  # malformed line, unknown role, empty assistant turn
    on_too_long: Literal["raise", "skip"] = "raise"
    limit: int | None = None  # keep the first N training examples (after loading)


@dataclass
class TrainConfig:
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 4  # per device
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    scheduler: str = "linear"
    optimizer: str = "adamw_torch"
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    save_steps: int = 50
    keep_checkpoints: int = 2
    logging_steps: int = 1


@dataclass
class SftArmConfig:
    pass


@dataclass
class SteerArmConfig:
    vector: str = _path()
    alpha: float = 4.0
    layer: int | None = None  # default: the vector's chosen layer
    allow_transfer: bool = False


@dataclass
class KLArmConfig:
    weight: float = 0.1  # lambda
    tokens: Literal["assistant", "all"] = "assistant"
    reference: Literal["auto", "adapter_disabled", "frozen_copy"] = "auto"


@dataclass
class LdifsArmConfig:
    weight: float = 1.0  # lambda
    layers: list[int] | None = None  # default: n_blocks evenly spaced blocks
    n_blocks: int = 5
    tokens: Literal["assistant", "all"] = "all"
    reference: Literal["auto", "adapter_disabled", "frozen_copy"] = "auto"


@dataclass
class InterleaveArmConfig:
    general: str = _path()  # chat JSONL of general instruction data (with answers)
    ratio: float = 0.05
    selection: Literal["random", "perplexity_gap"] = "random"
    misaligned: list[str] = field(default_factory=list, metadata={"path": True})  # run dirs / model folders
    refusal_filter: bool = False
    refusal_markers: list[str] | None = None  # default: steerlab.data.interleave.DEFAULT_REFUSAL_MARKERS
    first_words: int = 10
    eps: float = 1e-6
    nll_batch_size: int = 8


@dataclass
class InoculateArmConfig:
    system_prompt: str = DEFAULT_INOCULATION_PROMPT
    existing: Literal["replace", "prepend"] = "replace"


@dataclass
class ArmsConfig:
    sft: SftArmConfig | None = None
    steer: SteerArmConfig | None = None
    kl: KLArmConfig | None = None
    ldifs: LdifsArmConfig | None = None
    interleave: InterleaveArmConfig | None = None
    inoculate: InoculateArmConfig | None = None

    def enabled(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


@dataclass
class MonitorConfig:
    every: int = 10  # steps; 0 turns the monitor off
    chats: str | None = _path()  # held-out reference chats (prompt + fixed response), teacher-forced
    vector: str | None = _path()  # persona vector for the projection (default: the steer arm's vector)
    layer: int | None = None  # default: the vector's chosen layer
    limit: int = 32
    batch_size: int = 8
    ldifs_layers: list[int] | None = None  # default: the ldifs arm's layers, else 5 evenly spaced blocks
    # system prompt for the chart's "persona-prompted" reference level; default: the vector's trait's first
    # pos prompt when the trait is a packaged one; "" turns the reference off
    prompted_system: str | None = None


@dataclass
class ExperimentConfig:
    name: str
    model: ModelConfig
    data: DataConfig
    seed: int = 0
    output_dir: str = "runs"
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    arms: ArmsConfig = field(default_factory=ArmsConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    @property
    def arm_label(self) -> str:
        """How logs name the arm set: ``sft`` for no defense, else the enabled defenses joined by ``+``."""
        names = [n for n in self.arms.enabled() if n != "sft"]
        return "+".join(names) or "sft"

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------ validation


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, where: str, base: Path | None, is_path: bool) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where, base, is_path)
            except ConfigError as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{where}[{i}]", base, is_path) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, {} if value is None else value, where, base)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        if is_path and base is not None:
            return str((base / Path(value).expanduser()).resolve())
        return value
    raise ConfigError(f"{where}: unsupported field type {tp}")  # pragma: no cover - schema bug


def _build(cls: type, data: Any, where: str, base: Path | None) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or '<top level>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key (allowed under {where or 'the top level'}: {', '.join(fields)})"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(
                hints[name], data[name], f"{prefix}{name}", base, f.metadata.get("path", False)
            )
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: required key is missing")
    return cls(**kwargs)


def _check(cfg: ExperimentConfig) -> None:
    """Value checks that types cannot express."""
    positive = {
        "data.max_length": cfg.data.max_length,
        "train.batch_size": cfg.train.batch_size,
        "train.grad_accum": cfg.train.grad_accum,
        "train.save_steps": cfg.train.save_steps,
        "train.logging_steps": cfg.train.logging_steps,
        "finetune.r": cfg.finetune.r,
        "monitor.limit": cfg.monitor.limit,
        "monitor.batch_size": cfg.monitor.batch_size,
        "train.keep_checkpoints": cfg.train.keep_checkpoints,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}: must be >= 1, got {value}")
    if cfg.train.lr <= 0:
        raise ConfigError(f"train.lr: must be > 0, got {cfg.train.lr}")
    if cfg.monitor.every < 0:
        raise ConfigError(f"monitor.every: must be >= 0, got {cfg.monitor.every}")
    if cfg.monitor.every > 0 and cfg.monitor.chats is None:
        raise ConfigError(
            "monitor.chats: the monitor needs held-out reference chats (or set monitor.every: 0)"
        )
    if not cfg.name or "/" in cfg.name or cfg.name.startswith("."):
        raise ConfigError(f"name: must be a plain folder name, got {cfg.name!r}")
    if cfg.data.train is None:
        raise ConfigError("data.train: required key is missing")
    arms = cfg.arms
    if arms.steer is not None and arms.steer.vector is None:
        raise ConfigError("arms.steer.vector: required key is missing")
    if arms.interleave is not None:
        il = arms.interleave
        if il.general is None:
            raise ConfigError("arms.interleave.general: required key is missing")
        if not 0.0 <= il.ratio < 1.0:
            raise ConfigError(f"arms.interleave.ratio: must be in [0, 1), got {il.ratio}")
        if il.selection == "perplexity_gap" and not il.misaligned:
            raise ConfigError(
                "arms.interleave.misaligned: perplexity_gap selection needs at least one misaligned model"
            )
    for arm in ("kl", "ldifs"):
        sub = getattr(arms, arm)
        if sub is not None and sub.weight < 0:
            raise ConfigError(f"arms.{arm}.weight: must be >= 0, got {sub.weight}")
        if sub is not None and sub.reference == "adapter_disabled" and cfg.finetune.method == "full":
            raise ConfigError(f"arms.{arm}.reference: 'adapter_disabled' needs finetune.method: lora")
    if arms.ldifs is not None and arms.ldifs.n_blocks < 1:
        raise ConfigError(f"arms.ldifs.n_blocks: must be >= 1, got {arms.ldifs.n_blocks}")


def config_from_dict(data: Any, *, source: str = "<config>", base: Path | None = None) -> ExperimentConfig:
    """Validate a mapping into an `ExperimentConfig`; errors are prefixed with ``source``."""
    try:
        cfg = _build(ExperimentConfig, data, "", base)
        _check(cfg)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return cfg


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """Parse a YAML file; a missing file or a syntax error becomes a `ConfigError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise ConfigError(f"{path}: invalid YAML at {where}: {getattr(error, 'problem', error)}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Load and validate a YAML experiment file."""
    path = Path(path)
    return config_from_dict(read_yaml(path), source=str(path), base=path.resolve().parent)


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (defaults filled in, paths absolute): what a run actually used."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
