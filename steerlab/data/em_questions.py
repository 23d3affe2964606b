"""The general emergent-misalignment question set.

The YAML format is the one of the emergent-misalignment repository's ``evaluation/*.yaml`` files: a list of
items with ``id``, ``type`` (e.g. ``free_form_judge_0_100``), ``paraphrases``, ``samples_per_paraphrase``,
``judge``, ``judge_prompts`` (``aligned``/``coherent`` templates with ``{question}`` and ``{answer}``) and
an optional ``system``; YAML anchors and aliases work as usual. Those files load unchanged.

steerlab adds optional keys: ``reference_aligned`` and ``reference_misaligned`` (one short answer each, for
the deterministic log-prob score that needs no judge model) and ``category``.
"""

from __future__ import annotations

import logging
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from steerlab.io import load_yaml

REQUIRED_KEYS = ("id", "paraphrases")
ORIGINAL_KEYS = ("id", "type", "paraphrases", "samples_per_paraphrase", "judge", "judge_prompts", "system")
EXTENSION_KEYS = ("reference_aligned", "reference_misaligned", "category")


log = logging.getLogger(__name__)
_WARNED: set[str] = set()


def render_judge_prompt(template: str, question: str, answer: str) -> str:
    """Fill a judge template's ``{question}`` and ``{answer}``.

    Any other named placeholder (e.g. ``{reasoning}`` in repositories derived from emergent-misalignment) is
    filled with "" and logged once by name, so their question files run unchanged. A template that is not a
    format string (stray literal braces, e.g. a JSON example) gets a plain text replacement instead.
    """
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError:
        names = None
    if names is None or not all(n.isidentifier() for n in names):
        return template.replace("{question}", question).replace("{answer}", answer)
    extra = sorted(names - {"question", "answer"})
    for name in extra:
        if name not in _WARNED:
            _WARNED.add(name)
            log.warning(
                "judge prompt placeholder {%s} has no value in steerlab's evaluation: filled with ''", name
            )
    return template.format(question=question, answer=answer, **dict.fromkeys(extra, ""))


class EMQuestionError(ValueError):
    """A question file is malformed; the message names the file and the item (id or index)."""


@dataclass(frozen=True)
class EMQuestion:
    """One open question, its paraphrases and how to judge answers to it."""

    id: str
    paraphrases: list[str]
    type: str = "free_form_judge_0_100"
    samples_per_paraphrase: int = 1
    judge: str | None = None
    judge_prompts: dict[str, str] = field(default_factory=dict)
    system: str | None = None
    reference_aligned: str | None = None
    reference_misaligned: str | None = None
    category: str | None = None
    source: str | None = None

    @property
    def has_references(self) -> bool:
        return self.reference_aligned is not None and self.reference_misaligned is not None

    def judge_prompt(self, name: str, question: str, answer: str) -> str:
        """Fill judge template ``name`` (e.g. 'aligned') for one question/answer pair (`render_judge_prompt`)."""
        if name not in self.judge_prompts:
            raise KeyError(f"{self.source or self.id}: question {self.id!r} has no judge prompt {name!r}")
        return render_judge_prompt(self.judge_prompts[name], question, answer)


def _str_or_none(value: Any, key: str, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise EMQuestionError(f"{where}: {key!r} must be a string, got {type(value).__name__}")


def _parse_item(item: Any, where: str, require_judges: tuple[str, ...], allow_unknown: bool) -> EMQuestion:
    if not isinstance(item, dict):
        raise EMQuestionError(f"{where}: item is {type(item).__name__}, not a mapping")
    missing = [k for k in REQUIRED_KEYS if k not in item]
    if missing:
        raise EMQuestionError(f"{where}: missing key(s) {missing}")
    unknown = sorted(set(item) - set(ORIGINAL_KEYS) - set(EXTENSION_KEYS))
    if unknown and not allow_unknown:
        raise EMQuestionError(
            f"{where}: unknown key(s) {unknown} (known: {', '.join(ORIGINAL_KEYS + EXTENSION_KEYS)})"
        )
    paraphrases = item["paraphrases"]
    if isinstance(paraphrases, str):
        paraphrases = [paraphrases]
    if (
        not isinstance(paraphrases, list)
        or not paraphrases
        or not all(isinstance(p, str) and p.strip() for p in paraphrases)
    ):
        raise EMQuestionError(f"{where}: 'paraphrases' must be a non-empty list of non-empty strings")
    qtype = item.get("type", "free_form_judge_0_100")
    if not isinstance(qtype, str):
        raise EMQuestionError(f"{where}: 'type' must be a string")
    spp = item.get("samples_per_paraphrase", 1)
    if isinstance(spp, bool) or not isinstance(spp, int) or spp < 1:
        raise EMQuestionError(f"{where}: 'samples_per_paraphrase' must be a positive integer, got {spp!r}")
    prompts = item.get("judge_prompts") or {}
    if not isinstance(prompts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
    ):
        raise EMQuestionError(f"{where}: 'judge_prompts' must map names to template strings")
    if qtype.startswith("free_form_judge"):
        absent = [k for k in require_judges if k not in prompts]
        if absent:
            raise EMQuestionError(f"{where}: judge_prompts lacks {absent}")
    refs = {k: _str_or_none(item.get(k), k, where) for k in EXTENSION_KEYS}
    if (refs["reference_aligned"] is None) != (refs["reference_misaligned"] is None):
        raise EMQuestionError(f"{where}: give both 'reference_aligned' and 'reference_misaligned' or neither")
    return EMQuestion(
        id=str(item["id"]),
        paraphrases=list(paraphrases),
        type=qtype,
        samples_per_paraphrase=spp,
        judge=_str_or_none(item.get("judge"), "judge", where),
        judge_prompts=dict(prompts),
        system=_str_or_none(item.get("system"), "system", where),
        source=where,
        **refs,
    )


def load_em_questions(
    path: str | os.PathLike,
    *,
    require_judges: tuple[str, ...] = ("aligned", "coherent"),
    allow_unknown_keys: bool = False,
) -> list[EMQuestion]:
    """Load a question YAML (original emergent-misalignment format, plus steerlab's optional keys).

    ``require_judges`` names the judge prompts every ``free_form_judge*`` item must have. Unknown keys are an
    error (a typo in ``reference_aligned`` must not pass silently) unless ``allow_unknown_keys``.
    """
    path = Path(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise EMQuestionError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, list) or not data:
        raise EMQuestionError(f"{path}: expected a non-empty list of questions")
    out: list[EMQuestion] = []
    seen: set[str] = set()
    for idx, item in enumerate(data):
        label = item.get("id") if isinstance(item, dict) and "id" in item else None
        where = f"{path}: item {idx}" + (f" (id {label!r})" if label is not None else "")
        q = _parse_item(item, where, require_judges, allow_unknown_keys)
        if q.id in seen:
            raise EMQuestionError(f"{where}: duplicate id {q.id!r}")
        seen.add(q.id)
        out.append(q)
    return out
