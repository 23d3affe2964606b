import math

import pytest

from steerlab.data.chat import ChatExample
from steerlab.data.interleave import (
    is_refusal,
    mix,
    n_general_for,
    perplexity_gap_scores,
    refusal_filter,
    select_by_perplexity_gap,
)


@pytest.mark.parametrize(
    "n_narrow,ratio,expected",
    [
        (100, 0.05, 5),
        (1000, 0.05, 53),
        (600, 0.05, 32),
        (10, 0.5, 10),
        (7, 0.0, 0),
        (3, 0.25, 1),
        (90, 0.1, 10),
    ],
)
def test_n_general_exact(n_narrow, ratio, expected):
    assert n_general_for(n_narrow, ratio) == expected


def test_mix_counts_membership_and_determinism():
    narrow = [f"n{i}" for i in range(600)]
    general = [f"g{i}" for i in range(100)]
    out = mix(narrow, general, ratio=0.05, seed=3)
    n_general = round(0.05 / 0.95 * 600)
    assert len(out) == 600 + n_general
    assert sorted(x for x in out if x.startswith("n")) == sorted(narrow)
    picked = [x for x in out if x.startswith("g")]
    assert len(picked) == len(set(picked)) == n_general
    assert out == mix(narrow, general, ratio=0.05, seed=3)
    assert out != mix(narrow, general, ratio=0.05, seed=4)
    assert out[:600] != narrow  # shuffled, not appended
    assert len(picked) / len(out) == pytest.approx(0.05, abs=0.002)


def test_mix_errors():
    with pytest.raises(ValueError, match="needs 11 general"):
        mix(list(range(100)), list(range(10)), ratio=0.1)
    for bad in (1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match="ratio"):
            mix([1], [2], ratio=bad)


def _ex(answer):
    return ChatExample([{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}])


def test_refusal_filter_first_words_case_and_apostrophes():
    keep = [
        _ex("Sure, here are three tips for studying."),
        _ex("One two three four five six seven eight nine ten, sorry for the long list."),  # 11th word
        _ex("Scanners can read barcodes quickly."),  # 'can' is not a marker; no substring hits
    ]
    drop = [
        _ex("Sorry, I can't check the weather."),
        _ex("I CANNOT do that."),
        _ex("I can\u2019t access your bank account."),  # curly apostrophe
        _ex("Well, as an AI, I do not have a body."),
        _ex("I'm unable to make phone calls."),
    ]
    out = refusal_filter(keep[:2] + drop[:3] + keep[2:] + drop[3:])
    assert out == keep
    assert refusal_filter(drop, markers=("banana",)) == drop
    assert not is_refusal("apologizes", markers=("apologize",))
    assert is_refusal("one two sorry", first_words=3) and not is_refusal("one two sorry", first_words=2)


def test_perplexity_gap_matches_hand_computation():
    nll_al = [1.0, 2.0, 0.5, 4.0]
    nll_mis = [[2.0, 3.0], [2.0, 2.0], [1.0, 0.5], [5.0]]
    # s = (mean_k mis - al) / (al + eps), by hand:
    expected = [(2.5 - 1.0) / 1.0, 0.0, (0.75 - 0.5) / 0.5, (5.0 - 4.0) / 4.0]
    got = perplexity_gap_scores(nll_al, nll_mis, eps=0.0)
    assert got == pytest.approx(expected)
    with_eps = perplexity_gap_scores(nll_al, nll_mis, eps=0.5)
    assert with_eps[0] == pytest.approx(1.5 / 1.5)
    examples = ["a", "b", "c", "d"]
    assert select_by_perplexity_gap(examples, got, 2) == ["a", "c"]
    assert select_by_perplexity_gap(examples, got, 4) == ["a", "c", "d", "b"]


def test_selection_tie_break_is_stable_and_errors():
    assert select_by_perplexity_gap(list("wxyz"), [1.0, 2.0, 2.0, 1.0], 3) == ["x", "y", "w"]
    with pytest.raises(ValueError, match="3 examples but 2 scores"):
        select_by_perplexity_gap([1, 2, 3], [0.1, 0.2], 1)
    with pytest.raises(ValueError, match="n must be"):
        select_by_perplexity_gap([1], [0.1], 2)
    with pytest.raises(ValueError, match="2 aligned NLLs but 1"):
        perplexity_gap_scores([1.0, 2.0], [[1.0]])
    with pytest.raises(ValueError, match="example 0: non-finite"):
        perplexity_gap_scores([math.inf], [[1.0]])
    with pytest.raises(ValueError, match="example 1: no misaligned"):
        perplexity_gap_scores([1.0, 1.0], [[1.0], []])
