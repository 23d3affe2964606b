"""Multi-token numbers, judge identity and the token limit, against the scripted local HTTP server.

The real-server versions (llama.cpp serving Qwen2.5 and SmolLM2) are in ``test_judge_llama_server.py``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_judge_server import Digits, FakeJudgeServer, Logprobs, RejectBothLimits  # noqa: E402

from steerlab.judges import OpenAIJudge, aggregate_number_logprobs  # noqa: E402
from steerlab.judges.identity import JudgeIdentityError  # noqa: E402
from steerlab.judges.numbers import NumberReadError, NumberTree, read_score  # noqa: E402
from steerlab.judges.openai_judge import JudgeNumberError, greedy_prefixes  # noqa: E402

END = "<|end|>"
# A judge that writes numbers digit by digit and is unsure: 73 (0.54), 7 (0.06), 60 (0.15), 6 (0.15), words.
SPLIT = {
    "": [("7", 0.6), ("6", 0.3), ("Sure", 0.1)],
    "7": [("3", 0.9), (END, 0.1)],
    "6": [("0", 0.5), (END, 0.5)],
    "73": [(END, 1.0)],
    "60": [(END, 1.0)],
}
SPLIT_EXPECTED = (0.54 * 73 + 0.06 * 7 + 0.15 * 60 + 0.15 * 6) / 0.9
FIRST_DIGIT = (0.6 * 7 + 0.3 * 6) / 0.9  # what reading the first token alone gives: 6.67
CONFIDENT = {"": [("7", 0.995), ("6", 0.005)], "7": [("3", 0.99), (END, 0.01)], "73": [(END, 1.0)]}


def lp(pairs):
    return [(t, math.log(p)) for t, p in pairs]


def test_tree_by_hand_and_no_first_digit_reading():
    calls = []

    def cont(prefix):
        calls.append(prefix)
        return lp(SPLIT[prefix])

    tree = NumberTree(lp(SPLIT[""]))
    lo, hi = tree.interval()
    assert lo < FIRST_DIGIT < hi and hi - lo > 50  # unknown continuations: anything from 6 to 79
    score, follow_ups = read_score(tree, cont, min_mass=0.25, tolerance=0.01)
    assert score == pytest.approx(SPLIT_EXPECTED, abs=0.01) and follow_ups == 2 and calls == ["7", "6"]
    with pytest.raises(NumberReadError, match="'7'"):
        aggregate_number_logprobs(lp(SPLIT[""]))  # one position cannot tell: an error, not 6.67


def test_tree_edges():
    # "1" then "0" then "0" is 100; "10" then end is 10; a leading zero and numbers above 100 drop out
    tree = NumberTree(lp([("1", 1.0)]))
    tree.add("1", lp([("0", 1.0)]))
    tree.add("10", lp([("0", 0.5), (END, 0.5)]))
    assert tree.interval() == pytest.approx((55.0, 55.0))
    assert aggregate_number_logprobs(
        lp([("42", 0.5), ("101", 0.3), ("-5", 0.1), ("58", 0.1)])
    ) == pytest.approx((42 * 0.5 + 58 * 0.1) / 0.6)
    # whole-number tokens seen: single digits are complete numbers (the classic single-token reading)
    assert aggregate_number_logprobs(lp([("7", 0.5), ("80", 0.5)])) == pytest.approx(43.5)
    # the distribution after each digit prefix of a greedy answer "7", "3", end
    path = [("7", [("7", 0.0)]), ("3", [("3", 0.0)]), (END, [(END, 0.0)])]
    assert greedy_prefixes(path) == [("7", [("3", 0.0)]), ("73", [(END, 0.0)])]


@pytest.fixture
def make_judge(tmp_path):
    made = []

    def make(server, **kw):
        args = dict(base_url=server.base_url, max_retries=1, backoff_s=0.01, timeout_s=5.0, model="judge")
        judge = OpenAIJudge(**({"cache": tmp_path / "cache.sqlite"} | args | kw))
        made.append(judge)
        return judge

    yield make
    for j in made:
        j.close()


@pytest.mark.parametrize("how", ["grammar", "prefill"])
def test_digit_split_numbers_are_read_through_follow_ups(make_judge, how):
    with FakeJudgeServer() as server:
        server.on("Q", Digits(SPLIT, **{how: True}))
        judge = make_judge(server)
        assert judge.score(["Q score"]) == [pytest.approx(SPLIT_EXPECTED, abs=0.5)]
        s = judge.last_summary
        # the greedy answer "7", "3" shows what follows "7"; only "6" needs a follow-up, after a self-check
        # (forcing "7" must reproduce the greedy path) for each way tried
        assert s.scored == 1 and s.follow_ups == 1
        assert s.requests == (3 if how == "prefill" else 4)
        forced = [
            r.body
            for r in server.requests
            if "grammar" in r.body or r.body["messages"][-1]["role"] == "assistant"
        ]
        assert forced, "no follow-up request continued a prefix"
        last = server.requests[-1].body  # the follow-up for "6", sent the way the self-check chose
        if how == "grammar":
            assert last["grammar"] == 'root ::= "6" [^0-9]' and last["max_tokens"] == 2
        else:
            assert last["continue_final_message"] is True and last["messages"][-1]["content"] == "6"


def test_server_that_cannot_continue_fails_loudly_but_confident_answers_score(make_judge):
    with FakeJudgeServer() as server:
        server.on("UNSURE", Digits(SPLIT)).on("SURE", Digits(CONFIDENT))
        judge = make_judge(server, cache=None)
        assert judge.score(["SURE"]) == [pytest.approx(73.0, abs=1.0)]  # the greedy path is enough
        assert judge.last_summary.follow_ups == 0
        with pytest.raises(JudgeNumberError) as info:
            judge.score(["UNSURE"])
        message = str(info.value)
        assert "'judge'" in message and "'7' 0.60" in message and "digit" in message


def test_identity_mismatch_is_an_error_unless_allowed(make_judge):
    with FakeJudgeServer(models=["qwen.gguf"]) as server:
        server.on("Q", Logprobs([("40", 1.0)]))
        with pytest.raises(
            JudgeIdentityError, match="serves 'qwen.gguf', not the requested model 'gpt-4.1-mini'"
        ):
            make_judge(server, model="gpt-4.1-mini").score(["Q"])
        assert server.count() == 0, "a mismatched judge sent judgments"
        judge = make_judge(server, model="gpt-4.1-mini", allow_model_mismatch=True)
        assert judge.score(["Q"]) == [40.0]
        assert judge.identity.reported_model == "qwen.gguf" and "qwen.gguf @ http" in judge.identity.name
    with FakeJudgeServer(reported_model="someone-else") as server:
        server.on("Q", Logprobs([("40", 1.0)]))
        with pytest.raises(JudgeIdentityError, match="answered as model 'someone-else'"):
            make_judge(server, model="gpt-4.1-mini", cache=None).score(["Q"])
    with FakeJudgeServer(reported_model="gpt-4.1-mini-2025-04-14") as server:  # a dated snapshot is the same
        server.on("Q", Logprobs([("40", 1.0)]))
        judge = make_judge(server, model="gpt-4.1-mini", cache=None)
        assert judge.score(["Q"]) == [40.0]
        assert judge.identity.reported_model == "gpt-4.1-mini-2025-04-14"


def test_cache_never_serves_one_judge_as_another(make_judge):
    """Issue 13's scenario: a local server's scores stored under an OpenAI name are not OpenAI's."""
    with FakeJudgeServer(models=["local.gguf"]) as local, FakeJudgeServer() as remote:
        local.on("Q", Logprobs([("10", 1.0)]))
        remote.on("Q", Logprobs([("90", 1.0)]))
        first = make_judge(local, model="gpt-4.1-mini", allow_model_mismatch=True)
        assert first.score(["Q 1", "Q 2"]) == [10.0, 10.0]
        second = make_judge(remote, model="gpt-4.1-mini")
        assert second.score(["Q 1", "Q 2"]) == [90.0, 90.0]
        assert remote.count() == 2 and second.last_summary.cache_hits == 0
        assert second.identity.reported_model == "gpt-4.1-mini"
        again = make_judge(local, model="gpt-4.1-mini", allow_model_mismatch=True)
        assert again.score(["Q 1"]) == [10.0] and again.last_summary.cache_hits == 1
        assert again.identity.reported_model == "local.gguf"


def test_token_limit_falls_back_when_both_are_refused(make_judge):
    with FakeJudgeServer() as server:
        server.on("Q", RejectBothLimits(Logprobs([("55", 1.0)])))
        judge = make_judge(server, cache=None)
        assert judge.score(["Q 1", "Q 2"]) == [55.0, 55.0]
        assert judge.token_limit == "max_completion_tokens"
        last = server.requests[-1].body
        assert "max_tokens" not in last and last["max_completion_tokens"] == 3
