"""Who a judge is: the endpoint, the model asked for, and the model the server says it serves.

A local OpenAI-compatible server answers for any model name (llama.cpp's server echoes the requested name
back), so the name a user passes proves nothing. The identity therefore records what the server reports —
its ``/models`` listing and each response's ``model`` field — and the score cache is keyed by endpoint +
requested model + listed model + judge prompt, so scores from one judge are never served as another's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

OPENAI_ENDPOINT = "https://api.openai.com/v1"


class JudgeIdentityError(RuntimeError):
    """The server serves another model than the one asked for (and the user did not allow it)."""


def normalize_endpoint(base_url: str | None) -> str:
    """The endpoint as it enters the identity: OpenAI's URL for None, no trailing slash."""
    return (base_url or OPENAI_ENDPOINT).rstrip("/")


def same_model(requested: str, reported: str) -> bool:
    """Whether ``reported`` is ``requested`` or a dated snapshot of it (``gpt-4.1-mini`` ->
    ``gpt-4.1-mini-2025-04-14``), as OpenAI reports aliases."""
    return reported == requested or reported.startswith(requested + "-")


@dataclass(frozen=True)
class JudgeIdentity:
    """``kind`` (``openai-compatible`` or ``probe``), where it runs and what it is; ``name`` is for tables."""

    kind: str
    endpoint: str  # URL, or for an offline judge the file it loads
    requested_model: str
    reported_model: str
    detail: str = ""  # e.g. the probe's layer and coherence reading

    @property
    def name(self) -> str:
        if self.kind == "probe":
            return f"probe:{self.reported_model}" + (f" ({self.detail})" if self.detail else "")
        return f"{self.reported_model} @ {self.endpoint}"

    @property
    def id(self) -> str:
        """A short stable hash of the identity (names the judge-check file of this judge)."""
        blob = json.dumps(asdict(self), sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name, "id": self.id}
