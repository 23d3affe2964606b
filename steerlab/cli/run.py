"""`steerlab run GRID`: train and evaluate every (domain x arm) cell of an experiment grid, resumably."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer


def run_command(
    grid: Annotated[Path, typer.Argument(help="experiment grid YAML, e.g. experiments/em_smollm2.yaml")],
    only: Annotated[list[str] | None, typer.Option(help="run only these cells, arms or domains")] = None,
    coherence: Annotated[
        str | None,
        typer.Option(
            help="override the grid's coherence reading (bare | stance_neutral); writes results-<it>.md"
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option(help="cells run at once, in worker processes (each with cores/jobs threads)")
    ] = 1,
) -> None:
    """Run (or resume) the grid; the results table grows in <output_dir>/<name>/results.md as cells finish."""
    from steerlab.experiment.runner import load_for_run, run_grid
    from steerlab.experiment.scheduler import CellFailed
    from steerlab.train.config import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        root = run_grid(grid, only=only, coherence=coherence, jobs=jobs)
    except (ConfigError, CellFailed) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    suffix = load_for_run(
        grid, coherence
    ).results_suffix  # the file this run wrote, not a guess from the flag
    typer.echo(f"results: {root / f'results{suffix}.md'}  (report: steerlab report {root})")


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
