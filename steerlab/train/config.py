"""Experiment configs: YAML files under ``experiments/``, validated on load into dataclasses.

Every mistake is named precisely — an unknown key, a wrong type or a bad value raises `ConfigError` with
the file and the key path (``experiments/x.yaml: arms.kl.weight: expected a number, got 'high'``; the
validator is `steerlab.train.schema`). Relative paths in the file (fields marked ``path``) are resolved
against the config file's folder, so an experiment can be run from anywhere; ``output_dir`` is relative to
the working directory.

An arm is on when its key is present under ``arms`` (``sft: {}`` names the plain baseline explicitly;
``kl: null`` is off). The keys allowed under ``arms`` and each arm's section are whatever the registered
arms declare (`steerlab.train.arms.registry`): this module names no arm.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from steerlab.io import load_yaml, read_text
from steerlab.train import schema
from steerlab.train.alarm import AlarmConfig
from steerlab.train.schema import ConfigError, check_number, path_field

__all__ = ["ArmsConfig", "ConfigError", "ExperimentConfig", "config_from_dict", "dump_config", "load_config"]


def _path(default: Any = None) -> Any:
    return path_field(default)


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

    def __post_init__(self) -> None:
        check_number("r", self.r, ge=1, integer=True)
        check_number("alpha", self.alpha, gt=0)
        check_number("dropout", self.dropout, ge=0, lt=1)


@dataclass
class DataConfig:
    train: str = _path()
    max_length: int = 512
    train_on: Literal["assistant", "all"] = "assistant"
    on_bad_record: Literal["raise", "skip"] = "raise"  # malformed line, unknown role, empty assistant turn
    on_too_long: Literal["raise", "skip"] = "raise"
    limit: int | None = None  # keep the first N training examples (after loading); null: all

    def __post_init__(self) -> None:
        check_number("max_length", self.max_length, ge=1, integer=True)
        # 0 would read as "no limit" downstream, and the 'rest' held-out set would then be the training lines
        check_number("limit", self.limit, ge=1, integer=True, optional=True)


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

    def __post_init__(self) -> None:
        check_number("epochs", self.epochs, gt=0)
        if self.max_steps != -1:
            check_number("max_steps", self.max_steps, ge=1, integer=True)  # -1: train for epochs
        for key in ("batch_size", "grad_accum", "save_steps", "keep_checkpoints", "logging_steps"):
            check_number(key, getattr(self, key), ge=1, integer=True)
        check_number("warmup_steps", self.warmup_steps, ge=0, integer=True)
        check_number("lr", self.lr, gt=0)
        check_number("weight_decay", self.weight_decay, ge=0)
        check_number("max_grad_norm", self.max_grad_norm, ge=0)  # 0: no clipping


class ArmsConfig:
    """The enabled arms' config sections by name, read through the arm registry.

    ``cfg.arms.kl`` is the kl arm's section (a ``KLArmConfig``) or None when the arm is off; an attribute
    that names no registered arm raises AttributeError. Equality and `to_dict` cover the enabled arms only,
    so a config saved before an arm was added reads back unchanged.
    """

    def __init__(self, sections: dict[str, Any] | None = None) -> None:
        self._sections = dict(sections or {})

    @classmethod
    def from_config_value(cls, value: Any, where: str, base: Path | None) -> ArmsConfig:
        """Read ``arms:`` (a mapping of arm name to section); unknown arms and keys name their path."""
        from steerlab.train.arms.registry import arm_class, arm_names, is_registered

        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        sections = {}
        for name, section in value.items():
            if not is_registered(name):
                raise ConfigError(
                    f"{where}.{name}: unknown key (allowed under {where}: {', '.join(arm_names())})"
                )
            if section is not None:
                sections[name] = schema.convert(
                    arm_class(name).config_class, section, f"{where}.{name}", base
                )
        return cls(sections)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._sections:
            return self._sections[name]
        from steerlab.train.arms.registry import arm_names, is_registered

        if is_registered(name):
            return None
        raise AttributeError(f"no arm named {name!r} (registered: {', '.join(arm_names())})")

    def enabled(self) -> list[str]:
        """Names of the enabled arms, in label order (how a run's label lists them)."""
        from steerlab.train.arms.registry import arm_class, label_position

        return sorted(self._sections, key=lambda n: label_position(arm_class(n)))

    def items(self) -> list[tuple[str, Any]]:
        return [(name, self._sections[name]) for name in self.enabled()]

    def to_dict(self) -> dict[str, Any]:
        return {name: dataclasses.asdict(section) for name, section in self.items()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArmsConfig) and self._sections == other._sections

    def __repr__(self) -> str:
        return f"ArmsConfig({', '.join(f'{n}={s!r}' for n, s in self.items())})"


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
    alarm: AlarmConfig = field(default_factory=AlarmConfig)  # the drift alarm (steerlab.train.alarm)


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
        return {
            f.name: (
                value.to_dict()
                if isinstance(value := getattr(self, f.name), ArmsConfig)
                else dataclasses.asdict(value)
                if dataclasses.is_dataclass(value) and not isinstance(value, type)
                else value
            )
            for f in dataclasses.fields(self)
        }


# ------------------------------------------------------------------------------------------------ validation


def _check(cfg: ExperimentConfig) -> None:
    """Value checks that types cannot express and that span sections (a section checks its own values in
    its ``__post_init__``)."""
    positive = {"monitor.limit": cfg.monitor.limit, "monitor.batch_size": cfg.monitor.batch_size}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}: must be >= 1, got {value}")
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
    _check_arms(cfg)


def _check_arms(cfg: ExperimentConfig) -> None:
    """Each enabled arm's cross-section checks, and whether its reference cache is valid here."""
    from steerlab.train.arms.registry import arm_class

    per_step = [name for name in cfg.arms.enabled() if not arm_class(name).fixed_reference_inputs]
    for name, section in cfg.arms.items():
        check = getattr(section, "check", None)
        try:
            if check is not None:
                check(cfg)
        except ConfigError as error:
            raise ConfigError(f"arms.{name}.{error}") from None
        if getattr(section, "cache", False) and per_step:
            raise ConfigError(
                f"arms.{name}.cache: caching the reference outputs is invalid with the {per_step[0]} arm, "
                "which changes the reference's input every step; set cache: false"
            )


def check_alarm_asked(data: Any, cfg: ExperimentConfig) -> None:
    """Refuse a drift alarm that a written config asks for (``monitor.alarm:`` in ``data``, the mapping as
    written) while its monitor is off (``monitor.every: 0``): the alarm reads the monitor, so it could never
    fire. Raises `ConfigError` naming both keys.

    Why on the written mapping, and not in `config_from_dict`: the alarm is on by default, so only a file that
    names it asks for it, and a resolved config (`dump_config`, read back on resume) names every default."""
    monitor = data.get("monitor") if isinstance(data, dict) else None
    if not isinstance(monitor, dict) or not isinstance(monitor.get("alarm"), dict):
        return
    if cfg.monitor.alarm.enabled and cfg.monitor.every == 0:
        raise ConfigError(
            "monitor.alarm: the drift alarm is set but monitor.every is 0, so the monitor never reads and "
            "the alarm can never fire; set monitor.every > 0, or monitor.alarm.enabled: false"
        )


def config_from_dict(data: Any, *, source: str = "<config>", base: Path | None = None) -> ExperimentConfig:
    """Validate a mapping into an `ExperimentConfig`; errors are prefixed with ``source``."""
    try:
        cfg = schema.build(ExperimentConfig, data, "", base)
        _check(cfg)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return cfg


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """Parse a YAML file; a missing file, a syntax error or a key given twice in one mapping becomes a
    `ConfigError` naming file and line."""
    text = read_text(path, error=ConfigError, what=f"{what} file")
    try:
        return load_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise ConfigError(f"{path}: invalid YAML at {where}: {getattr(error, 'problem', error)}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Load and validate a YAML experiment file; a grid file (``domains:``, `steerlab.experiment.grid`) is
    refused as such, rather than as a file with an unknown key."""
    path = Path(path)
    data = read_yaml(path)
    if isinstance(data, dict) and "domains" in data:
        raise ConfigError(
            f"{path}: an experiment grid file (it has domains: and arms: of arm labels), not a single-run "
            f"config: run it with `steerlab run {path}`"
        )
    cfg = config_from_dict(data, source=str(path), base=path.resolve().parent)
    try:
        check_alarm_asked(data, cfg)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return cfg


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (defaults filled in, paths absolute): what a run actually used."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
