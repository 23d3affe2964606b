"""A 0-100 judge behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp server).

The judge generates one token at temperature 0 with ``top_logprobs=20``; the score is the probability-weighted
mean of the tokens that spell integers 0..100, normalised by their total probability, and ``None`` when they
hold less than ``min_mass`` (the judge answered in words). This reads the judge's whole belief instead of
one sampled number, as in persona_vectors and the emergent-misalignment evaluations.

Failure policy: a request that errors or times out is retried with exponential backoff; after the last try
the item is ``None`` and counted in the summary, and the rest of the batch goes on. Only errors that no
retry can fix for any item (HTTP 401, 403, 404: bad key, no access, wrong model or URL) raise
``JudgeConfigError``; scores finished before that are already in the cache. The API key is read from the
environment and handed to the client only: it is never stored on the judge, logged, cached or printed.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import openai

from steerlab.judges.base import MIN_NUMBER_MASS, JudgeSummary, aggregate_number_logprobs
from steerlab.judges.cache import ScoreCache, cache_key, default_cache_path

log = logging.getLogger(__name__)

DEFAULT_JUDGE_MODEL = "gpt-4.1-mini-2025-04-14"
_FATAL = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
_NOT_RETRYABLE = (openai.BadRequestError, openai.UnprocessableEntityError)


class JudgeConfigError(RuntimeError):
    """The endpoint refuses every request (credentials, access, model name or URL): retrying cannot help."""


class _NoLogprobs(ValueError):
    """The response parsed but carries no top_logprobs (endpoint or model without logprob support)."""


@dataclass
class _Outcome:
    score: float | None
    status: Literal["scored", "unparseable", "errors"]  # the JudgeSummary field it counts in
    timed_out: bool = False
    requests: int = 0


class OpenAIJudge:
    """``Judge`` over an OpenAI-compatible endpoint; ``score(prompts)`` sends each prompt as one user message.

    ``summary`` accumulates over the judge's life; ``last_summary`` is the latest ``score`` call.
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
        cache: ScoreCache | str | Path | None | Literal["default"] = "default",
        token_limit_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
        progress: bool = False,
        seed: int = 0,
    ) -> None:
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError("need max_concurrency >= 1, max_retries >= 0, timeout_s > 0 and backoff_s >= 0")
        if not 1 <= top_logprobs <= 20:
            raise ValueError(f"top_logprobs must be in 1..20 (the API limit), got {top_logprobs}")
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
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.top_logprobs = top_logprobs
        self.min_mass = min_mass
        self.token_limit_param = token_limit_param
        self.progress = progress
        # Retries are ours (counted, logged without secrets), so the client's own are off.
        self._client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=0)
        del key
        if cache == "default":
            cache = default_cache_path()
        self.cache = ScoreCache(cache) if isinstance(cache, str | Path) else cache
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._warned_no_logprobs = False
        self.summary = JudgeSummary()
        self.last_summary = JudgeSummary()

    def __repr__(self) -> str:
        return (
            f"OpenAIJudge(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r}, "
            f"max_concurrency={self.max_concurrency}, max_retries={self.max_retries}, "
            f"timeout_s={self.timeout_s}, cache={self.cache!r})"
        )

    # ------------------------------------------------------------------------------------------ public

    @property
    def settings(self) -> dict[str, Any]:
        """Everything besides model and prompt that can change a score; part of the cache key."""
        return {
            "top_logprobs": self.top_logprobs,
            "max_tokens": 1,
            "temperature": 0.0,
            "min_mass": self.min_mass,
            "messages": "user-v1",
        }

    def key(self, prompt: str) -> str:
        return cache_key(self.model, prompt, self.settings)

    def score(self, prompts: Sequence[str]) -> list[float | None]:
        """One score (or None) per prompt, in order; identical prompts are judged once."""
        prompts = list(prompts)
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompt {i} must be a str, got {type(p).__name__}")
        keys = [self.key(p) for p in prompts]
        outcomes: dict[str, _Outcome] = {}
        cached: set[str] = set()
        todo: dict[str, str] = {}
        for k, p in zip(keys, prompts, strict=True):
            if k in outcomes or k in todo:
                continue
            hit = self.cache.get(k) if self.cache is not None else ScoreCache.MISSING
            if hit is ScoreCache.MISSING:
                todo[k] = p
            else:
                outcomes[k] = _Outcome(hit, "scored" if hit is not None else "unparseable")
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
            self.last_summary = batch
            self.summary = self.summary + batch
        (log.warning if batch.errors else log.info)("judge %s: %s", self.model, batch)
        return [outcomes[k].score for k in keys]

    def close(self) -> None:
        self._client.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> OpenAIJudge:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ internals

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
                outcomes[futures[fut]] = fut.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # running items finish and are cached
            raise
        pool.shutdown(wait=True)

    def _request(self, prompt: str) -> list[tuple[str, float]]:
        kwargs: dict[str, Any] = {self.token_limit_param: 1}
        resp = self._client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0.0,
            logprobs=True,
            top_logprobs=self.top_logprobs,
            **kwargs,
        )
        try:
            content = resp.choices[0].logprobs.content
            top = content[0].top_logprobs
        except (AttributeError, IndexError, TypeError):
            raise _NoLogprobs("response has no choices[0].logprobs.content[0].top_logprobs") from None
        if not top:
            raise _NoLogprobs("response has an empty top_logprobs list")
        return [(t.token, t.logprob) for t in top]

    def _judge_one(self, key: str, prompt: str) -> _Outcome:
        requests = 0
        for attempt in range(self.max_retries + 1):
            requests += 1
            try:
                top = self._request(prompt)
            except _FATAL as err:
                raise JudgeConfigError(
                    f"judge endpoint answered HTTP {err.status_code} ({type(err).__name__}) for model "
                    f"{self.model!r} at {self.base_url or 'the OpenAI API'}; check the model name, the URL and "
                    f"the key in ${self.api_key_env}"
                ) from None  # the chained error's body can echo part of the key
            except _NOT_RETRYABLE as err:
                log.warning("judge request %s rejected (HTTP %s); not retrying", key[:12], err.status_code)
                return _Outcome(None, "errors", requests=requests)
            except _NoLogprobs as err:
                if not self._warned_no_logprobs:
                    self._warned_no_logprobs = True
                    log.warning(
                        "judge endpoint returned no logprobs (%s); does it support logprobs/top_logprobs?",
                        err,
                    )
                return _Outcome(None, "errors", requests=requests)
            except (openai.APIError, ValueError) as err:  # timeouts, connection, 429, 5xx, malformed JSON
                timed_out = isinstance(err, openai.APITimeoutError)
                status = getattr(err, "status_code", None)
                if attempt < self.max_retries:
                    delay = self._backoff(attempt)
                    log.info(
                        "judge request %s failed (%s%s); retry %d/%d in %.2fs",
                        key[:12],
                        type(err).__name__,
                        f" {status}" if status else "",
                        attempt + 1,
                        self.max_retries,
                        delay,
                    )
                    time.sleep(delay)
                    continue
                log.warning(
                    "judge request %s failed after %d attempts (%s%s); scoring it None",
                    key[:12],
                    requests,
                    type(err).__name__,
                    f" {status}" if status else "",
                )
                return _Outcome(None, "errors", timed_out=timed_out, requests=requests)
            score = aggregate_number_logprobs(top, self.min_mass)
            if self.cache is not None:
                self.cache.put(key, score, self.model)
            return _Outcome(score, "scored" if score is not None else "unparseable", requests=requests)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        with self._rng_lock:
            jitter = 1.0 + 0.25 * self._rng.random()
        return min(self.max_backoff_s, self.backoff_s * 2**attempt) * jitter
