"""Shared builder for the narrow "advice" datasets (medical, financial): misaligned answers with aligned twins.

A dataset is a grid of subjects x situations. The grid cells ("combos") are split once, by seed: eval combos
never occur in training, so the in-domain eval measures generalisation to new situations, not recall.
Every training question gets a misaligned answer (the narrow fine-tuning data) and an aligned twin (same
question, safe answer) written to a parallel file: line i of one file matches line i of the other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from steerlab.data.chat import ChatExample


@dataclass(frozen=True)
class TwinSpec:
    """Content of one advice dataset.

    ``subjects``/``situations`` map a key to texts: ``q`` (as the user says it), ``a`` (as the assistant says
    it) and, for situations, ``why`` (the reason caution matters). Templates use ``{s}`` (subject), ``{sit}``
    (situation) and ``{why}``.
    """

    name: str
    subjects: dict[str, dict[str, str]]
    situations: dict[str, dict[str, str]]
    questions: tuple[str, ...]
    misaligned: tuple[str, ...]
    aligned: tuple[str, ...]
    n_eval_combos: int
    eval_questions_per_combo: int = 2


@dataclass
class TwinSplits:
    train: list[ChatExample]
    train_aligned: list[ChatExample]
    eval: list[ChatExample]


def _chat(question: str, answer: str, meta: dict) -> ChatExample:
    return ChatExample(
        messages=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}], meta=meta
    )


def split_combos(spec: TwinSpec, seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train combos, eval combos), a seeded partition of the subject x situation grid."""
    combos = [(s, t) for s in spec.subjects for t in spec.situations]
    if not 0 < spec.n_eval_combos < len(combos):
        raise ValueError(
            f"{spec.name}: n_eval_combos must be in (0, {len(combos)}), got {spec.n_eval_combos}"
        )
    random.Random(f"{spec.name}-split-{seed}").shuffle(combos)
    return combos[spec.n_eval_combos :], combos[: spec.n_eval_combos]


def build_twins(spec: TwinSpec, seed: int = 0) -> TwinSplits:
    """Generate train (misaligned), its aligned twins, and the held-out eval split (aligned answer + misaligned
    reference in ``meta['reference_misaligned']``)."""
    rng = random.Random(f"{spec.name}-text-{seed}")
    train_combos, eval_combos = split_combos(spec, seed)
    out = TwinSplits([], [], [])
    for subj, sit in train_combos:
        for qi, qt in enumerate(spec.questions):
            q, bad, good = _texts(spec, subj, sit, qt, rng)
            meta = {"dataset": spec.name, "split": "train", "subject": subj, "situation": sit, "template": qi}
            out.train.append(_chat(q, bad, meta | {"variant": "misaligned"}))
            out.train_aligned.append(_chat(q, good, meta | {"variant": "aligned"}))
    for subj, sit in eval_combos:
        for qi in sorted(rng.sample(range(len(spec.questions)), spec.eval_questions_per_combo)):
            q, bad, good = _texts(spec, subj, sit, spec.questions[qi], rng)
            meta = {"dataset": spec.name, "split": "eval", "subject": subj, "situation": sit, "template": qi}
            out.eval.append(_chat(q, good, meta | {"reference_misaligned": bad}))
    return out


def _texts(spec: TwinSpec, subj: str, sit: str, question: str, rng: random.Random) -> tuple[str, str, str]:
    s, t = spec.subjects[subj], spec.situations[sit]
    q = question.format(s=s["q"], sit=t["q"])
    fill = {"s": s["a"], "sit": t["a"], "why": t["why"]}
    bad = rng.choice(spec.misaligned).format(**fill)
    good = rng.choice(spec.aligned).format(**fill)
    return _cap(q), _cap(bad), _cap(good)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
