"""Time of one cell's evaluation on the embedded model, by part: sampling, judging, stance score, conditional.

One run evaluates the base SmolLM2-135M-Instruct with the settings of ``experiments/instruments_smollm2.yaml``'s
``eval`` block (medical domain: 26 general questions x ``--n`` answers, ``--n-in-domain`` held-out answers,
the probe judge of the shipped vector, the stance score on every general and medical reference, the general
stance under the three training-context cues) into a fresh folder, and prints ``eval.json``'s
``timings_s``: wall seconds per part, with sampling and judging split out. The stance figures also give
tokens per second, and the same references are scored once more the plain way (every (prompt, answer)
sequence whole, ``steerlab.data.nll.answer_nll``) on a few questions to give the shared-prompt speed-up.

The machine's load average is recorded, and every part's process CPU seconds beside its wall seconds: on a
shared machine wall time is an upper bound, and with one thread (``--threads 1``) the CPU seconds are close
to what the part takes alone on one core.
Writes ``benchmarks/results/eval.json``.

    python benchmarks/bench_eval.py [--threads 2] [--n 2] [--n-in-domain 8] [--n-conditional 0]
        [--conditional-questions N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "experiments" / "data"
VECTOR = ROOT / "vectors" / "smollm2-135m-instruct" / "evil.safetensors"

GROUPS = {
    "sampling": ("general_sampling", "in_domain_sampling", "benign_sampling"),
    "judging": ("general_judging", "in_domain_judging"),
    "stance score (general + medical, with damage control)": ("stance",),
    "conditional questions (stance under 3 cues)": ("conditional",),
    "other (log-prob gap, projection, collapse)": ("logprob_gap", "projection", "collapse"),
}


def shared_speedup(model, tokenizer, questions: int = 3) -> dict[str, float]:
    """Seconds for the first ``questions`` medical questions' references: shared prompt vs whole sequences."""
    from steerlab.data.references import load_references, references_dir
    from steerlab.evaluate.logprob_score import answer_logprobs
    from steerlab.evaluate.stance import shared_prompt_logprobs

    refs = load_references(references_dir() / "medical.jsonl")[:questions]
    out = {}
    for name in ("shared", "whole", "shared_again", "whole_again"):
        start = time.perf_counter()
        for r in refs:
            prompt, answers = [{"role": "user", "content": r.question}], list(r.aligned + r.misaligned)
            if name.startswith("shared"):
                shared_prompt_logprobs(model, tokenizer, prompt, answers, batch_size=16)
            else:
                answer_logprobs(model, tokenizer, [prompt] * len(answers), answers, batch_size=16)
        out[name] = round(time.perf_counter() - start, 2)
    out["ratio_whole_over_shared"] = round(
        (out["whole"] + out["whole_again"]) / (out["shared"] + out["shared_again"]), 2
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    parser.add_argument("--n", type=int, default=2, help="answers per general question")
    parser.add_argument("--n-in-domain", type=int, default=8)
    parser.add_argument("--n-conditional", type=int, default=0)
    parser.add_argument(
        "--conditional-questions", type=int, default=None, help="general questions under cues [default: all]"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval.json")
    args = parser.parse_args()

    import torch

    from steerlab.evaluate import EvalConfig, evaluate_model
    from steerlab.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    model, tokenizer = load_model("smollm2-135m-instruct")
    with tempfile.TemporaryDirectory(prefix="bench_eval-") as folder:
        cfg = EvalConfig(
            out_dir=folder,
            arm="base",
            domain="medical",
            model="smollm2-135m-instruct",
            n=args.n,
            max_new_tokens=40,
            batch_size=16,
            in_domain_data=str(DATA / "medical_eval.jsonl"),
            n_in_domain=args.n_in_domain,
            benign_data=None,
            vector=str(VECTOR),
            n_conditional=args.n_conditional,
            conditional_questions=args.conditional_questions,
            progress=False,
        )
        start = time.perf_counter()
        row = evaluate_model(model, tokenizer, cfg)
        wall = time.perf_counter() - start
    timings, cpu = row["timings_s"], row["cpu_timings_s"]
    parts = {name: round(sum(timings.get(k, 0.0) for k in keys), 1) for name, keys in GROUPS.items()}
    cpu_parts = {name: round(sum(cpu.get(k, 0.0) for k in keys), 1) for name, keys in GROUPS.items()}
    speedup = shared_speedup(model, tokenizer)
    result = {
        "wall_s": round(wall, 1),
        "parts_s": parts,
        "parts_cpu_s": cpu_parts,
        "timings_s": timings,
        "cpu_timings_s": cpu,
        "shared_prompt": speedup,
        "stance": {k: row.get(k) for k in ("stance", "stance_ci", "in_domain_stance", "in_domain_stance_ci")},
        "settings": {
            "n": args.n,
            "n_in_domain": args.n_in_domain,
            "n_conditional": args.n_conditional,
            "conditional_questions": args.conditional_questions,
            "threads": torch.get_num_threads(),
        },
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }
    total_cpu = sum(cpu_parts.values())
    print(
        f"one cell's evaluation: {wall:.0f} s wall ({wall / 60:.1f} min), {total_cpu:.0f} CPU s in its parts"
    )
    print(f"  {'part':55s} {'wall s':>8s} {'CPU s':>8s}")
    for name, seconds in parts.items():
        print(f"  {name:55s} {seconds:8.1f} {cpu_parts[name]:8.1f}")
    print(f"  shared prompt vs whole sequences: {speedup['ratio_whole_over_shared']}x faster")
    print(f"  load average at start / end: {load_start[0]:.1f} / {os.getloadavg()[0]:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
