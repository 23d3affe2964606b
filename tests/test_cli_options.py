"""steerlab.cli.options: the openai judge's six options, declared once and handed to a command as one value."""

from __future__ import annotations

import dataclasses
import re

import pytest
import typer
from typer.testing import CliRunner

from steerlab.cli import options as opt
from steerlab.judges.endpoint import OpenAIJudgeOptions


def _app(seen: list[OpenAIJudgeOptions]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @opt.openai_judge_options
    def check(
        judge: opt.JudgeKind = "probe", openai: OpenAIJudgeOptions = opt.OPENAI_JUDGE, seed: opt.Seed = 0
    ) -> None:
        seen.append(openai)
        typer.echo(f"{judge} {seed}")

    return app


def test_the_six_flags_reach_the_command_as_one_options_value():
    seen: list[OpenAIJudgeOptions] = []
    args = ["--judge", "openai", "--judge-model", "m", "--judge-base-url", "http://x/v1", "--seed", "3"]
    args += [
        "--judge-concurrency",
        "2",
        "--judge-timeout",
        "5.5",
        "--judge-retries",
        "1",
        "--allow-judge-mismatch",
    ]
    result = CliRunner().invoke(_app(seen), args)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "openai 3"
    assert seen == [OpenAIJudgeOptions("m", "http://x/v1", 2, 5.5, 1, True)]
    assert CliRunner().invoke(_app(seen), []).exit_code == 0
    assert seen[-1] == OpenAIJudgeOptions()  # the defaults are the options class's own


def test_help_lists_the_flags_in_the_place_of_the_openai_parameter():
    text = CliRunner().invoke(_app([]), ["--help"], env={"COLUMNS": "200"}).output
    listed = [m.group(1) for m in re.finditer(r"^\W+(--[a-z-]+)", text, flags=re.MULTILINE)]
    assert listed[: listed.index("--seed") + 1] == [
        "--judge",
        "--judge-model",
        "--judge-base-url",
        "--judge-concurrency",
        "--judge-timeout",
        "--judge-retries",
        "--allow-judge-mismatch",
        "--seed",
    ]


def test_a_command_without_an_openai_parameter_is_refused():
    def command(seed: int = 0) -> None: ...

    with pytest.raises(TypeError, match="command has no 'openai' parameter"):
        opt.openai_judge_options(command)


def test_eval_config_keeps_the_options_under_its_flat_judge_keys():
    from steerlab.evaluate.run_eval import EvalConfig

    options = OpenAIJudgeOptions("m", "http://x/v1", 2, 5.5, 1, True)
    keys = EvalConfig.openai_keys(options)
    assert keys == {
        "judge_model": "m",
        "judge_base_url": "http://x/v1",
        "judge_concurrency": 2,
        "judge_timeout": 5.5,
        "judge_retries": 1,
        "allow_judge_mismatch": True,
    }
    assert EvalConfig(out_dir="x", **keys).openai_options == options
    assert EvalConfig(out_dir="x").openai_options == OpenAIJudgeOptions()


def test_every_openai_judge_setting_has_exactly_one_option():
    from steerlab.cli import options
    from steerlab.judges.endpoint import FLAT_KEYS

    assert set(options._OPENAI_JUDGE_OPTIONS) == set(FLAT_KEYS)
    assert set(FLAT_KEYS.values()) == {f.name for f in dataclasses.fields(options.OpenAIJudgeOptions)}
