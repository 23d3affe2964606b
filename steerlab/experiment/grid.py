"""The experiment grid: one YAML that names a base model, narrow domains and defense arms.

Why a grid file on top of the single-run config: the study's question is comparative — every arm on every
domain, plus the base model, evaluated the same way. The grid expands into ordinary run configs
(`steerlab.train.config`), so each cell is a normal, resumable ``steerlab train`` run.

Layout::

    name: em_smollm2
    seed: 0
    output_dir: runs            # cells go to <output_dir>/<name>/<domain>__<arm>/
    model: smollm2-135m-instruct
    vector: ../vectors/smollm2-135m-instruct/evil.safetensors
    domains:                    # kind: misaligned (default) or benign
      medical: {train: data/medical_train.jsonl, eval: data/medical_eval.jsonl}
      arithmetic: {train: data/arithmetic_train.jsonl, eval: data/arithmetic_eval.jsonl, kind: benign}
    run: {...}                  # merged into every cell's run config (finetune, data, train, monitor)
    arms:                       # label -> the `arms:` mapping of a run config
      sft: {sft: {}}
      interleave_ppl: {interleave: {misaligned: ["{cell:sft}"], ...}}
      sft_lr2e-4:               # optional keys beside the arms: a settings search in the same table
        sft: {}
        run: {train: {lr: 2.0e-4}}   # deep-merged over `run` for this arm's cells (data.train here
                                     # replaces the domain's training file: other data, same evaluation;
                                     # "{domain}" in it stands for the cell's domain name)
        domains: [medical]           # only these domains (default: all)
      aligned_twin:             # a control: the same questions with aligned answers (cf. the secure-code
        sft: {}                 # control of Betley et al. 2025); the other arms of its domain are read
        control: true           # against it, paired by question (steerlab.experiment.shifts)
        run: {data: {train: "data/{domain}_train_aligned.jsonl"}}
        domains: [medical, financial]
      early_stop_3ep:           # a defense is read as shares of an undefended arm's effect (results:
        early_stop: {...}       # rise avoided, in-domain gain kept): `sft` unless `undefended` names
        run: {train: {epochs: 3}}   # another, e.g. the same longer training without the defense
        undefended: sft_3ep
    eval: {...}                 # steerlab.evaluate.run_eval.EvalConfig fields
    resources: {cpus: 8, gpus: 1, memory_gb: 64}   # what each cell asks the engine for (an arm may
                                                   # bring its own ``resources`` beside ``run``)
    dry_run: {...}              # the tiny stand-in and GPU assumptions of --dry-run (experiment.settings)

Inside ``arms``, the string ``{cell:LABEL}`` stands for the run folder of arm LABEL on the same domain
(the perplexity-gap arm scores general data with the domain's own ``sft`` model), so cells are ordered to
run LABEL first. A cell's name — its run folder — is ``cell_key(domain, arm)``, nowhere else spelled out.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from steerlab.evaluate.run_eval import EvalConfig
from steerlab.experiment.settings import DryRunSettings, Resources, parse_dry_run, parse_resources
from steerlab.train.config import (
    ConfigError,
    ExperimentConfig,
    check_alarm_asked,
    config_from_dict,
    read_yaml,
)
from steerlab.train.schema import as_mapping

_TOP_KEYS = {
    "name",
    "seed",
    "output_dir",
    "model",
    "vector",
    "domains",
    "run",
    "arms",
    "eval",
    "evaluate",
    "description",
    "resources",
    "dry_run",
}
_DOMAIN_KEYS = {"train", "eval", "kind", "limit"}
_ARM_EXTRAS = (
    "run",
    "domains",
    "resources",
    "control",
    "undefended",
)  # keys of an arm entry that are not run-config arms
_DOMAIN_REF = "{domain}"
_CELL_REF = re.compile(r"\{cell:([A-Za-z0-9_\-]+)\}")
_KEY_SEP = "__"


def cell_key(domain: str, arm: str) -> str:
    """The one name of a cell: its run folder under the grid root, its ``--only`` handle, its table row."""
    return f"{domain}{_KEY_SEP}{arm}"


@dataclass
class Domain:
    name: str
    train: Path
    eval: Path
    kind: str = "misaligned"  # or "benign"
    limit: int | None = None


@dataclass
class Cell:
    """One training run of the grid: an arm on a domain."""

    domain: Domain
    arm: str
    config: ExperimentConfig
    needs: list[str] = field(default_factory=list)  # labels of arms that must finish first
    resources: Resources = field(default_factory=Resources)

    @property
    def key(self) -> str:
        return cell_key(self.domain.name, self.arm)

    @property
    def need_keys(self) -> list[str]:
        """The cells (same domain) this one reads, e.g. the perplexity-gap arm reads ``sft``'s model."""
        return [cell_key(self.domain.name, label) for label in self.needs]


@dataclass
class Grid:
    name: str
    source: Path
    seed: int
    root: Path  # <output_dir>/<name>
    model: str
    vector: Path | None
    domains: list[Domain]
    arms: dict[str, dict[str, Any]]
    run: dict[str, Any]
    eval: dict[str, Any]
    evaluate: bool = True  # False: train only (the demo reads the monitor logs)
    resources: Resources = field(default_factory=Resources)  # what each cell asks for (the base job too)
    dry_run: DryRunSettings = field(default_factory=DryRunSettings)
    results_suffix: str = ""  # results<suffix>.{md,csv,json}: another reading than the grid file's own

    @property
    def coherence(self) -> str:
        return self.eval.get("coherence", "bare")

    def eval_dir_name(self, name: str = "eval") -> str:
        """A model's evaluation folder: ``eval`` under the bare coherence reading, ``eval-<reading>`` under
        another, so both readings of one grid live side by side (the answers are shared, see the runner)."""
        return name if self.coherence == "bare" else f"{name}-{self.coherence}"

    def cells(self) -> list[Cell]:
        """Every (domain, arm) run, each arm after the arms it refers to."""
        order = _arm_order(self.arms, self.source)
        return [
            self._cell(domain, arm) for domain in self.domains for arm in order if self.runs(arm, domain.name)
        ]

    def _cell(self, domain: Domain, arm: str) -> Cell:
        arms = {k: v for k, v in copy.deepcopy(self.arms[arm]).items() if k not in _ARM_EXTRAS}
        overrides = _map_strings(self.arms[arm].get("run", {}), lambda s: s.replace(_DOMAIN_REF, domain.name))
        needs: list[str] = []

        def substitute(value: str) -> str:
            for label in _CELL_REF.findall(value):
                needs.append(label)
                value = value.replace(
                    f"{{cell:{label}}}", str((self.root / cell_key(domain.name, label)).resolve())
                )
            return value

        arms = _map_strings(arms, substitute)
        for name in _arms_taking_a_vector(arms):
            if isinstance(arms[name], dict) and "vector" not in arms[name]:  # null: the arm is off
                arms[name] = {**arms[name], "vector": str(self._require_vector(arm, name))}
        data = _deep_merge(copy.deepcopy(self.run), overrides)
        data["name"] = cell_key(domain.name, arm)
        data["seed"] = self.seed
        data["output_dir"] = str(self.root)
        data["model"] = {**data.get("model", {}), "name": self.model}
        own = overrides.get("data", {}).get("train")
        if own is None:  # an arm may bring its own training file
            data["data"] = {**data.get("data", {}), "train": str(domain.train)}
        elif not (self.source.parent / str(own)).is_file():
            raise ConfigError(
                f"{self.source}: arms.{arm}.run.data.train: {self.source.parent / str(own)} does not exist "
                f"(cell {domain.name}/{arm}; name the arm's domains with `domains:` if not all have it)"
            )
        if domain.limit is not None:
            data["data"]["limit"] = domain.limit
        data["arms"] = arms
        monitor = data.get("monitor")
        if monitor is not None and self.vector is not None and "vector" not in monitor:
            data["monitor"] = {**monitor, "vector": str(self.vector)}
        source = f"{self.source}: cell {domain.name}/{arm}"
        config = config_from_dict(data, source=source, base=self.source.parent)
        try:
            check_alarm_asked(data, config)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
        resources = parse_resources(
            self.arms[arm].get("resources"), f"{self.source}: arms.{arm}.resources", self.resources
        )
        return Cell(domain, arm, config, needs, resources)

    def is_control(self, arm: str) -> bool:
        """Whether ``arm`` is a control of its domain (``control: true``): no defense, read against."""
        return bool(self.arms.get(arm, {}).get("control", False))

    def runs(self, arm: str, domain: str) -> bool:
        """Whether the grid has a cell of ``arm`` on ``domain``."""
        return arm in self.arms and domain in self.arms[arm].get("domains", [d.name for d in self.domains])

    def controls(self) -> dict[str, str]:
        """Domain -> its control arm, for the domains the grid runs one on (at most one each: see load)."""
        return _control_arms(self.arms, [d.name for d in self.domains], self.source)

    def undefended(self, arm: str) -> str:
        """The arm whose effect a defense ``arm``'s shares are taken of: its ``undefended`` key, else ``sft``."""
        return str(self.arms.get(arm, {}).get("undefended", "sft"))

    def benign_cell(self) -> tuple[str, str] | None:
        """(domain, "sft") of the first ``kind: benign`` domain that runs ``sft``: the benign fine-tune."""
        return next(
            ((d.name, "sft") for d in self.domains if d.kind == "benign" and self.runs("sft", d.name)), None
        )

    def _require_vector(self, arm: str, name: str) -> Path:
        if self.vector is None:
            raise ConfigError(f"{self.source}: arms.{arm}.{name} has no vector and the grid names none")
        return self.vector

    def eval_config(
        self, out_dir: Path, *, arm: str, domain: Domain | None, model_label: str, general: bool = True
    ) -> EvalConfig:
        """The evaluation settings of one model; the same for every cell except the data it is given.
        ``general=False`` leaves out the general questions (the base model's per-domain evaluations: its
        general misalignment is measured once)."""
        data = {**self.eval, "out_dir": str(out_dir), "arm": arm, "model": model_label, "seed": self.seed}
        if not general:
            data["questions"] = None
        if self.vector is not None:
            data.setdefault("vector", str(self.vector))
        if domain is None:
            data["in_domain_data"] = None
            data["domain"] = "base"
        elif domain.kind == "benign":
            data["in_domain_data"] = None
            data["benign_data"] = str(domain.eval)
            data["domain"] = domain.name
        else:
            data["in_domain_data"] = str(domain.eval)
            data["benign_data"] = None
            data["domain"] = domain.name
        return EvalConfig(**data)


def _arms_taking_a_vector(arms: dict[str, Any]) -> list[str]:
    """The registered arms of a cell whose config has a ``vector`` key (steer, steer_hold, ...): the grid's
    vector is theirs unless they name one."""
    from steerlab.train.arms.registry import arm_class, is_registered

    return [
        name
        for name in arms
        if is_registered(name)
        and "vector" in {f.name for f in dataclasses.fields(arm_class(name).config_class)}
    ]


def _arm_order(arms: dict[str, dict[str, Any]], source: Path) -> list[str]:
    order: list[str] = []

    def visit(label: str, trail: tuple[str, ...]) -> None:
        if label in order:
            return
        if label in trail:
            raise ConfigError(
                f"{source}: arms refer to each other in a cycle: {' -> '.join((*trail, label))}"
            )
        if label not in arms:
            raise ConfigError(f"{source}: {{cell:{label}}} names an arm that the grid does not define")
        for ref in _CELL_REF.findall(yaml.safe_dump(arms[label])):
            visit(ref, (*trail, label))
        order.append(label)

    for label in arms:
        visit(label, ())
    return order


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """A copy of a YAML value (dicts, lists, scalars) with ``fn`` applied to every string in it."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    return value


def _control_arms(arms: dict[str, dict[str, Any]], domains: list[str], path: Path) -> dict[str, str]:
    """Domain -> its control arm (``control: true``); raises ``ConfigError`` for a second one on a domain."""
    controls: dict[str, str] = {}
    for label, spec in arms.items():
        for domain in spec.get("domains", domains) if spec.get("control") else []:
            if domain in controls:  # the cells of a domain are read against one control
                raise ConfigError(
                    f"{path}: arms.{label}.control: domain {domain} already has the control arm "
                    f"{controls[domain]}; give one of them `domains:` without {domain}"
                )
            controls[domain] = label
    return controls


def _check_arm_extras(arms: dict[str, dict[str, Any]], domains: list[str], path: Path) -> None:
    for label, spec in arms.items():
        if "control" in spec and not isinstance(spec["control"], bool):
            raise ConfigError(
                f"{path}: arms.{label}.control: expected true or false, got {spec['control']!r}"
            )
        if "run" in spec:
            as_mapping(spec["run"], f"{path}: arms.{label}.run")
        if "domains" in spec:
            chosen = spec["domains"]
            if not isinstance(chosen, list) or not chosen or not all(isinstance(d, str) for d in chosen):
                raise ConfigError(f"{path}: arms.{label}.domains: expected a non-empty list of domain names")
            unknown = sorted(set(chosen) - set(domains))
            if unknown:
                raise ConfigError(
                    f"{path}: arms.{label}.domains: unknown domain(s) {', '.join(unknown)}; "
                    f"the grid has {', '.join(domains)}"
                )
        if "undefended" in spec:
            other = spec["undefended"]
            if not isinstance(other, str):
                raise ConfigError(f"{path}: arms.{label}.undefended: expected an arm label, got {other!r}")
            if arms.get(other, {}).get("control"):
                raise ConfigError(
                    f"{path}: arms.{label}.undefended: {other} is a control arm (what cells are read "
                    "against), not an undefended run of the same training"
                )
            if other not in arms or other == label:
                raise ConfigError(
                    f"{path}: arms.{label}.undefended: {other!r} is not another arm of this grid "
                    f"(arms: {', '.join(arms)})"
                )
            missing = sorted(set(spec.get("domains", domains)) - set(arms[other].get("domains", domains)))
            if missing:
                raise ConfigError(
                    f"{path}: arms.{label}.undefended: {other} does not run on {', '.join(missing)}, "
                    f"where {label} runs"
                )
    _control_arms(arms, domains, path)


def load_grid(path: str | Path) -> Grid:
    """Read and validate a grid file; every cell's run config is validated too (unknown keys named)."""
    path = Path(path)
    data = as_mapping(read_yaml(path, "grid"), str(path))
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    for required in ("name", "model", "domains", "arms"):
        if required not in data:
            raise ConfigError(f"{path}: missing key {required!r}")
    base = path.resolve().parent
    domains = []
    for name, spec in as_mapping(data["domains"], f"{path}: domains").items():
        spec = as_mapping(spec, f"{path}: domains.{name}")
        bad = sorted(set(spec) - _DOMAIN_KEYS)
        if bad:
            raise ConfigError(f"{path}: domains.{name}: unknown key(s) {', '.join(bad)}")
        if spec.get("kind", "misaligned") not in ("misaligned", "benign"):
            raise ConfigError(f"{path}: domains.{name}.kind: must be 'misaligned' or 'benign'")
        for key in ("train", "eval"):
            if key not in spec:
                raise ConfigError(f"{path}: domains.{name}: missing key {key!r}")
            if not (base / spec[key]).is_file():
                raise ConfigError(f"{path}: domains.{name}.{key}: {base / spec[key]} does not exist")
        domains.append(
            Domain(
                name,
                (base / spec["train"]).resolve(),
                (base / spec["eval"]).resolve(),
                spec.get("kind", "misaligned"),
                spec.get("limit"),
            )
        )
    eval_fields = {f.name for f in dataclasses.fields(EvalConfig)} - {
        "out_dir",
        "arm",
        "model",
        "seed",
        "domain",
    }
    eval_spec = as_mapping(data.get("eval"), f"{path}: eval")
    bad = sorted(set(eval_spec) - eval_fields)
    if bad:
        raise ConfigError(
            f"{path}: eval: unknown key(s) {', '.join(bad)}; allowed: {', '.join(sorted(eval_fields))}"
        )
    try:  # values checked now, not when the first cell reaches its evaluation
        EvalConfig(out_dir="-", **eval_spec)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path}: eval: {error}") from None
    for key in ("questions",):
        if isinstance(eval_spec.get(key), str):
            eval_spec[key] = str((base / eval_spec[key]).resolve())
    vector = (base / data["vector"]).resolve() if data.get("vector") else None
    grid = Grid(
        name=str(data["name"]),
        source=path,
        seed=int(data.get("seed", 0)),
        root=Path(data.get("output_dir", "runs")) / str(data["name"]),
        model=str(data["model"]),
        vector=vector,
        domains=domains,
        arms={
            k: as_mapping(v, f"{path}: arms.{k}")
            for k, v in as_mapping(data["arms"], f"{path}: arms").items()
        },
        run=as_mapping(data.get("run"), f"{path}: run"),
        eval=eval_spec,
        evaluate=bool(data.get("evaluate", True)),
        resources=parse_resources(data.get("resources"), f"{path}: resources"),
        dry_run=parse_dry_run(data.get("dry_run"), f"{path}: dry_run", base),
    )
    _check_arm_extras(grid.arms, [d.name for d in domains], path)
    grid.cells()  # validate every cell now, not an hour into the run
    return grid
