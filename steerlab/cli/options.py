"""Command-line options that several commands share (one declaration each), and the one error exit.

Each option is an ``Annotated`` type: a command declares ``judge_timeout: JudgeTimeout = 60.0``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from steerlab.judges.endpoint import FLAT_KEYS, OpenAIJudgeOptions

R = TypeVar("R")

JudgeKind = Annotated[
    str,
    typer.Option("--judge", help="probe (offline, default) or openai (OPENAI_API_KEY or --judge-base-url)"),
]
JudgeModel = Annotated[str | None, typer.Option("--judge-model", help="openai judge model")]
JudgeBaseUrl = Annotated[str | None, typer.Option("--judge-base-url", help="OpenAI-compatible endpoint")]
JudgeConcurrency = Annotated[
    int,
    typer.Option(
        "--judge-concurrency",
        help="openai judge: requests in flight (a llama.cpp server answers one at a time: use 1-2)",
    ),
]
JudgeTimeout = Annotated[
    float,
    typer.Option(
        "--judge-timeout", help="openai judge: seconds per request, time queued in the server included"
    ),
]
JudgeRetries = Annotated[
    int, typer.Option("--judge-retries", help="openai judge: retries of a failed or timed-out request")
]
AllowJudgeMismatch = Annotated[
    bool,
    typer.Option(
        "--allow-judge-mismatch",
        help="openai judge: accept a server that serves another model than --judge-model (results then name "
        "the judge as the server reports it)",
    ),
]
ProbeFile = Annotated[
    Path | None,
    typer.Option(
        "--probe",
        help="probe judge file (default: <vector>.probe.safetensors where a vector is given, else the base "
        "model's shipped probe)",
    ),
]
Coherence = Annotated[
    str,
    typer.Option(
        "--coherence",
        help="probe judge's coherence: bare (perplexity after the bare question) or stance_neutral "
        "(lowest over the bare question and the trait's pos system prompt)",
    ),
]
MaxFailedShare = Annotated[
    float,
    typer.Option(
        "--max-failed-share",
        help="stop (exit 1) when more judgments than this share fail or hold no number",
    ),
]
# generation (steerlab.persona.generation.SamplingSettings)
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", help="answer length cap in tokens")]
Temperature = Annotated[float, typer.Option("--temperature", help="sampling temperature (0 = greedy)")]
BatchSize = Annotated[int, typer.Option("--batch-size")]
Seed = Annotated[int, typer.Option("--seed")]
NBoot = Annotated[int, typer.Option("--n-boot", help="bootstrap resamples")]


OPENAI_JUDGE = OpenAIJudgeOptions()  # the stand-in default of a command's ``openai`` parameter
# the openai judge's options as a command lists them: parameter (the flat key) -> its option
_OPENAI_JUDGE_OPTIONS = {
    "judge_model": JudgeModel,
    "judge_base_url": JudgeBaseUrl,
    "judge_concurrency": JudgeConcurrency,
    "judge_timeout": JudgeTimeout,
    "judge_retries": JudgeRetries,
    "allow_judge_mismatch": AllowJudgeMismatch,
}


def openai_judge_options(command: Callable[..., R]) -> Callable[..., R]:
    """Declare the openai judge's six options (``--judge-model`` ... ``--allow-judge-mismatch``, defaults from
    `OpenAIJudgeOptions`) on a typer command in the place of its ``openai`` parameter, and call the command
    with them as one `OpenAIJudgeOptions`.

    Why: typer has no option groups, so without this every command that reaches a judge lists the same six
    parameters and packs them itself. Raises ``TypeError`` (at import) for a command without ``openai``.
    """
    signature = inspect.signature(command, eval_str=True)
    if "openai" not in signature.parameters:
        raise TypeError(f"{command.__name__} has no 'openai' parameter for the openai judge's options")
    kind = signature.parameters["openai"].kind
    injected = [
        inspect.Parameter(
            name, kind, default=getattr(OPENAI_JUDGE, field), annotation=_OPENAI_JUDGE_OPTIONS[name]
        )
        for name, field in FLAT_KEYS.items()
    ]
    params = [q for p in signature.parameters.values() for q in (injected if p.name == "openai" else [p])]

    @functools.wraps(command)
    def with_options(*args: Any, **kwargs: Any) -> R:
        options = OpenAIJudgeOptions(**{field: kwargs.pop(name) for name, field in FLAT_KEYS.items()})
        return command(*args, openai=options, **kwargs)

    # typer reads the parameters from the signature and their types from __annotations__
    with_options.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    with_options.__annotations__ = {p.name: p.annotation for p in params}
    return with_options


@contextmanager
def exit_on(*errors: type[BaseException]) -> Iterator[None]:
    """Turn the listed errors (bad input the user can fix) into ``error: ...`` on stderr and exit code 1."""
    try:
        yield
    except errors as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def check_judge_choices(judge: str, coherence: str) -> None:
    """Raise ``typer.BadParameter`` for a ``--judge`` other than probe/openai or an unknown ``--coherence``."""
    from steerlab.evaluate.judging import COHERENCE_READINGS

    if judge not in ("probe", "openai"):
        raise typer.BadParameter(f"--judge must be probe or openai, got {judge!r}")
    if coherence not in COHERENCE_READINGS:
        raise typer.BadParameter(
            f"--coherence must be one of {', '.join(COHERENCE_READINGS)}, got {coherence!r}"
        )


def judge_errors() -> tuple[type[Exception], ...]:
    """A judge that cannot be built or does not answer as named: bad input, not a bug."""
    from steerlab.judges.identity import JudgeIdentityError
    from steerlab.judges.openai_judge import JudgeConfigError

    return (JudgeConfigError, JudgeIdentityError)
