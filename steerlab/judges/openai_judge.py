"""A 0-100 judge behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp servers).

Scoring (``steerlab.judges.numbers``): the judge generates up to three tokens greedily at temperature 0
with ``top_logprobs=20``; the score is the expected value over the integers 0..100 read from the
distributions along that path, continued with follow-up requests for digit prefixes off the path when the
model's tokenizer splits numbers into digits. A follow-up makes the judge continue after a given prefix in
one of two ways, picked once per judge by a self-check (forcing the greedy prefix must reproduce the
distribution the greedy path already showed):

* ``prefill``: the prefix as a final assistant message with ``continue_final_message`` (vLLM, SGLang,
  llama.cpp's ``llama-server``);
* ``grammar``: a GBNF grammar that forces the prefix and reads the raw log-probs after it (llama.cpp's
  servers, llama-cpp-python's included).

Why not prompt log-probs of candidate numbers: it needs a completions endpoint plus the judge's chat template
on the client, and 101 candidates per judgment; the prefix tree needs no template and, for a confident
judge, no follow-up at all. Where a follow-up is needed and the server supports neither way, the judge
raises ``JudgeNumberError`` naming the model and the top tokens — never a first-digit score.

Identity (``steerlab.judges.identity``): the server's ``/models`` listing and every response's ``model``
must name the requested model (or a dated snapshot of it); otherwise ``JudgeIdentityError``, unless
``allow_model_mismatch``, in which case the judge is named as the server reports it. The cache key holds
the endpoint, the requested model, the listed model, the prompt and the scoring settings.

Failure policy: a request that errors or times out is retried with exponential backoff; after the last try
the item is ``None``, counted in the summary (``last_failure`` keeps one example), and the batch goes on.
Errors no retry can fix for any item (HTTP 401, 403, 404; a wrong model; an unreadable tokenizer) raise.
The API key is read from the environment and handed to the client only: never stored on the judge, logged,
cached or printed. Timeouts include time spent queued in the server: a server that answers one request at
a time (llama.cpp) needs ``max_concurrency`` low or ``timeout_s`` high.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import openai

from steerlab.judges.base import MIN_NUMBER_MASS, JudgeSummary
from steerlab.judges.cache import ScoreCache, cache_key, default_cache_path
from steerlab.judges.identity import (
    OPENAI_ENDPOINT,
    JudgeIdentity,
    JudgeIdentityError,
    normalize_endpoint,
    same_model,
)
from steerlab.judges.numbers import (
    DEFAULT_TOLERANCE,
    GREEDY_TOKENS,
    NumberReadError,
    NumberTree,
    format_top,
    has_multi_digit_tokens,
    read_score,
    split_first,
    split_next,
)

log = logging.getLogger(__name__)

DEFAULT_JUDGE_MODEL = "gpt-4.1-mini-2025-04-14"
SCORING_VERSION = "digit-tree-v1"
CALIBRATION_PROMPT = "What is 40 + 33? Answer with the number only."
Continuation = Literal["prefill", "grammar"]
CONTINUATIONS: tuple[Continuation, ...] = ("prefill", "grammar")
_FATAL = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
_NOT_RETRYABLE = (openai.BadRequestError, openai.UnprocessableEntityError)
_SELF_CHECK_TV = 0.1  # total |p - q| over the top tokens allowed between a forced and a free continuation


class JudgeConfigError(RuntimeError):
    """The endpoint refuses every request (credentials, access, model name or URL): retrying cannot help."""


class JudgeNumberError(JudgeConfigError):
    """The judge's numbers cannot be read on this server (digit-split tokens and no way to continue)."""


class _NoLogprobs(ValueError):
    """The response parsed but carries no top_logprobs (endpoint or model without logprob support)."""


class _Failed(Exception):
    def __init__(self, message: str, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


@dataclass
class _Reply:
    """A parsed response: the reported model and, per generated position, (token, top logprobs)."""

    model: str
    positions: list[tuple[str, list[tuple[str, float]]]]


@dataclass
class _Outcome:
    score: float | None
    status: Literal["scored", "unparseable", "errors"]  # the JudgeSummary field it counts in
    timed_out: bool = False
    requests: int = 0
    follow_ups: int = 0
    example: str = ""


@dataclass
class _Counter:
    requests: int = 0
    follow_ups: int = 0


@dataclass
class _ContinuationState:
    resolved: bool = False
    how: Continuation | None = None
    tried: list[str] = field(default_factory=list)


class OpenAIJudge:
    """``Judge`` over an OpenAI-compatible endpoint; ``score(prompts)`` sends each prompt as one user message.

    ``summary`` accumulates over the judge's life; ``last_summary`` is the latest ``score`` call;
    ``identity`` (resolved on first use) names the judge as the server reports it.
    """

    def __init__(
        self,
        model: str = DEFAULT_JUDGE_MODEL,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        timeout_s: float = 60.0,
        top_logprobs: int = 20,
        min_mass: float = MIN_NUMBER_MASS,
        tolerance: float = DEFAULT_TOLERANCE,
        cache: ScoreCache | str | Path | None | Literal["default"] = "default",
        token_limit: Literal["auto", "both", "max_tokens", "max_completion_tokens"] = "auto",
        continuation: Literal["auto", "prefill", "grammar", "none"] = "auto",
        allow_model_mismatch: bool = False,
        progress: bool = False,
        seed: int = 0,
    ) -> None:
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError("need max_concurrency >= 1, max_retries >= 0, timeout_s > 0 and backoff_s >= 0")
        if not 1 <= top_logprobs <= 20:
            raise ValueError(f"top_logprobs must be in 1..20 (the API limit), got {top_logprobs}")
        if tolerance <= 0:
            raise ValueError(f"tolerance must be > 0 score points, got {tolerance}")
        if continuation not in ("auto", "none", *CONTINUATIONS):
            raise ValueError(f"continuation must be auto, none, prefill or grammar, got {continuation!r}")
        key = os.environ.get(api_key_env)
        if not key:
            if base_url is None:
                raise JudgeConfigError(
                    f"no API key: set the environment variable {api_key_env} "
                    f"(or pass base_url for a local server that needs none)"
                )
            key = "EMPTY"  # vLLM / llama.cpp servers accept any key unless started with one
        self.model = model
        self.base_url = base_url
        self.endpoint = normalize_endpoint(base_url)
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.top_logprobs = top_logprobs
        self.min_mass = min_mass
        self.tolerance = tolerance
        if token_limit == "auto":
            # OpenAI refuses both at once; llama-cpp-python ignores max_completion_tokens (and generated
            # 10 tokens per judgment): elsewhere send both, and drop one if the server refuses the pair.
            token_limit = "max_completion_tokens" if self.endpoint == OPENAI_ENDPOINT else "both"
        self.token_limit = token_limit
        self.continuation = continuation
        self.allow_model_mismatch = allow_model_mismatch
        self.progress = progress
        # Retries are ours (counted, logged without secrets), so the client's own are off.
        self._client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=0)
        del key
        if cache == "default":
            cache = default_cache_path()
        self.cache = ScoreCache(cache) if isinstance(cache, str | Path) else cache
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._identity_lock = threading.Lock()
        self._continuation_lock = threading.Lock()
        self._listed: str | None = None  # the model the server lists, when it is not the requested one
        self._identity_resolved = False
        self._reported: str | None = None
        self._whole_number_tokens = False
        self._cont = _ContinuationState()
        self._warned: set[str] = set()
        self.summary = JudgeSummary()
        self.last_summary = JudgeSummary()
        self.last_failure = ""  # one example of an unparseable answer or a failed request, for messages

    def __repr__(self) -> str:
        return (
            f"OpenAIJudge(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r}, "
            f"max_concurrency={self.max_concurrency}, max_retries={self.max_retries}, "
            f"timeout_s={self.timeout_s}, cache={self.cache!r})"
        )

    # ------------------------------------------------------------------------------------------ identity

    def resolve_identity(self) -> JudgeIdentity:
        """Ask the server which models it lists (once); raises ``JudgeIdentityError`` on a mismatch."""
        with self._identity_lock:
            if not self._identity_resolved:
                listed = self._list_models()
                if listed is not None and not any(same_model(self.model, m) for m in listed):
                    served = listed[0] if len(listed) == 1 else f"one of {listed[:5]}"
                    if not self.allow_model_mismatch:
                        raise JudgeIdentityError(
                            f"the judge server at {self.endpoint} serves {served!r}, not the requested model "
                            f"{self.model!r}; pass that name as the judge model, or allow the mismatch "
                            "(--allow-judge-mismatch) to have results name the judge as the server reports it"
                        )
                    self._listed = listed[0] if len(listed) == 1 else f"unlisted:{self.model}"
                    self._reported = self._listed
                self._identity_resolved = True
        return self.identity

    @property
    def identity(self) -> JudgeIdentity:
        """The judge as known so far (the reported model is the requested one until the server says more)."""
        return JudgeIdentity(
            kind="openai-compatible",
            endpoint=self.endpoint,
            requested_model=self.model,
            reported_model=self._reported or self.model,
        )

    def _list_models(self) -> list[str] | None:
        for attempt in range(self.max_retries + 1):
            try:
                return [m.id for m in self._client.models.list()]
            except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
                raise JudgeConfigError(
                    f"judge endpoint {self.endpoint} answered HTTP {err.status_code} ({type(err).__name__}) "
                    f"when listing models; check the key in ${self.api_key_env}"
                ) from None
            except (openai.NotFoundError, openai.BadRequestError, openai.UnprocessableEntityError):
                return None  # a server without /models: the responses' model field is all we have
            except (openai.APIError, ValueError) as err:
                if attempt == self.max_retries:
                    raise JudgeConfigError(
                        f"cannot reach the judge endpoint {self.endpoint} ({type(err).__name__}); "
                        "check the URL and that the server is running"
                    ) from None
                time.sleep(self._backoff(attempt))
        return None

    def _check_reported(self, reported: str) -> None:
        if not reported:
            return
        if self._listed is not None:
            return  # already a declared mismatch: the listing names the judge
        if same_model(self.model, reported):
            with self._lock:
                self._reported = reported
            return
        if not self.allow_model_mismatch:
            raise JudgeIdentityError(
                f"the judge server at {self.endpoint} answered as model {reported!r}, not the requested "
                f"{self.model!r}; pass that name as the judge model, or allow the mismatch "
                "(--allow-judge-mismatch)"
            )
        with self._lock:
            self._reported = reported

    # ------------------------------------------------------------------------------------------ public

    @property
    def settings(self) -> dict[str, Any]:
        """Everything besides judge identity and prompt that can change a score; part of the cache key."""
        return {
            "scoring": SCORING_VERSION,
            "top_logprobs": self.top_logprobs,
            "temperature": 0.0,
            "min_mass": self.min_mass,
            "tolerance": self.tolerance,
            "messages": "user-v1",
        }

    def key(self, prompt: str) -> str:
        """The cache key of ``prompt``: endpoint, requested and listed model, settings and prompt (resolves the
        judge's identity first, which raises as `resolve_identity` does)."""
        self.resolve_identity()
        judge = {"endpoint": self.endpoint, "requested_model": self.model, "listed_model": self._listed or ""}
        return cache_key(judge, prompt, self.settings)

    def score(self, prompts: Sequence[str]) -> list[float | None]:
        """One score on 0-100 (or None) per prompt, in order; identical prompts are judged once.

        Raises TypeError for a prompt that is not a str, `JudgeIdentityError` when the server reports another
        model than the one named (unless allowed)."""
        prompts = list(prompts)
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompt {i} must be a str, got {type(p).__name__}")
        if not prompts:
            return []
        keys = [self.key(p) for p in prompts]
        outcomes: dict[str, _Outcome] = {}
        cached: set[str] = set()
        todo: dict[str, str] = {}
        for k, p in zip(keys, prompts, strict=True):
            if k in outcomes or k in todo:
                continue
            hit = self.cache.get_entry(k) if self.cache is not None else ScoreCache.MISSING
            if hit is ScoreCache.MISSING:
                todo[k] = p
            else:
                score, reported = hit
                self._check_reported(reported)
                outcomes[k] = _Outcome(score, "scored" if score is not None else "unparseable")
                cached.add(k)
        batch = JudgeSummary()
        try:
            self._run(todo, outcomes)
        finally:
            for k in keys:
                o = outcomes.get(k)
                if o is None:
                    continue
                setattr(batch, o.status, getattr(batch, o.status) + 1)
                batch.timeouts += o.timed_out
                batch.cache_hits += k in cached
            batch.requests = sum(outcomes[k].requests for k in todo if k in outcomes)
            batch.follow_ups = sum(outcomes[k].follow_ups for k in todo if k in outcomes)
            self.last_summary = batch
            self.summary = self.summary + batch
        (log.warning if batch.errors else log.info)("judge %s: %s", self.identity.name, batch)
        if batch.timeouts:
            log.warning(
                "%d judge requests timed out after %.0f s; the timeout includes time queued in the server, "
                "so a server that answers one request at a time needs a lower --judge-concurrency (now %d) "
                "or a higher --judge-timeout",
                batch.timeouts,
                self.timeout_s,
                self.max_concurrency,
            )
        return [outcomes[k].score for k in keys]

    def close(self) -> None:
        """Close the HTTP client and the cache."""
        self._client.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> OpenAIJudge:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ batch

    def _run(self, todo: dict[str, str], outcomes: dict[str, _Outcome]) -> None:
        if not todo:
            return
        pool = ThreadPoolExecutor(
            max_workers=min(self.max_concurrency, len(todo)), thread_name_prefix="judge"
        )
        try:
            futures = {pool.submit(self._judge_one, k, p): k for k, p in todo.items()}
            done = as_completed(futures)
            if self.progress:
                from tqdm.auto import tqdm

                done = tqdm(done, total=len(futures), desc=f"judge {self.model}")
            for fut in done:
                outcome = fut.result()
                outcomes[futures[fut]] = outcome
                if outcome.example:
                    self.last_failure = outcome.example
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # running items finish and are cached
            raise
        pool.shutdown(wait=True)

    def _judge_one(self, key: str, prompt: str) -> _Outcome:
        counter = _Counter()
        try:
            reply = self._with_retries(lambda: self._chat(prompt, GREEDY_TOKENS), key, counter)
        except _Failed as failed:
            return _Outcome(
                None, "errors", failed.timed_out, counter.requests, example=f"request failed: {failed}"
            )
        except _NoLogprobs as err:
            if "nologprobs" not in self._warned:
                self._warned.add("nologprobs")
                log.warning(
                    "judge endpoint returned no logprobs (%s); does it support logprobs/top_logprobs?", err
                )
            return _Outcome(None, "errors", requests=counter.requests, example=f"no logprobs: {err}")
        root = reply.positions[0][1]
        if has_multi_digit_tokens(top for _, top in reply.positions):
            self._whole_number_tokens = True
        tree = NumberTree(root, whole_number_tokens=self._whole_number_tokens)
        for prefix, top in greedy_prefixes(reply.positions):
            tree.add(prefix, top)

        def continue_after(prefix: str) -> list[tuple[str, float]]:
            return self._continue(prompt, prefix, reply, key, counter)

        try:
            score, _ = read_score(tree, continue_after, min_mass=self.min_mass, tolerance=self.tolerance)
        except NumberReadError as err:
            raise JudgeNumberError(
                f"judge model {self.identity.reported_model!r} at {self.endpoint} cannot be scored: {err}. "
                f"Its top first tokens were {format_top(root)} (greedy answer "
                f"{''.join(t for t, _ in reply.positions)!r}): its tokenizer writes numbers digit by digit, "
                "so reading the first token alone would give the first digit. Use a server that can "
                "continue an answer (vLLM, llama.cpp) or a judge whose tokenizer has whole-number tokens."
            ) from None
        except _Failed as failed:
            return _Outcome(
                None,
                "errors",
                failed.timed_out,
                counter.requests,
                counter.follow_ups,
                example=f"follow-up request failed: {failed}",
            )
        if self.cache is not None:
            self.cache.put(key, score, self.identity.reported_model)
        example = ""
        if score is None:
            example = (
                f"no number: top first tokens {format_top(root)}; greedy answer "
                f"{''.join(t for t, _ in reply.positions)!r}"
            )
        status = "scored" if score is not None else "unparseable"
        return _Outcome(score, status, False, counter.requests, counter.follow_ups, example)

    # ------------------------------------------------------------------------------------------ requests

    def _with_retries(self, call: Callable[[], _Reply], key: str, counter: _Counter) -> _Reply:
        for attempt in range(self.max_retries + 1):
            counter.requests += 1
            try:
                return call()
            except _FATAL as err:
                raise JudgeConfigError(
                    f"judge endpoint answered HTTP {err.status_code} ({type(err).__name__}) for model "
                    f"{self.model!r} at {self.endpoint}; check the model name, the URL and the key in "
                    f"${self.api_key_env}"
                ) from None  # the chained error's body can echo part of the key
            except _NOT_RETRYABLE as err:
                log.warning("judge request %s rejected (HTTP %s); not retrying", key[:12], err.status_code)
                raise _Failed(f"HTTP {err.status_code} {type(err).__name__}", False) from None
            except _NoLogprobs:
                raise
            except (openai.APIError, ValueError) as err:  # timeouts, connection, 429, 5xx, malformed JSON
                timed_out = isinstance(err, openai.APITimeoutError)
                status = getattr(err, "status_code", None)
                what = f"{type(err).__name__}{f' {status}' if status else ''}"
                if attempt < self.max_retries:
                    delay = self._backoff(attempt)
                    log.info(
                        "judge request %s failed (%s); retry %d/%d in %.2fs",
                        key[:12],
                        what,
                        attempt + 1,
                        self.max_retries,
                        delay,
                    )
                    time.sleep(delay)
                    continue
                log.warning("judge request %s failed after %d attempts (%s)", key[:12], attempt + 1, what)
                raise _Failed(f"{what} after {attempt + 1} attempts", timed_out) from None
        raise AssertionError("unreachable")

    def _limits(self, n: int) -> dict[str, int]:
        if self.token_limit == "both":
            return {"max_tokens": n, "max_completion_tokens": n}
        return {self.token_limit: n}

    def _chat(
        self, prompt: str, n_tokens: int, *, prefix: str | None = None, how: Continuation | None = None
    ) -> _Reply:
        messages: list[dict[str, str]] = [{"role": "user", "content": prompt}]
        extra: dict[str, Any] = {}
        if how == "prefill":
            messages.append({"role": "assistant", "content": prefix or ""})
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        elif how == "grammar":
            extra = {"grammar": f'root ::= "{prefix}" [^0-9]'}
        limits = self._limits(n_tokens)
        try:
            resp = self._client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                temperature=0.0,
                logprobs=True,
                top_logprobs=self.top_logprobs,
                extra_body=extra or None,
                **limits,  # type: ignore[arg-type]
            )
        except openai.BadRequestError as err:
            text = str(getattr(err, "message", "")).lower()
            if len(limits) == 2 and ("max_tokens" in text or "max_completion_tokens" in text):
                if self.token_limit == "both":
                    log.info("judge server refuses max_tokens with max_completion_tokens; sending the latter")
                    self.token_limit = "max_completion_tokens"
                return self._chat(prompt, n_tokens, prefix=prefix, how=how)
            raise
        self._check_reported(getattr(resp, "model", "") or "")
        try:
            content = resp.choices[0].logprobs.content
            positions = [(c.token, [(t.token, t.logprob) for t in c.top_logprobs]) for c in content]
        except (AttributeError, IndexError, TypeError):
            raise _NoLogprobs("response has no choices[0].logprobs.content[].top_logprobs") from None
        if not positions or not positions[0][1]:
            raise _NoLogprobs("response has an empty top_logprobs list")
        if len(positions) > n_tokens and "limit" not in self._warned:
            self._warned.add("limit")
            log.warning("judge server generated %d tokens for a limit of %d", len(positions), n_tokens)
        return _Reply(getattr(resp, "model", "") or "", positions)

    # ------------------------------------------------------------------------------------------ follow-ups

    def _continue(
        self, prompt: str, prefix: str, reply: _Reply, key: str, counter: _Counter
    ) -> list[tuple[str, float]]:
        how = self._continuation_for(prompt, reply, key, counter)
        counter.follow_ups += 1
        return self._with_retries(lambda: self._forced(prompt, prefix, how), key, counter).positions[0][1]

    def _forced(self, prompt: str, prefix: str, how: Continuation) -> _Reply:
        """The distribution right after ``prefix``, as a one-position reply."""
        reply = self._chat(prompt, len(prefix) + 1, prefix=prefix, how=how)
        if how == "prefill":
            return reply
        text = ""
        for i, (token, _) in enumerate(reply.positions):
            if text == prefix:
                return _Reply(reply.model, [reply.positions[i]])
            text += token
        raise NumberReadError(
            f"the grammar-forced answer {text!r} does not start with the prefix {prefix!r} on a token boundary"
        )

    def _continuation_for(self, prompt: str, reply: _Reply, key: str, counter: _Counter) -> Continuation:
        with self._continuation_lock:
            state = self._cont
            if not state.resolved:
                self._resolve_continuation(prompt, reply, key, counter)
            if state.how is None:
                raise NumberReadError(
                    "a digit prefix off the greedy answer needs a follow-up request, and the server can "
                    f"continue no given prefix ({'; '.join(state.tried)})"
                )
            return state.how

    def _resolve_continuation(self, prompt: str, reply: _Reply, key: str, counter: _Counter) -> None:
        """Pick how to continue a prefix: the first way whose forced greedy prefix reproduces the greedy path."""
        state = self._cont
        state.resolved = True
        if self.continuation == "none":
            state.tried.append("continuations are switched off")
            return
        reference = next(iter(greedy_prefixes(reply.positions)), None)
        if reference is None:
            counter.requests += 1
            try:
                calibration = self._chat(CALIBRATION_PROMPT, GREEDY_TOKENS)
            except (openai.APIError, _NoLogprobs) as err:
                state.tried.append(f"the calibration request failed ({type(err).__name__})")
                return
            prompt, reference = CALIBRATION_PROMPT, next(iter(greedy_prefixes(calibration.positions)), None)
        if reference is None:
            state.tried.append("no greedy answer starting with a digit to check a continuation against")
            return
        prefix, expected = reference
        ways = CONTINUATIONS if self.continuation == "auto" else (self.continuation,)
        for how in ways:
            counter.requests += 1
            try:
                got = self._forced(prompt, prefix, how).positions[0][1]
            except (openai.APIError, _NoLogprobs, NumberReadError) as err:
                state.tried.append(f"{how}: {type(err).__name__}")
                continue
            distance = top_distance(expected, got)
            if distance <= _SELF_CHECK_TV:
                state.how = how
                log.info(
                    "judge %s: continuing digit prefixes by %s (self-check %.3f)", self.model, how, distance
                )
                return
            state.tried.append(
                f"{how}: forcing {prefix!r} gave {format_top(got, 3)}, not the greedy path's "
                f"{format_top(expected, 3)}"
            )

    def _backoff(self, attempt: int) -> float:
        with self._lock:
            jitter = 1.0 + 0.25 * self._rng.random()
        return min(self.max_backoff_s, self.backoff_s * 2**attempt) * jitter


def greedy_prefixes(
    positions: Sequence[tuple[str, Sequence[tuple[str, float]]]],
) -> list[tuple[str, Sequence[tuple[str, float]]]]:
    """(digit prefix, distribution after it) along a greedy answer: ``"7","3"`` gives ("7", P(. | "7")), ..."""
    out = []
    prefix = ""
    for i, (token, _) in enumerate(positions[:-1]):
        split = split_first(token) if i == 0 else split_next(token)
        if split is None or not split[1]:
            break
        prefix += split[0]
        out.append((prefix, positions[i + 1][1]))
    return out


def top_distance(a: Sequence[tuple[str, float]], b: Sequence[tuple[str, float]]) -> float:
    """Sum of |p - q| over the tokens in either top list (0 = the same distribution), from logprobs."""
    import math

    pa: dict[str, float] = {}
    pb: dict[str, float] = {}
    for token, lp in a:
        pa[token] = pa.get(token, 0.0) + math.exp(lp)
    for token, lp in b:
        pb[token] = pb.get(token, 0.0) + math.exp(lp)
    return sum(abs(pa.get(t, 0.0) - pb.get(t, 0.0)) for t in set(pa) | set(pb))
