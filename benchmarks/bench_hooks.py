"""Forward-pass cost of one steering hook under each backend, relative to the raw transformers forward.

Variants, all measured in ONE run and interleaved in rounds (every variant once per round, the order
rotated each round, warm-up rounds discarded), medians reported:

  hf raw        the transformers model, no hooks (the baseline: ratio 1.00)
  hf add        steerlab's transformers backend with one Add at the middle layer, scope "all"
  tlens raw/add TransformerBridge (over its own copy of the model) without / with the same hook
  nnsight raw/add  an nnsight trace (own copy) with no intervention / with the same hook

Every variant gets the same inputs and the same position ids (derived from the attention mask). "ratio" is
median(variant) / median(hf raw); "paired" is the median over rounds of variant / hf raw of the same round,
which is steadier on a shared machine. We also time the hook body alone (`HookProgram.run_layer`: scope
resolution + the Add) so its cost can be read without forward-pass noise.

    python benchmarks/bench_hooks.py [--quick] [--rounds N] [--model NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from steerlab.architectures import hidden_size, num_layers
from steerlab.hooks import Add
from steerlab.hooks.backends import BACKENDS, get_backend
from steerlab.hooks.program import HookProgram

RESULTS = Path(__file__).parent / "results" / "hooks.json"
VARIANTS = ("hf raw", "hf add", "tlens raw", "tlens add", "nnsight raw", "nnsight add")


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _variants(model, batch: int, seq: int, seed: int) -> dict[str, Callable[[], object]]:
    generator = torch.Generator().manual_seed(seed)
    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(3, vocab, (batch, seq), generator=generator)
    mask = torch.ones_like(ids)
    d, layer = hidden_size(model), num_layers(model) // 2
    ops = [Add(layer, scope="all", vector=torch.randn(d, generator=generator), alpha=4.0)]
    fns: dict[str, Callable[[], object]] = {}
    for name in BACKENDS:
        backend = get_backend(name)
        handle = backend.prepare(model, None)
        fns[f"{name} raw"] = lambda b=backend, h=handle: b.raw_forward(h, ids, mask)
        fns[f"{name} add"] = lambda b=backend, h=handle: b.forward(h, ids, mask, ops)
    return fns


def hook_body_seconds(model, batch: int, seq: int, repeats: int = 200) -> float:
    """Median time of the hook body alone (CallInfo + scope resolution + Add) on a [batch, seq, d] tensor."""
    d, layer = hidden_size(model), num_layers(model) // 2
    program = HookProgram(
        [Add(layer, vector=torch.randn(d), alpha=4.0)], n_layers=num_layers(model), d_model=d
    )
    hidden, mask = torch.randn(batch, seq, d), torch.ones(batch, seq, dtype=torch.long)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        info = program.call_info(batch, seq, 0, mask)
        program.run_layer(layer, hidden, info)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_model(label: str, model, *, batch: int, seq: int, rounds: int, warmup: int, seed: int) -> dict:
    fns = _variants(model, batch, seq, seed)
    names = list(VARIANTS)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for round_index in range(warmup + rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                elapsed = _timed(fns[name])
                if round_index >= warmup:
                    times[name].append(elapsed)
            print(f"  {label}: round {round_index + 1}/{warmup + rounds}", file=sys.stderr, flush=True)
        body = hook_body_seconds(model, batch, seq)
    base = statistics.median(times["hf raw"])
    rows = {}
    for name in names:
        paired = [t / b for t, b in zip(times[name], times["hf raw"], strict=True)]
        rows[name] = {
            "median_ms": 1e3 * statistics.median(times[name]),
            "ratio": statistics.median(times[name]) / base,
            "paired_ratio": statistics.median(paired),
            "times_ms": [1e3 * t for t in times[name]],
        }
    return {
        "label": label,
        "batch": batch,
        "seq": seq,
        "rounds": rounds,
        "warmup": warmup,
        "hook_body_ms": 1e3 * body,
        "variants": rows,
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| model | variant | median ms | ratio vs hf raw | paired ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for result in results:
        for name, row in result["variants"].items():
            lines.append(
                f"| {result['label']} | {name} | {row['median_ms']:.2f} | {row['ratio']:.3f} | "
                f"{row['paired_ratio']:.3f} |"
            )
    lines.append("")
    for result in results:
        share = result["hook_body_ms"] / result["variants"]["hf raw"]["median_ms"]
        lines.append(
            f"hook body alone ({result['label']}): {result['hook_body_ms']:.3f} ms = {100 * share:.2f}% of a raw forward"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter inputs (a smoke run)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="measured rounds per model (default 15, quick 3)"
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="registry name, folder or hub id")
    parser.add_argument("--tiny-arch", default="llama", help="architecture of the tiny model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 15)
    if rounds < 1:
        parser.error(f"--rounds must be >= 1, got {rounds}")
    warmup = 1 if args.quick else 3
    batch, seq = (8, 32) if args.quick else (8, 128)

    from steerlab.models import load_model
    from steerlab.testing import tiny_model

    meta = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "dtype": "float32",
    }
    results: list[dict] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # partial results after each model, so an interrupted run keeps what it measured
        payload = {"meta": meta | {"loadavg_end": os.getloadavg()}, "results": results}
        tmp = args.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(args.out)

    threads = torch.get_num_threads()
    model = load_model(args.model).model
    meta["threads_embedded"] = threads
    results.append(
        bench_model(args.model, model, batch=batch, seq=seq, rounds=rounds, warmup=warmup, seed=args.seed)
    )
    save()
    del model

    torch.set_num_threads(1)  # a tiny model is pure Python overhead; threads only add scheduling noise
    meta["threads_tiny"] = 1
    tiny = tiny_model(args.tiny_arch, hidden=64, layers=4)
    results.append(
        bench_model(
            f"tiny-{args.tiny_arch}",
            tiny,
            batch=batch,
            seq=seq,
            rounds=3 * rounds,
            warmup=warmup,
            seed=args.seed,
        )
    )
    torch.set_num_threads(threads)
    save()
    print(markdown(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
