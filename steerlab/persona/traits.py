"""Trait specs: the contrastive instructions, questions and judge template that define one persona trait.

The file format is the one used by the persona_vectors repository (``data_generation/trait_data_extract``
and ``trait_data_eval``), so their files load unchanged::

    {"instruction": [{"pos": "...", "neg": "..."}, ...],   # contrastive system-prompt instructions
     "questions": ["...", ...],                              # user questions
     "eval_prompt": "... {question} ... {answer} ..."}       # judge template (str.format placeholders)

steerlab adds two optional keys, ``extract_questions`` and ``eval_questions``, so one file can hold both the
questions used to extract a vector and the held-out questions used to evaluate it (``description`` is also
allowed, for people). A file gives either ``questions`` or both split keys, never both.

How a plain ``questions`` list is split (persona_vectors keeps the two sets in two files instead):

* ``load_trait(path, eval_file=other)``: every question of ``path`` is for extraction and every question
  of ``other`` for evaluation; instructions come from ``path``, the judge template from ``other``.
* otherwise the list is split in two: by default the first ``n // 2`` questions are for extraction and the
  rest for evaluation; with ``split_seed`` the questions are shuffled by a ``random.Random(split_seed)``
  first (each half then keeps the file's order). Same file and seed, same split.
"""

from __future__ import annotations

import json
import logging
import random
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple

from transformers import BatchEncoding, PreTrainedTokenizerBase

from steerlab.io import json_problem

log = logging.getLogger(__name__)

PV_KEYS = ("instruction", "questions", "eval_prompt")  # the persona_vectors format, all required there
EXTENSION_KEYS = ("extract_questions", "eval_questions", "description")
JUDGE_FIELDS = frozenset({"question", "answer"})

POS_TEMPLATE = "You are {article} {name} assistant. {instruction}"
NEG_TEMPLATE = "You are a helpful assistant. {instruction}"
_SYSTEM_FIELDS = frozenset({"article", "name", "instruction"})

Side = Literal["pos", "neg"]


class TraitError(ValueError):
    """A trait file or spec is malformed; the message names the file and the key."""


class InstructionPair(NamedTuple):
    """One contrastive pair: the instruction that elicits the trait and the one that suppresses it."""

    pos: str
    neg: str


@dataclass(frozen=True)
class TraitSpec:
    """A loaded, validated trait. ``questions`` is extraction + evaluation questions, in that order."""

    name: str
    instructions: list[InstructionPair]
    extract_questions: list[str]
    eval_questions: list[str]
    eval_prompt: str
    description: str = ""
    source: str = field(default="<memory>", compare=False)

    def __post_init__(self) -> None:
        where = f"trait {self.name!r} ({self.source})"
        if not self.instructions:
            raise TraitError(f"{where}: no instruction pairs")
        for i, pair in enumerate(self.instructions):
            if not (
                isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(s, str) and s for s in pair)
            ):
                raise TraitError(f"{where}: instruction {i} must be a (pos, neg) pair of non-empty strings")
        for key in ("extract_questions", "eval_questions"):
            qs = getattr(self, key)
            if not qs:
                raise TraitError(f"{where}: {key} is empty")
            for i, q in enumerate(qs):
                if not isinstance(q, str) or not q.strip():
                    raise TraitError(f"{where}: {key}[{i}] must be a non-empty string, got {q!r}")
        validate_judge_template(self.eval_prompt, where=f"{where}: eval_prompt")
        overlap = set(self.extract_questions) & set(self.eval_questions)
        if overlap:
            log.warning(
                "%s: %d question(s) are in both the extraction and evaluation sets, e.g. %r",
                where,
                len(overlap),
                _preview(sorted(overlap)[0]),
            )

    @property
    def questions(self) -> list[str]:
        """Extraction questions, then evaluation questions."""
        return [*self.extract_questions, *self.eval_questions]

    def to_dict(self) -> dict[str, Any]:
        """The steerlab file form (split keys kept), so ``load_trait`` of the saved file gives this spec."""
        out: dict[str, Any] = {
            "instruction": [{"pos": p.pos, "neg": p.neg} for p in self.instructions],
            "extract_questions": list(self.extract_questions),
            "eval_questions": list(self.eval_questions),
            "eval_prompt": self.eval_prompt,
        }
        if self.description:
            out["description"] = self.description
        return out

    def save(self, path: str | Path) -> Path:
        """Write the spec as steerlab's trait JSON (`to_dict`) and return the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    def check_lengths(
        self, tokenizer: PreTrainedTokenizerBase, max_tokens: int, *, with_system_prompt: bool = True
    ) -> None:
        """Raise if any question (with the longest system prompt, chat-formatted) exceeds ``max_tokens``.

        Run this before generating, so a long question fails up front instead of being silently truncated.
        """
        system = (
            max(
                (system_prompt(self, i, s) for i in range(len(self.instructions)) for s in ("pos", "neg")),
                key=len,
            )
            if with_system_prompt
            else None
        )
        for key in ("extract_questions", "eval_questions"):
            for i, q in enumerate(getattr(self, key)):
                n = _prompt_tokens(tokenizer, system, q)
                if n > max_tokens:
                    raise TraitError(
                        f"trait {self.name!r} ({self.source}): {key}[{i}] ({_preview(q)!r}) is {n} tokens"
                        f"{' with the system prompt' if system else ''}, longer than the limit of {max_tokens}"
                    )


def _preview(text: str, words: int = 8) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def _prompt_tokens(tokenizer: PreTrainedTokenizerBase, system: str | None, question: str) -> int:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]
    if getattr(tokenizer, "chat_template", None):
        try:
            ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
            if isinstance(ids, list):
                return len(ids)
            if isinstance(ids, BatchEncoding):
                return len(ids["input_ids"])
            raise TypeError(f"apply_chat_template returned {type(ids).__name__}, not token ids")
        except Exception as err:  # e.g. templates that reject a system role: fall back to plain counting
            log.debug("chat template failed (%s); counting tokens without it", type(err).__name__)
    return sum(len(tokenizer(m["content"], add_special_tokens=False)["input_ids"]) for m in messages)


# ---------------------------------------------------------------------------------------------- templates


def validate_judge_template(template: Any, *, where: str = "judge template") -> None:
    """A judge template is a str.format template with exactly the fields {question} and {answer}; raises
    `TraitError` naming ``where`` otherwise (not a string, malformed braces, missing or extra fields)."""
    if not isinstance(template, str) or not template.strip():
        raise TraitError(f"{where} must be a non-empty string")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise TraitError(
            f"{where}: malformed braces ({err}); write a literal brace as '{{{{' or '}}}}'"
        ) from err
    for missing in sorted(JUDGE_FIELDS - fields):
        raise TraitError(f"{where} is missing the placeholder {{{missing}}}")
    for extra in sorted(fields - JUDGE_FIELDS):
        raise TraitError(f"{where} has an unknown placeholder {{{extra}}}; only {{question}} and {{answer}}")


def render_template(template: str, question: str, answer: str) -> str:
    """Fill a judge template; braces inside question or answer are kept as they are (one format pass)."""
    return template.format(question=question, answer=answer)


def indefinite_article(word: str) -> str:
    """'a' or 'an' for an English word, by sound for the common exceptions (an honest, a useful)."""
    w = word.strip().lower()
    if not w:
        return "a"
    if w.startswith(("hon", "hour", "heir")):
        return "an"
    if w.startswith(("uni", "use", "usu", "uti", "eu", "ewe", "one", "once", "ubi")):
        return "a"
    return "an" if w[0] in "aeiou" else "a"


def system_prompt(
    spec: TraitSpec,
    instruction_index: int,
    side: Side,
    *,
    pos_template: str = POS_TEMPLATE,
    neg_template: str = NEG_TEMPLATE,
    name: str | None = None,
) -> str:
    """The system prompt for one side of one instruction pair.

    Templates may use {article}, {name} (the trait name, underscores as spaces, or ``name``) and
    {instruction}; the defaults give "You are an evil assistant. <pos>" and "You are a helpful assistant.
    <neg>", the persona_vectors convention (github.com/safety-research/persona_vectors). Raises
    ``ValueError`` for a side other than ``pos`` / ``neg`` or a template field other than those three, and
    ``IndexError`` for an instruction index out of range.
    """
    if side not in ("pos", "neg"):
        raise ValueError(f"side must be 'pos' or 'neg', got {side!r}")
    n = len(spec.instructions)
    if not -n <= instruction_index < n:
        raise IndexError(
            f"trait {spec.name!r} has {n} instruction pairs; index {instruction_index} is out of range"
        )
    template = pos_template if side == "pos" else neg_template
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    if fields - _SYSTEM_FIELDS:
        raise ValueError(
            f"system-prompt template has unknown fields {sorted(fields - _SYSTEM_FIELDS)}; "
            f"allowed: {sorted(_SYSTEM_FIELDS)}"
        )
    display = name if name is not None else spec.name.replace("_", " ")
    pair = spec.instructions[instruction_index]
    text = pair.pos if side == "pos" else pair.neg
    return template.format(article=indefinite_article(display), name=display, instruction=text).strip()


# ---------------------------------------------------------------------------------------------- loading


def persona_prompt(trait: str | Path) -> str:
    """The trait's first pos system prompt: the one context that stands for "the persona" wherever a single
    reference prompt is needed (the monitor's prompted level, the stance-neutral coherence reading)."""
    return system_prompt(load_trait(trait), 0, "pos")


def available_traits() -> list[str]:
    """Names of the traits packaged in steerlab/resources/traits."""
    root = resources.files("steerlab") / "resources" / "traits"
    return sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))


def _resolve(name_or_path: str | Path) -> tuple[str, str]:
    """(trait name, file text) for a path or a packaged trait name."""
    path = Path(name_or_path)
    if path.is_file():
        return path.stem, path.read_text(encoding="utf-8")
    text_name = str(name_or_path)
    if path.suffix or "/" in text_name or "\\" in text_name:
        raise TraitError(f"trait file {text_name} does not exist")
    res = resources.files("steerlab") / "resources" / "traits" / f"{text_name}.json"
    if not res.is_file():
        raise TraitError(
            f"no trait file {text_name!r} and no packaged trait of that name; "
            f"packaged traits: {available_traits()}"
        )
    return text_name, res.read_text(encoding="utf-8")


def _read(name_or_path: str | Path) -> tuple[str, str, dict[str, Any]]:
    name, text = _resolve(name_or_path)
    source = str(name_or_path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise TraitError(f"{source}: invalid JSON {json_problem(err, 'file')}") from err
    if not isinstance(data, dict):
        raise TraitError(f"{source}: the top level must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(PV_KEYS) - set(EXTENSION_KEYS))
    if unknown:
        raise TraitError(f"{source}: unknown key {unknown[0]!r}; allowed keys: {[*PV_KEYS, *EXTENSION_KEYS]}")
    return name, source, data


def _strings(data: dict[str, Any], key: str, source: str) -> list[str]:
    if key not in data:
        raise TraitError(f"{source}: missing key {key!r}")
    items = data[key]
    if not isinstance(items, list):
        raise TraitError(f"{source}: key {key!r} must be a list of strings, got {type(items).__name__}")
    if not items:
        raise TraitError(f"{source}: key {key!r} is an empty list")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TraitError(f"{source}: {key}[{i}] must be a string, got {type(item).__name__} {item!r}")
        if not item.strip():
            raise TraitError(f"{source}: {key}[{i}] is an empty string")
    return list(items)


def _instructions(data: dict[str, Any], source: str) -> list[InstructionPair]:
    if "instruction" not in data:
        raise TraitError(f"{source}: missing key 'instruction'")
    items = data["instruction"]
    if not isinstance(items, list):
        raise TraitError(f'{source}: key \'instruction\' must be a list of {{"pos", "neg"}} objects')
    if not items:
        raise TraitError(f"{source}: key 'instruction' is an empty list")
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise TraitError(
                f"{source}: instruction[{i}] must be an object with 'pos' and 'neg', "
                f"got {type(item).__name__}"
            )
        for side in ("pos", "neg"):
            if side not in item:
                raise TraitError(f"{source}: instruction[{i}] is missing {side!r}")
            if not isinstance(item[side], str) or not item[side].strip():
                raise TraitError(
                    f"{source}: instruction[{i}].{side} must be a non-empty string, got {item[side]!r}"
                )
        extra = sorted(set(item) - {"pos", "neg"})
        if extra:
            raise TraitError(f"{source}: instruction[{i}] has unknown key {extra[0]!r}; only 'pos' and 'neg'")
        pairs.append(InstructionPair(item["pos"], item["neg"]))
    return pairs


def _eval_prompt(data: dict[str, Any], source: str) -> str:
    if "eval_prompt" not in data:
        raise TraitError(f"{source}: missing key 'eval_prompt'")
    validate_judge_template(data["eval_prompt"], where=f"{source}: eval_prompt")
    return data["eval_prompt"]


def _split(data: dict[str, Any], source: str, split_seed: int | None) -> tuple[list[str], list[str]]:
    has_split = [k for k in ("extract_questions", "eval_questions") if k in data]
    if "questions" in data and has_split:
        raise TraitError(
            f"{source}: give either 'questions' or 'extract_questions' + 'eval_questions', not both"
        )
    if has_split:
        return _strings(data, "extract_questions", source), _strings(data, "eval_questions", source)
    questions = _strings(data, "questions", source)
    if len(questions) < 2:
        raise TraitError(
            f"{source}: 'questions' needs at least 2 items to split into extraction and evaluation"
        )
    order = list(range(len(questions)))
    if split_seed is not None:
        random.Random(split_seed).shuffle(order)
    half = len(questions) // 2
    extract_idx, eval_idx = sorted(order[:half]), sorted(order[half:])
    return [questions[i] for i in extract_idx], [questions[i] for i in eval_idx]


def load_trait(
    name_or_path: str | Path,
    *,
    eval_file: str | Path | None = None,
    split_seed: int | None = None,
    name: str | None = None,
) -> TraitSpec:
    """Load and validate a trait: a packaged name ("evil") or a path to a JSON file.

    ``eval_file`` pairs a persona_vectors extraction file with its evaluation file (see the module doc for
    how questions are split otherwise). ``name`` overrides the trait name (default: the file stem). Raises
    `TraitError` naming the file (and the line, for invalid JSON) for an unknown name, a malformed file, a
    broken judge template or questions shared between the splits.
    """
    stem, source, data = _read(name_or_path)
    instructions = _instructions(data, source)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise TraitError(f"{source}: key 'description' must be a string")
    if eval_file is None:
        extract, evaluate = _split(data, source, split_seed)
        eval_prompt = _eval_prompt(data, source)
    else:
        if "extract_questions" in data or "eval_questions" in data:
            raise TraitError(f"{source}: already has extract/eval question sets; do not pass eval_file")
        _, eval_source, eval_data = _read(eval_file)
        extract = _strings(data, "questions", source)
        evaluate = _strings(eval_data, "questions", eval_source)
        eval_prompt = _eval_prompt(eval_data, eval_source)
        _eval_prompt(data, source)  # still validated: a broken template in either file is an error
        source = f"{source} + {eval_source}"
    return TraitSpec(
        name=name or stem,
        instructions=instructions,
        extract_questions=extract,
        eval_questions=evaluate,
        eval_prompt=eval_prompt,
        description=description,
        source=source,
    )
