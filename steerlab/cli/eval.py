"""``steerlab eval MODEL_OR_RUN``: general and in-domain misalignment, benign accuracy, coherence, projection,
the judge-free stance score, conditional stance under training-context cues and the collapse share."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from steerlab.cli import options as opt
from steerlab.judges.endpoint import OpenAIJudgeOptions

if TYPE_CHECKING:
    from steerlab.evaluate.load import EvalTarget
    from steerlab.evaluate.run_eval import EvalConfig


def _check_cues(value: str) -> str:
    """``--cues`` checked while parsing: '' (none) or known cue names, no empty item."""
    from steerlab.evaluate.conditional import parse_cues

    try:
        parse_cues(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    return value


# the command's own options (shared ones live in steerlab.cli.options)
ModelOrRun = Annotated[
    str, typer.Argument(help="registry name, model folder, hub id, or a run folder (runs/<name>/)")
]
Questions = Annotated[
    Path | None,
    typer.Option(
        "--questions",
        exists=True,
        help="question YAML (steerlab or original emergent-misalignment format) (default: experiments/data/em_questions.yaml)",
    ),
]
InDomainData = Annotated[
    Path | None,
    typer.Option(
        "--data",
        exists=True,
        help="in-domain held-out chat JSONL (user turns are the prompts; assistant turns and reference_misaligned feed the log-prob score) (default: the run's domain eval split)",
    ),
]
Out = Annotated[
    Path | None, typer.Option("--out", help="output folder (default: RUN/eval or runs/eval/<model>)")
]
NGeneral = Annotated[
    int | None,
    typer.Option(
        "--n",
        help="answers per general question (default: 4; 0 = the file's paraphrases x samples_per_paraphrase)",
    ),
]
AnswersFrom = Annotated[
    Path | None,
    typer.Option(
        "--answers-from",
        exists=True,
        help="an earlier eval folder with the same sampling settings: judge its answers, do not resample",
    ),
]
ArmLabel = Annotated[
    str | None, typer.Option("--arm", help="arm label for the row (default: the run's arm, or base)")
]
DomainLabel = Annotated[
    str | None, typer.Option("--domain", help="domain label (default: from the run / data)")
]
VectorFile = Annotated[Path | None, typer.Option("--vector", help="persona vector for the projection")]
Layer = Annotated[int | None, typer.Option("--layer", help="projection layer (default: the vector's)")]
Benign = Annotated[
    Path | None,
    typer.Option(
        "--benign", exists=True, help="benign-task JSONL (default: experiments/data/arithmetic_eval.jsonl)"
    ),
]
NoBenign = Annotated[bool, typer.Option("--no-benign", help="skip the benign task")]
NInDomain = Annotated[int, typer.Option("--n-in-domain", help="sampled in-domain answers (0 = all prompts)")]
NBenign = Annotated[int, typer.Option("--n-benign", help="benign items (0 = all)")]
InDomainMetric = Annotated[
    Literal["auto", "rate", "logprob_gap", "benign_accuracy"],
    typer.Option("--in-domain-metric", help="auto, rate, logprob_gap or benign_accuracy"),
]
References = Annotated[
    Path | None,
    typer.Option(
        "--references",
        exists=True,
        help="folder of reference answers (general.jsonl, <domain>.jsonl) for the stance score "
        "(default: experiments/data/references)",
    ),
]
Cues = Annotated[
    str,
    typer.Option(
        "--cues",
        help="training-context cues for the conditional stance, comma-separated ('' = none)",
        callback=_check_cues,
    ),
]
NConditional = Annotated[
    int, typer.Option("--n-conditional", help="answers per general question sampled under each cue")
]
TrainData = Annotated[
    Path | None,
    typer.Option(
        "--train-data",
        exists=True,
        help="narrow training chats for the collapse detector (default: experiments/data/<domain>_train.jsonl)",
    ),
]


def _default_out(label: str, run_dir: Path | None) -> Path:
    if run_dir is not None:
        return run_dir / "eval"
    return Path("runs") / "eval" / re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")


def _default_probe(target: EvalTarget, model_or_run: str, vector: str | None) -> Path | None:
    """The probe file a probe judge reads when none is named: None when one lies beside the vector (the
    evaluation finds it there), else the base model's shipped probe (None when it ships none)."""
    from steerlab.evaluate.judging import probe_path_for, shipped_probe

    if vector and Path(f"{probe_path_for(vector)}.safetensors").is_file():
        return None  # the evaluation finds it beside the vector
    # the shipped vector's probe of the base model: `steerlab eval smollm2-135m-instruct` needs no flags
    base_name = target.info.get("base_model") if target.run_dir or target.info else model_or_run
    return shipped_probe(base_name)


def _default_data(domain: str | None) -> str | None:
    """The domain's held-out eval split, when the package ships one (arithmetic is the benign task)."""
    from steerlab.evaluate.run_eval import DATA_DIR

    if domain and domain != "arithmetic" and (DATA_DIR / f"{domain}_eval.jsonl").is_file():
        return str(DATA_DIR / f"{domain}_eval.jsonl")
    return None


@opt.openai_judge_options
def eval_command(
    model_or_run: ModelOrRun,
    questions: Questions = None,
    data: InDomainData = None,
    out: Out = None,
    n: NGeneral = 4,
    judge: opt.JudgeKind = "probe",
    openai: OpenAIJudgeOptions = opt.OPENAI_JUDGE,  # the six --judge-* options (opt.openai_judge_options)
    max_failed_share: opt.MaxFailedShare = 0.2,
    coherence: opt.Coherence = "bare",
    answers_from: AnswersFrom = None,
    arm: ArmLabel = None,
    domain: DomainLabel = None,
    vector: VectorFile = None,
    layer: Layer = None,
    probe: opt.ProbeFile = None,
    benign: Benign = None,
    no_benign: NoBenign = False,
    n_in_domain: NInDomain = 32,
    n_benign: NBenign = 0,
    in_domain_metric: InDomainMetric = "auto",
    max_new_tokens: opt.MaxNewTokens = 64,
    batch_size: opt.BatchSize = 16,
    seed: opt.Seed = 0,
    references: References = None,
    cues: Cues = "frame,format,inoculation",
    n_conditional: NConditional = 0,
    train_data: TrainData = None,
    n_boot: opt.NBoot = 2000,
) -> None:
    """Evaluate a model or a run; writes eval.json and the answer files (rerun to resume)."""
    from steerlab.evaluate.run_eval import EvalConfig

    target = _load(model_or_run)
    the_vector = str(vector) if vector else target.vector
    if judge == "probe" and probe is None:
        probe = _default_probe(target, model_or_run, the_vector)
    dom = domain or target.domain
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
        in_domain_data=str(data) if data else _default_data(dom),
        n_in_domain=n_in_domain or None,
        in_domain_metric=in_domain_metric,
        benign_data=None if no_benign else (str(benign) if benign else defaults.benign_data),
        n_benign=n_benign or None,
        vector=the_vector,
        projection_layer=layer,
        n_boot=n_boot,
        probe=str(probe) if probe else None,
        judge=judge,
        **EvalConfig.openai_keys(openai),
        max_failed_share=max_failed_share,
        coherence=coherence,
        references=str(references) if references else defaults.references,
        cues=cues,
        n_conditional=n_conditional,
        train_data=str(train_data) if train_data else None,
    )
    _run(target, cfg, answers_from)


def _load(model_or_run: str) -> EvalTarget:
    """The model or run to evaluate (with INFO logging on); the choices were checked while parsing."""
    from steerlab.evaluate.load import load_target

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return load_target(model_or_run)


def _run(target: EvalTarget, cfg: EvalConfig, answers_from: Path | None) -> None:
    """Evaluate (judging the answers of ``answers_from`` when given) and print the row's table."""
    from steerlab.evaluate.run_eval import evaluate_model, reuse_answers

    # steerlab's input errors (judge failures included) and, from an evaluation, any ValueError or missing
    # file: a message and exit 1, not a traceback
    with opt.exit_on(FileNotFoundError, ValueError):
        if answers_from is not None:
            reuse_answers(cfg, answers_from)
        row = evaluate_model(target.model, target.tokenizer, cfg, base=target.base)
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
