"""`steerlab train CONFIG [--resume]`: a thin wrapper over `steerlab.train.run.train`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from steerlab.cli.options import exit_on


def train_command(
    config: Annotated[Path, typer.Argument(help="experiment YAML, e.g. experiments/tiny_smoke.yaml")],
    resume: Annotated[
        bool, typer.Option("--resume", help="continue runs/<name>/ from its last complete checkpoint")
    ] = False,
) -> None:
    """Fine-tune with the config's arms; writes runs/<name>/ (config, metrics, monitor, checkpoints, final)."""
    from steerlab.train.run import train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with exit_on():  # here too, not only in the `steerlab` group: torchrun runs this module directly
        result = train(config, resume=resume)
    typer.echo(f"done: {result.run_dir} (step {result.global_step}; final model in {result.final_dir})")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


if __name__ == "__main__":  # python -m steerlab.cli.train CONFIG [--resume] (used by torchrun)
    typer.run(train_command)
