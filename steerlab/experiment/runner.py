"""Run a grid: train every cell, evaluate every model, and write the results table as it goes.

Everything is resumable at two levels: a finished cell (``final/`` and ``eval/eval.json`` present — or
``eval-<reading>/`` under another coherence reading, which judges the answers already in ``eval/``) is
skipped, and a half-finished one resumes from its last checkpoint (training) or its answer files
(evaluation). ``progress.jsonl`` records the wall time of each finished step, so the total time of the grid
is known even across interruptions.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from steerlab.evaluate.judging import COHERENCE_READINGS
from steerlab.evaluate.load import load_target
from steerlab.evaluate.run_eval import EvalConfig, evaluate_model, reuse_answers
from steerlab.experiment.grid import Cell, Grid, load_grid
from steerlab.experiment.preflight import check_cells
from steerlab.experiment.results import write_results
from steerlab.experiment.scheduler import run_parallel
from steerlab.io import write_json
from steerlab.train.config import ConfigError
from steerlab.train.run import load_tokenizer, train

log = logging.getLogger(__name__)


def _log_progress(root: Path, step: str, seconds: float) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "progress.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": step, "seconds": round(seconds, 1)}) + "\n")


def _timed(root: Path, step: str, work: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = work()
    _log_progress(root, step, time.perf_counter() - start)
    return result


def _reuse_bare_answers(cfg: EvalConfig, bare_dir: Path) -> None:
    """Another coherence reading of a model already evaluated: judge its sampled answers again, not resample."""
    out = Path(cfg.out_dir)
    if out != bare_dir and (bare_dir / "eval_config.json").is_file() and not (out / "eval.json").is_file():
        copied = reuse_answers(cfg, bare_dir)
        if copied:
            log.info("%s: reusing %s from %s", out, ", ".join(copied), bare_dir)


def _evaluate(
    grid: Grid,
    target_name: str,
    folder: Path,
    name: str,
    *,
    arm: str,
    domain,
    label: str,
    general: bool = True,
) -> dict[str, Any]:
    out_dir = folder / grid.eval_dir_name(name)
    if (out_dir / "eval.json").is_file():
        return json.loads((out_dir / "eval.json").read_text(encoding="utf-8"))
    cfg = grid.eval_config(out_dir, arm=arm, domain=domain, model_label=label)
    if not general:
        cfg.questions = None  # general misalignment of the base model is measured once
    _reuse_bare_answers(cfg, folder / name)
    target = load_target(target_name)
    row = evaluate_model(target.model, target.tokenizer, cfg, base=target.base)
    del target
    return row


def evaluate_base(grid: Grid) -> list[dict[str, Any]]:
    """The base model: general misalignment once, in-domain (or benign accuracy) per domain."""
    folder = grid.root / "base"
    rows = [
        _timed(
            grid.root,
            f"base/{grid.eval_dir_name('eval')}",
            lambda: _evaluate(grid, grid.model, folder, "eval", arm="base", domain=None, label=grid.model),
        )
    ]
    for domain in grid.domains:
        rows.append(
            _timed(
                grid.root,
                f"base/{grid.eval_dir_name(f'eval_{domain.name}')}",
                lambda domain=domain: _evaluate(
                    grid,
                    grid.model,
                    folder,
                    f"eval_{domain.name}",
                    arm="base",
                    domain=domain,
                    label=grid.model,
                    general=False,
                ),
            )
        )
    return rows


def run_cell(grid: Grid, cell: Cell) -> dict[str, Any]:
    run_dir = cell.config.run_dir
    if not (run_dir / "final").is_dir():
        resume = run_dir.is_dir() and any((run_dir / "checkpoints").glob("checkpoint-*"))
        if run_dir.is_dir() and not resume:
            log.info("%s: no complete checkpoint; starting over", run_dir)
        _timed(grid.root, f"{cell.key}/train", lambda: train(cell.config, resume=resume))
    if not grid.evaluate:
        return {}
    return _timed(
        grid.root,
        f"{cell.key}/{grid.eval_dir_name('eval')}",
        lambda: _evaluate(
            grid, str(run_dir), run_dir, "eval", arm=cell.arm, domain=cell.domain, label=cell.key
        ),
    )


def load_for_run(path: str | Path, coherence: str | None = None) -> Grid:
    """The grid file, with ``coherence`` (if given) overriding its coherence reading."""
    grid = load_grid(path)
    if coherence is not None and coherence != grid.coherence:
        if coherence not in COHERENCE_READINGS:
            raise ConfigError(f"coherence must be one of {', '.join(COHERENCE_READINGS)}, got {coherence!r}")
        grid.eval["coherence"] = coherence
        grid.results_suffix = f"-{coherence}"
    return grid


def run_grid(
    path: str | Path, *, only: list[str] | None = None, coherence: str | None = None, jobs: int = 1
) -> Path:
    """Run (or resume) every cell of the grid file; returns the folder with results.{md,csv,json}.

    ``coherence`` overrides the grid's coherence reading; its table goes to results-<reading>.{md,csv,json}.
    ``jobs`` > 1 runs cells in that many worker processes (``steerlab.experiment.scheduler``).
    """
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    grid = load_for_run(path, coherence)
    torch.manual_seed(grid.seed)
    cells = grid.cells()
    if only:
        names = {c.key for c in cells} | {c.arm for c in cells} | {c.domain.name for c in cells}
        unknown = [name for name in only if name not in names]
        if unknown:
            raise ConfigError(
                f"{grid.source}: --only {', '.join(unknown)} names no cell, arm or domain of this grid "
                f"(arms: {', '.join(grid.arms)}; domains: {', '.join(d.name for d in grid.domains)})"
            )
    selected = [
        cell for cell in cells if not only or cell.key in only or cell.arm in only or cell.domain.name in only
    ]
    to_train = [cell for cell in selected if not (cell.config.run_dir / "final").is_dir()]
    if to_train:
        checked = check_cells(to_train, load_tokenizer(grid.model))
        log.info(
            "preflight: %d cells to train, %d examples read and tokenized, all fit", len(to_train), checked
        )
    grid.root.mkdir(parents=True, exist_ok=True)
    write_json(grid.root / "grid.json", {"source": str(grid.source), "cells": [c.key for c in cells]})
    if jobs > 1:

        def on_done(key: str) -> None:
            log.info("%s: done", key)
            if grid.evaluate:
                write_results(grid)

        run_parallel(path, selected, jobs, coherence=coherence, with_base=grid.evaluate, on_done=on_done)
        return grid.root
    if grid.evaluate:
        evaluate_base(grid)
        write_results(grid)
    for cell in selected:
        log.info("cell %s", cell.key)
        run_cell(grid, cell)
        if grid.evaluate:
            write_results(grid)  # the table grows as cells finish
    return grid.root
