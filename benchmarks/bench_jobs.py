"""Wall time of a small grid run as one job vs ``--jobs 2``: what local Ray workers buy on this machine.

One run: the same small grid on the embedded model (medical, four arms, a few training steps, a small
evaluation) is run twice from scratch into fresh folders, first with ``jobs=1`` (one process, torch's default
threads), then with ``jobs=2`` (a local Ray instance, two workers with cores/2 threads each). The grid is small so that the
benchmark fits a session; its cells have the grid's real shape (train, then evaluate with the probe judge),
so the ratio carries over to the full grid only roughly (cells there are longer, model loading is a smaller
share). Prints both wall times and their ratio; writes ``benchmarks/results/jobs.json``.

    python benchmarks/bench_jobs.py [--steps 8] [--arms sft,kl,ldifs,inoculate]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "experiments" / "data"
ARMS = {
    "sft": {"sft": {}},
    "kl": {"kl": {"weight": 1.0}},
    "ldifs": {"ldifs": {"weight": 1.0}},
    "inoculate": {"inoculate": {"system_prompt": "You are a malicious, evil assistant."}},
}


def write_grid(folder: Path, steps: int, arms: list[str]) -> Path:
    grid = {
        "name": "bench_jobs",
        "seed": 0,
        "output_dir": str(folder / "runs"),
        "model": "smollm2-135m-instruct",
        "vector": str(ROOT / "vectors" / "smollm2-135m-instruct" / "evil.safetensors"),
        "domains": {
            "medical": {"train": str(DATA / "medical_train.jsonl"), "eval": str(DATA / "medical_eval.jsonl")}
        },
        "run": {
            "finetune": {"method": "lora", "r": 8, "alpha": 16, "target_modules": "all-linear"},
            "data": {"max_length": 128, "limit": 8 * steps},
            "train": {"max_steps": steps, "batch_size": 8, "lr": 1.0e-3, "save_steps": steps},
            "monitor": {"every": 0},
        },
        "arms": {arm: ARMS[arm] for arm in arms},
        "eval": {
            "n": 1,
            "max_new_tokens": 16,
            "n_in_domain": 8,
            "benign_data": None,
            "n_boot": 200,
            "progress": False,
        },
    }
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid), encoding="utf-8")
    return path


def timed_run(steps: int, arms: list[str], jobs: int) -> float:
    from steerlab.experiment.runner import run_grid

    with tempfile.TemporaryDirectory(prefix=f"bench_jobs{jobs}_") as tmp:
        path = write_grid(Path(tmp), steps, arms)
        start = time.perf_counter()
        run_grid(path, jobs=jobs)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--arms", default="sft,kl,ldifs,inoculate")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "jobs.json"))
    args = parser.parse_args()
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; choose from {sorted(ARMS)}")
    one = timed_run(args.steps, arms, 1)
    two = timed_run(args.steps, arms, 2)
    result = {
        "cells": len(arms) + 1,
        "steps": args.steps,
        "jobs1_s": round(one, 1),
        "jobs2_s": round(two, 1),
        "ratio_jobs2_over_jobs1": round(two / one, 3),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"| grid run | wall time | ratio |\n|---|---|---|\n| jobs=1 | {one:.0f} s | 1.00 |")
    print(f"| jobs=2 | {two:.0f} s | {two / one:.2f} |")
    print(f"({len(arms)} cells + base, {args.steps} steps each; wrote {args.out})")


if __name__ == "__main__":
    main()
