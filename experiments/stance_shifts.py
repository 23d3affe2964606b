"""Paired stance shifts of evaluated models against the base model, read from their ``stance_scores.jsonl``.

An arm's stance minus the base model's, question by question, bootstrapped over questions: the question's
own offset (some questions' misaligned references are simply likelier) cancels, so the interval is the
resolution of a *comparison*, much tighter than either model's own interval.

    python experiments/stance_shifts.py runs/instruments_smollm2/base/eval_medical \
        runs/instruments_smollm2/medical__sft/eval runs/instruments_smollm2/arithmetic__sft/eval
"""

from __future__ import annotations

import argparse
from pathlib import Path

from steerlab.evaluate.instruments import STANCE_FILE
from steerlab.evaluate.stance import QuestionStance, paired_shift, summarize
from steerlab.evaluate.store import read_keyed


def load(folder: Path) -> dict[str, list[QuestionStance]]:
    """{'<condition>/<set>': per-question scores} of one evaluation folder."""
    out: dict[str, list[QuestionStance]] = {}
    for key, record in read_keyed(folder / STANCE_FILE).items():
        condition, name, qid = key.split("/", 2)
        out.setdefault(f"{condition}/{name}", []).append(QuestionStance.from_record(qid, record))
    if not out:
        raise SystemExit(f"{folder / STANCE_FILE}: no stance scores")
    return out


def _fmt(est) -> str:
    return "–" if est.value is None else f"{est.value:+.3f} [{est.ci[0]:+.3f}, {est.ci[1]:+.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="the base model's evaluation folder")
    parser.add_argument("others", type=Path, nargs="+", help="evaluation folders to compare with it")
    args = parser.parse_args()
    base = load(args.base)
    print("| model | set | stance [95% CI] | vs base (paired) | damage control [95% CI] | vs base (paired) |")
    print("|---|---|---|---|---|---|")
    for folder in [args.base, *args.others]:
        scores = load(folder)
        for key, values in sorted(scores.items()):
            if key not in base:
                continue
            s = summarize(values)
            shift = paired_shift(values, base[key])
            ctrl_shift = paired_shift(values, base[key], of=lambda v: v.control)
            print(
                f"| {folder} | {key} | {_fmt(s['stance'])} | {_fmt(shift)} | {_fmt(s['control'])} | "
                f"{_fmt(ctrl_shift)} |"
            )


if __name__ == "__main__":
    main()
