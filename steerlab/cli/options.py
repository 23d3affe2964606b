"""Command-line options that several commands share (one declaration each), and the one error exit.

Each option is an ``Annotated`` type: a command declares ``judge_timeout: JudgeTimeout = 60.0``. A choice is
a ``Literal`` (typer checks it while parsing, before any model loads, and lists the allowed values); a
comma-separated list is checked while parsing too (`list_callback`), and so is a number that must be finite
(`finite_float`, `check_finite`: click reads 'nan' and 'inf' as floats). Bad input that a command meets later —
steerlab's input errors (`INPUT_ERRORS`) — ends as one ``error: ...`` line and exit code 1 (`exit_on`, which
the top-level group `InputErrorsGroup` holds around every command).
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from typer.core import TyperGroup

from steerlab.evaluate.judging import CoherenceReading
from steerlab.judges.endpoint import FLAT_KEYS, OpenAIJudgeOptions

R = TypeVar("R")


def finite_float(text: str) -> float:
    """``text`` read as a float that is finite; ``ValueError`` for 'nan', 'inf' or no number at all (a NaN
    coefficient steers every answer into nothing, and a NaN in a result file reads as a number)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def check_finite(value: Any) -> Any:
    """A typer option callback refusing a non-finite float while the command line is parsed (click names
    the option: ``Invalid value for '--scale': expected a finite number, got nan``); None passes."""
    if isinstance(value, float) and not math.isfinite(value):
        raise typer.BadParameter(f"expected a finite number, got {value}")
    return value


JudgeKind = Annotated[
    Literal["probe", "openai"],
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
        "--judge-timeout",
        help="openai judge: seconds per request, time queued in the server included",
        callback=check_finite,
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
    CoherenceReading,
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
        callback=check_finite,
    ),
]
# generation (steerlab.persona.generation.SamplingSettings)
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", help="answer length cap in tokens")]
Temperature = Annotated[
    float,
    typer.Option("--temperature", help="sampling temperature (0 = greedy)", callback=check_finite),
]
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


# steerlab's input errors: bad input, or a stop the user can act on, that a command reports as one line.
# By module, resolved only from modules already imported (an error class of a module nobody imported cannot
# have been raised, and importing them all would slow every command's start).
INPUT_ERRORS: dict[str, tuple[str, ...]] = {
    "steerlab.io": ("JsonlError",),
    "steerlab.data.chat": ("ChatDataError",),
    "steerlab.data.tokenize": ("TokenizeError",),
    "steerlab.data.em_questions": ("EMQuestionError",),
    "steerlab.train.schema": ("ConfigError",),
    "steerlab.train.rundir": ("RunStateError",),
    "steerlab.train.refcache": ("ReferenceCacheError",),
    "steerlab.train.trainer": ("NonFiniteLossError",),
    "steerlab.persona.traits": ("TraitError",),
    "steerlab.persona.vectors": ("VectorFileError", "IncompatibleVectorError"),
    "steerlab.persona.generation": ("GenerationFileError",),
    "steerlab.persona.gguf": ("GGUFExportError",),
    "steerlab.models.load": ("UnknownModelError",),
    "steerlab.models.architectures": ("UnknownArchitectureError",),
    "steerlab.models.embedded": ("ChecksumError",),
    "steerlab.evaluate.items": ("PromptFileError",),
    "steerlab.evaluate.benign": ("BenignDataError",),
    "steerlab.evaluate.store": ("ResultFileError",),
    "steerlab.evaluate.judge_check": ("LabelledSetError",),
    "steerlab.evaluate.judging": ("JudgeFailureError",),
    "steerlab.evaluate.run_eval": ("EvalStateError",),
    "steerlab.judges.openai_judge": ("JudgeConfigError",),
    "steerlab.judges.identity": ("JudgeIdentityError",),
    "steerlab.experiment.engine": ("EngineError",),
    "steerlab.experiment.runner": ("CellFailed",),
    "steerlab.plots.schema": ("PlotDataError",),
}


def input_errors() -> tuple[type[Exception], ...]:
    """The classes of `INPUT_ERRORS` whose modules are imported (no import happens here)."""
    return tuple(
        getattr(sys.modules[module], name)
        for module, names in INPUT_ERRORS.items()
        if module in sys.modules
        for name in names
    )


@contextmanager
def exit_on(*errors: type[BaseException]) -> Iterator[None]:
    """Turn steerlab's input errors (`INPUT_ERRORS`) and the listed ones into ``error: ...`` on stderr and
    exit code 1: bad input the user can fix gets its message, not a traceback."""
    try:
        yield
    except Exception as error:
        if not isinstance(error, (*errors, *input_errors())):
            raise
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


class InputErrorsGroup(TyperGroup):
    """The ``steerlab`` command group: every command (subgroups included) runs inside `exit_on`, so an input
    error of any command is one clean line, by one mechanism rather than a handler per command."""

    def invoke(self, ctx: Any) -> Any:
        with exit_on():
            return super().invoke(ctx)


def parse_list(text: str, item: Callable[[str], R], what: str) -> list[R]:
    """The items of a comma-separated value, each read by ``item``; ``ValueError`` saying it expected
    ``what`` for an empty value, an empty item (``"4,,8"``) or an item ``item`` refuses."""
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise ValueError(f"expected {what}, got {text!r} (no item)")
    if "" in parts:
        raise ValueError(f"expected {what}, got {text!r} (an empty item)")
    try:
        return [item(part) for part in parts]
    except ValueError:
        raise ValueError(f"expected {what}, got {text!r}") from None


def list_callback(item: Callable[[str], Any], what: str, keep: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """A typer option callback that checks a comma-separated value with `parse_list` while the command line is
    parsed (before anything loads) and passes it on unchanged; ``keep`` are words accepted as they are.
    Click names the option in the error: ``Invalid value for '--alpha': expected ..., got ','``."""

    def check(value: Any) -> Any:
        if value is None or value in keep:
            return value
        try:
            parse_list(value, item, what)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
        return value

    return check
