"""Seeded synthetic inputs in the real file formats, to test figures and preview a report without training.

The numbers are made up (sft drifts toward the trait, steer stays near the base level); nothing here is
a result. Every file is written with the same schemas the real producers use.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from typing import Any

from steerlab.io import write_json, write_text

DEFAULT_ARMS = ("sft", "steer")
EIGHT_ARMS = ("sft", "steer", "kl", "ldifs", "interleave", "inoculate", "steer_ablate", "kl_steer")
# how far each synthetic arm drifts toward the trait over training (sft = 1)
_DRIFT = {"sft": 1.0, "steer": 0.05, "kl": 0.6, "ldifs": 0.45, "interleave": 0.5, "inoculate": 0.3}


def monitor_rows(
    arm: str,
    *,
    steps: int = 100,
    every: int = 10,
    layer: int = 2,
    ldifs_layers=(0, 1, 2),
    base: float = 1.0,
    prompted: float = 6.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    rng = random.Random(f"{seed}-{arm}")
    drift = _DRIFT.get(arm, 0.2 + 0.6 * rng.random())
    rows = []
    for step in range(0, steps + 1, every):
        frac = step / steps
        projection = (
            base + drift * (prompted - base) * 0.8 * frac**0.7 + (rng.gauss(0, 0.08) if step else 0.0)
        )
        per_layer = {
            str(k): round(
                (0.02 + 0.01 * k) * frac * (0.3 + drift) + (0.001 * rng.random() if step else 0.0), 6
            )
            for k in ldifs_layers
        }
        rows.append(
            {
                "step": step,
                "arm": arm,
                "projection": round(projection, 6),
                "projection_layer": layer,
                "ldifs": round(sum(per_layer.values()), 6),
                "ldifs_per_layer": per_layer,
                "train_loss": None if step == 0 else round(2.5 * (1 - 0.6 * frac) + rng.gauss(0, 0.02), 6),
            }
        )
    return rows


def write_run(folder: str | Path, arm: str, *, seed: int = 0, eval_json: bool = True, **monitor_kw) -> Path:
    """A ``runs/<name>/`` folder: config.yaml, metrics.jsonl, monitor.jsonl and (optionally) eval.json."""
    folder = Path(folder)
    rows = monitor_rows(arm, seed=seed, **monitor_kw)
    write_text(
        folder / "config.yaml",
        f"# synthetic run (steerlab.plots.synthetic)\narm: {arm}\nmodel: tiny-llama\n"
        f"seed: {seed}\ntrain:\n  steps: {rows[-1]['step']}\n  lr: 1.0e-4\n",
    )
    write_text(folder / "monitor.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    metrics = [
        {"step": r["step"], "loss": r["train_loss"], "lr": 1e-4, "grad_norm": 1.0 + 0.1 * i}
        for i, r in enumerate(rows)
        if r["train_loss"] is not None
    ]
    write_text(folder / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))
    if eval_json:
        drift = _DRIFT.get(arm, 0.4)
        write_json(
            folder / "eval.json",
            {
                "general_misalignment": round(0.02 + 0.2 * drift, 4),
                "in_domain": round(0.7 + 0.1 * (1 - drift), 4),
                "coherence": 85.0,
            },
        )
    return folder


def arm_result_rows(arms=DEFAULT_ARMS, domains=("medical",), *, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for domain in domains:
        for arm in arms:
            drift = _DRIFT.get(arm, 0.2 + 0.6 * rng.random())
            gm, ind = 0.02 + 0.25 * drift + rng.uniform(0, 0.02), 0.5 + 0.35 * drift + rng.uniform(0, 0.05)
            rows.append(
                {
                    "arm": arm,
                    "domain": domain,
                    "general_misalignment": round(gm, 4),
                    "general_misalignment_ci": [round(max(gm - 0.04, 0), 4), round(gm + 0.05, 4)],
                    "in_domain": round(ind, 4),
                    "in_domain_ci": [round(ind - 0.06, 4), round(min(ind + 0.05, 1), 4)],
                    "benign_accuracy": round(0.8 - 0.1 * drift, 4),
                    "coherence": round(88 - 10 * drift, 2),
                }
            )
    return rows


def sweep_rows(alphas=(-8, -4, -2, 0, 2, 4, 8), *, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for a in alphas:
        score = 50 + 45 * (a / (abs(a) + 3)) + rng.gauss(0, 1)
        rows.append(
            {
                "alpha": a,
                "trait_score": round(score, 3),
                "trait_score_ci": [round(score - 4, 3), round(score + 4, 3)],
                "coherence": round(90 - 2.5 * abs(a) ** 1.3, 3),
                "perplexity": round(8 * 1.15 ** abs(a), 3),
            }
        )
    return rows


def vector_stats(n_layers: int = 4, chosen: int = 2, *, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)

    def peak(layer: int, top: float) -> float:
        return min(top - 0.08 * abs(layer - chosen) + rng.uniform(-0.01, 0.01), 1.0)

    return {
        "auroc_eval": {str(k): round(peak(k, 0.97), 4) for k in range(n_layers)},
        "auroc_eval_text_only": {str(k): round(peak(k, 0.85), 4) for k in range(n_layers)},
        "steer_effect": {
            str(k): round(30 - 8 * abs(k - chosen) + rng.uniform(-2, 2), 3) for k in range(n_layers)
        },
        "prompted_projection": 6.0,
    }


def screening_csv(n: int = 400, *, tail: float = 0.05, seed: int = 0) -> str:
    rng = random.Random(seed)
    diffs = [rng.gauss(0, 1) for _ in range(n)] + [rng.gauss(4, 0.7) for _ in range(max(1, int(n * tail)))]
    order = sorted(range(len(diffs)), key=lambda i: -diffs[i])
    cut = diffs[order[max(1, int(n * tail)) - 1]]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["rank", "index", "projection_diff", "flagged", "prompt", "response"])
    for rank, i in enumerate(order, start=1):
        writer.writerow(
            [
                rank,
                i,
                f"{diffs[i]:.5f}",
                str(diffs[i] >= cut).lower(),
                f"question {i}",
                f"answer {i}, with a comma",
            ]
        )
    return out.getvalue()


def write_experiment(
    folder: str | Path, arms=DEFAULT_ARMS, domains=("medical",), *, seed: int = 0, n_layers: int = 4
) -> Path:
    """An experiment folder: one run per arm plus results.csv, sweep.json, screen.csv and a vector sidecar."""
    folder = Path(folder)
    for arm in arms:
        write_run(folder / f"{arm}", arm, seed=seed, ldifs_layers=tuple(range(n_layers)), layer=n_layers // 2)
    rows = arm_result_rows(arms, domains, seed=seed)
    out = io.StringIO()
    fields = [
        "arm",
        "domain",
        "general_misalignment",
        "general_misalignment_ci_lo",
        "general_misalignment_ci_hi",
        "in_domain",
        "in_domain_ci_lo",
        "in_domain_ci_hi",
        "benign_accuracy",
        "coherence",
    ]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {
                **{k: r[k] for k in fields if k in r},
                "general_misalignment_ci_lo": r["general_misalignment_ci"][0],
                "general_misalignment_ci_hi": r["general_misalignment_ci"][1],
                "in_domain_ci_lo": r["in_domain_ci"][0],
                "in_domain_ci_hi": r["in_domain_ci"][1],
            }
        )
    write_text(folder / "results.csv", out.getvalue())
    write_json(folder / "sweep.json", {"trait": "evil", "rows": sweep_rows(seed=seed)})
    write_text(folder / "screen.csv", screening_csv(seed=seed))
    sidecar = {
        "model_id": "tiny-llama",
        "trait": "evil",
        "n_layers": n_layers,
        "d_model": 32,
        "chosen_layer": n_layers // 2,
        "layer_convention": "block_output",
        "stats": vector_stats(n_layers, n_layers // 2, seed=seed),
    }
    write_json(folder / "vectors" / "evil.json", sidecar)  # a sidecar alone: the report never reads tensors
    return folder
