"""A grid's finished parts must have been made with the settings its file gives now.

A grid resumes by skipping what is finished (a trained ``final/``, an ``eval.json``). If the grid file was
edited since — another learning rate, another evaluation setting — skipping would put the old settings'
numbers into the new results table without a word. `check_finished` compares every part that saved its
settings (a cell's ``config.yaml``, an evaluation's ``eval_config.json``) with what the grid file gives now,
before anything runs, and refuses with every stale part and its changed keys named at once. The same
comparisons guard a single resumed run (`steerlab.train.rundir.check_saved_config`) and a resumed
evaluation (`steerlab.evaluate.run_eval.settings_changed`); this applies them to the parts a resume skips,
with every setting a finished ``eval.json`` bakes in, and to the cells that read another cell's model
(``{cell:sft}``): stale when that cell is, or was trained again after they read it.

Settings, not file contents: a path compares by content against another path (a copied or cloned grid
folder resumes), but a data file edited in place under the same path is not noticed. A checkout moved away
(the saved paths gone) is refused, since the content behind them cannot be compared.
"""

from __future__ import annotations

from pathlib import Path

from steerlab.evaluate.run_eval import EvalConfig, summary_settings_changed
from steerlab.experiment.grid import Grid
from steerlab.train.config import ConfigError
from steerlab.train.rundir import RunStateError, check_saved_config

BASE = "base"


def stale_parts(grid: Grid) -> list[str]:
    """One line per saved part of ``grid`` whose settings differ from the grid file's: the folder and the
    changed keys. Parts not started yet are not checked; every cell of the file is, selected or not, because
    the results table shows them all."""
    problems = []
    evaluations: list[tuple[Path, EvalConfig]] = []
    if grid.evaluate:
        folder = grid.root / BASE
        out = folder / grid.eval_dir_name("eval")
        evaluations.append((out, grid.eval_config(out, arm=BASE, domain=None, model_label=grid.model)))
        for domain in grid.domains:
            out = folder / grid.eval_dir_name(f"eval_{domain.name}")
            cfg = grid.eval_config(out, arm=BASE, domain=domain, model_label=grid.model, general=False)
            evaluations.append((out, cfg))
    stale: set[str] = set()
    for cell in grid.cells():  # in dependency order: a cell's needs come before it
        try:
            check_saved_config(cell.config)
        except RunStateError as error:
            problems.append(f"cell {cell.key}: {error}")
            stale.add(cell.key)
        final = cell.config.run_dir / "final"
        for need in cell.need_keys if final.is_dir() else ():
            needed = grid.root / need / "final"
            if need in stale:
                problems.append(f"cell {cell.key}: it read cell {need}, which was made with other settings")
                stale.add(cell.key)
            elif needed.is_dir() and needed.stat().st_mtime > final.stat().st_mtime:
                problems.append(f"cell {cell.key}: cell {need} was trained again after {cell.key} read it")
                stale.add(cell.key)
        if grid.evaluate:
            out = cell.config.run_dir / grid.eval_dir_name("eval")
            evaluations.append(
                (out, grid.eval_config(out, arm=cell.arm, domain=cell.domain, model_label=cell.key))
            )
    for out, cfg in evaluations:
        changed = summary_settings_changed(cfg, out)
        if changed:
            problems.append(f"{out}: evaluated with other settings (differ: {', '.join(changed)})")
    return problems


def check_finished(grid: Grid) -> None:
    """Raise ``ConfigError`` naming every saved part of ``grid`` made with other settings than its file gives
    now (see `stale_parts`), with what to do about it."""
    problems = stale_parts(grid)
    if problems:
        raise ConfigError(
            f"{grid.source}: {len(problems)} saved part(s) of {grid.root} were made with other settings than "
            "the grid file gives now, and a resume would mix them into the results:\n  "
            + "\n  ".join(problems)
            + "\nRestore the grid file, delete those folders to redo them, or give the grid another name."
        )
