"""Run a grid: train every cell, evaluate every model, and write the results table as it goes.

Everything is resumable at two levels: a finished cell (``final/`` and ``eval/eval.json`` present — or
``eval-<reading>/`` under another coherence reading, which judges the answers already in ``eval/``) is
never started again (once `steerlab.experiment.finished` has checked that it was made with the settings the
grid file gives now), and a half-finished one resumes from its last complete checkpoint (training) or its
answer files (evaluation) — also when its worker was killed and the engine starts it again.
``progress.jsonl`` records the wall time of each finished step, so the total time of the grid is known even
across interruptions; ``attempts.jsonl`` records each start of a job (process, host, checkpoint it resumed
from); ``failures.json`` names the cells that failed in the last run and why (the results table shows it).

Where the jobs run is `steerlab.experiment.engine`'s business (this process, local Ray, a Ray cluster);
this module hands it picklable work (`run_job`) and knows nothing of Ray.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from steerlab.evaluate.instruments import reuse_plain_general
from steerlab.evaluate.judging import COHERENCE_READINGS
from steerlab.evaluate.load import load_target
from steerlab.evaluate.run_eval import EvalConfig, evaluate_model, reuse_answers
from steerlab.experiment import engine
from steerlab.experiment.finished import check_finished
from steerlab.experiment.grid import Cell, Grid, load_grid
from steerlab.experiment.preflight import check_cells, check_layers
from steerlab.experiment.results import FAILURES_FILE, PROGRESS_FILE, write_results
from steerlab.io import append_jsonl, write_json
from steerlab.models import model_depth
from steerlab.train.config import ConfigError
from steerlab.train.run import load_tokenizer, train
from steerlab.train.trainer import last_complete_checkpoint

log = logging.getLogger(__name__)

BASE = "base"  # the job that evaluates the base model


class CellFailed(RuntimeError):
    """One or more jobs failed; the others ran to the end. The message names each failed job and why."""


def _log_progress(root: Path, step: str, seconds: float) -> None:
    append_jsonl(root / PROGRESS_FILE, [{"step": step, "seconds": round(seconds, 1)}])


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
    cfg = grid.eval_config(out_dir, arm=arm, domain=domain, model_label=label, general=general)
    if not general:  # the base model's general stance is read from its general evaluation, not scored again
        general_dir = folder / grid.eval_dir_name("eval")
        copied = reuse_plain_general(cfg.resume_key(), out_dir, general_dir)
        if copied:
            log.info("%s: %d general stance scores reused from %s", out_dir, copied, general_dir)
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


def _log_attempt(grid: Grid, key: str, *, train: bool, checkpoint: Path | None = None) -> None:
    """One line per start of a cell: which process on which host, and the checkpoint training resumes from."""
    row = {
        "job": key,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "train": train,
        "resume_from": checkpoint.name if checkpoint else None,
        "time": round(time.time(), 3),
    }
    append_jsonl(grid.root / "attempts.jsonl", [row])


def run_cell(grid: Grid, cell: Cell) -> dict[str, Any]:
    """Train (or resume) the cell, then evaluate it; a finished part is read, not redone."""
    run_dir = cell.config.run_dir
    if not (run_dir / "final").is_dir():
        checkpoint = last_complete_checkpoint(run_dir / "checkpoints")
        _log_attempt(grid, cell.key, train=True, checkpoint=checkpoint)
        # resume=True also when no checkpoint is complete yet: the run folder is tidied and training starts
        # over (a worker killed before its first checkpoint leaves a folder that a fresh start would refuse)
        resume = run_dir.is_dir()
        if resume and checkpoint is None:
            log.info("%s: no complete checkpoint; starting over", run_dir)
        _timed(grid.root, f"{cell.key}/train", lambda: train(cell.config, resume=resume))
    else:
        _log_attempt(grid, cell.key, train=False)
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


def run_job(path: str, coherence: str | None, key: str) -> None:
    """One job by its key — ``base`` or a cell — from the grid file alone, so any process can run it."""
    grid = load_for_run(path, coherence)
    torch.manual_seed(grid.seed)  # every job starts from the same RNG state, wherever and in whatever order
    if key == BASE:
        evaluate_base(grid)
        return
    cells = {cell.key: cell for cell in grid.cells()}
    if key not in cells:
        raise ConfigError(f"{path}: no cell {key!r} (cells: {', '.join(cells)})")
    run_cell(grid, cells[key])


def _cell_done(grid: Grid, cell: Cell) -> bool:
    run_dir = cell.config.run_dir
    trained = (run_dir / "final").is_dir()
    return trained and (not grid.evaluate or (run_dir / grid.eval_dir_name("eval") / "eval.json").is_file())


def _base_done(grid: Grid) -> bool:
    names = ["eval", *(f"eval_{d.name}" for d in grid.domains)]
    return all((grid.root / BASE / grid.eval_dir_name(n) / "eval.json").is_file() for n in names)


def select_cells(grid: Grid, only: list[str] | None) -> list[Cell]:
    """The cells named by ``--only`` (cell keys, arms or domains), all of them without it."""
    cells = grid.cells()
    if not only:
        return cells
    names = {c.key for c in cells} | {c.arm for c in cells} | {c.domain.name for c in cells}
    unknown = [name for name in only if name not in names]
    if unknown:
        raise ConfigError(
            f"{grid.source}: --only {', '.join(unknown)} names no cell, arm or domain of this grid "
            f"(arms: {', '.join(grid.arms)}; domains: {', '.join(d.name for d in grid.domains)})"
        )
    return [cell for cell in cells if cell.key in only or cell.arm in only or cell.domain.name in only]


def plan_jobs(grid: Grid, selected: list[Cell]) -> list[engine.Job]:
    """The jobs still to run, needs first: base (when evaluating) and every unfinished selected cell.

    A finished cell is left out; a cell that needs one that is neither in this run nor trained is an error
    before anything starts."""
    todo = [cell for cell in selected if not _cell_done(grid, cell)]
    keys = {cell.key for cell in todo}
    for cell in todo:
        for need in cell.need_keys:
            if need not in keys and not (grid.root / need / "final").is_dir():
                raise ConfigError(
                    f"cell {cell.key} needs {need}, which is neither selected (--only) nor trained yet"
                )
    jobs = [engine.Job(BASE, (), grid.resources)] if grid.evaluate and not _base_done(grid) else []
    jobs += [
        engine.Job(cell.key, tuple(n for n in cell.need_keys if n in keys), cell.resources) for cell in todo
    ]
    return jobs


def _record(grid: Grid, outcome: engine.Outcome) -> None:
    """Keep ``failures.json`` current (a success clears an old failure) and grow the results table."""
    path = grid.root / FAILURES_FILE
    failures = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if outcome.ok:
        failures.pop(outcome.key, None)
        log.info("%s: done (%.0f s)", outcome.key, outcome.seconds)
    else:
        failures[outcome.key] = outcome.error
    write_json(path, failures)
    if grid.evaluate:
        write_results(grid)


def write_results_only(path: str | Path, coherence: str | None = None) -> Path:
    """Rewrite results.{md,csv,json}, alarm_scores.json and grid.json from the grid's folder as it is,
    training and evaluating nothing.

    Raises ``ConfigError`` when the folder does not exist (``output_dir`` is read from the working folder)
    or holds parts made with other settings than the grid file gives now (`finished.check_finished`)."""
    grid = load_for_run(path, coherence)
    if not grid.root.is_dir():
        raise ConfigError(
            f"{path}: no results folder at {grid.root.resolve()} (output_dir is read from the working folder; "
            "run from the folder the grid was run from)"
        )
    check_finished(grid)
    _write_grid_json(grid)
    write_results(grid)
    return grid.root


def _write_grid_json(grid: Grid) -> None:
    """The grid's source and cells, as the grid file gives them now (the report reads it)."""
    write_json(grid.root / "grid.json", {"source": str(grid.source), "cells": [c.key for c in grid.cells()]})


def run_grid(
    path: str | Path,
    *,
    only: list[str] | None = None,
    coherence: str | None = None,
    jobs: int = 1,
    address: str | None = None,
) -> Path:
    """Run (or resume) every cell of the grid file; returns the folder with results.{md,csv,json}.

    ``coherence`` overrides the grid's coherence reading; its table goes to results-<reading>.{md,csv,json}.
    ``jobs`` = 1 without ``address`` runs here, one job after another; ``jobs`` > 1 starts a local Ray
    instance running up to that many at once; ``address`` (``auto``, ``ray://HOST:PORT``) sends the jobs to a
    running Ray cluster. Raises ``CellFailed`` after the run when any job failed (the rest ran to the end),
    ``engine.EngineError`` before anything starts when the cluster cannot be reached or a request cannot fit.
    """
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    if address is not None and jobs > 1:
        raise ConfigError(
            "--jobs sets how many jobs share this machine; on a cluster (--address) the cells' `resources` "
            "decide how many run at once: drop --jobs"
        )
    grid = load_for_run(path, coherence)
    selected = select_cells(grid, only)
    log.info("grid %s: results folder %s", grid.source, grid.root.resolve())
    check_finished(grid)  # a part made with other settings would be skipped into the table: refuse first
    todo = plan_jobs(grid, selected)
    here = jobs == 1 and address is None
    # connect before the preflight: an unreachable cluster is an error in seconds, not after the data check
    with contextlib.nullcontext() if here else engine.ray_session(address, jobs):
        to_train = [cell for cell in selected if not (cell.config.run_dir / "final").is_dir()]
        if to_train:
            try:
                tokenizer = load_tokenizer(grid.model)
            except OSError as error:
                raise ConfigError(
                    f"{grid.source}: model {grid.model!r}: its tokenizer does not load for the preflight ({error})"
                ) from None
            check_layers(to_train, model_depth(grid.model), grid.model)  # its config only: no weights read
            checked = check_cells(to_train, tokenizer)
            log.info(
                "preflight: %d cells to train, %d examples read and tokenized, all fit",
                len(to_train),
                checked,
            )
        grid.root.mkdir(parents=True, exist_ok=True)
        _write_grid_json(grid)
        skipped = len(selected) - sum(1 for job in todo if job.key != BASE)
        if skipped:
            log.info("%d selected cell(s) finished already: not started again", skipped)
        work = functools.partial(run_job, str(path), coherence)
        record = functools.partial(_record, grid)
        if here:
            outcomes = engine.run_in_process(todo, work, record)
        else:
            outcomes = engine.run_on_ray(todo, work, record, address=address, jobs_at_once=jobs)
    if grid.evaluate:
        write_results(grid)
    failed = [o for o in outcomes.values() if not o.ok]
    if failed:
        raise CellFailed(
            f"{len(failed)} of {len(outcomes)} job(s) failed (the others finished and are kept; rerun to "
            "retry the failed ones): " + "; ".join(f"{o.key}: {o.error}" for o in failed)
        )
    return grid.root
