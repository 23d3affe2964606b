"""The evaluation's side of judging: the failure gate, judge names in results, the key never written,
the shipped probe as default, a clean folder after bad input, and the judge check's figures."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from fake_judge_server import FakeJudgeServer, Logprobs  # noqa: E402

from steerlab.evaluate import EvalConfig, evaluate_model  # noqa: E402
from steerlab.evaluate import judge_check as jc  # noqa: E402
from steerlab.evaluate import run_eval as run_eval_module  # noqa: E402
from steerlab.evaluate.judging import (  # noqa: E402
    JudgeFailureError,
    ScorerPairJudge,
    TemplateJudge,
    check_failures,
    shipped_probe,
)
from steerlab.judges import OpenAIJudge  # noqa: E402
from steerlab.models.tiny import tiny_model, tiny_tokenizer  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "experiments" / "data"
KEY_ENV = "STEERLAB_TEST_JUDGE_KEY"
SECRET = "sk-test-NEVER-WRITTEN-41c2"


class ConstScorer:
    def __init__(self, value, every: int = 0) -> None:
        self.value, self.every, self.calls = value, every, 0

    def score_answers(self, questions, answers):
        out = []
        for _ in answers:
            self.calls += 1
            out.append(None if self.every and self.calls % self.every == 0 else self.value)
        return out


@pytest.fixture()
def cfg(tmp_path_factory):
    folder = tmp_path_factory.mktemp("q")
    questions = yaml.safe_load((DATA / "em_questions.yaml").read_text())[:4]
    (folder / "q.yaml").write_text(yaml.safe_dump(questions))

    def make(out: Path, **kw) -> EvalConfig:
        base = dict(
            out_dir=str(out),
            questions=str(folder / "q.yaml"),
            n=2,
            max_new_tokens=4,
            batch_size=8,
            in_domain_data=None,
            benign_data=None,
            n_boot=50,
            progress=False,
            references=None,  # the judge glue; the stance score has its own tests
        )
        return EvalConfig(**(base | kw))

    return make


def test_gate_stops_with_counts_and_an_example_and_stores_no_failed_batch(tmp_path, cfg):
    judge = ScorerPairJudge(ConstScorer(20.0, every=2), ConstScorer(80.0), name="half-broken")
    with pytest.raises(JudgeFailureError) as info:
        evaluate_model(tiny_model(), tiny_tokenizer(), cfg(tmp_path / "e"), judge=judge)
    message = str(info.value)
    assert "no score for" in message and "general answers" in message and "> the allowed 20%" in message
    assert "One example of what came back" in message
    scores = tmp_path / "e" / "general_scores.jsonl"
    assert not scores.exists() or scores.read_text() == "", "the failing batch was stored as results"
    check_failures([(1.0, 1.0)] * 4 + [(None, 1.0)], judge, "x")  # 20% is allowed
    with pytest.raises(JudgeFailureError):
        check_failures([(1.0, 1.0)] * 3 + [(None, 1.0)], judge, "x")


def test_bad_input_leaves_nothing_that_blocks_the_corrected_rerun(tmp_path, cfg):
    out = tmp_path / "e"
    with pytest.raises(ValueError, match="probe"):  # the probe judge without a probe: stops before work
        evaluate_model(tiny_model(), tiny_tokenizer(), cfg(out, n=3))
    assert not (out / "eval_config.json").exists()
    with pytest.raises(FileNotFoundError):
        evaluate_model(
            tiny_model(), tiny_tokenizer(), cfg(out, questions=str(tmp_path / "nope.yaml")), judge=_ok()
        )
    assert not (out / "eval_config.json").exists()
    row = evaluate_model(tiny_model(), tiny_tokenizer(), cfg(out), judge=_ok())  # corrected: runs
    assert row["n_answers"] == 8 and row["judge"] == "probe:x"


def _ok() -> ScorerPairJudge:
    from steerlab.judges.identity import JudgeIdentity

    ident = JudgeIdentity(kind="probe", endpoint="x", requested_model="x", reported_model="x")
    return ScorerPairJudge(ConstScorer(10.0), ConstScorer(90.0), name="ok", identity=ident)


def test_results_name_the_judge_as_reported_and_the_key_is_never_written(tmp_path, cfg, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))
    with FakeJudgeServer(models=["served-model.gguf"]) as server:
        server.on("", Logprobs([("15", 0.5), ("25", 0.5)]))
        judge = OpenAIJudge(
            "gpt-4.1-mini",
            base_url=server.base_url,
            api_key_env=KEY_ENV,
            cache=tmp_path / "cache" / "judge_scores.sqlite",
            allow_model_mismatch=True,
            max_retries=0,
        )
        row = evaluate_model(tiny_model(), tiny_tokenizer(), cfg(tmp_path / "e"), judge=TemplateJudge(judge))
        result = jc.run_check(TemplateJudge(judge), jc.subset(jc.load_labelled(), 12), n_boot=20)
        written = jc.save_check(result, tmp_path / "check.json")
        judge.close()
        assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in server.requests)
    assert row["judge"] == f"served-model.gguf @ {server.base_url}"
    assert row["judge_identity"]["requested_model"] == "gpt-4.1-mini"
    assert row["alignment"] == pytest.approx(20.0) and row["coherence"] == pytest.approx(20.0)
    assert result["judge"]["reported_model"] == "served-model.gguf" and len(written) == 2
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 6
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), f"the API key was written to {path}"
    assert SECRET not in caplog.text


def test_eval_cli_uses_the_shipped_probe_without_flags(tmp_path, monkeypatch, cfg):
    from steerlab.evaluate import load as load_module

    shipped = shipped_probe("smollm2-135m-instruct")
    assert shipped is not None and shipped.with_suffix(".safetensors").is_file()
    seen = {}

    def fake_build(kind, **kw):
        seen.update(kind=kind, probe=kw.get("probe"))
        return _ok()

    def tiny_target(name):
        return load_module.EvalTarget(tiny_model(), tiny_tokenizer(), (None, None), label=name)

    monkeypatch.setattr(run_eval_module, "build_judge", fake_build)
    monkeypatch.setattr(load_module, "load_target", tiny_target)
    from steerlab.cli.eval import register

    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    questions = cfg(tmp_path).questions
    args = ["eval", "smollm2-135m-instruct", "--questions", questions, "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(
        app, [*args, "--n", "1", "--max-new-tokens", "3", "--no-benign", "--n-boot", "20"]
    )
    assert result.exit_code == 0, result.output
    assert seen == {"kind": "probe", "probe": str(shipped)}
    assert "judge: probe:x" in result.output


def test_check_figures_by_hand():
    rows = jc.load_labelled()
    assert len(rows) >= 200 and {r.label for r in rows} == set(jc.LABELS)
    # a judge that reads the labels: perfect AUROC, the rule agrees everywhere
    perfect = [
        {"aligned": (90.0, 90.0), "misaligned": (5.0, 90.0), "incoherent": (50.0, 10.0)}[r.label]
        for r in rows
    ]
    f = jc.figures(rows, perfect, n_boot=50)
    assert f["auroc"]["value"] == 1.0 and f["auroc"]["ci"] == [1.0, 1.0]
    assert f["misaligned_recall"]["value"] == 1.0 and f["aligned_fpr"]["value"] == 0.0
    assert f["incoherent_detection"]["value"] == 1.0 and f["coherent_called_incoherent"]["value"] == 0.0
    # a judge that scores everything 50: AUROC 0.5, the rule never fires
    flat = jc.figures(rows, [(50.0, 60.0)] * len(rows), n_boot=50)
    assert flat["auroc"]["value"] == 0.5 and flat["misaligned_recall"]["value"] == 0.0
    # a noisy judge: the CI is a real interval around the value
    noisy = [(min(100.0, max(0.0, a + (37 * i) % 101 - 50)), c) for i, (a, c) in enumerate(perfect)]
    nf = jc.figures(rows, noisy, n_boot=200, seed=1)
    lo, hi = nf["auroc"]["ci"]
    assert lo < nf["auroc"]["value"] < hi and not math.isclose(lo, hi)
    table = jc.format_table({"judge": {"name": "test"}, "figures": nf})
    assert "AUROC aligned vs misaligned" in table and "misaligned recall" in table


def test_labelled_set_errors_name_file_line_and_key(tmp_path):
    good = json.loads(jc.LABELLED.read_text().splitlines()[0])
    path = tmp_path / "l.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "x2", "label": "evil"}) + "\n")
    with pytest.raises(jc.LabelledSetError, match=r"l.jsonl:2: label 'evil'"):
        jc.load_labelled(path)
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "answer"}) + "\n")
    with pytest.raises(jc.LabelledSetError, match=r"l.jsonl:1: key 'answer'"):
        jc.load_labelled(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good)[:-1] + "\n")  # the second line lost its }
    with pytest.raises(jc.LabelledSetError, match=r"l.jsonl:2: not valid JSON at the end of the line"):
        jc.load_labelled(path)
    sub = jc.subset(jc.load_labelled(), 30, seed=3)
    assert 25 <= len(sub) <= 35 and {r.label for r in sub} == set(jc.LABELS)
    assert sub == jc.subset(jc.load_labelled(), 30, seed=3)


def test_results_table_names_the_judge_and_its_check():
    from steerlab.experiment.results import markdown_table
    from steerlab.judges.identity import judges_line

    check = {
        "n": 290,
        "auroc": {"value": 0.91, "ci": [0.87, 0.95]},
        "aligned_fpr": {"value": 0.0, "ci": [0, 0]},
    }
    rows = [
        {
            "domain": "medical",
            "arm": "sft",
            "judge": "probe:evil@L14#abc (coherence bare)",
            "judge_check": check,
        },
        {
            "domain": "medical",
            "arm": "kl",
            "judge": "qwen.gguf @ http://127.0.0.1:8080/v1",
            "judge_check": None,
        },
    ]
    line = judges_line(rows)
    assert (
        "probe:evil@L14#abc (coherence bare) (judge check on 290 labelled answers: AUROC 0.91 [0.87, 0.95]"
        in line
    )
    assert "qwen.gguf @ http://127.0.0.1:8080/v1 (not checked" in line
    assert markdown_table(rows).startswith("Judge: ") and judges_line([{}]) == "Judge: not recorded."


def _judge_cli():
    from steerlab.cli.judge import register

    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return app


def test_judge_check_cli_on_an_openai_compatible_server(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("STEERLAB_CACHE_DIR", str(tmp_path / "cache"))
    with FakeJudgeServer(models=["judge-x"]) as server:
        server.on("", Logprobs([("15", 0.5), ("85", 0.5)]))
        args = ["judge", "check", "--judge", "openai", "--judge-base-url", server.base_url]
        args += [
            "--judge-model",
            "judge-x",
            "--limit",
            "12",
            "--n-boot",
            "50",
            "--out",
            str(tmp_path / "c.json"),
        ]
        result = CliRunner().invoke(_judge_cli(), args)
        assert result.exit_code == 0, result.output
        assert (
            "AUROC aligned vs misaligned" in result.output and f"judge-x @ {server.base_url}" in result.output
        )
        saved = json.loads((tmp_path / "c.json").read_text())
        assert not (tmp_path / "cache" / "judge_checks").exists()  # a subset is not cited by evaluations
        assert saved["figures"]["n"] >= 9 and saved["figures"]["alignment_spread"]["median"] == 50.0
        wrong = CliRunner().invoke(_judge_cli(), [*args[:-4], "--judge-model", "gpt-4.1-mini"])
        assert (
            wrong.exit_code == 1
            and "serves 'judge-x', not the requested model 'gpt-4.1-mini'" in wrong.output
        )


@pytest.mark.slow
def test_judge_check_cli_with_the_shipped_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLAB_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "probe.json"
    result = CliRunner().invoke(
        _judge_cli(), ["judge", "check", "--limit", "9", "--n-boot", "50", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "probe:evil@L14" in result.output and "misaligned recall (EM rule)" in result.output
    figures = json.loads(out.read_text())["figures"]
    assert 9 <= figures["n"] <= 12 and figures["n_unscored"] == 0 and figures["auroc"]["value"] is not None
