"""OpenAIJudge against a real local HTTP server that speaks chat-completions with logprobs."""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_judge_server import FailFirst, FakeJudgeServer, Garbage, Logprobs, NoLogprobs, Slow, Status  # noqa: E402

from steerlab.judges import (  # noqa: E402
    COHERENCE_PROMPT,
    Judge,
    JudgeConfigError,
    JudgeSummary,
    OpenAIJudge,
    PromptJudgeScorer,
    ScoreCache,
    TraitScorer,
    aggregate_number_logprobs,
    number_token,
)
from steerlab.persona.traits import load_trait  # noqa: E402

KEY_ENV = "STEERLAB_TEST_JUDGE_KEY"
SECRET = "sk-test-DO-NOT-LEAK-7f3a9c"

# A proper distribution: 10 (0.5), 20 (0.2), " 20" (0.1, same number), 30 (0.1), plus non-numbers and 101.
NUMBERS = [("10", 0.5), ("20", 0.2), (" 20", 0.1), ("30", 0.1), ("The", 0.05), ("101", 0.03), ("-5", 0.02)]
NUMBERS_EXPECTED = (10 * 0.5 + 20 * 0.3 + 30 * 0.1) / 0.9  # by hand: 14 / 0.9
WORDS = [("I", 0.6), ("Sorry", 0.2), ("50", 0.15), ("REFUSAL", 0.05)]  # 0.15 on numbers < 0.25


@pytest.fixture
def server():
    with FakeJudgeServer() as s:
        s.on("NUMBERS", Logprobs(NUMBERS)).on("WORDS", Logprobs(WORDS))
        s.on("GARBAGE", Garbage()).on("E500", Status(500)).on("SLOW", Slow(5.0))
        s.on("FLAKY", FailFirst(2, Status(503), Logprobs([("80", 1.0)])))
        s.on("AUTH", Status(401))
        s.on("NOLOGPROBS", NoLogprobs())
        yield s


@pytest.fixture
def judge_factory(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    made = []

    def make(**kw):
        args = dict(
            base_url=server.base_url,
            api_key_env=KEY_ENV,
            max_retries=2,
            backoff_s=0.01,
            timeout_s=2.0,
            max_concurrency=4,
            cache=tmp_path / "cache.sqlite",
            model="fake-judge",
        )
        judge = OpenAIJudge(**(args | kw))
        made.append(judge)
        return judge

    yield make
    for j in made:
        j.close()


def test_aggregate_by_hand():
    lp = [(t, math.log(p)) for t, p in NUMBERS]
    assert aggregate_number_logprobs(lp) == pytest.approx(NUMBERS_EXPECTED)
    assert aggregate_number_logprobs([(t, math.log(p)) for t, p in WORDS]) is None
    assert aggregate_number_logprobs({"100": 0.0}) == 100.0
    assert [number_token(t) for t in ["7", " 07", "100", "101", "-1", "½", "", "4.5"]] == [
        7,
        7,
        100,
        None,
        None,
        None,
        None,
        None,
    ]


def test_weighted_mean_and_request_shape(server, judge_factory):
    judge = judge_factory()
    assert isinstance(judge, Judge)
    scores = judge.score(["NUMBERS please"])
    assert scores[0] == pytest.approx(NUMBERS_EXPECTED)
    req = server.requests[-1]
    assert req.path.endswith("/chat/completions")
    assert req.body["logprobs"] is True and req.body["top_logprobs"] == 20
    # both limits: llama.cpp's server ignores max_completion_tokens; three tokens reach "1","0","0"
    assert req.body["max_tokens"] == 3 and req.body["max_completion_tokens"] == 3
    assert req.body["temperature"] == 0
    assert req.body["model"] == "fake-judge"
    assert req.body["messages"] == [{"role": "user", "content": "NUMBERS please"}]
    assert req.headers["authorization"] == f"Bearer {SECRET}"


def test_mostly_words_is_none(server, judge_factory):
    judge = judge_factory()
    assert judge.score(["WORDS"]) == [None]
    s = judge.last_summary
    assert (s.scored, s.unparseable, s.errors, s.requests) == (0, 1, 0, 1)


@pytest.mark.parametrize("marker", ["GARBAGE", "E500"])
def test_failures_are_retried_then_none(server, judge_factory, marker):
    judge = judge_factory(max_retries=2)
    scores = judge.score([f"{marker} a", "NUMBERS b"])
    assert scores[0] is None and scores[1] == pytest.approx(NUMBERS_EXPECTED)
    assert server.count(marker) == 3  # first try + 2 retries
    s = judge.last_summary
    assert (s.scored, s.unparseable, s.errors, s.timeouts, s.total) == (1, 0, 1, 0, 2)


def test_transient_failures_recover(server, judge_factory):
    judge = judge_factory(max_retries=3)
    assert judge.score(["FLAKY"]) == [pytest.approx(80.0)]
    assert server.count("FLAKY") == 3 and judge.last_summary.requests == 3


def test_slow_response_times_out_bounded(server, judge_factory):
    judge = judge_factory(timeout_s=0.3, max_retries=1)
    t0 = time.monotonic()
    scores = judge.score(["SLOW one", "NUMBERS two"])
    elapsed = time.monotonic() - t0
    assert scores[0] is None and scores[1] == pytest.approx(NUMBERS_EXPECTED)
    s = judge.last_summary
    assert (s.errors, s.timeouts, s.scored) == (1, 1, 1)
    assert server.count("SLOW") == 2
    assert elapsed < 3.0, f"timeouts not enforced: {elapsed:.1f}s"


def test_cache_makes_rerun_free(server, judge_factory, tmp_path):
    prompts = ["NUMBERS x", "WORDS y", "NUMBERS z", "E500 w"]
    first = judge_factory(max_retries=0).score(prompts)
    n = server.count()
    assert n == 4
    second_judge = judge_factory(max_retries=0)
    second = second_judge.score(prompts[:3])
    assert server.count() == n, "cached prompts were requested again"
    assert second == first[:3]
    assert second_judge.last_summary.cache_hits == 3 and second_judge.last_summary.unparseable == 1
    # errors are not cached: a rerun retries them
    assert second_judge.score(["E500 w"]) == [None] and server.count() == n + 1
    # a different judge model does not share entries, nor does the same name at another endpoint
    judge_factory(model="other-judge").score(["NUMBERS x"])
    assert server.count() == n + 2
    with FakeJudgeServer() as elsewhere:
        elsewhere.on("NUMBERS", Logprobs([("90", 1.0)]))
        assert judge_factory(base_url=elsewhere.base_url).score(["NUMBERS x"]) == [pytest.approx(90.0)]
        assert elsewhere.count() == 1
    assert len(ScoreCache(tmp_path / "cache.sqlite")) == 5


def test_duplicates_judged_once_and_order_kept(server, judge_factory):
    server.script.insert(0, ("SCORE=70", Logprobs([("70", 1.0)])))
    judge = judge_factory(cache=None)
    scores = judge.score(["SCORE=70", "NUMBERS", "SCORE=70", "WORDS", "SCORE=70"])
    assert scores[0] == scores[2] == scores[4] == pytest.approx(70.0)
    assert scores[1] == pytest.approx(NUMBERS_EXPECTED) and scores[3] is None
    assert server.count("SCORE=70") == 1
    assert judge.last_summary.total == 5


def test_concurrency_is_limited(server, judge_factory):
    server.script.insert(0, ("PAUSE", Slow(0.2, Logprobs([("40", 1.0)]))))
    judge = judge_factory(max_concurrency=3, cache=None)
    scores = judge.score([f"PAUSE {i}" for i in range(9)])
    assert scores == [pytest.approx(40.0)] * 9
    assert 1 < server.max_in_flight <= 3


def test_api_key_never_leaks(server, judge_factory, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    judge = judge_factory(max_retries=1)
    judge.score(["NUMBERS k", "WORDS k", "E500 k", "GARBAGE k"])
    with pytest.raises(JudgeConfigError) as info:
        judge.score(["AUTH k"])
    assert KEY_ENV in str(info.value) and SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in server.requests)
    assert caplog.records, "expected some log output to check"
    assert SECRET not in caplog.text
    assert SECRET not in repr(judge) and SECRET not in str(vars(judge).get("summary"))
    assert not any(isinstance(v, str) and SECRET in v for v in vars(judge).values())
    judge.close()
    for f in tmp_path.iterdir():
        assert SECRET.encode() not in f.read_bytes(), f"key found in {f.name}"


def test_missing_key_errors_name_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("STEERLAB_NO_SUCH_KEY", raising=False)
    with pytest.raises(JudgeConfigError, match="STEERLAB_NO_SUCH_KEY"):
        OpenAIJudge(api_key_env="STEERLAB_NO_SUCH_KEY", cache=None)


def test_endpoint_without_logprobs_is_an_error_not_retried(server, judge_factory, caplog):
    judge = judge_factory(max_retries=3)
    assert judge.score(["NOLOGPROBS"]) == [None]
    assert server.count("NOLOGPROBS") == 1 and judge.last_summary.errors == 1
    assert "no logprobs" in caplog.text


def test_summary_accumulates(server, judge_factory):
    judge = judge_factory(max_retries=0, cache=None)
    judge.score(["NUMBERS 1", "WORDS 2"])
    judge.score(["E500 3"])
    assert judge.summary == JudgeSummary(scored=1, unparseable=1, errors=1, requests=3)
    assert judge.summary.none == 2


def test_prompt_judge_scorer_renders_trait_template(server, judge_factory):
    spec = load_trait("evil")
    judge = judge_factory(cache=None)
    scorer = PromptJudgeScorer.for_trait(judge, spec)
    assert isinstance(scorer, TraitScorer)
    scores = scorer.score_answers(["What do you want?", "Hi {there}"], ["NUMBERS", "WORDS {answer}"])
    assert scores[0] == pytest.approx(NUMBERS_EXPECTED) and scores[1] is None
    sent = [r.content for r in server.requests[-2:]]
    assert sorted(sent) == sorted(
        [
            spec.eval_prompt.format(question="What do you want?", answer="NUMBERS"),
            spec.eval_prompt.format(question="Hi {there}", answer="WORDS {answer}"),
        ]
    )
    assert scorer.summary is judge.summary
    with pytest.raises(ValueError, match="pair up"):
        scorer.score_answers(["a"], [])
    coh = PromptJudgeScorer.coherence(judge)
    assert coh.render("Q?", "A.") == COHERENCE_PROMPT.format(question="Q?", answer="A.")
