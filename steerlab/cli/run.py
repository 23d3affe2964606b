"""`steerlab run GRID`: train and evaluate every (domain x arm) cell of an experiment grid, resumably."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from steerlab.evaluate.judging import CoherenceReading


def run_command(
    grid: Annotated[Path, typer.Argument(help="experiment grid YAML, e.g. experiments/em_smollm2.yaml")],
    only: Annotated[list[str] | None, typer.Option(help="run only these cells, arms or domains")] = None,
    coherence: Annotated[
        CoherenceReading | None,
        typer.Option(
            help="override the grid's coherence reading (bare | stance_neutral); writes results-<it>.md"
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            help="1: cells run here, one after another; N > 1: a local Ray instance runs up to N at once"
        ),
    ] = 1,
    address: Annotated[
        str | None,
        typer.Option(
            help="send the cells to a running Ray cluster: auto | ray://HOST:PORT (shared file system)"
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="build every cell on a tiny model of the same architecture, run the preflight and two "
            "optimizer steps each on CPU, and print each cell's estimated GPU memory and time",
        ),
    ] = False,
    results_only: Annotated[
        bool,
        typer.Option(
            "--results-only",
            help="rewrite results.{md,csv,json} and alarm_scores.json from the cells finished so far; trains "
            "and evaluates nothing",
        ),
    ] = False,
) -> None:
    """Run (or resume) the grid; the results table grows in <output_dir>/<name>/results.md as cells finish.
    ``output_dir`` is read from the working folder (run from the repository root for the shipped grids)."""
    from steerlab.experiment.engine import connect

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # an error below (ConfigError, EngineError, CellFailed) is one `error:` line: steerlab.cli.options.exit_on
    if results_only and (only or dry_run or jobs != 1 or address is not None):
        typer.echo(
            "error: --results-only reads what is there; drop --only, --dry-run, --jobs, --address", err=True
        )
        raise typer.Exit(1)
    if address is not None and not dry_run and jobs == 1:
        # first, before the heavy imports: an unreachable cluster is an error in seconds
        connect(address, jobs)

    from steerlab.experiment.runner import load_for_run, run_grid, write_results_only

    if dry_run:
        from steerlab.experiment.dryrun import dry_run_grid

        if jobs != 1 or address is not None or coherence is not None:
            typer.echo("error: --dry-run runs here on CPU; drop --jobs, --address and --coherence", err=True)
            raise typer.Exit(1)
        typer.echo(dry_run_grid(grid, only=only).text())
        return
    if results_only:
        root = write_results_only(grid, coherence)
    else:
        root = run_grid(grid, only=only, coherence=coherence, jobs=jobs, address=address)
    suffix = load_for_run(
        grid, coherence
    ).results_suffix  # the file this run wrote, not a guess from the flag
    typer.echo(f"results: {root / f'results{suffix}.md'}  (report: steerlab report {root})")


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
