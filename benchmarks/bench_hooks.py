"""Forward-pass cost of one steering hook under each backend, relative to the raw transformers forward.

Variants, all measured in ONE run and interleaved in rounds (every variant once per round, the order
rotated each round, warm-up rounds discarded), medians reported:

  hf raw          the transformers model, no hooks (the baseline: ratio 1.00)
  hf add          steerlab's transformers backend with one Add at the middle layer, scope "all"
  tlens raw/add   TransformerBridge (over its own copy of the model) without / with the same hook
  nnsight raw/add an nnsight trace (own copy) with no intervention / with the same hook

Every variant gets the same inputs and the same position ids (derived from the attention mask). "ratio" is
median(variant) / median(hf raw); "paired" is the median over rounds of variant / hf raw of the same round,
which is steadier on a shared machine. We also time the hook body alone (`HookProgram.run_layer`: scope
resolution + the Add) so its cost can be read without forward-pass noise.

``--config DIR`` builds the model from a ``config.json`` with random weights instead of loading it (the
time of a forward pass does not depend on the weights): how to measure the embedded model's architecture
on a machine without its cached weights.

    python benchmarks/bench_hooks.py [--quick] [--rounds N] [--model NAME] [--backends hf,tlens,nnsight]
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

from steerlab.hooks import Add
from steerlab.hooks.backends import BACKENDS, get_backend
from steerlab.hooks.program import HookProgram
from steerlab.models.architectures import hidden_size, num_layers

RESULTS = Path(__file__).parent / "results" / "hooks.json"
VARIANTS = ("hf raw", "hf add", "tlens raw", "tlens add", "nnsight raw", "nnsight add")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _variants(model, backends: list[str], batch: int, seq: int, seed: int) -> dict[str, Callable[[], object]]:
    device = _device_of(model)
    generator = torch.Generator().manual_seed(seed)
    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(3, vocab, (batch, seq), generator=generator).to(device)
    mask = torch.ones_like(ids)
    d, layer = hidden_size(model), num_layers(model) // 2
    ops = [Add(layer, scope="all", vector=torch.randn(d, generator=generator).to(device), alpha=4.0)]
    fns: dict[str, Callable[[], object]] = {}
    for name in backends:
        backend = get_backend(name)
        handle = backend.prepare(model, None)
        fns[f"{name} raw"] = lambda b=backend, h=handle: b.raw_forward(h, ids, mask)
        fns[f"{name} add"] = lambda b=backend, h=handle: b.forward(h, ids, mask, ops)
    return fns


def hook_body_seconds(model, batch: int, seq: int, repeats: int = 200) -> float:
    """Median time of the hook body alone (CallInfo + scope resolution + Add) on a [batch, seq, d] tensor."""
    device = _device_of(model)
    d, layers = hidden_size(model), num_layers(model)
    program = HookProgram(
        [Add(layers // 2, vector=torch.randn(d, device=device), alpha=4.0)], n_layers=layers, d_model=d
    )
    hidden = torch.randn(batch, seq, d, device=device)
    mask = torch.ones(batch, seq, dtype=torch.long, device=device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        program.run_layer(layers // 2, hidden, program.call_info(batch, seq, 0, mask))
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_model(
    label: str, model, backends: list[str], *, batch: int, seq: int, rounds: int, warmup: int, seed: int
) -> dict:
    device = _device_of(model)
    fns = _variants(model, backends, batch, seq, seed)
    names = [name for name in VARIANTS if name in fns]
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for round_index in range(warmup + rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                elapsed = _timed(fns[name], device)
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
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": batch,
        "seq": seq,
        "rounds": rounds,
        "warmup": warmup,
        "hook_body_ms": 1e3 * body,
        "variants": rows,
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| model | device | variant | median ms | ratio vs hf raw | paired ratio |",
        "|---|---|---|---:|---:|---:|",
    ]
    for result in results:
        for name, row in result["variants"].items():
            lines.append(
                f"| {result['label']} | {result['device']} x{result['threads']} | {name} | {row['median_ms']:.2f} | "
                f"{row['ratio']:.3f} | {row['paired_ratio']:.3f} |"
            )
    lines.append("")
    for result in results:
        share = result["hook_body_ms"] / result["variants"]["hf raw"]["median_ms"]
        lines.append(
            f"hook body alone ({result['label']}, {result['device']}): {result['hook_body_ms']:.3f} ms = "
            f"{100 * share:.3f}% of a raw forward"
        )
    return "\n".join(lines)


def _load(args) -> tuple[str, torch.nn.Module]:
    if args.config is not None:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(args.config)
        torch.manual_seed(args.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
        return f"{Path(args.config).name} (random weights)", model
    from steerlab.models import load_model

    return args.model, load_model(args.model).model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter inputs (a smoke run)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="measured rounds per model (default 10, quick 3)"
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="registry name, folder or hub id")
    parser.add_argument(
        "--config", default=None, help="a folder with config.json: random weights, same timing"
    )
    parser.add_argument("--tiny-arch", default="llama", help="architecture of the tiny model")
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated subset of hf,tlens,nnsight"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for the large model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 10)
    if rounds < 1:
        parser.error(f"--rounds must be >= 1, got {rounds}")
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = [name for name in backends if name not in BACKENDS]
    if unknown or "hf" not in backends:
        parser.error(f"--backends must include hf and name only {', '.join(BACKENDS)}; got {args.backends!r}")
    warmup = 1 if args.quick else 2
    batch, seq = (8, 32) if args.quick else (8, 128)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from steerlab.models.tiny import tiny_model

    meta = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "loadavg_start": os.getloadavg(),
        "dtype": "float32",
        "backends": backends,
    }
    results: list[dict] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # partial results after each model, so an interrupted run keeps what it measured
        payload = {"meta": meta | {"loadavg_end": os.getloadavg()}, "results": results}
        tmp = args.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(args.out)

    label, model = _load(args)
    results.append(
        bench_model(
            label,
            model.to(device),
            backends,
            batch=batch,
            seq=seq,
            rounds=rounds,
            warmup=warmup,
            seed=args.seed,
        )
    )
    save()
    del model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model is pure Python overhead; threads only add scheduling noise
    tiny = tiny_model(args.tiny_arch, hidden=64, layers=4).to(device)
    results.append(
        bench_model(
            f"tiny-{args.tiny_arch}",
            tiny,
            backends,
            batch=batch,
            seq=seq,
            rounds=5 * rounds,
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
