"""The ``steerlab`` command line: thin typer wrappers over the library, one module per topic."""

from __future__ import annotations

import typer

from steerlab.cli.options import InputErrorsGroup

app = typer.Typer(
    help="steerlab: persona vectors and in-training defenses against emergent misalignment.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=InputErrorsGroup,  # an input error of any command: one `error:` line, exit 1 (no traceback)
)


@app.command()
def demo(
    model: str = typer.Option("smollm2-135m-instruct", help="registry name, folder or hub id"),
    quick: bool = typer.Option(False, "--quick", help="only the steering preview (no training)"),
) -> None:
    """Steer the embedded model with the evil vector, then compare sft vs preventive steering in a report."""
    import logging

    from rich.console import Console

    from steerlab.demo import quiet_libraries, run_demo, steering_preview

    logging.basicConfig(level=logging.WARNING)
    if quick:
        quiet_libraries()
        steering_preview(model, Console())
    else:
        run_demo(model)


def _register_topics() -> None:
    from steerlab.cli import eval as eval_cli
    from steerlab.cli import judge, models, report, run, train, vectors

    app.add_typer(models.app, name="models")
    vectors.register(app)
    train.register(app)
    run.register(app)
    eval_cli.register(app)
    judge.register(app)
    report.register(app)


_register_topics()
