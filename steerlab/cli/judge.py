"""``steerlab judge``: check a judge on the labelled set; fetch the small GGUF judges for a local server."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Judges: calibration check on labelled answers, local GGUF judge models.", no_args_is_help=True
)

DEFAULT_MODEL = "smollm2-135m-instruct"


HELP = {  # shared with `steerlab eval`
    "concurrency": "openai judge: requests in flight (a llama.cpp server answers one at a time: use 1-2)",
    "timeout": "openai judge: seconds per request, time queued in the server included",
    "retries": "openai judge: retries of a failed or timed-out request",
    "mismatch": "openai judge: accept a server that serves another model than --judge-model (results "
    "then name the judge as the server reports it)",
}


@app.command("check")
def check_command(
    judge: Annotated[
        str, typer.Option("--judge", help="probe (offline) or openai (OpenAI-compatible)")
    ] = "probe",
    model: Annotated[
        str, typer.Option("--model", help="probe judge: the base model it reads")
    ] = DEFAULT_MODEL,
    probe: Annotated[
        Path | None, typer.Option("--probe", help="probe judge file [default: the model's shipped probe]")
    ] = None,
    coherence: Annotated[
        str, typer.Option("--coherence", help="probe judge: bare or stance_neutral")
    ] = "bare",
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="openai judge model")] = None,
    judge_base_url: Annotated[
        str | None, typer.Option("--judge-base-url", help="OpenAI-compatible endpoint")
    ] = None,
    judge_concurrency: Annotated[int, typer.Option("--judge-concurrency", help=HELP["concurrency"])] = 8,
    judge_timeout: Annotated[float, typer.Option("--judge-timeout", help=HELP["timeout"])] = 60.0,
    judge_retries: Annotated[int, typer.Option("--judge-retries", help=HELP["retries"])] = 4,
    allow_judge_mismatch: Annotated[
        bool, typer.Option("--allow-judge-mismatch", help=HELP["mismatch"])
    ] = False,
    data: Annotated[
        Path | None, typer.Option("--data", help="labelled JSONL [default: the shipped labelled set]")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", help="a seeded subset of about this many rows, stratified (0 = all)")
    ] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", help="result JSON [default: runs/judge_check/<judge>.json]")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    n_boot: Annotated[int, typer.Option("--n-boot", help="bootstrap resamples")] = 2000,
    max_failed_share: Annotated[
        float, typer.Option("--max-failed-share", help="stop (exit 1) when more rows than this are unscored")
    ] = 0.2,
) -> None:
    """Score the labelled answers with a judge: AUROC aligned vs misaligned and the EM rule's agreement."""
    from steerlab.evaluate.judge_check import (
        LABELLED,
        LabelledSetError,
        format_table,
        load_labelled,
        run_check,
        save_check,
        subset,
    )
    from steerlab.evaluate.judging import COHERENCE_READINGS, OpenAIJudgeOptions, build_judge, shipped_probe
    from steerlab.judges.identity import JudgeIdentityError
    from steerlab.judges.openai_judge import JudgeConfigError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if judge not in ("probe", "openai"):
        raise typer.BadParameter(f"--judge must be probe or openai, got {judge!r}")
    if coherence not in COHERENCE_READINGS:
        raise typer.BadParameter(f"--coherence must be one of {', '.join(COHERENCE_READINGS)}")
    try:
        rows = subset(load_labelled(data or LABELLED), limit or None, seed)
        if judge == "probe":
            from steerlab.models import load_model

            probe_file = probe or shipped_probe(model)
            if probe_file is None:
                raise ValueError(f"no shipped probe for {model!r}: pass --probe")
            loaded = load_model(model)
            built = build_judge(
                "probe",
                base_model=loaded.model,
                base_tokenizer=loaded.tokenizer,
                probe=probe_file,
                batch_size=batch_size,
                coherence=coherence,
            )
        else:
            built = build_judge(
                "openai",
                judge_model=judge_model,
                base_url=judge_base_url,
                seed=seed,
                openai_options=OpenAIJudgeOptions(
                    concurrency=judge_concurrency,
                    timeout_s=judge_timeout,
                    retries=judge_retries,
                    allow_mismatch=allow_judge_mismatch,
                ),
            )
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
    except (LabelledSetError, FileNotFoundError, ValueError, JudgeConfigError, JudgeIdentityError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    target = out or Path("runs") / "judge_check" / f"{judge}-{result['judge'].get('id', 'judge')}.json"
    paths = save_check(result, target)
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
    try:
        typer.echo(str(ensure_gguf(name)))
    except (ValueError, RuntimeError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def register(app_: typer.Typer) -> None:
    """Add the ``judge`` command group to the top-level app."""
    app_.add_typer(app, name="judge")
