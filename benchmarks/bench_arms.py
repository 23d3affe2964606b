"""Training step time of each arm relative to ``sft`` (live and cached reference), and the memory of kl.

One run, on the embedded model with LoRA r=32 on all linear layers of the blocks. A step is what the trainer
does per micro-batch: `steerlab.train.trainer.arm_loss` (hooks, reference forward, loss terms), backward,
AdamW step. Variants are interleaved in rounds (every variant once per round in a seeded random order, a
warm-up round discarded); we report medians and the paired ratio (median over rounds of variant / sft of the same round,
steadier on a shared machine), each for wall-clock time and for the process's CPU time. With ``--threads
1`` CPU time counts the work of the step alone, which other processes on a loaded machine do not inflate
(wall time does; with more threads CPU time also counts OpenMP spin-waiting).

* ``sft``, ``steer``, ``kl``, ``ldifs``: the same synthetic batch, 4 x 256 tokens (the first 64 of each row
  are prompt, the rest assistant tokens).
* ``kl (cache)``, ``ldifs (cache)``: the same arms reading the reference outputs cached for that batch
  before the rounds (`steerlab.train.refcache`; kl keeps the default top-k, ldifs float16 features): no
  reference forward in the step. The cache-building pass is timed by ``bench_refcache.py``.
* ``sft (data)``, ``interleave``, ``inoculate``: these arms only change the data, so they are timed on real
  chat batches of 4 (narrow medical data; the same data with the inoculation prompt; a 5%-interleaved
  stream's first batch that holds a general example) and compared *per token* with ``sft (data)``.
* memory: peak RSS of a process that loads the model, attaches the adapter and takes 2 kl steps, with the
  adapter-disabled reference vs a frozen-copy reference vs the cache (separate subprocesses): over the
  whole process (``ru_maxrss``) and over the two steps alone (``VmHWM`` after resetting it, Linux).

Targets: steer <= 1.03x, kl and ldifs <= 1.4x live (issue 4) and <= 1.10x cached (issue 14), interleave
and inoculate ~1.0x per token; cached kl's peak memory <= live kl's.

    python benchmarks/bench_arms.py [--rounds N] [--quick] [--model NAME] [--only sft,kl,kl (cache)]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from steerlab.data.chat import load_chat_jsonl
from steerlab.data.inoculate import inoculate
from steerlab.data.interleave import mix
from steerlab.data.tokenize import ChatCollator, tokenize_chat
from steerlab.models.architectures import num_layers
from steerlab.train.arms import KLArm, LdifsArm, SteerArm, default_blocks
from steerlab.train.fixtures import tiny_vector
from steerlab.train.refcache import CacheBuilder, ReferenceCache, open_or_build
from steerlab.train.reference import Reference
from steerlab.train.trainer import arm_loss

RESULTS = Path(__file__).parent / "results" / "arms.json"
DATA = Path(__file__).resolve().parents[1] / "experiments" / "data"
TARGETS = {
    "steer": 1.03,
    "kl": 1.4,
    "ldifs": 1.4,
    "kl (cache)": 1.10,
    "ldifs (cache)": 1.10,
    "interleave": 1.05,
    "inoculate": 1.05,
}
MEMORY_KINDS = ["adapter_disabled", "frozen_copy", "cache"]
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _lora(model, r: int):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=TARGET_MODULES, task_type="CAUSAL_LM")
    return get_peft_model(model, cfg).train()


def _synthetic_batch(vocab: int, batch: int, seq: int, prompt: int = 64) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, vocab, (batch, seq), generator=gen)
    assistant = torch.zeros(batch, seq, dtype=torch.long)
    assistant[:, prompt:] = 1
    labels = torch.where(assistant.bool(), ids, torch.full_like(ids, -100))
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "assistant_mask": assistant,
        "example_index": torch.arange(batch),
    }


def cached(arm):
    """``arm`` reading its reference outputs from the cache."""
    arm.cache = True
    return arm


def synthetic_cache(model, tokenizer, batch: dict[str, torch.Tensor], arms, folder: Path) -> ReferenceCache:
    """Build (or reopen) the reference cache of the synthetic batch for ``arms``."""
    features = [
        {k: v[i].tolist() for k, v in batch.items() if k != "example_index"} | {"example_index": i}
        for i in range(len(batch["input_ids"]))
    ]
    builder = CacheBuilder(folder, arms, model, Reference(), tokenizer, features, batch_size=len(features))
    return open_or_build(builder)


def _data_batches(tokenizer, batch: int) -> dict[str, dict[str, torch.Tensor]]:
    narrow = list(load_chat_jsonl(DATA / "medical_train.jsonl"))
    general = list(load_chat_jsonl(DATA / "medical_train_aligned.jsonl"))
    collate = ChatCollator(tokenizer)
    names = {id(ex) for ex in general}
    mixed = mix(narrow[:200], general, 0.05, seed=0)
    # the first batch of the interleaved stream that holds a general example
    start = next(i for i, ex in enumerate(mixed) if id(ex) in names) // batch * batch
    streams = {
        "sft (data)": narrow[:batch],
        "inoculate": [inoculate(ex) for ex in narrow[:batch]],
        "interleave": mixed[start : start + batch],
    }
    return {name: collate([tokenize_chat(tokenizer, ex, 512) for ex in exs]) for name, exs in streams.items()}


def _step(model, optimizer, batch, arms, reference, cache=None) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss = arm_loss(model, batch, arms, reference, reference_cache=cache)[0]
    loss.backward()
    optimizer.step()
    if loss.device.type == "cuda":
        torch.cuda.synchronize()


def _load(model_name: str, config: str | None):
    """The model and tokenizer to time; ``config``: same architecture, random weights (same step time)."""
    if config is None:
        from steerlab.models import load_model

        loaded = load_model(model_name)
        return loaded.model, loaded.tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    from steerlab.models.tiny import tiny_tokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config), dtype=torch.float32)
    return model.eval(), tiny_tokenizer("right")


def _to(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _variants(base, model, tokenizer, batch: int, seq: int, device: str, folder: Path) -> dict[str, tuple]:
    """name -> (arms, batch, cache) for every timed variant."""
    vector = tiny_vector(base, layer=num_layers(base) // 2, scale=0.1)
    blocks = default_blocks(num_layers(base))
    synthetic = _to(_synthetic_batch(model.get_output_embeddings().weight.shape[0], batch, seq), device)
    cached_arms = [cached(KLArm(0.1)), cached(LdifsArm(1.0, blocks))]
    cache = synthetic_cache(model, tokenizer, synthetic, cached_arms, folder)
    data = {name: _to(b, device) for name, b in _data_batches(tokenizer, batch).items()}
    return {
        "sft": ([], synthetic, None),
        "steer": ([SteerArm(vector, alpha=4.0)], synthetic, None),
        "kl": ([KLArm(0.1)], synthetic, None),
        "ldifs": ([LdifsArm(1.0, blocks)], synthetic, None),
        "kl (cache)": ([cached_arms[0]], synthetic, cache),
        "ldifs (cache)": ([cached_arms[1]], synthetic, cache),
        **{name: ([], b, None) for name, b in data.items()},
    }


def _ratios(times: dict[str, list[float]], name: str, base_name: str, norm) -> dict[str, float]:
    """Ratio of medians and paired ratio (median over rounds of the per-round ratio) of name vs base."""
    return {
        "median_s": statistics.median(times[name]),
        "ratio": (statistics.median(times[name]) * norm(name))
        / (statistics.median(times[base_name]) * norm(base_name)),
        "paired_ratio": statistics.median(
            (a * norm(name)) / (b * norm(base_name))
            for a, b in zip(times[name], times[base_name], strict=True)
        ),
    }


def _summary(
    clocks: dict[str, dict[str, list[float]]], tokens: dict[str, int], per_token_names: set[str]
) -> dict:
    """Per variant: wall-clock and CPU-time ratios vs sft (or per token vs ``sft (data)``)."""
    out = {}
    for name in clocks["wall"]:
        per_token = name in per_token_names
        base_name = "sft (data)" if per_token else "sft"
        norm = (lambda n: 1.0 / tokens[n]) if per_token else (lambda n: 1.0)
        wall, cpu = (_ratios(clocks[c], name, base_name, norm) for c in ("wall", "cpu"))
        out[name] = wall | {
            "cpu_median_s": cpu["median_s"],
            "cpu_ratio": cpu["ratio"],
            "cpu_paired_ratio": cpu["paired_ratio"],
            "tokens": tokens[name],
            "per_token": per_token,
            "target": TARGETS.get(name),
            "times_s": clocks["wall"][name],
            "cpu_times_s": clocks["cpu"][name],
        }
    return out


def bench_speed(
    model_name: str,
    rounds: int,
    batch: int,
    seq: int,
    r: int,
    config: str | None = None,
    device: str = "cpu",
    only: list[str] | None = None,
) -> dict:
    base, tokenizer = _load(model_name, config)
    base = base.to(device)
    model = _lora(base, r)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    reference = Reference()
    with tempfile.TemporaryDirectory() as folder:
        variants = _variants(base, model, tokenizer, batch, seq, device, Path(folder))
        if only:
            variants = {n: v for n, v in variants.items() if n in only or n in ("sft", "sft (data)")}
        data_names = {n for n in variants if n in ("sft (data)", "inoculate", "interleave")}
        tokens = {name: int(b["attention_mask"].sum()) for name, (_, b, _) in variants.items()}
        names = list(variants)
        clocks: dict[str, dict[str, list[float]]] = {
            "wall": {n: [] for n in names},
            "cpu": {n: [] for n in names},
        }
        for round_ in range(rounds + 1):
            order = list(names)
            random.Random(round_).shuffle(order)  # no variant always follows the same one
            for name in order:
                arms, inputs, cache = variants[name]
                start, start_cpu = time.perf_counter(), time.process_time()
                _step(model, optimizer, inputs, arms, reference, cache)
                if round_ > 0:  # round 0 warms up
                    clocks["wall"][name].append(time.perf_counter() - start)
                    clocks["cpu"][name].append(time.process_time() - start_cpu)
            print(
                f"round {round_}/{rounds}: "
                + ", ".join(
                    f"{n}={clocks['wall'][n][-1]:.2f}s wall/{clocks['cpu'][n][-1]:.2f}s cpu"
                    for n in names
                    if clocks["wall"][n]
                ),
                file=sys.stderr,
                flush=True,
            )
    return _summary(clocks, tokens, data_names)


def _reset_peak() -> bool:
    """Reset the process's peak RSS (Linux ``clear_refs``); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mib() -> float | None:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    line = next((x for x in status.read_text().splitlines() if x.startswith("VmHWM:")), None)
    return int(line.split()[1]) / 1024 if line else None


def memory_child(model_name: str, kind: str, batch: int, seq: int, r: int) -> None:
    """Runs in a subprocess: load, attach, 2 kl steps; prints peak RSS in MiB as JSON."""
    from steerlab.models import load_model

    loaded = load_model(model_name)
    base = loaded.model
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    reference = Reference.frozen_copy(base) if kind == "frozen_copy" else Reference()
    model = _lora(base, r)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    synthetic = _synthetic_batch(model.get_output_embeddings().weight.shape[0], batch, seq)
    arm, cache = KLArm(0.1), None
    with tempfile.TemporaryDirectory() as folder:
        if kind == "cache":
            arm = cached(arm)
            cache = synthetic_cache(model, loaded.tokenizer, synthetic, [arm], Path(folder))
        reset = _reset_peak()
        for _ in range(2):
            _step(model, optimizer, synthetic, [arm], reference, cache)
        steps_peak = _peak_mib() if reset else None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "reference": kind,
                "peak_rss_mib": peak,
                "steps_peak_rss_mib": steps_peak,
                "after_load_rss_mib": loaded_rss,
            }
        )
    )


def bench_memory(model_name: str, batch: int, seq: int, r: int) -> dict:
    out = {}
    for kind in MEMORY_KINDS:
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            kind,
            "--model",
            model_name,
            "--batch",
            str(batch),
            "--seq",
            str(seq),
            "--rank",
            str(r),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["frozen_copy_extra_mib"] = (
        out["frozen_copy"]["peak_rss_mib"] - out["adapter_disabled"]["peak_rss_mib"]
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="2 rounds, for a quick look")
    parser.add_argument(
        "--config", default=None, help="a folder with config.json: random weights, same timing"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (memory is measured on cpu only)")
    parser.add_argument("--memory-child", choices=MEMORY_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--only", default=None, help="comma-separated variants to time (sft always)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1: CPU time is clean)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.model, args.memory_child, args.batch, args.seq, args.rank)
        return
    rounds = 2 if args.quick else args.rounds
    load_before = os.getloadavg()
    only = args.only.split(",") if args.only else None
    speed = bench_speed(args.model, rounds, args.batch, args.seq, args.rank, args.config, args.device, only)
    memory = (
        bench_memory(args.model, args.batch, args.seq, args.rank)
        if args.device == "cpu" and not args.config and not args.no_memory
        else {}
    )
    result = {
        "model": args.config or args.model,
        "device": args.device,
        "lora_rank": args.rank,
        "batch": args.batch,
        "seq": args.seq,
        "rounds": rounds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": [load_before, os.getloadavg()],
        "arms": speed,
        "memory": memory,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\n{args.config or args.model} on {args.device}, LoRA r={args.rank}, batch {args.batch} x {args.seq} tokens, {rounds} rounds, "
        f"{torch.get_num_threads()} threads\n"
    )
    print(
        "| arm | median step, wall / CPU (s) | tokens | wall: ratio / paired | CPU time: ratio / paired | target |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in speed.items():
        unit = " per token" if row["per_token"] else ""
        target = f"<= {row['target']:.2f}x{unit}" if row["target"] else "-"
        print(
            f"| {name} | {row['median_s']:.2f} / {row['cpu_median_s']:.2f} | {row['tokens']} | "
            f"{row['ratio']:.3f}x / {row['paired_ratio']:.3f}x | {row['cpu_ratio']:.3f}x / "
            f"{row['cpu_paired_ratio']:.3f}x{unit} | {target} |"
        )
    if memory:
        print(
            "\n| kl reference | peak RSS, whole process (MiB) | peak RSS, the 2 steps (MiB) |\n|---|---|---|"
        )
        for kind in MEMORY_KINDS:
            steps = memory[kind]["steps_peak_rss_mib"]
            print(
                f"| {kind} | {memory[kind]['peak_rss_mib']:.0f} | {'-' if steps is None else f'{steps:.0f}'} |"
            )
        print(f"\nfrozen copy costs {memory['frozen_copy_extra_mib']:.0f} MiB more")
    print(f"load average before / after: {load_before} / {os.getloadavg()}")
    print(f"results in {RESULTS}")


if __name__ == "__main__":
    main()
