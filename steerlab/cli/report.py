"""``steerlab report RUN_OR_EXPERIMENT_DIR``: one offline HTML page with the config, metrics and every figure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape


def report(
    path: Annotated[Path, typer.Argument(help="a run folder (runs/<name>/) or an experiment folder of runs")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="HTML file to write (default: PATH/report.html)")
    ] = None,
    png: Annotated[
        bool, typer.Option("--png", help="also write static PNGs (needs kaleido and Chrome/Chromium)")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="fail on malformed input instead of listing it on the page")
    ] = False,
) -> None:
    """Write a self-contained HTML report (plotly.js embedded, works offline) for a run or an experiment."""
    from steerlab.plots import PlotDataError
    from steerlab.plots.report import write_report

    console = Console(stderr=True, soft_wrap=True)  # never break a path across lines
    try:
        result = write_report(path, out, png=png, strict=strict)
    except PlotDataError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        raise typer.Exit(1) from None
    for title in result.shown:
        console.print(f"[green]figure[/] {escape(title)}")
    for title, why in result.absent.items():
        console.print(f"[yellow]not shown[/] {escape(title)}: {escape(why)}")
    for problem in result.problems:
        console.print(f"[red]problem[/] {escape(problem)}")
    if png:
        if result.png_note:
            console.print(f"[yellow]png[/] {escape(result.png_note)}")
        else:
            console.print(
                f"[green]png[/] {len(result.pngs)} image(s) in {escape(str(result.pngs[0].parent))}"
            )
    typer.echo(f"report written: open {result.out_html.resolve()}")


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to the top-level app."""
    app.command("report")(report)
