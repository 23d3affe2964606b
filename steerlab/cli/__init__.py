"""The ``steerlab`` command line: thin typer wrappers over the library, one module per topic."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="steerlab: persona vectors and in-training defenses against emergent misalignment.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.command()
def demo(
    model: str = typer.Option("smollm2-135m-instruct", help="registry name, folder or hub id"),
    quick: bool = typer.Option(True, help="only the quick steering demo"),
) -> None:
    """Load the embedded model, find an evil direction, and show an unsteered and a steered answer."""
    from steerlab.demo import quick_steering_demo

    quick_steering_demo(model)


def _register_topics() -> None:
    from steerlab.cli import eval as eval_cli
    from steerlab.cli import models, report, run, train

    app.add_typer(models.app, name="models")
    train.register(app)
    run.register(app)
    eval_cli.register(app)
    report.register(app)


_register_topics()
