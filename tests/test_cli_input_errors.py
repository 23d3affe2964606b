"""Bad input on the command line: refused while parsing, or one ``error:`` line (exit 1) before any model loads."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerlab.cli import app

REPO = Path(__file__).resolve().parents[1]
VECTOR = REPO / "experiments" / "data" / "tiny_smoke_evil.safetensors"
GOOD = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}'
NO_BRACKET = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}}'


@pytest.fixture
def _no_model(monkeypatch):
    """A command case must stop before a model loads: building one (a tiny test model, or weights read by
    transformers) fails the test. Patched where `steerlab.models.load` looks them up at call time, so no
    module imported meanwhile keeps the stand-in."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    import steerlab.models.load
    import steerlab.models.tiny

    monkeypatch.setattr(steerlab.models.tiny, "tiny_model", refuse)
    monkeypatch.setattr(steerlab.models.load.AutoModelForCausalLM, "from_pretrained", refuse)


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250", "NO_COLOR": "1"})


def _flat(text: str) -> str:
    """The output without rich's box characters and line breaks."""
    return re.sub(r"[\s│╭╮╰╯─]+", " ", text)


@pytest.mark.usefixtures("_no_model")
@pytest.mark.parametrize(
    ("args", "option", "value"),
    [
        (["steer", "--vector", VECTOR, "--alpha", ","], "--alpha", "','"),
        (["steer", "--vector", VECTOR, "--alpha", ""], "--alpha", "''"),
        (["steer", "--vector", VECTOR, "--alpha", "1,,2"], "--alpha", "'1,,2'"),
        (["steer", "--vector", VECTOR, "--alpha", "4,x"], "--alpha", "'4,x'"),
        (["vectors", "export", VECTOR, "--gguf", "x.gguf", "--layers", ","], "--layers", "','"),
        (["vectors", "export", VECTOR, "--gguf", "x.gguf", "--layers", "1.5"], "--layers", "'1.5'"),
        (["eval", "tiny:llama", "--cues", "frame,"], "--cues", "'frame,'"),
        (["eval", "tiny:llama", "--cues", "fram"], "--cues", "fram"),
    ],
)
def test_an_empty_or_unparsable_list_option_is_named_with_its_value(args, option, value):
    result = _invoke(*args)
    text = _flat(result.output)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in text and value in text


@pytest.mark.usefixtures("_no_model")
@pytest.mark.parametrize(
    ("args", "option", "value"),
    [
        (["steer", "--vector", VECTOR, "--alpha", "nan"], "--alpha", "'nan'"),
        (["steer", "--vector", VECTOR, "--alpha", "1,inf"], "--alpha", "'1,inf'"),
        (["steer", "--vector", VECTOR, "--alpha", "-inf"], "--alpha", "'-inf'"),
        (["steer", "--vector", VECTOR, "--temperature", "nan"], "--temperature", "nan"),
        (["vectors", "export", VECTOR, "--gguf", "x.gguf", "--scale", "nan"], "--scale", "nan"),
        (["vectors", "export", VECTOR, "--gguf", "x.gguf", "--scale", "inf"], "--scale", "inf"),
        (["extract", "--steer-alpha", "nan"], "--steer-alpha", "nan"),
        (["eval", "tiny:llama", "--judge-timeout", "inf"], "--judge-timeout", "inf"),
    ],
)
def test_a_non_finite_number_is_refused_while_parsing(tmp_path, monkeypatch, args, option, value):
    monkeypatch.chdir(tmp_path)
    result = _invoke(*args)
    text = _flat(result.output)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in text and value in text and "finite" in text
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(("layers", "what"), [("99", "layer 99 is not in the vector"), ("0", "layer 0")])
def test_vectors_export_of_a_layer_the_vector_lacks_is_one_error_line(tmp_path, layers, what):
    out = tmp_path / "x.gguf"
    result = _invoke("vectors", "export", VECTOR, "--gguf", out, "--layers", layers)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and what in lines[0], result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_parse_list_reads_numbers_and_refuses_empty_items():
    from steerlab.cli.options import parse_list

    assert parse_list(" 1, 2.5 ,-3", float, "numbers") == [1.0, 2.5, -3.0]
    for bad in (",", "", " ", "1,", "1,,2", "a"):
        with pytest.raises(ValueError, match="expected numbers, got"):
            parse_list(bad, float, "numbers")
    from steerlab.cli.options import finite_float

    assert parse_list("1,-2e3", finite_float, "numbers") == [1.0, -2000.0]
    for bad in ("nan", "1,inf", "-inf", "NaN"):
        with pytest.raises(ValueError, match="expected numbers, got"):
            parse_list(bad, finite_float, "numbers")


@pytest.mark.usefixtures("_no_model")
@pytest.mark.parametrize(
    ("args", "option", "allowed"),
    [
        (["steer", "--vector", VECTOR, "--mode", "abalte"], "--mode", "'add', 'ablate'"),
        (["steer", "--vector", VECTOR, "--scope", "everything"], "--scope", "'response'"),
        (["extract", "--filter", "some"], "--filter", "'judge', 'none'"),
        (["extract", "--judge", "gpt"], "--judge", "'offline', 'openai'"),
        (["eval", "tiny:llama", "--in-domain-metric", "rates"], "--in-domain-metric", "'logprob_gap'"),
        (["eval", "tiny:llama", "--coherence", "neutral"], "--coherence", "'bare', 'stance_neutral'"),
        (["judge", "check", "--judge", "gpt"], "--judge", "'probe', 'openai'"),
        (["run", "grid.yaml", "--coherence", "neutral"], "--coherence", "'stance_neutral'"),
    ],
)
def test_a_bad_choice_is_refused_while_parsing_listing_the_allowed_values(args, option, allowed):
    result = _invoke(*args)
    text = _flat(result.output)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in text and allowed in text


@pytest.mark.usefixtures("_no_model")
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["screen", "none.jsonl", "--vector", VECTOR], "'data'"),
        (["eval", "tiny:llama", "--data", "none.jsonl"], "'--data'"),
        (["eval", "tiny:llama", "--questions", "none.yaml"], "'--questions'"),
        (["judge", "check", "--data", "none.jsonl"], "'--data'"),
    ],
)
def test_a_missing_input_file_is_refused_while_parsing(tmp_path, monkeypatch, args, option):
    monkeypatch.chdir(tmp_path)
    result = _invoke(*args)
    text = _flat(result.output)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for {option}" in text and "does not exist" in text


@pytest.mark.usefixtures("_no_model")
def test_screen_reads_its_data_before_the_model_and_names_the_bad_line_in_one_line(tmp_path):
    data = tmp_path / "bad_chats.jsonl"
    data.write_text(f"{GOOD}\n{NO_BRACKET[:-1]}\n")
    result = _invoke("screen", data, "--vector", VECTOR)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {data}:2: malformed JSON at the end of the line")
    assert "Traceback" not in result.output


@pytest.mark.usefixtures("_no_model")
def test_vectors_show_names_the_file_given_and_what_it_expected(tmp_path):
    data = tmp_path / "bad_chats.jsonl"
    data.write_text(f"{GOOD}\n")
    result = _invoke("vectors", "show", data)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"error: {data} is not a persona vector (expected a .safetensors persona vector with its .json sidecar)"
    )
    missing = _invoke("vectors", "show", tmp_path / "evil.v2")
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert f"{tmp_path / 'evil.v2'}: vector file {tmp_path / 'evil.v2.safetensors'} does not exist" in (
        missing.output
    )


@pytest.mark.usefixtures("_no_model")
def test_train_on_a_grid_file_says_to_use_run(tmp_path):
    result = _invoke("train", REPO / "experiments" / "em_smollm2.yaml")
    assert result.exit_code == 1, result.output
    assert "an experiment grid file" in result.output and "steerlab run" in result.output


def test_every_listed_input_error_exists():
    from steerlab.cli.options import INPUT_ERRORS

    for module, names in INPUT_ERRORS.items():
        loaded = importlib.import_module(module)
        for name in names:
            assert issubclass(getattr(loaded, name), Exception), f"{module}.{name}"


def test_every_value_error_class_of_steerlab_is_an_input_error():
    """steerlab's bad-input classes derive from ValueError: each one must end as a clean line."""
    from steerlab.cli.options import INPUT_ERRORS

    listed = {name for names in INPUT_ERRORS.values() for name in names}
    found = {}
    for path in (REPO / "steerlab").rglob("*.py"):
        for name in re.findall(r"^class ([A-Za-z]\w*)\((?:\w+\.)?ValueError\)", path.read_text(), re.M):
            found[name] = path
    assert found, "no ValueError classes found: the scan is broken"
    missing = {name: str(path) for name, path in found.items() if name not in listed}
    assert not missing, f"input errors not in steerlab.cli.options.INPUT_ERRORS: {missing}"


@pytest.mark.parametrize(
    "module", ["steerlab.data.build", "steerlab.train.fixtures", "steerlab.evaluate.collapse"]
)
def test_python_m_entry_points_answer_help_and_write_nothing(tmp_path, module):
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module}")
    assert list(tmp_path.iterdir()) == []
