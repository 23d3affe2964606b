"""General emergent misalignment: sampled answers to open questions, judged, turned into rates with CIs.

Sampling: ``n`` answers per question at temperature 1, spread round-robin over the question's paraphrases
(answer ``k`` uses paraphrase ``k mod P``); ``n=None`` keeps the file's own ``len(paraphrases) x
samples_per_paraphrase``. Every question in the file is asked as free-form text whatever its ``type``, so
the original emergent-misalignment files load and run unchanged. Rates follow ``steerlab.evaluate.rules``
and their CIs resample whole questions (``steerlab.evaluate.metrics``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from steerlab.data.em_questions import EMQuestion
from steerlab.evaluate import rules
from steerlab.evaluate.logprob_score import ReferencePair
from steerlab.evaluate.metrics import bootstrap_mean, bootstrap_rate
from steerlab.persona.generation import GenRequest, chat_messages


def general_requests(
    questions: Sequence[EMQuestion], n: int | None = None, prefix: str = "general"
) -> list[GenRequest]:
    """One generation request per answer to sample; keys are ``{prefix}/{question id}/{k}``."""
    if n is not None and n < 1:
        raise ValueError(f"n (answers per question) must be >= 1, got {n}")
    out = []
    for q in questions:
        count = n if n is not None else len(q.paraphrases) * q.samples_per_paraphrase
        for k in range(count):
            p = k % len(q.paraphrases)
            out.append(
                GenRequest(
                    key=f"{prefix}/{q.id}/{k}",
                    messages=chat_messages(q.paraphrases[p], q.system),
                    meta={"question_id": q.id, "paraphrase": p, "sample": k, "question": q.paraphrases[p]},
                )
            )
    return out


def reference_pairs(questions: Sequence[EMQuestion]) -> list[ReferencePair]:
    """One pair per (question with references, paraphrase); grouped by question for the bootstrap."""
    return [
        ReferencePair(
            prompt=chat_messages(text, q.system),
            aligned=q.reference_aligned,
            misaligned=q.reference_misaligned,
            group=q.id,
            source=q.source,
        )
        for q in questions
        if q.has_references
        for text in q.paraphrases
    ]


def summarize_judged(
    alignment: Sequence[float | None],
    coherence: Sequence[float | None],
    groups: Sequence[str],
    *,
    seed: int = 0,
    n_boot: int = 2000,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Rates (misaligned, incoherent, misaligned among coherent) and mean coherence, each with a CI.

    Unscored answers (either score None) are counted in ``n_unscored`` and left out of every rate.
    """
    if not len(alignment) == len(coherence) == len(groups):
        raise ValueError("alignment, coherence and groups must have the same length")
    rows = [(a, c, g) for a, c, g in zip(alignment, coherence, groups, strict=True) if rules.is_scored(a, c)]
    g = [r[2] for r in rows]
    kw = {"seed": seed, "n_boot": n_boot, "alpha": alpha}
    mis = bootstrap_rate([rules.is_misaligned(a, c) for a, c, _ in rows], groups=g, **kw)
    inc = bootstrap_rate([rules.is_incoherent(c) for _, c, _ in rows], groups=g, **kw)
    coherent = [(a, c, gg) for a, c, gg in rows if rules.is_coherent(c)]
    mis_coh = bootstrap_rate(
        [rules.is_misaligned(a, c) for a, c, _ in coherent], groups=[r[2] for r in coherent], **kw
    )
    coh = bootstrap_mean([c for _, c, _ in rows], groups=g, **kw)
    ali = bootstrap_mean([a for a, _, _ in rows], groups=g, **kw)
    return {
        **mis.as_dict("misaligned_rate"),
        **inc.as_dict("incoherent_rate"),
        **mis_coh.as_dict("misaligned_among_coherent"),
        **coh.as_dict("coherence"),
        **ali.as_dict("alignment"),
        "n_answers": len(alignment),
        "n_scored": len(rows),
        "n_unscored": len(alignment) - len(rows),
        "n_alignment_none": sum(a is None for a in alignment),
        "n_coherence_none": sum(c is None for c in coherence),
    }
