"""The OpenAI judge against a real OpenAI-compatible server: llama-cpp-python's, serving two small GGUFs.

* Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) writes numbers digit by digit and does answer "73" to "40 + 33":
  the multi-token score path, the real response shape, identity in the cache, timeouts and retries.
* SmolLM2-135M-Instruct (the embedded model's own GGUF) rarely answers with a number: the unparseable path
  and the evaluation's failure gate.

Neither model can judge alignment; they test the machinery. Requests are few and short (three generated
tokens per judgment) so the module stays within about a minute on two cores.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import openai
import pytest
import yaml

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make judge-server-deps)")

sys.path.insert(0, str(Path(__file__).parent))
from llama_server import LlamaServer  # noqa: E402

from steerlab.evaluate import EvalConfig, evaluate_model  # noqa: E402
from steerlab.evaluate import judge_check as jc  # noqa: E402
from steerlab.evaluate.judging import JudgeFailureError, TemplateJudge  # noqa: E402
from steerlab.judges import OpenAIJudge  # noqa: E402
from steerlab.judges.gguf_models import ensure_gguf  # noqa: E402
from steerlab.judges.identity import JudgeIdentityError  # noqa: E402
from steerlab.judges.numbers import NumberReadError  # noqa: E402
from steerlab.judges.openai_judge import JudgeNumberError  # noqa: E402
from steerlab.models.tiny import tiny_model, tiny_tokenizer  # noqa: E402

ADD = "What is 40 + 33? Answer with the number only."  # "7" (p ~0.99) then "3"
SIXTY = "What is 30 + 30? Answer with the number only."  # "6" (p ~0.99) then "0"
# The model is unsure here: "6" 0.80 (then "0" 0.91 or end 0.09), "3" 0.13, "1" 0.04, so its expected
# value is about 50, not 60 — the reading must follow every branch, not the greedy answer.
HOUR = "How many minutes are in an hour? Answer with the number only."
DATA = Path(__file__).resolve().parents[1] / "experiments" / "data"


@pytest.fixture(scope="module")
def qwen():
    with LlamaServer(ensure_gguf("qwen2.5-coder-0.5b-instruct")) as server:
        yield server


@pytest.fixture(scope="module")
def smol():
    with LlamaServer(ensure_gguf("smollm2-135m-instruct")) as server:
        yield server


@pytest.fixture
def judge_on(tmp_path):
    made = []

    def make(server, **kw):
        args = dict(model=server.model, base_url=server.base_url, cache=tmp_path / "cache.sqlite")
        # llama-cpp-python continues a prefix by grammar, not prefill: found by the self-check in
        # test_multi_digit_numbers_score_right (continuation="auto"), given here to save its requests
        args |= dict(
            max_concurrency=1, timeout_s=120.0, max_retries=1, backoff_s=0.05, continuation="grammar"
        )
        judge = OpenAIJudge(**(args | kw))
        made.append(judge)
        return judge

    yield make
    for j in made:
        j.close()


def test_real_response_shape_and_token_limit(qwen):
    client = openai.OpenAI(base_url=qwen.base_url, api_key="EMPTY", max_retries=0, timeout=120)
    resp = client.chat.completions.create(
        model=qwen.model,
        messages=[{"role": "user", "content": ADD}],
        temperature=0.0,
        logprobs=True,
        top_logprobs=20,
        max_tokens=3,
        max_completion_tokens=3,
    )
    content = resp.choices[0].logprobs.content
    assert [c.token for c in content][:2] == ["7", "3"], "the model writes 73 as two digit tokens"
    assert len(content) <= 3 and resp.usage.completion_tokens <= 3  # the limit is honoured
    assert len(content[0].top_logprobs) == 20 and resp.model == qwen.model  # the requested name echoed
    first = {t.token: math.exp(t.logprob) for t in content[0].top_logprobs}
    assert first["7"] > 0.9
    # the old reading (first token alone, single-digit tokens as numbers) gives the first digit, about 7
    digits = {int(t): p for t, p in first.items() if t.strip().isdigit()}
    old = sum(v * p for v, p in digits.items()) / sum(digits.values())
    assert 6.5 < old < 8.0
    with pytest.raises(NumberReadError):  # ... which the reading of one position now refuses
        from steerlab.judges import aggregate_number_logprobs

        aggregate_number_logprobs([(t.token, t.logprob) for t in content[0].top_logprobs])


def test_multi_digit_numbers_score_right(qwen, judge_on):
    judge = judge_on(qwen, continuation="auto")
    add, sixty, hour = judge.score([ADD, SIXTY, HOUR])
    assert add == pytest.approx(73.0, abs=1.0)
    assert sixty == pytest.approx(60.0, abs=1.0)
    assert judge.last_summary.scored == 3 and judge.identity.reported_model == qwen.model
    # the unsure answer: neither the first digit (~6) nor the greedy answer (60), but its expectation
    assert 35.0 < hour < 58.0 and judge.last_summary.follow_ups >= 2
    assert judge._cont.how == "grammar" and "prefill" in judge._cont.tried[0]  # the self-check's choice


def test_scores_spread_over_0_to_100_on_labelled_answers(qwen, judge_on):
    rows = [next(r for r in jc.load_labelled() if r.label == "misaligned")]  # 2 judgments of ~200 tokens
    judge = judge_on(qwen, tolerance=2.0)  # a coarser reading needs fewer follow-ups
    result = jc.run_check(TemplateJudge(judge), rows, n_boot=50)
    scores = [s for r in result["scores"] for s in (r["alignment"], r["coherence"]) if s is not None]
    assert len(scores) == 2, result["summary"]
    # the model is unsure (its expectations sit mid-scale); a first-digit reading could never exceed 9
    assert all(0.0 <= s <= 100.0 for s in scores) and max(scores) > 20.0, scores
    assert judge.summary.follow_ups >= 1  # digit prefixes off the greedy path were continued


def test_unparseable_answers_are_counted_and_stop_an_evaluation(smol, judge_on, tmp_path):
    judge = judge_on(smol)
    assert judge.score(["Write one short sentence about the sea."]) == [None]
    assert judge.last_summary.unparseable == 1 and "no number" in judge.last_failure
    question = yaml.safe_load((DATA / "em_questions.yaml").read_text())[0]
    question.pop("judge_prompts", None)  # steerlab's shorter default prompts: 2 judgments, fewer tokens
    (tmp_path / "q.yaml").write_text(yaml.safe_dump([question]))
    cfg = EvalConfig(
        out_dir=str(tmp_path / "e"),
        questions=str(tmp_path / "q.yaml"),
        n=2,
        max_new_tokens=4,
        in_domain_data=None,
        benign_data=None,
        n_boot=20,
        progress=False,
        references=None,
    )
    with pytest.raises(JudgeFailureError, match=r"gave no score for (\d) of \1 general answers"):
        evaluate_model(tiny_model(), tiny_tokenizer(), cfg, judge=TemplateJudge(judge_on(smol, cache=None)))


def test_identity_keeps_two_servers_apart_in_one_cache(qwen, smol, judge_on):
    name = "gpt-4.1-mini-2025-04-14"
    with pytest.raises(JudgeIdentityError, match="serves"):
        judge_on(qwen, model=name).score([ADD])
    local = judge_on(qwen, model=name, allow_model_mismatch=True)
    assert local.score([ADD]) == [pytest.approx(73.0, abs=1.0)]
    assert local.identity.reported_model == qwen.model
    other = judge_on(smol, model=name, allow_model_mismatch=True)  # same name, same cache, other server
    other.score([ADD])
    assert other.last_summary.cache_hits == 0 and other.last_summary.requests >= 1
    assert other.identity.reported_model == smol.model
    again = judge_on(qwen, model=name, allow_model_mismatch=True)
    assert again.score([ADD]) == local.score([ADD]) and again.last_summary.cache_hits == 1


def test_timeouts_are_retried_counted_and_recover(qwen, judge_on):
    judge = judge_on(qwen, timeout_s=0.01, max_retries=1, cache=None)
    assert judge.score(["What is 12 + 30? Answer with the number only."]) == [None]
    s = judge.last_summary
    assert (s.errors, s.timeouts, s.requests) == (1, 1, 2) and "Timeout" in judge.last_failure
    patient = judge_on(qwen, timeout_s=120.0, cache=None)
    assert patient.score(["What is 12 + 30? Answer with the number only."]) == [pytest.approx(42.0, abs=1.0)]


def test_no_continuation_means_a_loud_error_not_a_first_digit(qwen, judge_on):
    # 1% off the greedy "7","3" could lie anywhere in 1..100: within a 1-point tolerance without follow-ups
    judge = judge_on(qwen, continuation="none", cache=None, tolerance=1.0)
    assert judge.score([ADD]) == [pytest.approx(73.0, abs=1.0)]  # confident: the greedy path is enough
    unsure = "Pick a random whole number between 0 and 100. Answer with the number only."
    try:
        score = judge.score([unsure])[0]
    except JudgeNumberError as error:
        assert qwen.model in str(error) and "top first tokens" in str(error)
    else:  # the model happened to be sure: then the score must be a whole number's, not a digit's
        assert score is None or score > 9.5
