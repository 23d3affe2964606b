"""A real HTTP server speaking the OpenAI chat-completions protocol with logprobs, for judge tests.

It runs on 127.0.0.1 at a free port in a background thread. Behaviour is scripted per request: the first
registered marker found in the request's user message decides the response. Every request is recorded
(headers and JSON body) so tests can count calls and inspect what was sent. ``GET /v1/models`` lists
``models`` (404 when None); ``reported_model`` replaces the model name in answers (None echoes the request,
as llama.cpp's server does).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Logprobs:
    """Answer with one token whose top_logprobs are these (token, probability) pairs."""

    top: list[tuple[str, float]]


@dataclass
class Digits:
    """A judge that writes numbers digit by digit: ``tree`` maps a prefix ("" = the first token) to the
    next-token (token, probability) list. Answers greedily up to ``max_tokens``; continues a forced prefix by
    assistant prefill (``continue_final_message``) and/or a ``root ::= "<prefix>" ...`` grammar when enabled.
    """

    tree: dict[str, list[tuple[str, float]]]
    prefill: bool = False
    grammar: bool = False


@dataclass
class RejectBothLimits:
    """Answer 400 like OpenAI when max_tokens and max_completion_tokens are both set, else like ``then``."""

    then: Any


@dataclass
class NoLogprobs:
    """Answer a valid completion without logprobs, like a server that ignores the logprobs flag."""


@dataclass
class Status:
    """Answer with this HTTP status and a JSON error body."""

    code: int


@dataclass
class Garbage:
    """Answer 200 with a body that is not JSON."""


@dataclass
class Slow:
    """Wait ``seconds`` (or until the server stops), then answer like ``then``."""

    seconds: float
    then: Any = None


@dataclass
class FailFirst:
    """Fail the first ``n`` matching requests with ``failure``, then answer like ``then``."""

    n: int
    failure: Any
    then: Any
    seen: int = 0


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any
    content: str


@dataclass
class FakeJudgeServer:
    """Use as a context manager; ``base_url`` is what an OpenAI client needs."""

    script: list[tuple[str, Any]] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    max_in_flight: int = 0
    models: list[str] | None = None
    reported_model: str | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._in_flight = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def on(self, marker: str, behaviour: Any) -> FakeJudgeServer:
        self.script.append((marker, behaviour))
        return self

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def count(self, marker: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if marker is None or marker in r.content)

    def __enter__(self) -> FakeJudgeServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                server._handle(self)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models") and server.models is not None:
                    data = [{"id": m, "object": "model", "owned_by": "test"} for m in server.models]
                    return _send(
                        self, 200, json.dumps({"object": "list", "data": data}).encode(), "application/json"
                    )
                _send(self, 404, b'{"error": {"message": "not found"}}', "application/json")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    # ------------------------------------------------------------------------------------------ handling

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length", 0)))
        body = json.loads(raw)
        users = [m for m in body.get("messages", []) if m.get("role") == "user"] or [{}]
        content = str(users[-1].get("content", ""))
        with self._lock:
            self.requests.append(
                RecordedRequest(h.path, {k.lower(): v for k, v in h.headers.items()}, body, content)
            )
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            behaviour = next((b for m, b in self.script if m in content), Status(400))
            self._respond(h, behaviour, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout); nothing to answer
        finally:
            with self._lock:
                self._in_flight -= 1

    def _respond(self, h: BaseHTTPRequestHandler, behaviour: Any, body: dict) -> None:
        if isinstance(behaviour, FailFirst):
            with self._lock:
                behaviour.seen += 1
                failing = behaviour.seen <= behaviour.n
            return self._respond(h, behaviour.failure if failing else behaviour.then, body)
        if isinstance(behaviour, Slow):
            self._stop.wait(behaviour.seconds)
            return self._respond(h, behaviour.then or Logprobs([("50", 1.0)]), body)
        if isinstance(behaviour, RejectBothLimits):
            if "max_tokens" in body and "max_completion_tokens" in body:
                message = (
                    "Setting 'max_tokens' and 'max_completion_tokens' at the same time is not supported."
                )
                err = {"error": {"message": message, "type": "invalid_request_error", "param": "max_tokens"}}
                return _send(h, 400, json.dumps(err).encode(), "application/json")
            return self._respond(h, behaviour.then, body)
        if isinstance(behaviour, Garbage):
            return _send(h, 200, b"{this is not json", "application/json")
        if isinstance(behaviour, Status):
            err = {"error": {"message": f"scripted status {behaviour.code}", "type": "test", "code": None}}
            return _send(h, behaviour.code, json.dumps(err).encode(), "application/json")
        if isinstance(behaviour, NoLogprobs):
            payload = completion(body, [("50", 1.0)])
            payload["choices"][0]["logprobs"] = None
            return _send(h, 200, json.dumps(payload).encode(), "application/json")
        if isinstance(behaviour, Logprobs):
            payload = completion(body, behaviour.top)
            payload["model"] = self.reported_model or payload["model"]
            return _send(h, 200, json.dumps(payload).encode(), "application/json")
        if isinstance(behaviour, Digits):
            payload = digits_completion(body, behaviour)
            payload["model"] = self.reported_model or payload["model"]
            return _send(h, 200, json.dumps(payload).encode(), "application/json")
        raise TypeError(f"unknown behaviour {behaviour!r}")


def _send(h: BaseHTTPRequestHandler, code: int, payload: bytes, ctype: str) -> None:
    h.send_response(code)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(payload)))
    h.end_headers()
    h.wfile.write(payload)


def completion(request: dict, top: list[tuple[str, float]]) -> dict:
    """A chat.completion object whose single token carries ``top`` as its top_logprobs."""
    entries = _entries(top)
    first = max(entries, key=lambda e: e["logprob"])
    return _chat_completion(request, [dict(first, top_logprobs=entries)])


def _chat_completion(request: dict, content: list[dict[str, Any]]) -> dict:
    """The chat.completion envelope around generated tokens ``content`` (each with its top_logprobs)."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": request.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(c["token"] for c in content)},
                "logprobs": {"content": content, "refusal": None},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": len(content), "total_tokens": 10 + len(content)},
    }


def _entries(top: list[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in top]


def digits_completion(request: dict, model: Digits) -> dict:
    """A greedy answer of ``model`` with top_logprobs at each position, after any forced prefix."""
    limit = request.get("max_tokens") or request.get("max_completion_tokens") or 1
    prefix = ""
    last = request["messages"][-1]
    if model.prefill and last.get("role") == "assistant" and request.get("continue_final_message"):
        prefix = last["content"]
    forced = ""
    grammar = request.get("grammar")
    if model.grammar and grammar:
        forced = grammar.split('"')[1]
    content = []
    while len(content) < limit:
        top = model.tree.get(prefix, [("<|end|>", 1.0)])
        if forced:
            token, forced = forced[0], forced[1:]
        else:
            token = max(top, key=lambda t: t[1])[0]
        entries = _entries(top)
        chosen = next((e for e in entries if e["token"] == token), entries[0])
        content.append(dict(chosen, top_logprobs=entries))
        if token == "<|end|>":
            break
        prefix += token
    return _chat_completion(request, content)
