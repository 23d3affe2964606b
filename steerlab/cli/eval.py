"""``steerlab eval MODEL_OR_RUN``: general and in-domain misalignment, benign accuracy, coherence, projection."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated

import typer

from steerlab.cli.judge import HELP

JudgeKind = typer.Option(
    "--judge", help="probe (offline, default) or openai (OPENAI_API_KEY or --judge-base-url)"
)


def _default_out(label: str, run_dir: Path | None) -> Path:
    if run_dir is not None:
        return run_dir / "eval"
    return Path("runs") / "eval" / re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")


def eval_command(
    model_or_run: Annotated[
        str, typer.Argument(help="registry name, model folder, hub id, or a run folder (runs/<name>/)")
    ],
    questions: Annotated[
        Path | None,
        typer.Option(
            "--questions",
            help="question YAML (steerlab or original emergent-misalignment format) [default: experiments/data/em_questions.yaml]",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="in-domain held-out chat JSONL (user turns are the prompts; assistant turns and reference_misaligned feed the log-prob score) [default: the run's domain eval split]",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="output folder [default: RUN/eval or runs/eval/<model>]")
    ] = None,
    n: Annotated[
        int | None,
        typer.Option(
            "--n",
            help="answers per general question [default: 4; 0 = the file's paraphrases x samples_per_paraphrase]",
        ),
    ] = 4,
    judge: Annotated[str, JudgeKind] = "probe",
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
    max_failed_share: Annotated[
        float,
        typer.Option(
            "--max-failed-share", help="stop when more judgments than this share fail or hold no number"
        ),
    ] = 0.2,
    coherence: Annotated[
        str,
        typer.Option(
            "--coherence",
            help="probe judge's coherence: bare (perplexity after the bare question) or stance_neutral "
            "(lowest over the bare question and the trait's pos system prompt)",
        ),
    ] = "bare",
    answers_from: Annotated[
        Path | None,
        typer.Option(
            "--answers-from",
            help="an earlier eval folder with the same sampling settings: judge its answers, do not resample",
        ),
    ] = None,
    arm: Annotated[
        str | None, typer.Option("--arm", help="arm label for the row [default: the run's arm, or base]")
    ] = None,
    domain: Annotated[
        str | None, typer.Option("--domain", help="domain label [default: from the run / data]")
    ] = None,
    vector: Annotated[Path | None, typer.Option("--vector", help="persona vector for the projection")] = None,
    layer: Annotated[
        int | None, typer.Option("--layer", help="projection layer [default: the vector's]")
    ] = None,
    probe: Annotated[
        Path | None,
        typer.Option(
            "--probe",
            help="probe judge file [default: <vector>.probe.safetensors, else the base model's shipped probe]",
        ),
    ] = None,
    benign: Annotated[
        Path | None,
        typer.Option("--benign", help="benign-task JSONL [default: experiments/data/arithmetic_eval.jsonl]"),
    ] = None,
    no_benign: Annotated[bool, typer.Option("--no-benign", help="skip the benign task")] = False,
    n_in_domain: Annotated[
        int, typer.Option("--n-in-domain", help="sampled in-domain answers (0 = all prompts)")
    ] = 32,
    n_benign: Annotated[int, typer.Option("--n-benign", help="benign items (0 = all)")] = 0,
    in_domain_metric: Annotated[
        str, typer.Option("--in-domain-metric", help="auto, rate, logprob_gap or benign_accuracy")
    ] = "auto",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 64,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    references: Annotated[
        Path | None,
        typer.Option(
            "--references",
            help="folder of reference answers (general.jsonl, <domain>.jsonl) for the stance score "
            "[default: experiments/data/references]",
        ),
    ] = None,
    cues: Annotated[
        str,
        typer.Option(
            "--cues", help="training-context cues for the conditional stance, comma-separated ('' = none)"
        ),
    ] = "frame,format,inoculation",
    n_conditional: Annotated[
        int, typer.Option("--n-conditional", help="answers per general question sampled under each cue")
    ] = 0,
    train_data: Annotated[
        Path | None,
        typer.Option(
            "--train-data",
            help="narrow training chats for the collapse detector [default: experiments/data/<domain>_train.jsonl]",
        ),
    ] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", help="bootstrap resamples")] = 2000,
) -> None:
    """Evaluate a model or a run; writes eval.json and the answer files (rerun to resume)."""
    from steerlab.data.em_questions import EMQuestionError
    from steerlab.evaluate.items import PromptFileError
    from steerlab.evaluate.judging import COHERENCE_READINGS, JudgeFailureError, probe_path_for, shipped_probe
    from steerlab.evaluate.load import load_target
    from steerlab.evaluate.run_eval import DATA_DIR, EvalConfig, EvalStateError, evaluate_model, reuse_answers
    from steerlab.judges.identity import JudgeIdentityError
    from steerlab.judges.openai_judge import JudgeConfigError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if judge not in ("probe", "openai"):
        raise typer.BadParameter(f"--judge must be probe or openai, got {judge!r}")
    if coherence not in COHERENCE_READINGS:
        raise typer.BadParameter(
            f"--coherence must be one of {', '.join(COHERENCE_READINGS)}, got {coherence!r}"
        )
    target = load_target(model_or_run)
    the_vector = str(vector) if vector else target.vector
    beside_vector = the_vector and Path(f"{probe_path_for(the_vector)}.safetensors").is_file()
    if judge == "probe" and probe is None and not beside_vector:
        # the shipped vector's probe of the base model: `steerlab eval smollm2-135m-instruct` needs no flags
        base_name = target.info.get("base_model") if target.run_dir or target.info else model_or_run
        probe = shipped_probe(base_name)
    dom = domain or target.domain
    if data is None and dom and (DATA_DIR / f"{dom}_eval.jsonl").is_file() and dom != "arithmetic":
        data = DATA_DIR / f"{dom}_eval.jsonl"
    defaults = EvalConfig(out_dir="")
    cfg = EvalConfig(
        out_dir=str(out or _default_out(target.label, target.run_dir)),
        arm=arm or target.arm,
        domain=dom,
        model=target.label,
        seed=seed,
        questions=str(questions) if questions else defaults.questions,
        n=n or None,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        in_domain_data=str(data) if data else None,
        n_in_domain=n_in_domain or None,
        in_domain_metric=in_domain_metric,
        benign_data=None if no_benign else (str(benign) if benign else defaults.benign_data),
        n_benign=n_benign or None,
        vector=the_vector,
        projection_layer=layer,
        n_boot=n_boot,
        probe=str(probe) if probe else None,
        judge=judge,
        judge_model=judge_model,
        judge_base_url=judge_base_url,
        judge_concurrency=judge_concurrency,
        judge_timeout=judge_timeout,
        judge_retries=judge_retries,
        allow_judge_mismatch=allow_judge_mismatch,
        max_failed_share=max_failed_share,
        coherence=coherence,
        references=str(references) if references else defaults.references,
        cues=cues,
        n_conditional=n_conditional,
        train_data=str(train_data) if train_data else None,
    )
    try:
        if answers_from is not None:
            reuse_answers(cfg, answers_from)
        row = evaluate_model(target.model, target.tokenizer, cfg, base=target.base)
    except (
        EvalStateError,
        EMQuestionError,
        PromptFileError,
        FileNotFoundError,
        ValueError,
        JudgeFailureError,
        JudgeConfigError,
        JudgeIdentityError,
    ) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    _print(row, cfg.out_dir)


def _fmt(row: dict, key: str) -> str:
    value, ci = row.get(key), row.get(f"{key}_ci")
    if value is None:
        return "—"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _print(row: dict, out_dir: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{row['arm']} / {row['domain']}  ({row['n_answers']} general answers)\njudge: {row.get('judge')}"
    )
    table.add_column("metric")
    table.add_column("value [95% CI]")
    for key in (
        "general_misalignment",
        "incoherent_rate",
        "coherence",
        "logprob_gap",
        "in_domain",
        "in_domain_logprob_gap",
        "benign_accuracy",
        "projection",
        "stance",
        "stance_control",
        "in_domain_stance",
        "in_domain_stance_control",
        *(k for k in sorted(row) if k.startswith("conditional_") and k.endswith(("_stance", "_shift"))),
        "collapse_share",
    ):
        table.add_row(key, _fmt(row, key))
    console = Console()
    console.print(table)
    for part, why in row.get("skipped", {}).items():
        console.print(f"[yellow]skipped[/] {part}: {why}")
    typer.echo(f"eval.json written to {Path(out_dir) / 'eval.json'}")


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command to the top-level app."""
    app.command("eval")(eval_command)
