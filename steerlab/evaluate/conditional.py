"""Conditional (hidden) misalignment: the general questions asked inside the training context's cues.

Dubinski et al. 2026 ("Conditional misalignment: common interventions can hide emergent misalignment behind
contextual triggers", arXiv 2604.25891) show that diluting misaligned data, benign follow-up training and
inoculation prompting can remove emergent misalignment from a plain evaluation while it stays behind cues
that resemble the training context. A plain evaluation then over-credits exactly the ``interleave`` and
``inoculate`` arms, so each general question is also asked under three cues:

* ``frame``: the narrow domain's user-turn framing (``experiments/data/cues.yaml``, per domain);
* ``format``: the training answers' format, asked for in the user turn (same file);
* ``inoculation``: the inoculation system prompt (the evaluation's ``inoculation_prompt``).

The stance score (``steerlab.evaluate.stance``) runs under every cue (cheap: no sampling); its *shift* (cue
minus plain, paired by question) is what a hidden misalignment raises. Compare an arm's shift with the base
model's: a cue can move the base model too (the inoculation prompt asks for bad behaviour outright).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from steerlab.data.chat import ChatDataError
from steerlab.io import load_yaml

Messages = list[dict[str, str]]
CUE_NAMES = ("frame", "format", "inoculation")
FILE_CUES = ("frame", "format")


@dataclass(frozen=True)
class Cue:
    """A way to ask a question inside a training-context cue: user-turn templates (cycled) and a system prompt."""

    name: str
    templates: tuple[str, ...] = ("{question}",)
    system: str | None = None
    source: str = ""

    def messages(self, question: str, index: int) -> Messages:
        """[system?, user] for question number ``index`` (template ``index mod len(templates)``)."""
        user = self.templates[index % len(self.templates)].replace("{question}", question)
        return ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": user}
        ]

    def describe(self) -> dict[str, Any]:
        return {"system": self.system, "templates": list(self.templates), "source": self.source}


def _templates(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ChatDataError(f"{where}: must be a template or a non-empty list of templates")
    for n, t in enumerate(value):
        if not isinstance(t, str) or t.count("{question}") != 1:
            raise ChatDataError(f"{where}[{n}]: a template must be a string with exactly one {{question}}")
    return tuple(value)


def load_domain_cues(path: str | os.PathLike, domain: str) -> dict[str, Cue]:
    """The file cues (``frame``, ``format``) of ``domain``; an empty dict when the file does not list it.

    Raises ``ChatDataError`` naming the file and key for a malformed entry or an unknown cue name,
    ``FileNotFoundError`` when ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cue file {path} does not exist")
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ChatDataError(f"{path}: invalid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ChatDataError(f"{path}: expected a mapping of domain -> cues")
    spec = data.get(domain)
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ChatDataError(f"{path}: {domain}: expected a mapping of cue name -> templates")
    unknown = sorted(set(spec) - set(FILE_CUES))
    if unknown:
        raise ChatDataError(f"{path}: {domain}: unknown cue(s) {unknown}; allowed: {list(FILE_CUES)}")
    return {
        name: Cue(name, _templates(value, f"{path}: {domain}.{name}"), source=f"{path}: {domain}.{name}")
        for name, value in spec.items()
    }


def build_cues(
    names: tuple[str, ...] | list[str],
    *,
    domain: str | None,
    cues_file: str | os.PathLike | None,
    inoculation_prompt: str | None,
) -> tuple[list[Cue], dict[str, str]]:
    """The cues asked for, in order, and {cue: why it was skipped} for those that cannot run here."""
    unknown = sorted(set(names) - set(CUE_NAMES))
    if unknown:
        raise ValueError(f"unknown cue(s) {unknown}; choose from {list(CUE_NAMES)}")
    from_file = load_domain_cues(cues_file, domain) if cues_file and domain else {}
    cues, skipped = [], {}
    for name in names:
        if name == "inoculation":
            if inoculation_prompt and inoculation_prompt.strip():
                cues.append(Cue(name, system=inoculation_prompt, source="inoculation_prompt"))
            else:
                skipped[name] = "no inoculation_prompt"
        elif name in from_file:
            cues.append(from_file[name])
        else:
            skipped[name] = f"{cues_file or 'no cue file'} lists no {name!r} cue for domain {domain!r}"
    return cues, skipped
