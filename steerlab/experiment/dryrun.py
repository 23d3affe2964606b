"""`steerlab run GRID --dry-run`: every cell built and stepped on CPU before a GPU is paid for.

Why: a 7B grid is dozens of GPU-hours; a typo in an arm, a vector that does not fit, a data file that does
not tokenize or a cell that cannot fit the GPU should cost minutes on a laptop, not a failed job. The dry run

1. reads the grid exactly as `steerlab run` does (every cell's config validated);
2. builds a *stand-in* of the real architecture from its ``config.json`` (``dry_run.architecture``, or the
   model folder's own): same model class and block layout, few layers, small width, random weights, the
   in-memory test tokenizer — nothing is downloaded, nothing loads from a hub;
3. writes a *stand-in* persona vector for it (random directions, labelled so) when an arm or the monitor
   needs one — the real vector belongs to the real model;
4. runs the preflight (every cell's data read and tokenized — with the stand-in tokenizer);
5. trains every cell for two optimizer steps on CPU in float32 (bf16 is the GPU's dtype), needs first, so
   ``{cell:sft}`` references, the reference model of kl/ldifs, steering hooks, the monitor and gradient
   checkpointing all run for real;
6. estimates each cell's GPU memory and time on the real architecture (`steerlab.experiment.estimate`).

Everything goes to ``<output_dir>/<name>-dry-run/`` (replaced on each dry run); the real run folder is
never touched. The table is printed and saved as ``dry_run.json`` there.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from steerlab.experiment.estimate import GIB, MemoryEstimate, TimeEstimate, estimate_memory, estimate_time
from steerlab.experiment.grid import Cell, Grid, load_grid
from steerlab.experiment.preflight import cell_examples, check_cells, check_layers
from steerlab.experiment.settings import DryRunSettings, GpuSpec
from steerlab.io import write_json
from steerlab.train.config import ConfigError, ExperimentConfig

log = logging.getLogger(__name__)

DRY_STEPS = 2
STANDIN_VECTOR = "standin-evil"
POOL_SAMPLE = 48  # general examples the interleave arms see in the dry run (the preflight reads them all)
STANDIN_MAX_LENGTH = 1 << 15  # the stand-in tokenizer spends a token on a few characters: no real limit


@dataclass
class CellReport:
    key: str
    resources: str
    memory: MemoryEstimate | None = None
    time: TimeEstimate | None = None
    cpu_s: float | None = None  # wall time of the two CPU steps (loading included)
    steps: int | None = None
    error: str | None = None


@dataclass
class DryRunReport:
    grid: str
    root: Path
    architecture: str
    params: int
    standin: str
    gpu: GpuSpec
    checked: int
    preflight: str = "stand-in tokenizer, lengths not checked"  # which tokenizer the preflight used
    cells: list[CellReport] = field(default_factory=list)
    base_eval_s: float | None = None
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failed(self) -> list[CellReport]:
        return [c for c in self.cells if c.error]

    def text(self) -> str:
        gpu = self.gpu
        lines = [
            f"Dry run of {self.grid}: {len(self.cells)} cell(s) built and trained for {DRY_STEPS} optimizer steps "
            f"each on CPU, on {self.standin}.",
            f"Preflight: {self.checked} examples read and tokenized ({self.preflight}).",
            f"Estimates for the real architecture ({self.architecture}, {self.params / 1e9:.2f} B parameters) "
            f"on one {gpu.name}: {gpu.memory_gb:g} GiB, {gpu.tflops:g} TFLOP/s bf16 x MFU {gpu.mfu:g} "
            f"(assumed), {gpu.bandwidth_tbs:g} TB/s. Memory in GiB at batch_size x max_length; time in minutes.",
            "",
            "| cell | resources | weights | LoRA + grads + AdamW | activations | loss | arm extra | total GiB "
            f"| fits {gpu.memory_gb:g} GiB | steps | tokens/step | train min | ppl scoring min | eval min "
            "| CPU dry run s |",
            "|" + "---|" * 15,
        ]
        for c in self.cells:
            if c.error or c.memory is None or c.time is None:
                lines.append(f"| {c.key} | {c.resources} | failed: {c.error} |" + " |" * 12)
                continue
            m, t = c.memory, c.time
            gib = lambda b: f"{b / GIB:.1f}"  # noqa: E731
            lines.append(
                "| "
                + " | ".join(
                    [
                        c.key,
                        c.resources,
                        gib(m.weights),
                        gib(m.adapter + m.gradients + m.optimizer),
                        gib(m.activations),
                        gib(m.loss_transient),
                        gib(m.arm_extra),
                        f"**{gib(m.total)}**",
                        "yes" if m.total <= gpu.memory_gb * GIB else "**no**",
                        str(t.steps),
                        str(t.tokens_per_step),
                        f"{t.train_s / 60:.1f}",
                        f"{t.scoring_s / 60:.1f}",
                        f"{t.eval_s / 60:.1f}",
                        f"{c.cpu_s:.1f}",
                    ]
                )
                + " |"
            )
        if self.base_eval_s is not None:
            lines.append(f"\nBase model evaluation (one job): ~{self.base_eval_s / 60:.1f} min of sampling.")
        total = sum((c.time.train_s + c.time.scoring_s + c.time.eval_s) for c in self.cells if c.time)
        lines.append(
            f"All cells: ~{total / 3600:.1f} GPU-hours (training, scoring, sampling; judge calls not counted)."
        )
        lines += [f"Note: {note}" for note in self.notes]
        lines.append(f"Dry run took {self.wall_s:.0f} s; folders and dry_run.json in {self.root}")
        if self.failed:
            lines.append(f"FAILED: {', '.join(c.key for c in self.failed)}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ stand-ins


def architecture_of(grid: Grid) -> tuple[dict[str, Any], str]:
    """The real model's config.json as a dict, and where it came from; never fetched from a hub."""
    settings = grid.dry_run
    if settings.architecture is not None:
        path = settings.architecture
    else:
        from steerlab.models.embedded import EMBEDDED_MODELS

        candidate = Path(grid.model).expanduser()
        if grid.model in EMBEDDED_MODELS:
            from steerlab.models.load import resolve_model_path

            candidate = Path(resolve_model_path(grid.model))
        path = candidate / "config.json"
        if not path.is_file():
            raise ConfigError(
                f"{grid.source}: dry_run.architecture: the dry run needs the config.json of {grid.model!r} "
                "(no weights); name it there — nothing is fetched from a hub"
            )
    data = json.loads(path.read_text(encoding="utf-8"))
    data = {k: v for k, v in data.items() if not k.startswith("_")}  # notes such as "_source"
    if "model_type" not in data:
        raise ConfigError(f"{path}: not a transformers config.json (no model_type)")
    return data, str(path)


def standin_architecture(real: dict[str, Any], settings: DryRunSettings) -> dict[str, Any]:
    """The real config scaled down: same model type and options, ``layers`` blocks, ``hidden`` wide."""
    from steerlab.models.tiny import TINY_VOCAB

    heads_real = int(real.get("num_attention_heads", 4))
    kv_real = int(real.get("num_key_value_heads", heads_real))
    heads = settings.heads or max(1, min(4, settings.hidden // 8))
    if settings.hidden % heads:
        raise ConfigError(f"dry_run: hidden {settings.hidden} is not divisible by {heads} heads")
    grouped = kv_real < heads_real  # keep grouped-query attention when the real model has it
    kv = max(1, heads // min(heads, heads_real // max(1, kv_real))) if grouped else heads
    ratio = real.get("intermediate_size", 4 * real.get("hidden_size", 1)) / real.get("hidden_size", 1)
    tiny = dict(real)
    for drop in (
        "_name_or_path",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "auto_map",
        "quantization_config",
    ):
        tiny.pop(drop, None)
    tiny.update(
        num_hidden_layers=settings.layers,
        hidden_size=settings.hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=settings.intermediate or max(8, round(settings.hidden * ratio)),
        vocab_size=TINY_VOCAB,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if "head_dim" in tiny:
        tiny["head_dim"] = settings.hidden // heads
    if "max_window_layers" in tiny:
        tiny["max_window_layers"] = settings.layers
    if "layer_types" in tiny:
        tiny.pop("layer_types")
    return tiny


def build_standin_model(architecture: dict[str, Any], folder: Path, seed: int) -> Path:
    """Save a seeded, config-built model of ``architecture`` and the in-memory tokenizer to ``folder``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from steerlab.models.tiny import tiny_tokenizer

    spec = dict(architecture)
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer("left").save_pretrained(folder)
    write_json(
        folder / "STANDIN.json", {"what": "dry-run stand-in: config-built, random weights", **architecture}
    )
    return folder


def build_standin_vector(model_folder: Path, out: Path, real_vector: Path | None, real_layers: int) -> Path:
    """A random direction per layer that fits the stand-in (passes ``check_model``), labelled a stand-in.

    Its chosen layer sits at the same depth fraction as the real vector's (its sidecar, if present), else
    in the middle."""
    from steerlab.models import load_model
    from steerlab.persona.vectors import PersonaVector

    model = load_model(str(model_folder)).model
    n = model.config.num_hidden_layers
    layer = n // 2
    if real_vector is not None and real_vector.with_suffix(".json").is_file():
        chosen = json.loads(real_vector.with_suffix(".json").read_text()).get("chosen_layer")
        if isinstance(chosen, int):
            layer = min(n - 1, round(chosen * (n - 1) / max(1, real_layers - 1)))
    vector = PersonaVector.random(
        model, layer, method="dry-run stand-in (random directions, not a persona vector)"
    )
    return vector.save(out)


# ------------------------------------------------------------------------------------------ the run


def _sample_pool(path: str, root: Path, seed: int) -> str:
    """A seeded sample of a general pool's lines (scoring the whole pool twice is the slow part on CPU)."""
    out = root / "pools" / f"{Path(path).stem}-sample.jsonl"
    if not out.is_file():
        lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        chosen = sorted(random.Random(seed).sample(range(len(lines)), min(POOL_SAMPLE, len(lines))))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(lines[i] + "\n" for i in chosen), encoding="utf-8")
    return str(out)


def _dry_config(cell: Cell, root: Path, seed: int) -> ExperimentConfig:
    """The stand-in grid's cell, cut to two optimizer steps on CPU (float32, no intermediate checkpoint);
    an interleave arm draws from a sample of its pool."""
    cfg = copy.deepcopy(cell.config)
    if cfg.arms.interleave is not None:
        cfg.arms.interleave.general = _sample_pool(cfg.arms.interleave.general, root, seed)
    t = cfg.train
    cfg.model.dtype = "float32"
    cfg.data.max_length = STANDIN_MAX_LENGTH  # the preflight checked the real lengths where it could
    per_step = t.batch_size * t.grad_accum
    cfg.data.limit = min(cfg.data.limit or per_step * DRY_STEPS, per_step * DRY_STEPS)
    t.max_steps, t.save_steps, t.logging_steps = DRY_STEPS, 10 * DRY_STEPS, 1
    if cfg.monitor.every:
        cfg.monitor.every, cfg.monitor.limit = DRY_STEPS, min(cfg.monitor.limit or 4, 4)
    return cfg


def _preflight(model: str, cells: list[Cell], standin_tokenizer: Any, notes: list[str]) -> tuple[int, str]:
    """Read and tokenize every cell's data: with ``model``'s own tokenizer when this machine has it (lengths
    checked against ``max_length``), else with the stand-in's (lengths not checked); adds a note, returns
    (examples checked, how)."""
    real_tokenizer = _local_tokenizer(model)
    if real_tokenizer is not None:
        notes.append(f"preflight: {model}'s own tokenizer (every example checked against max_length)")
        return check_cells(cells, real_tokenizer), f"{model}'s own tokenizer: all fit max_length"
    notes.append(
        f"preflight: the stand-in tokenizer ({model}'s own is not on this machine): every example "
        "read and templated; lengths against max_length are checked by the real run's preflight"
    )
    checked = check_cells([_unlimited(c) for c in cells], standin_tokenizer)
    return checked, "stand-in tokenizer: records read and templated, lengths not checked"


def _local_tokenizer(model: str) -> Any | None:
    """The real model's tokenizer when this machine holds it (an embedded registry name, a ``tiny:`` name, a
    folder), else None: the dry run never downloads. Its token counts are the ones ``max_length`` is about;
    the stand-in's are not (its vocabulary is 384 tokens)."""
    from steerlab.models.load import load_tokenizer, registry_names, tiny_arch

    if tiny_arch(model) is None and model not in registry_names() and not Path(model).is_dir():
        return None
    return load_tokenizer(model)


def _unlimited(cell: Cell) -> Cell:
    """``cell`` with no length limit: the stand-in tokenizer's counts say nothing about the real ones."""
    config = copy.deepcopy(cell.config)
    config.data.max_length = STANDIN_MAX_LENGTH
    return dataclasses.replace(cell, config=config)


def _lengths(examples: list[Any], tokenizer: Any, chars_per_token: float) -> list[int]:
    """Estimated real-tokenizer lengths: characters of the chat-templated text / ``chars_per_token``."""
    return [
        max(1, round(len(tokenizer.apply_chat_template(ex.messages, tokenize=False)) / chars_per_token))
        for ex in examples
    ]


def _training_stream(cfg: ExperimentConfig) -> tuple[int, int]:
    """(narrow examples, general examples) per epoch, as the trainer will mix them."""
    from steerlab.data.chat import load_chat_jsonl
    from steerlab.data.interleave import n_general_for

    narrow = len(load_chat_jsonl(cfg.data.train, on_error=cfg.data.on_bad_record))
    if cfg.data.limit:
        narrow = min(narrow, cfg.data.limit)
    general = n_general_for(narrow, cfg.arms.interleave.ratio) if cfg.arms.interleave is not None else 0
    return narrow, general


def _eval_parts(grid: Grid, domain: Any, *, general: bool = True) -> list[tuple[int, int]]:
    """(answers, max_new_tokens) the evaluation samples for one model on ``domain`` (None: general only),
    as `steerlab.experiment.runner` asks for them."""
    if not grid.evaluate:
        return []
    from steerlab.data.chat import load_chat_jsonl
    from steerlab.data.em_questions import load_em_questions

    cfg = grid.eval_config(Path("."), arm="x", domain=domain, model_label="x")
    parts = []
    if cfg.questions and general:
        questions = load_em_questions(cfg.questions, require_judges=(), allow_unknown_keys=True)
        count = sum(cfg.n or len(q.paraphrases) * q.samples_per_paraphrase for q in questions)
        parts.append((count, cfg.max_new_tokens))
    if cfg.in_domain_data:
        lines = len(load_chat_jsonl(cfg.in_domain_data))
        parts.append((min(lines, cfg.n_in_domain or lines), cfg.max_new_tokens))
    if cfg.benign_data:
        lines = len(load_chat_jsonl(cfg.benign_data))
        parts.append((min(lines, cfg.n_benign or lines), cfg.benign_max_new_tokens))
    return parts


def dry_run_grid(path: str | Path, *, only: list[str] | None = None) -> DryRunReport:
    """Build, preflight and step every (selected) cell on a stand-in; estimate each on the real model."""
    from steerlab.experiment.runner import select_cells
    from steerlab.models.tiny import tiny_tokenizer

    start = time.perf_counter()
    grid = load_grid(path)
    real_cells = select_cells(grid, only)
    architecture, arch_source = architecture_of(grid)
    depth = architecture.get("num_hidden_layers", architecture.get("n_layer"))
    if isinstance(depth, int):  # the real model's layers: the stand-in has fewer
        check_layers(real_cells, depth, grid.model)
    settings = grid.dry_run
    root = grid.root.with_name(f"{grid.root.name}-dry-run")
    shutil.rmtree(root, ignore_errors=True)  # replaced on each dry run
    root.mkdir(parents=True)

    standin = standin_architecture(architecture, settings)
    model_dir = build_standin_model(standin, root / "model", grid.seed)
    dry = copy.copy(grid)
    dry.root, dry.model = root, str(model_dir)
    needs_vector = grid.vector is not None or any(c.config.arms.steer is not None for c in real_cells)
    notes = [
        "times are lower bounds: training at the assumed MFU, sampling as bandwidth-bound decoding (one read "
        "of the weights per step of a batch); transformers' generate usually runs slower",
        f"interleave arms drew from a {POOL_SAMPLE}-example sample of their general pool (the preflight read "
        "all of it)",
        f"stand-in model {model_dir}: {standin['model_type']}, {settings.layers} layers, {settings.hidden} wide, "
        "random weights, steerlab's in-memory 384-token tokenizer (its token counts are not the real ones)",
    ]
    if needs_vector:
        dry.vector = build_standin_vector(
            model_dir, root / STANDIN_VECTOR, grid.vector, int(architecture.get("num_hidden_layers", 1))
        )
        notes.append(f"stand-in persona vector {dry.vector}: random directions, not a persona vector")
        if grid.vector is not None and not grid.vector.is_file():
            notes.append(
                f"the grid's vector {grid.vector} does not exist yet: extract it before the real run"
            )
    keys = {c.key for c in real_cells}
    dry_cells = [c for c in dry.cells() if c.key in keys]
    for cell in dry_cells:  # an arm's own vector belongs to the real model: the stand-in replaces it too
        if cell.config.arms.steer is not None:
            cell.config.arms.steer.vector = str(dry.vector)
        if cell.config.monitor.vector is not None:
            cell.config.monitor.vector = str(dry.vector)
    tokenizer = tiny_tokenizer("right")
    checked, preflight = _preflight(grid.model, dry_cells, tokenizer, notes)
    if grid.evaluate and grid.eval.get("judge") == "openai":
        import os

        where = grid.eval.get("judge_base_url") or "api.openai.com"
        key = "set" if os.environ.get("OPENAI_API_KEY") else "NOT set"
        notes.append(
            f"judge: {grid.eval.get('judge_model')} at {where}, not contacted (OPENAI_API_KEY {key})"
        )
    report = DryRunReport(
        grid=str(path),
        root=root,
        architecture=f"{architecture['model_type']} from {arch_source}",
        params=0,
        standin=f"a {settings.layers}-layer, {settings.hidden}-wide {standin['model_type']} stand-in",
        gpu=settings.gpu,
        checked=checked,
        preflight=preflight,
        notes=notes,
    )
    failed: set[str] = set()
    for real, cell in zip(real_cells, dry_cells, strict=True):
        item = CellReport(cell.key, cell.resources.describe())
        report.cells.append(item)
        blocked = [k for k in cell.need_keys if k in failed]
        if blocked:
            item.error = f"not run: needs {', '.join(blocked)}, which failed"
        else:
            _step_cell(item, real, cell, grid, root, tokenizer, architecture, report)
        if item.error:
            failed.add(cell.key)
    if grid.evaluate and report.params and real_cells:
        report.base_eval_s = _base_eval_seconds(grid, real_cells[0].config.model.dtype, report.params)
    report.wall_s = time.perf_counter() - start
    _write_report(root / "dry_run.json", report)
    return report


def _step_cell(
    item: CellReport,
    real: Cell,
    cell: Cell,
    grid: Grid,
    root: Path,
    tokenizer: Any,
    architecture: dict[str, Any],
    report: DryRunReport,
) -> None:
    """Train the stand-in ``cell`` for a few steps, then estimate the ``real`` one; fills ``item`` (its
    ``error`` when training failed: every cell is tried, the report names what failed)."""
    from steerlab.train.run import train

    settings = grid.dry_run
    cfg = _dry_config(cell, root, grid.seed)
    log.info("dry run: %s (%d steps on CPU)", cell.key, DRY_STEPS)
    began = time.perf_counter()
    try:
        torch.manual_seed(grid.seed)
        result = train(cfg)
        item.cpu_s, item.steps = time.perf_counter() - began, result.global_step
    except Exception as error:  # every cell is tried; the report names what failed
        log.exception("dry run of %s failed", cell.key)
        item.error = f"{type(error).__name__}: {error}"
        return
    item.memory, report.params = estimate_memory(architecture, real.config)
    examples = cell_examples(real.config)
    narrow, general = _training_stream(real.config)
    lengths = _lengths(examples, tokenizer, settings.chars_per_token)
    pool = lengths[narrow:] if real.config.arms.interleave is not None else []
    # narrow + as many general examples as the mix takes (a seeded sample: which ones, only training knows)
    stream = lengths[:narrow] + random.Random(grid.seed).sample(pool, min(general, len(pool)))
    item.time = estimate_time(
        params=report.params,
        architecture=architecture,
        cfg=real.config,
        lengths=stream,
        n_train=narrow + general,
        pool_lengths=pool,
        eval_answers=_eval_parts(grid, real.domain),
        eval_batch=int(grid.eval.get("batch_size", 16)),
        gpu=settings.gpu,
    )


def _base_eval_seconds(grid: Grid, dtype: str, params: int) -> float:
    """Decoding time of the base model's evaluation: the general questions once, then each domain's part."""
    size = 4 if dtype == "float32" else 2
    step_s = params * size / (grid.dry_run.gpu.bandwidth_tbs * 1e12)
    batch = int(grid.eval.get("batch_size", 16))
    parts = _eval_parts(grid, None)
    for domain in grid.domains:
        parts += _eval_parts(grid, domain, general=False)
    return sum(math.ceil(n / batch) * new * step_s for n, new in parts)


def _write_report(path: Path, report: DryRunReport) -> None:
    """``dry_run.json``: the report, with each cell's memory and time estimates."""
    write_json(
        path,
        {
            "grid": report.grid,
            "architecture": report.architecture,
            "params": report.params,
            "gpu": asdict(report.gpu),
            "checked": report.checked,
            "wall_s": round(report.wall_s, 1),
            "notes": report.notes,
            "cells": [
                {
                    "key": c.key,
                    "resources": c.resources,
                    "error": c.error,
                    "cpu_s": c.cpu_s,
                    "steps": c.steps,
                    "memory_bytes": {**asdict(c.memory), "total": c.memory.total} if c.memory else None,
                    "time_s": asdict(c.time) if c.time else None,
                }
                for c in report.cells
            ],
        },
    )
