"""``steerlab judge``: check a judge on the labelled set; fetch the small GGUF judges for a local server."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from steerlab.cli import options as opt
from steerlab.judges.endpoint import OpenAIJudgeOptions

if TYPE_CHECKING:
    from steerlab.evaluate.judging import EvalJudge

app = typer.Typer(
    help="Judges: calibration check on labelled answers, local GGUF judge models.", no_args_is_help=True
)

DEFAULT_MODEL = "smollm2-135m-instruct"


def _probe_judge(model: str, probe: Path | None, batch_size: int, coherence: str) -> EvalJudge:
    """The probe judge over ``model`` (its shipped probe unless ``probe`` names one); ValueError when the
    model ships none and none is named."""
    from steerlab.evaluate.judging import build_judge, shipped_probe
    from steerlab.models import load_model

    probe_file = probe or shipped_probe(model)
    if probe_file is None:
        raise ValueError(f"no shipped probe for {model!r}: pass --probe")
    loaded = load_model(model)
    return build_judge(
        "probe",
        base_model=loaded.model,
        base_tokenizer=loaded.tokenizer,
        probe=probe_file,
        batch_size=batch_size,
        coherence=coherence,
    )


@app.command("check")
@opt.openai_judge_options
def check_command(
    judge: Annotated[
        Literal["probe", "openai"],
        typer.Option("--judge", help="probe (offline) or openai (OpenAI-compatible)"),
    ] = "probe",
    model: Annotated[
        str, typer.Option("--model", help="probe judge: the base model it reads")
    ] = DEFAULT_MODEL,
    probe: opt.ProbeFile = None,
    coherence: opt.Coherence = "bare",
    openai: OpenAIJudgeOptions = opt.OPENAI_JUDGE,  # the six --judge-* options (opt.openai_judge_options)
    data: Annotated[
        Path | None,
        typer.Option("--data", exists=True, help="labelled JSONL (default: the shipped labelled set)"),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", help="a seeded subset of about this many rows, stratified (0 = all)")
    ] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", help="result JSON (default: runs/judge_check/<judge>-<id>.json)")
    ] = None,
    batch_size: opt.BatchSize = 16,
    seed: opt.Seed = 0,
    n_boot: opt.NBoot = 2000,
    max_failed_share: opt.MaxFailedShare = 0.2,
) -> None:
    """Score the labelled answers with a judge: AUROC aligned vs misaligned and the EM rule's agreement."""
    from steerlab.evaluate.judge_check import (
        LABELLED,
        format_table,
        load_labelled,
        run_check,
        save_check,
        subset,
    )
    from steerlab.evaluate.judging import build_judge

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with opt.exit_on(FileNotFoundError, ValueError):  # and steerlab's input errors (LabelledSetError, ...)
        rows = subset(load_labelled(data or LABELLED), limit or None, seed)
        if judge == "probe":
            built = _probe_judge(model, probe, batch_size, coherence)
        else:
            built = build_judge("openai", seed=seed, openai_options=openai)
        result = run_check(
            built,
            rows,
            batch_size=batch_size,
            n_boot=n_boot,
            seed=seed,
            max_failed_share=max_failed_share,
            data=data or LABELLED,
            progress=True,
        )
    target = out or Path("runs") / "judge_check" / f"{judge}-{result['judge'].get('id', 'judge')}.json"
    # only a check on the whole shipped set is what `steerlab eval` cites for this judge
    paths = save_check(result, target, store=data is None and not limit)
    typer.echo(format_table(result))
    typer.echo(f"wall time {result['wall_s']} s; written to {', '.join(str(p) for p in paths)}")
    if result["failed"]:
        typer.echo(f"error: {result['failed']}", err=True)
        raise typer.Exit(1)


@app.command("gguf")
def gguf_command(
    name: Annotated[str, typer.Argument(help="qwen2.5-coder-0.5b-instruct or smollm2-135m-instruct")],
) -> None:
    """Fetch (once) and verify a small judge GGUF, print its path: serve it with
    ``python -m llama_cpp.server --model PATH``."""
    from steerlab.judges.gguf_models import ensure_gguf

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with opt.exit_on(ValueError, RuntimeError):
        typer.echo(str(ensure_gguf(name)))


def register(app_: typer.Typer) -> None:
    """Add the ``judge`` command group to the top-level app."""
    app_.add_typer(app, name="judge")
