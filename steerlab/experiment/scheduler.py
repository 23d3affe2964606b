"""Run a grid's cells in N worker processes, each cell once the cells it refers to are done (``--jobs N``).

A grid on a small machine is hours of work, and one training process does not keep every core busy (tiny
batches, Python overhead). Workers are separate processes (``spawn``: no torch state is shared), each with
``cores // N`` torch threads; each reloads the grid file and runs one cell (train, then evaluate) exactly as
the sequential runner does, so the folders, logs and numbers are the same kind. The base model's evaluation
is one more job. When a cell fails, the running ones finish (nothing is lost), no new one starts, and the
first error is raised naming its cell.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from steerlab.experiment.grid import Cell
from steerlab.train.config import ConfigError

log = logging.getLogger(__name__)

BASE = "base"


class CellFailed(RuntimeError):
    """A worker's cell raised; the message names the cell and the original error."""


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def _work(path: str, key: str, coherence: str | None, threads: int) -> str:
    """One job in a worker process: the base evaluation or one cell."""
    import torch

    from steerlab.experiment import runner

    torch.set_num_threads(threads)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s [{key}] %(name)s: %(message)s", force=True
    )
    grid = runner.load_for_run(path, coherence)
    torch.manual_seed(grid.seed)
    if key == BASE:
        runner.evaluate_base(grid)
    else:
        runner.run_cell(grid, next(c for c in grid.cells() if c.key == key))
    return key


def run_parallel(
    path: str | Path,
    cells: Sequence[Cell],
    jobs: int,
    *,
    coherence: str | None,
    with_base: bool,
    on_done: Callable[[str], None],
) -> None:
    """Run ``cells`` (and the base evaluation) on ``jobs`` workers, honouring ``Cell.needs``."""
    if jobs < 2:
        raise ValueError(f"run_parallel needs jobs >= 2, got {jobs}")
    keys = {c.key for c in cells}
    done: set[str] = set()  # finished jobs, and needed cells trained before this run
    for cell in cells:
        for need in cell.needs:
            key = f"{cell.domain.name}__{need}"
            if key in keys:
                continue
            if not (cell.config.run_dir.parent / key / "final").is_dir():
                raise ConfigError(
                    f"cell {cell.key} needs {key}, which is neither selected (--only) nor trained yet"
                )
            done.add(key)
    pending = list(cells)
    threads = threads_per_job(jobs)
    errors: list[str] = []
    running: dict[Future, str] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        if with_base:
            running[pool.submit(_work, str(path), BASE, coherence, threads)] = BASE
        while running or (pending and not errors):
            for cell in list(pending):
                if errors or len(running) >= jobs:
                    break
                if all(f"{cell.domain.name}__{n}" in done for n in cell.needs):
                    pending.remove(cell)
                    log.info("cell %s: started (%d running)", cell.key, len(running) + 1)
                    running[pool.submit(_work, str(path), cell.key, coherence, threads)] = cell.key
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                key = running.pop(future)
                error = future.exception()
                if error is not None:
                    errors.append(f"{key}: {type(error).__name__}: {error}")
                    log.error("cell %s failed: %s", key, error)
                    continue
                done.add(key)
                on_done(key)
    if errors:
        raise CellFailed(
            f"{len(errors)} job(s) failed (the others finished and are kept): " + "; ".join(errors)
        )
