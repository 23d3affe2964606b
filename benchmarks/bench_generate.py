"""Generation throughput with steering, per hook backend: one op at one layer and ops at every layer.

Greedy decoding of exactly ``--new-tokens`` tokens for a left-padded batch of ``--batch`` chat prompts,
KV cache on, through each backend's ``generate`` (`steerlab.hooks.backends`): transformers' own
``model.generate`` under forward hooks (``hf``), TransformerLens 4's TransformerBridge (``tlens``) and
nnsight traces (``nnsight``, one trace per step). Variants per backend:

  unsteered   no op (``hf raw``: plain ``model.generate`` with no hook attached at all: the baseline)
  one layer   one ``Add(alpha * v)`` at the middle layer, scope ``all``
  all layers  one ``Add`` at every layer

All variants of a model run in ONE process, interleaved in rounds (every variant once per round in a
seeded random order, so no variant always follows the same one; a warm-up round discarded); we report tokens/s (new tokens of the batch / seconds), the
paired ratio to ``hf raw`` (median over rounds of variant / ``hf raw`` of the same round — steadier on a
shared machine) and to its own backend's unsteered generation, each for wall-clock time and for the
process's CPU time. With ``--threads 1`` CPU time counts the generation's own work, which the other
processes of a loaded machine do not inflate. The load average is printed before and after.

Anchor: an engine built for steered serving reports -2% throughput for one steered layer and -14% for all
layers in eager mode.

    python benchmarks/bench_generate.py [--model smollm2-135m-instruct | --tiny llama] [--rounds N]
        [--backends hf,tlens,nnsight] [--config DIR --device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from steerlab.hooks import Add
from steerlab.hooks.backends import BACKENDS, get_backend
from steerlab.models.architectures import hidden_size, num_layers

RESULTS = Path(__file__).parent / "results"
PROMPTS = Path(__file__).resolve().parents[1] / "experiments" / "data" / "medical_eval.jsonl"
STEERED = ("one layer", "all layers")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load(args) -> tuple[str, torch.nn.Module, object]:
    """(label, model, left-padding tokenizer)."""
    if args.tiny:
        from steerlab.models.tiny import tiny_model, tiny_tokenizer

        return f"tiny:{args.tiny}", tiny_model(args.tiny).eval(), tiny_tokenizer("left")
    if args.config:
        from transformers import AutoConfig, AutoModelForCausalLM

        from steerlab.models.tiny import tiny_tokenizer

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.config), dtype=torch.float32)
        return f"{Path(args.config).name} (random weights)", model.eval(), tiny_tokenizer("left")
    from steerlab.models import load_model

    loaded = load_model(args.model)
    loaded.tokenizer.padding_side = "left"
    return args.model, loaded.model.eval(), loaded.tokenizer


def _prompts(tokenizer, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A left-padded batch of the first ``batch`` held-out medical questions, as chat prompts."""
    from steerlab.data.chat import load_chat_jsonl

    chats = list(load_chat_jsonl(PROMPTS))[:batch]
    texts = [
        tokenizer.apply_chat_template(
            [m for m in ex.messages if m["role"] == "user"][:1], tokenize=False, add_generation_prompt=True
        )
        for ex in chats
    ]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def _kv_cache_works(backend, handle, ids, mask) -> bool:
    """Whether ``backend`` can generate with its KV cache here (TransformerBridge cannot with every
    transformers version: its cache stays empty and steerlab's check raises)."""
    try:
        backend.generate(handle, ids, mask, [], max_new_tokens=2, use_cache=True)
        return True
    except RuntimeError as error:
        print(f"  {backend.name}: no KV cache ({error}); timed without it", file=sys.stderr)
        return False


def variants(
    model, tokenizer, backends: list[str], batch: int, new_tokens: int, kv: dict[str, bool]
) -> dict[str, Callable[[], object]]:
    """name -> a function generating once; ``kv`` is filled with whether each backend used a KV cache."""
    device = next(model.parameters()).device
    ids, mask = _prompts(tokenizer, batch, device)
    d, n = hidden_size(model), num_layers(model)
    gen = torch.Generator().manual_seed(0)
    vectors = [torch.randn(d, generator=gen).to(device) for _ in range(n)]
    ops = {
        "unsteered": [],
        "one layer": [Add(n // 2, scope="all", vector=vectors[n // 2], alpha=4.0)],
        "all layers": [Add(layer, scope="all", vector=vectors[layer], alpha=4.0 / n) for layer in range(n)],
    }
    fns: dict[str, Callable[[], object]] = {}
    hf = get_backend("hf")
    config = _raw_config(model, new_tokens)
    fns["hf raw"] = lambda: model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    for name in backends:
        backend = get_backend(name)
        handle = backend.prepare(model, tokenizer) if backend is not hf else model
        kv[name] = _kv_cache_works(backend, handle, ids, mask)
        for variant, op_list in ops.items():
            fns[f"{name} {variant}"] = lambda b=backend, h=handle, o=op_list, c=kv[name]: b.generate(
                h, ids, mask, o, max_new_tokens=new_tokens, use_cache=c
            )
    return fns


def _raw_config(model, new_tokens: int):
    from steerlab.hooks.hf import greedy_config

    return greedy_config(model, new_tokens, use_cache=True)


def _paired(times: dict[str, list[float]], name: str, base: str) -> float:
    """Median over rounds of name / base in the same round."""
    return statistics.median(t / b for t, b in zip(times[name], times[base], strict=True))


def bench(
    label: str, model, tokenizer, backends: list[str], *, batch: int, new_tokens: int, rounds: int
) -> dict:
    device = next(model.parameters()).device
    kv: dict[str, bool] = {}
    fns = variants(model, tokenizer, backends, batch, new_tokens, kv)
    names = list(fns)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for round_index in range(rounds + 1):
            order = list(names)
            random.Random(round_index).shuffle(order)  # no fixed neighbour (a cold cache after another model)
            for name in order:
                _sync(device)
                start, start_cpu = time.perf_counter(), time.process_time()
                fns[name]()
                _sync(device)
                if round_index > 0:  # round 0 warms up
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
            print(f"  {label}: round {round_index}/{rounds}", file=sys.stderr, flush=True)
    rows = {}
    for name in names:
        backend = name.split(" ", 1)[0]
        own = "hf raw" if name == "hf raw" else f"{backend} unsteered"
        rows[name] = {
            "median_s": statistics.median(wall[name]),
            "tokens_per_s": batch * new_tokens / statistics.median(wall[name]),
            "cpu_median_s": statistics.median(cpu[name]),
            "tokens_per_cpu_s": batch * new_tokens / statistics.median(cpu[name]),
            "paired_vs_hf_raw": _paired(wall, name, "hf raw"),
            "cpu_paired_vs_hf_raw": _paired(cpu, name, "hf raw"),
            "cpu_paired_vs_own_unsteered": _paired(cpu, name, own),
            "times_s": wall[name],
            "cpu_times_s": cpu[name],
        }
    return {
        "label": label,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": batch,
        "new_tokens": new_tokens,
        "rounds": rounds,
        "kv_cache": kv,
        "variants": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        f"{result['label']} on {result['device']} x{result['threads']} threads, batch {result['batch']}, "
        f"{result['new_tokens']} new tokens, {result['rounds']} rounds; KV cache: "
        + ", ".join(
            f"{b} {'on' if on else 'OFF (unsupported here)'}" for b, on in result["kv_cache"].items()
        ),
        "",
        "| backend | variant | tokens/s (wall) | tokens per CPU s | wall, paired vs hf raw | "
        "CPU, paired vs hf raw | CPU, paired vs own unsteered |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["variants"].items():
        backend, variant = name.split(" ", 1)
        lines.append(
            f"| {backend} | {variant} | {row['tokens_per_s']:.1f} | {row['tokens_per_cpu_s']:.1f} | "
            f"{row['paired_vs_hf_raw']:.3f} | {row['cpu_paired_vs_hf_raw']:.3f} | "
            f"{row['cpu_paired_vs_own_unsteered']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tiny", default=None, help="a tiny seeded model of this architecture instead")
    parser.add_argument("--config", default=None, help="a folder with config.json: random weights")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    label, model, tokenizer = _load(args)
    model = model.to(args.device)
    load_before = os.getloadavg()
    result = bench(
        label, model, tokenizer, backends, batch=args.batch, new_tokens=args.new_tokens, rounds=args.rounds
    )
    result |= {
        "load_average": [load_before, os.getloadavg()],
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"generate_{label.split(' ')[0].replace(':', '_').replace('/', '_')}_{args.device}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"\nload average before / after: {load_before} / {os.getloadavg()}; results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
