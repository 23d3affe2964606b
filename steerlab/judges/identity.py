"""Who a judge is: the endpoint, the model asked for, and the model the server says it serves.

A local OpenAI-compatible server answers for any model name (llama.cpp's server echoes the requested name
back), so the name a user passes proves nothing. The identity therefore records what the server reports —
its ``/models`` listing and each response's ``model`` field — and the score cache is keyed by endpoint +
requested model + listed model + judge prompt, so scores from one judge are never served as another's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
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
        """How results name the judge: ``probe:<model> (detail)`` or ``<reported model> @ <endpoint>``."""
        if self.kind == "probe":
            return f"probe:{self.reported_model}" + (f" ({self.detail})" if self.detail else "")
        return f"{self.reported_model} @ {self.endpoint}"

    @property
    def id(self) -> str:
        """A short stable hash of the identity (names the judge-check file of this judge)."""
        blob = json.dumps(asdict(self), sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        """The fields plus ``name`` and ``id``, for result files."""
        return {**asdict(self), "name": self.name, "id": self.id}


CHECK_FIGURES = (
    ("auroc", "AUROC"),
    ("misaligned_recall", "misaligned recall"),
    ("aligned_fpr", "aligned FPR"),
)


def judge_check_of(row: dict[str, Any]) -> dict[str, Any] | None:
    """A result row's judge check in one shape: its ``judge_check`` object (``eval.json``, ``results.json``)
    or else its flattened ``judge_check_<figure>`` columns (``results.csv``: values only, no CI or count)."""
    check = row.get("judge_check")
    if isinstance(check, dict) and check:
        return check
    flat = {
        key: {"value": row[f"judge_check_{key}"]}
        for key, _ in CHECK_FIGURES
        if isinstance(row.get(f"judge_check_{key}"), int | float)
    }
    return flat or None


def judges_line(rows: Iterable[dict[str, Any]]) -> str:
    """Which judge scored result rows (``judge``: its name as the server reported it) and the figures of its
    ``steerlab judge check`` (`judge_check_of`: the ``judge_check`` object or its flattened CSV columns),
    for results tables and the report."""
    seen: dict[str, dict[str, Any] | None] = {}
    for r in rows:
        if r.get("judge"):  # a row that cites a check wins over one evaluated before the check
            name = str(r["judge"])
            seen[name] = seen.get(name) or judge_check_of(r)
    if not seen:
        return "Judge: not recorded."
    parts = []
    for name, check in seen.items():
        if not check:
            parts.append(f"{name} (not checked: `steerlab judge check`)")
            continue
        figs = ", ".join(
            _figure(label, check[key])
            for key, label in CHECK_FIGURES
            if (check.get(key) or {}).get("value") is not None
        )
        on = f" on {check['n']} labelled answers" if check.get("n") is not None else ""
        parts.append(f"{name} (judge check{on}: {figs or 'no figures'})")
    return "Judge: " + "; ".join(parts) + "."


def _figure(label: str, figure: dict[str, Any]) -> str:
    ci = figure.get("ci")
    return f"{label} {figure['value']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
