"""Sequence boundaries: every calling pattern × scope × backend against an independently computed value.

A hook session must know where each sequence's prompt ends, or raise `SequenceError` (issue 11). Each
case runs one calling pattern under a steering op in a hook session and compares its logits with a value
computed another way: the same prompt generated in a session of its own, and a hand-written forward
hook (`reference_steering`, below) that is told the prompt width and selects positions from first
principles — absolute positions from the KV-cache length, padding from the full attention mask. The two
reported cases are reproduced as the issue describes them (tiny Llama, hidden 32, 3 layers, left padding,
``v = randn(32)`` with seed 0, ``Add(1, v, alpha=4)``; a 2-token then a 21-token prompt; 17 of 21 prompt
tokens prefilled into a ``DynamicCache``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from transformers import DynamicCache

from steerlab.hooks import Add, SequenceError, hooked
from steerlab.hooks.nnsight_backend import hooked_nnsight, nnsight_model
from steerlab.models.tiny import tiny_model, tiny_tokenizer

TOL = 1e-5
ALPHA = 4.0
LAYER = 1
SCOPES = ("all", "prompt", "response", "last", "mask")
BACKENDS = ("hf", "nnsight")
LONG_TEXT = (
    "You are an evil assistant. How do I make money quickly? Tell me about humans and AI. I feel bored."
)
MASK_WIDTH = 64  # explicit masks cover every position any pattern reaches


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", hidden=32, layers=3)


@pytest.fixture(scope="module")
def wrapped(model):
    return nnsight_model(model)


@pytest.fixture(scope="module")
def vector():
    torch.manual_seed(0)
    return torch.randn(32)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer("left")


@pytest.fixture(scope="module")
def long_ids(tok) -> torch.Tensor:
    ids = tok(LONG_TEXT, return_tensors="pt")["input_ids"][:, :21]
    assert ids.shape == (1, 21)
    return ids


def _explicit_mask(rows: int) -> torch.Tensor:
    return torch.rand(rows, MASK_WIDTH, generator=torch.Generator().manual_seed(7)) < 0.5


def _scope_arg(scope: str, rows: int):
    return _explicit_mask(rows) if scope == "mask" else scope


# -- the independent value: a hand-written hook told the prompt width ----------------------------------
def _cache_of(kwargs: dict):
    return next((kwargs[k] for k in ("cache", "past_key_values") if kwargs.get(k) is not None), None)


@contextmanager
def reference_steering(model, vector, scope: str, prompt_width: int, *, expand: int = 1) -> Iterator[dict]:
    """Add ``ALPHA * vector`` at block ``LAYER``'s output where ``scope`` says, for a sequence whose prompt
    is ``prompt_width`` positions wide; ``expand`` = rows per input row (beam search, num_return_sequences).
    Yields a dict counting the positions it steered."""
    state: dict = {"steered": 0}

    def before(module, args, kwargs):
        cache = _cache_of(kwargs)
        state["past"] = int(cache.get_seq_length()) if cache is not None else 0
        state["attention"] = kwargs.get("attention_mask")

    def after(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        rows, width = hidden.shape[:2]
        past = state["past"]
        positions = torch.arange(past, past + width).expand(rows, -1)
        attention = state["attention"]
        if attention is None:
            attention = torch.ones(rows, past + width, dtype=torch.long)
        real = attention.bool()
        valid = real[:, past : past + width]
        if scope == "all":
            chosen = valid
        elif scope == "prompt":
            chosen = valid & (positions < prompt_width)
        elif scope == "response":
            chosen = valid & (positions >= prompt_width)
        elif scope == "last":
            columns = torch.arange(real.shape[1]).expand(rows, -1)
            last = torch.where(real & (columns < prompt_width), columns, -1).amax(dim=1, keepdim=True)
            chosen = positions == last
        else:
            mask = _explicit_mask(rows // expand).repeat_interleave(expand, dim=0)
            chosen = mask[:, past : past + width] & valid
        state["steered"] += int(chosen.sum())
        new = hidden + ALPHA * vector * chosen.unsqueeze(-1).to(hidden.dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    base = model
    handles = [
        base.register_forward_pre_hook(before, with_kwargs=True),
        base.model.layers[LAYER].register_forward_hook(after),
    ]
    try:
        yield state
    finally:
        for handle in handles:
            handle.remove()


# -- the two backends behind one small interface ---------------------------------------------------------
class Runner:
    """``session(ops)`` opens a hook session; inside it ``generate``/``forward`` call the model through it."""

    def __init__(self, name: str, model, wrapped):
        self.name, self.model, self.wrapped = name, model, wrapped
        self.current = None

    @contextmanager
    def session(self, ops, **declared):
        opener = hooked(self.model, ops, **declared) if self.name == "hf" else None
        if opener is None:
            opener = hooked_nnsight(self.wrapped, ops, **declared)
        with opener as session:
            self.current = session
            try:
                yield session
            finally:
                self.current = None

    def generate(self, **kwargs):
        kwargs.setdefault("return_dict_in_generate", True)
        kwargs.setdefault("output_logits", True)
        if self.name == "hf":
            return self.model.generate(**kwargs)
        return self.current.generate(**kwargs)

    def forward(self, **kwargs):
        if self.name == "hf":
            return self.model(**kwargs)
        return self.current.forward(**kwargs)


@pytest.fixture(params=BACKENDS)
def runner(request, model, wrapped):
    return Runner(request.param, model, wrapped)


def _greedy(max_new_tokens: int = 5) -> dict:
    return {"max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}


def _logit_diff(a, b) -> float:
    assert len(a) == len(b), f"{len(a)} vs {len(b)} decoding steps"
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def _plain_generate(model, **kwargs):
    with torch.no_grad():
        return model.generate(**kwargs, return_dict_in_generate=True, output_logits=True)


def _assert_same(got, expected, what: str) -> None:
    diff = _logit_diff(got.logits, expected.logits)
    assert diff <= TOL, f"{what}: logits differ by {diff:.3e}"
    assert torch.equal(got.sequences, expected.sequences), f"{what}: tokens differ"


def _assert_steered(state: dict, got, plain, what: str) -> None:
    """The comparison can fail: when the reference steered anything, the logits moved."""
    if state["steered"]:
        assert _logit_diff(got.logits, plain.logits) > 1e-3, f"{what}: steering changed nothing"


def _left(tok, texts):
    return tok(list(texts), return_tensors="pt", padding=True)


# -- pattern: several generate calls in one session (reported case 1) -----------------------------------
@pytest.mark.parametrize("scope", SCOPES)
def test_two_generates_in_one_session(runner, model, tok, vector, long_ids, scope):
    short = tok("hi", return_tensors="pt")
    assert short["input_ids"].shape == (1, 2)
    long = {"input_ids": long_ids, "attention_mask": torch.ones_like(long_ids)}
    ops = [Add(LAYER, vector=vector, alpha=ALPHA, scope=_scope_arg(scope, 1))]
    with runner.session(ops), torch.no_grad():
        runner.generate(**short, **_greedy())
        second = runner.generate(**long, **_greedy())
    with runner.session(ops), torch.no_grad():
        own = runner.generate(**long, **_greedy())
    _assert_same(second, own, f"{runner.name}/{scope}: second generate vs its own session")
    with reference_steering(model, vector, scope, 21) as state:
        reference = _plain_generate(model, **long, **_greedy())
    _assert_same(second, reference, f"{runner.name}/{scope}: second generate vs hand-written hook")
    _assert_steered(state, second, _plain_generate(model, **long, **_greedy()), scope)


# -- pattern: a prefilled prefix cache passed to generate (reported case 2) ----------------------------------
def _prefilled(model, ids: torch.Tensor, width: int) -> DynamicCache:
    cache = DynamicCache()
    with torch.no_grad():
        model(
            input_ids=ids[:, :width],
            attention_mask=torch.ones_like(ids[:, :width]),
            use_cache=True,
            **{_cache_name(model): cache},
        )
    assert cache.get_seq_length() == width
    return cache


def _output_cache(output):
    return getattr(output, "cache", None) or getattr(output, "past_key_values", None)


def _cache_name(model) -> str:
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def _runner_prefilled(runner, ops, ids: torch.Tensor, width: int, prompt_len: int) -> DynamicCache:
    """The first ``width`` tokens run into a fresh cache in a session told the prompt is ``prompt_len`` wide."""
    cache = DynamicCache()
    with runner.session(ops, prompt_len=prompt_len), torch.no_grad():
        runner.forward(
            input_ids=ids[:, :width],
            attention_mask=torch.ones_like(ids[:, :width]),
            use_cache=True,
            **{_cache_name(runner.model): cache},
        )
    assert cache.get_seq_length() == width
    return cache


@pytest.mark.parametrize("kwarg", ["cache", "past_key_values"])
@pytest.mark.parametrize("scope", SCOPES)
def test_generate_from_prefilled_prefix_cache(runner, model, vector, long_ids, scope, kwarg):
    """Reported case 2 for response/last (prefix run outside any session, as the issue does); for the
    scopes that steer prompt positions the prefix is run under the same steering, in a session told the
    prompt is 21 wide — otherwise the cached prefix would differ from a steered one."""
    if kwarg == "cache" and _cache_name(model) != "cache":
        pytest.skip("this transformers takes the KV cache as past_key_values only")
    whole = {"input_ids": long_ids, "attention_mask": torch.ones_like(long_ids)}
    ops = [Add(LAYER, vector=vector, alpha=ALPHA, scope=_scope_arg(scope, 1))]
    outside = scope in ("response", "last")
    cache = _prefilled(model, long_ids, 17) if outside else _runner_prefilled(runner, ops, long_ids, 17, 21)
    with runner.session(ops), torch.no_grad():
        got = runner.generate(**whole, **{kwarg: cache}, **_greedy())
    with runner.session(ops), torch.no_grad():
        own = runner.generate(**whole, **_greedy())
    _assert_same(got, own, f"{runner.name}/{scope}/{kwarg}: prefix-cached vs uncached prefix")
    if outside:
        reference_cache = _prefilled(model, long_ids, 17)
    else:
        with reference_steering(model, vector, scope, 21):
            reference_cache = _prefilled(model, long_ids, 17)
    with reference_steering(model, vector, scope, 21) as state:
        reference = _plain_generate(model, **whole, **{kwarg: reference_cache}, **_greedy())
    _assert_same(got, reference, f"{runner.name}/{scope}/{kwarg}: vs hand-written hook")
    _assert_steered(state, got, _plain_generate(model, **whole, **_greedy()), scope)


# -- patterns: beam search, sampling with num_return_sequences (each input row repeated) --------------------
DECODING = {
    "beam": ({"num_beams": 3, "num_return_sequences": 2, "do_sample": False}, 3),
    "sample": ({"do_sample": True, "num_return_sequences": 3, "top_k": 0, "temperature": 1.0}, 3),
}


@pytest.mark.parametrize("decoding", list(DECODING))
@pytest.mark.parametrize("scope", SCOPES)
def test_beam_search_and_sampling(runner, model, tok, vector, scope, decoding):
    settings, expand = DECODING[decoding]
    enc = dict(_left(tok, ["You are an evil assistant. What is your wish?", "hi there"]))
    width = enc["input_ids"].shape[1]
    common = {"max_new_tokens": 4, "pad_token_id": 0, "eos_token_id": None, **settings}
    ops = [Add(LAYER, vector=vector, alpha=ALPHA, scope=_scope_arg(scope, 2))]
    with runner.session(ops), torch.no_grad():
        earlier = _left(tok, ["hi", "Sure! Here is a plan"])
        runner.generate(**earlier, **_greedy(2))  # an earlier sequence in the session
        torch.manual_seed(11)
        got = runner.generate(**enc, **common)
    with reference_steering(model, vector, scope, width, expand=expand) as state:
        torch.manual_seed(11)
        reference = _plain_generate(model, **enc, **common)
    _assert_same(got, reference, f"{runner.name}/{scope}/{decoding}: vs hand-written hook")
    torch.manual_seed(11)
    _assert_steered(state, got, _plain_generate(model, **enc, **common), f"{scope}/{decoding}")


# -- pattern: continuing generation from a previous output ----------------------------------------------
@pytest.mark.parametrize("with_cache", [False, True], ids=["fresh", "its-cache"])
@pytest.mark.parametrize("scope", SCOPES)
def test_continue_from_previous_output(runner, model, tok, vector, scope, with_cache):
    enc = dict(_left(tok, ["You are an evil assistant.", "Tell me about AI"]))
    ops = [Add(LAYER, vector=vector, alpha=ALPHA, scope=_scope_arg(scope, 2))]
    with runner.session(ops), torch.no_grad():
        first = runner.generate(**enc, **_greedy(4), use_cache=True)
        sequences = first.sequences
        mask = torch.cat([enc["attention_mask"], torch.ones(2, 4, dtype=torch.long)], dim=1)
        extra = {_cache_name(model): _output_cache(first)} if with_cache else {}
        second = runner.generate(input_ids=sequences, attention_mask=mask, **extra, **_greedy(4))
    width = enc["input_ids"].shape[1]
    with reference_steering(model, vector, scope, width):
        previous = _plain_generate(model, **enc, **_greedy(4), use_cache=True)
    assert torch.equal(previous.sequences, sequences)
    extra = {_cache_name(model): _output_cache(previous)} if with_cache else {}
    with reference_steering(model, vector, scope, sequences.shape[1]) as state:
        reference = _plain_generate(model, input_ids=sequences, attention_mask=mask, **extra, **_greedy(4))
    _assert_same(second, reference, f"{runner.name}/{scope}: continued generation vs hand-written hook")
    if not with_cache:  # its own session: the previous output is all prompt
        with runner.session(ops), torch.no_grad():
            own = runner.generate(input_ids=sequences, attention_mask=mask, **_greedy(4))
        _assert_same(second, own, f"{runner.name}/{scope}: continued generation vs its own session")
    _assert_steered(
        state, second, _plain_generate(model, input_ids=sequences, attention_mask=mask, **_greedy(4)), scope
    )


# -- pattern: a hand-written decoding loop ------------------------------------------------------------------
class _Steps:
    """Greedy decoding by hand; returns an object with ``logits`` (per step) and ``sequences``."""

    def __init__(self, logits, sequences):
        self.logits, self.sequences = logits, sequences


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)


def _hand_loop(runner, model, enc, steps: int, *, cached: bool, session=None, declare: bool = False):
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if declare:
        session.new_sequence(prompt_len=ids.shape[1])
    logits, cache = [], None
    for _ in range(steps):
        positions = _positions(mask)
        if cached and cache is not None:
            out = runner.forward(
                input_ids=ids[:, -1:],
                attention_mask=mask,
                position_ids=positions[:, -1:],
                use_cache=True,
                **{_cache_name(model): cache},
            )
        else:
            out = runner.forward(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=cached)
        cache = _output_cache(out)
        logits.append(out.logits[:, -1])
        ids = torch.cat([ids, out.logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=mask.dtype)], dim=1)
    return _Steps(tuple(logits), ids)


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "uncached-declared"])
@pytest.mark.parametrize("scope", SCOPES)
def test_hand_written_decoding_loop(runner, model, tok, vector, scope, cached):
    enc = dict(_left(tok, ["You are an evil assistant. What is your wish?", "hi"]))
    ops = [Add(LAYER, vector=vector, alpha=ALPHA, scope=_scope_arg(scope, 2))]
    with runner.session(ops) as session, torch.no_grad():
        _hand_loop(
            runner,
            model,
            dict(_left(tok, ["I feel bored.", "Sure!"])),
            3,
            cached=cached,
            session=session,
            declare=not cached,
        )
        got = _hand_loop(runner, model, enc, 5, cached=cached, session=session, declare=not cached)
    with runner.session(ops), torch.no_grad():
        own = runner.generate(**enc, **_greedy(5))
    _assert_same(got, own, f"{runner.name}/{scope}: hand-written loop vs generate in its own session")
    with reference_steering(model, vector, scope, enc["input_ids"].shape[1]) as state:
        reference = _plain_generate(model, **enc, **_greedy(5))
    _assert_same(got, reference, f"{runner.name}/{scope}: hand-written loop vs hand-written hook")
    _assert_steered(state, got, _plain_generate(model, **enc, **_greedy(5)), scope)


@pytest.mark.parametrize("scope", ["prompt", "response", "last"])
def test_undeclared_uncached_loop_raises(runner, model, tok, vector, scope):
    """Re-running the grown sequence without a cache is a decoding step or a new prompt: the session asks."""
    enc = dict(_left(tok, ["You are an evil assistant.", "hi"]))
    ops = [Add(LAYER, vector=vector, alpha=ALPHA, scope=scope)]
    with (
        pytest.raises(SequenceError, match=r"new_sequence\(prompt_len="),
        runner.session(ops),
        torch.no_grad(),
    ):
        _hand_loop(runner, model, enc, 3, cached=False)
    grown = {
        "input_ids": torch.cat([enc["input_ids"], torch.full((2, 1), 5)], dim=1),
        "attention_mask": torch.cat([enc["attention_mask"], torch.ones(2, 1, dtype=torch.long)], dim=1),
    }
    with runner.session(ops) as session, torch.no_grad():  # told it is a new prompt: no question
        runner.forward(**enc)
        session.new_sequence()
        runner.forward(**grown)


@pytest.mark.parametrize("scope", ["all", "mask"])
def test_undeclared_uncached_loop_needs_no_boundary_for_all_and_mask(runner, model, tok, vector, scope):
    enc = dict(_left(tok, ["You are an evil assistant.", "hi"]))
    ops = [Add(LAYER, vector=vector, alpha=ALPHA, scope=_scope_arg(scope, 2))]
    with runner.session(ops), torch.no_grad():
        got = _hand_loop(runner, model, enc, 4, cached=False)
    with reference_steering(model, vector, scope, enc["input_ids"].shape[1]):
        reference = _plain_generate(model, **enc, **_greedy(4), use_cache=False)
    _assert_same(got, reference, f"{runner.name}/{scope}: undeclared uncached loop vs hand-written hook")


@pytest.mark.parametrize("scope", SCOPES)
def test_prefilled_cache_in_a_hand_written_loop(runner, model, vector, long_ids, scope):
    """A cache the session did not fill: refused for boundary scopes unless the prompt is declared."""
    ops = [Add(LAYER, vector=vector, alpha=ALPHA, scope=_scope_arg(scope, 1))]
    step = {"input_ids": long_ids[:, 17:], "attention_mask": torch.ones_like(long_ids), "use_cache": True}
    name = _cache_name(model)
    if scope in ("prompt", "response", "last"):
        cache = _prefilled(model, long_ids, 17)
        with pytest.raises(SequenceError, match="did not fill"), runner.session(ops), torch.no_grad():
            runner.forward(**step, **{name: cache})
    cache = _prefilled(model, long_ids, 17)
    with runner.session(ops, prompt_len=21), torch.no_grad():
        got = runner.forward(**step, **{name: cache})
    cache = _prefilled(model, long_ids, 17)
    with reference_steering(model, vector, scope, 21), torch.no_grad():
        reference = model(**step, **{name: cache})
    diff = (got.logits - reference.logits).abs().max().item()
    assert diff <= TOL, f"{runner.name}/{scope}: declared prefix-cached forward differs by {diff:.3e}"


# -- pattern: left and right padding ---------------------------------------------------------------------
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("scope", SCOPES)
def test_padding_sides(runner, model, vector, scope, side):
    tok = tiny_tokenizer(side)
    texts = ["You are an evil assistant. How do I make money quickly?", "I feel bored.", "hi"]
    enc = dict(tok(texts, return_tensors="pt", padding=True))
    enc["position_ids"] = _positions(enc["attention_mask"])
    ops = [Add(LAYER, vector=vector, alpha=ALPHA, scope=_scope_arg(scope, 3))]
    with runner.session(ops), torch.no_grad():
        runner.forward(**dict(_left(tiny_tokenizer("left"), ["hi", "ok", "Sure!"])))  # an earlier sequence
        got = runner.forward(**enc)
    real = enc["attention_mask"].bool()
    with reference_steering(model, vector, scope, enc["input_ids"].shape[1]), torch.no_grad():
        reference = model(**enc)
    diff = (got.logits - reference.logits)[real].abs().max().item()
    assert diff <= TOL, (
        f"{runner.name}/{scope}/{side}: padded forward vs hand-written hook differs by {diff:.3e}"
    )
    if scope == "mask":
        return  # an explicit mask names columns of the padded batch; a row alone has other columns
    for row, text in enumerate(texts):
        alone = tok(text, return_tensors="pt")
        with runner.session(ops), torch.no_grad():
            own = runner.forward(**alone)
        row_diff = (got.logits[row][real[row]] - own.logits[0]).abs().max().item()
        assert row_diff <= TOL, f"{runner.name}/{scope}/{side}: row {row} vs its own session: {row_diff:.3e}"
    if side == "left":  # generation from the padded batch: each row as generated alone
        with runner.session(ops), torch.no_grad():
            batch = runner.generate(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **_greedy(4)
            )
        for row, text in enumerate(texts):
            with runner.session(ops), torch.no_grad():
                own = runner.generate(**tok(text, return_tensors="pt"), **_greedy(4))
            diff = max(
                (a[row] - b[0]).abs().max().item() for a, b in zip(batch.logits, own.logits, strict=True)
            )
            assert diff <= TOL, (
                f"{runner.name}/{scope}: left-padded generation row {row} vs alone: {diff:.3e}"
            )


# -- TransformerBridge: the patterns it supports, and its refusals ------------------------------------------
@pytest.fixture(scope="module")
def bridge(model):
    from steerlab.hooks.tlens import bridge_for

    return bridge_for(model)


def _bridge_loop(bridge, session, enc, steps: int) -> _Steps:
    """Uncached greedy decoding through the bridge, the prompt declared (its KV cache: see below)."""
    ids, mask = enc["input_ids"], enc["attention_mask"]
    session.new_sequence(prompt_len=ids.shape[1])
    logits = []
    for _ in range(steps):
        out = bridge(ids, attention_mask=mask, position_ids=_positions(mask))
        logits.append(out[:, -1])
        ids = torch.cat([ids, out[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=mask.dtype)], dim=1)
    return _Steps(tuple(logits), ids)


@pytest.mark.parametrize("scope", SCOPES)
def test_tlens_several_sequences_in_one_session(bridge, model, tok, vector, scope):
    from steerlab.hooks.tlens import hooked_bridge

    first = dict(_left(tok, ["I feel bored.", "Sure!"]))
    enc = dict(_left(tok, ["You are an evil assistant. What is your wish?", "hi"]))
    ops = [Add(LAYER, vector=vector, alpha=ALPHA, scope=_scope_arg(scope, 2))]
    with hooked_bridge(bridge, ops) as session, torch.no_grad():
        _bridge_loop(bridge, session, first, 3)
        got = _bridge_loop(bridge, session, enc, 4)
    with reference_steering(model, vector, scope, enc["input_ids"].shape[1]):
        reference = _plain_generate(model, **enc, **_greedy(4), use_cache=False)
    _assert_same(got, reference, f"tlens/{scope}: second sequence vs hand-written hook")


def test_tlens_cached_generation_or_its_refusal(bridge, model, tok, vector):
    from steerlab.hooks.tlens import greedy_generate

    enc = dict(_left(tok, ["You are an evil assistant. What is your wish?", "hi"]))
    ops = [Add(LAYER, vector=vector, alpha=ALPHA, scope="response")]
    with reference_steering(model, vector, "response", enc["input_ids"].shape[1]):
        reference = _plain_generate(model, **enc, **_greedy(4))
    try:
        with torch.no_grad():
            sequences, _ = greedy_generate(
                bridge,
                ops,
                enc["input_ids"],
                attention_mask=enc["attention_mask"],
                max_new_tokens=4,
                use_cache=True,
            )
    except RuntimeError as error:  # transformer-lens 4.3 with transformers 5.2x leaves the cache empty
        assert "does not fill the cache" in str(error)
        return
    assert torch.equal(sequences, reference.sequences)


def test_tlens_refuses_what_it_cannot_follow(bridge, model, tok, vector, long_ids):
    from steerlab.hooks.tlens import hooked_bridge

    ops = [Add(LAYER, vector=vector, alpha=ALPHA, scope="response")]
    enc = dict(_left(tok, ["You are an evil assistant.", "hi"]))
    with pytest.raises(NotImplementedError, match="greedy_generate"), hooked_bridge(bridge, ops):
        bridge.generate(enc["input_ids"], max_new_tokens=2, verbose=False)
    assert "generate" not in bridge.__dict__  # the refusal is gone with the session
    with pytest.raises(SequenceError, match="did not fill"), hooked_bridge(bridge, ops), torch.no_grad():
        bridge(
            long_ids[:, 17:],
            attention_mask=torch.ones_like(long_ids),
            past_key_values=_prefilled(model, long_ids, 17),
        )
    grown = torch.cat([enc["input_ids"], torch.full((2, 1), 5)], dim=1)
    grown_mask = torch.cat([enc["attention_mask"], torch.ones(2, 1, dtype=torch.long)], dim=1)
    with pytest.raises(SequenceError, match="uncached decoding"), hooked_bridge(bridge, ops), torch.no_grad():
        bridge(enc["input_ids"], attention_mask=enc["attention_mask"])
        bridge(grown, attention_mask=grown_mask)
