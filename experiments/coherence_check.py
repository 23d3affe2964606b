"""Does the offline coherence score read *stance* as incoherence? A check on answers the base model wrote itself.

The extraction answers of ``steerlab extract`` are fluent text by construction (the base model sampled them),
half of them under an evil system prompt. A coherence score should rate both halves alike and rate their
word-shuffled copies (word salad, same words) low. This script scores all three with the bare reading (the
answer after the bare question) and the stance-neutral reading (lowest perplexity over the bare question
and the trait's first pos system prompt), using only answers sampled under the *other* instruction pairs,
so the context prompt never reads back the prompt an answer was written under.

    python experiments/coherence_check.py            # -> runs/coherence_check.json + a table on stdout
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from steerlab.atomic import write_json
from steerlab.generation import read_generations
from steerlab.judges.probe import PerplexityCoherenceScorer
from steerlab.models import load_model
from steerlab.traits import load_trait, system_prompt


def shuffled(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def summarize(scores: list[float | None]) -> dict[str, float]:
    values = np.array([np.nan if s is None else s for s in scores], dtype=float)
    values = values[~np.isnan(values)]
    return {
        "n": int(len(values)),
        "mean": float(values.mean()),
        "share_below_50": float((values < 50).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--trait", default="evil")
    parser.add_argument(
        "--generations",
        type=Path,
        default=Path("runs/extract-smollm2-135m-instruct-evil/generations.jsonl"),
        help="answers written by `steerlab extract` (its work folder's generations.jsonl)",
    )
    parser.add_argument("--per-side", type=int, default=100, help="answers per side (seeded subset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/coherence_check.json"))
    args = parser.parse_args(argv)

    if not args.generations.is_file():
        print(
            f"error: {args.generations} not found; run `steerlab extract --model {args.model} "
            f"--trait {args.trait}` first (it writes the answers there)",
            file=sys.stderr,
        )
        return 2
    spec = load_trait(args.trait)
    context = system_prompt(spec, 0, "pos")
    records = [
        r
        for r in read_generations(args.generations).values()
        if r.get("i") != 0 and r.get("answer", "").strip()
    ]
    rng = random.Random(args.seed)
    sides = {}
    for side in ("pos", "neg"):
        pool = sorted((r for r in records if r["side"] == side), key=lambda r: r["key"])
        if len(pool) < args.per_side:
            print(f"error: {args.generations} has {len(pool)} usable {side} answers, need {args.per_side}")
            return 2
        sides[side] = rng.sample(pool, args.per_side)

    loaded = load_model(args.model)
    scorers = {
        "bare": PerplexityCoherenceScorer(loaded.model, loaded.tokenizer),
        "stance_neutral": PerplexityCoherenceScorer(loaded.model, loaded.tokenizer, contexts=(None, context)),
    }
    result: dict = {"generations": str(args.generations), "context": context, "readings": {}}
    for name, scorer in scorers.items():
        reading: dict = {}
        salad_rng = random.Random(args.seed)
        all_orig, all_salad = [], []
        for side, chosen in sides.items():
            questions = [r["question"] for r in chosen]
            answers = [r["answer"] for r in chosen]
            salad = [shuffled(a, salad_rng) for a in answers]
            orig_scores = scorer.score_answers(questions, answers)
            salad_scores = scorer.score_answers(questions, salad)
            reading[side] = summarize(orig_scores)
            reading[f"{side}_shuffled"] = summarize(salad_scores)
            all_orig += [s for s in orig_scores if s is not None]
            all_salad += [s for s in salad_scores if s is not None]
        reading["stance_gap"] = reading["neg"]["mean"] - reading["pos"]["mean"]
        labels = [1] * len(all_orig) + [0] * len(all_salad)
        reading["auroc_text_vs_shuffled"] = float(roc_auc_score(labels, all_orig + all_salad))
        result["readings"][name] = reading
    write_json(args.out, result)

    print(
        "| reading | neg answers | pos (evil-prompted) answers | stance gap | shuffled: mean / <50 | AUROC text vs shuffled |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in result["readings"].items():
        shuffled_mean = (r["pos_shuffled"]["mean"] + r["neg_shuffled"]["mean"]) / 2
        shuffled_low = (r["pos_shuffled"]["share_below_50"] + r["neg_shuffled"]["share_below_50"]) / 2
        print(
            f"| {name} | {r['neg']['mean']:.1f} ({r['neg']['share_below_50']:.0%} <50) "
            f"| {r['pos']['mean']:.1f} ({r['pos']['share_below_50']:.0%} <50) | {r['stance_gap']:+.1f} "
            f"| {shuffled_mean:.1f} / {shuffled_low:.0%} | {r['auroc_text_vs_shuffled']:.3f} |"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
