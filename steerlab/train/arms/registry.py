"""The arm registry: a new defense arm is one file that registers its `Arm` subclass.

    @register_arm
    class MyArm(Arm):
        name = "mine"; order = 60; config_class = MyArmConfig; loss_keys = ("mine",)
        @classmethod
        def from_config(cls, cfg, ctx): ...

Everything else reads the registry: the config loader (``arms.mine`` is validated into ``MyArmConfig``,
unknown keys named with file and key path), `build_arms` (data-stream order), the metrics log (its loss
keys), the reference model (``needs_reference`` under LoRA and full fine-tuning) and the reference cache.
The packaged arms are the modules of `steerlab.train.arms`, imported on first use; an arm defined anywhere
else (a test, a plugin) registers itself when its module is imported.

`register_arm` refuses a malformed or duplicate entry with a `TypeError` naming the class and the
attribute (after AISteer360's method registry: each method brings a self-validating args dataclass and the
registry checks it on entry — https://github.com/IBM/AISteer360).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from typing import Any

from steerlab.train.arms.base import Arm, BuildContext
from steerlab.train.schema import check_schema

# metric names the trainer itself logs; an arm's loss key may not shadow them
RESERVED_KEYS = frozenset({"step", "loss", "lm_loss", "lr", "learning_rate", "grad_norm", "epoch"})
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_NOT_ARMS = {"base", "registry"}

_registry: dict[str, type[Arm]] = {}
_builtins_loaded = False


def _load_builtins() -> None:
    """Import every arm module of this package once (each registers its arm)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    import steerlab.train.arms as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_ARMS and not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def _problem(cls: Any) -> str | None:
    """Why ``cls`` cannot be registered (None when it can)."""
    if not (isinstance(cls, type) and issubclass(cls, Arm)):
        return "is not an Arm subclass"
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        return f"name {name!r} must be set on the class, lower-case letters, digits and '_'"
    for attr in ("order", "config_class"):
        if not hasattr(cls, attr):
            return f"{attr} is not set"
    if isinstance(cls.order, bool) or not isinstance(cls.order, int | float):
        return f"order must be a number, got {cls.order!r}"
    if cls.label_order is not None and not isinstance(cls.label_order, int | float):
        return f"label_order must be a number or None, got {cls.label_order!r}"
    keys = cls.loss_keys
    if not isinstance(keys, tuple) or not all(isinstance(k, str) and _NAME.match(k) for k in keys):
        return f"loss_keys must be a tuple of lower-case names, got {keys!r}"
    if RESERVED_KEYS & set(keys):
        return f"loss_keys {sorted(RESERVED_KEYS & set(keys))} shadow the trainer's own metrics"
    logged = cls.log_keys
    if not isinstance(logged, tuple) or not all(isinstance(k, str) and _NAME.match(k) for k in logged):
        return f"log_keys must be a tuple of lower-case names, got {logged!r}"
    if (RESERVED_KEYS | set(keys)) & set(logged):
        return f"log_keys {sorted((RESERVED_KEYS | set(keys)) & set(logged))} shadow a metric or a loss term"
    for attr in ("needs_reference", "fixed_reference_inputs", "cacheable"):
        if not isinstance(getattr(cls, attr), bool):
            return f"{attr} must be true/false"
    if cls.from_config.__func__ is Arm.from_config.__func__:  # type: ignore[attr-defined]
        return "from_config is not defined"
    has_cache_key = dataclasses.is_dataclass(cls.config_class) and "cache" in {
        f.name for f in dataclasses.fields(cls.config_class)
    }
    if cls.cacheable and (not cls.needs_reference or not has_cache_key):
        return "cacheable arms need needs_reference = True and a 'cache' key in their config"
    if has_cache_key and not cls.cacheable:
        return "its config has a 'cache' key but the arm is not cacheable"
    return None


def _clash(cls: type[Arm]) -> str | None:
    """Which registered arm ``cls`` collides with (name, order or a loss key)."""
    for other in _registry.values():
        where = f"{other.__module__}.{other.__qualname__}"
        if other.name == cls.name:
            return f"the name {cls.name!r} is taken by {where}"
        if other.order == cls.order:
            return f"order {cls.order} is taken by {where} (the data-stream order must be unambiguous)"
        shared = set(other.loss_keys) & set(cls.loss_keys)
        if shared:
            return f"loss keys {sorted(shared)} are logged by {where} already"
        crossed = (set(other.loss_keys) & set(cls.log_keys)) | (set(other.log_keys) & set(cls.loss_keys))
        if crossed:
            return (
                f"keys {sorted(crossed)} are a loss term of one arm and a logged value of the other ({where})"
            )
    return None


def register_arm(cls: type[Arm]) -> type[Arm]:
    """Add an arm class to the registry (use as a class decorator); returns the class.

    Raises `TypeError` naming the class and the problem for a malformed entry (missing name, order or
    config dataclass, a config field type the validator cannot read, a loss key that shadows a trainer
    metric) and for a duplicate (name, order or loss key already registered).
    """
    _load_builtins()
    label = getattr(cls, "__qualname__", repr(cls))
    problem = _problem(cls)
    if problem is None:
        try:
            check_schema(cls.config_class, f"arms.{cls.name}")
        except TypeError as error:
            problem = f"config_class: {error}"
    if problem is None:
        problem = _clash(cls)
    if problem is not None:
        raise TypeError(f"cannot register arm {label}: {problem}")
    _registry[cls.name] = cls
    return cls


def unregister_arm(name: str) -> None:
    """Remove a registered arm (for tests that register a temporary one); KeyError if unknown."""
    if name not in _registry:
        raise KeyError(f"no arm named {name!r} is registered")
    del _registry[name]


def label_position(cls: type[Arm]) -> tuple[float, str]:
    """Where an arm's name goes in a run's label (``steer+kl``): ``label_order`` (default ``order``), then name."""
    return (cls.order if cls.label_order is None else cls.label_order, cls.name)


def registered_arms() -> list[type[Arm]]:
    """Every registered arm class, in data-stream order."""
    _load_builtins()
    return sorted(_registry.values(), key=lambda c: c.order)


def all_log_keys() -> list[str]:
    """Every value key any registered arm reports through ``log_values`` (two arms may share one, e.g. the
    steering coefficient, as long as they are not enabled together)."""
    return sorted({key for cls in registered_arms() for key in cls.log_keys})


def arm_names() -> list[str]:
    """The names of the registered arms, in data-stream order."""
    return [c.name for c in registered_arms()]


def is_registered(name: str) -> bool:
    """True when an arm called ``name`` is registered (the built-in arms included)."""
    _load_builtins()
    return name in _registry


def arm_class(name: str) -> type[Arm]:
    """The registered arm called ``name``; KeyError naming the registered ones otherwise."""
    _load_builtins()
    if name not in _registry:
        raise KeyError(f"no arm named {name!r} (registered: {', '.join(arm_names())})")
    return _registry[name]


def build_arms(ctx: BuildContext) -> list[Arm]:
    """One object per enabled arm of ``ctx.config``, in data-stream order (``order``).

    Raises `TypeError` if an arm's ``from_config`` returns something other than an instance of its class.
    """
    arms = []
    for cls in registered_arms():
        sub = getattr(ctx.config.arms, cls.name)
        if sub is None:
            continue
        arm = cls.from_config(sub, ctx)
        if not isinstance(arm, cls):
            raise TypeError(f"{cls.__qualname__}.from_config returned {type(arm).__name__}, not an arm")
        arm.cache = bool(getattr(sub, "cache", False))
        undeclared = set(arm.loss_weights) - set(cls.loss_keys)
        if undeclared:
            raise TypeError(
                f"arm {cls.name!r} weights {sorted(undeclared)} not in its loss_keys {cls.loss_keys}"
            )
        arms.append(arm)
    reported = [key for arm in arms for key in type(arm).log_keys]
    twice = sorted({key for key in reported if reported.count(key) > 1})
    if twice:
        raise TypeError(
            f"arms {[a.name for a in arms if set(type(a).log_keys) & set(twice)]} both report {twice}: "
            "enable one of them"
        )
    return arms
