"""The reference cache: what the one pass before training costs, and how close top-k KL stays to live KL.

1. **Build pass** — `steerlab.train.refcache` over the first ``--examples`` chats of the medical training
   data (tokenized as a run does, max_length 512), with the default settings: kl (top-k log-probs, fp32)
   and ldifs (5 blocks, float16 features), together and each alone. Reported per 1,000 examples: seconds
   and MiB on disk; also the live alternative, the no-grad reference forwards of one epoch over the same
   examples (what the cache replaces), timed in the same run.
2. **Gradient cosine vs k** — the model is first moved away from its reference by ``--sft-steps`` SFT
   steps (LoRA r=32, lr 1e-3, batches of 4 medical chats, as the experiment trains); then on ``--batches``
   other batches the gradient of the kl term alone (weight 1) and of the whole loss (lm + 0.1 kl) is taken
   live and from top-k records for each k (the records `KLArm.cache_record` stores, fed to the arm's cached
   loss). Reported: cosine to the live gradient (mean and minimum over batches), KL_k / KL, and the
   reference's mass outside the top k.

    python benchmarks/bench_refcache.py [--examples 64] [--sft-steps 8] [--batches 4] [--ks 1,4,16,64,256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from steerlab.data.chat import load_chat_jsonl
from steerlab.data.tokenize import tokenize_chat
from steerlab.models import load_model
from steerlab.models.architectures import num_layers
from steerlab.train.arms import KLArm, LdifsArm, default_blocks
from steerlab.train.arms.kl import DEFAULT_TOP_K
from steerlab.train.dataset import INDEX_KEY, IndexedCollator
from steerlab.train.refcache import CacheBuilder, open_or_build
from steerlab.train.reference import Reference
from steerlab.train.trainer import arm_loss

RESULTS = Path(__file__).parent / "results" / "refcache.json"
DATA = Path(__file__).resolve().parents[1] / "experiments" / "data" / "medical_train.jsonl"
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _lora(model, r: int = 32):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=TARGET_MODULES, task_type="CAUSAL_LM")
    return get_peft_model(model, cfg).train()


def _features(tokenizer, start: int, n: int) -> list[dict]:
    chats = list(load_chat_jsonl(DATA))[start : start + n]
    return [tokenize_chat(tokenizer, ex, 512) | {INDEX_KEY: i} for i, ex in enumerate(chats)]


def _cached(arm):
    arm.cache = True
    return arm


def bench_build(model, tokenizer, features: list[dict], batch: int) -> dict:
    """Build time and disk per 1,000 examples for kl + ldifs, kl alone, ldifs alone; and live forwards."""
    blocks = default_blocks(num_layers(model))
    settings = {
        "kl+ldifs": lambda: [_cached(KLArm(0.1)), _cached(LdifsArm(1.0, blocks))],
        "kl": lambda: [_cached(KLArm(0.1))],
        "ldifs": lambda: [_cached(LdifsArm(1.0, blocks))],
    }
    per_1000 = 1000 / len(features)
    out: dict = {
        "examples": len(features),
        "tokens_per_example": statistics.mean(len(f["input_ids"]) for f in features),
    }
    for name, arms in settings.items():
        with tempfile.TemporaryDirectory() as folder:
            builder = CacheBuilder(Path(folder) / "c", arms(), model, Reference(), tokenizer, features, batch)
            start, start_cpu = time.perf_counter(), time.process_time()
            open_or_build(builder)
            seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            size = sum(p.stat().st_size for p in (Path(folder) / "c").iterdir())
        out[name] = {
            "seconds_per_1000": seconds * per_1000,
            "cpu_seconds_per_1000": cpu * per_1000,
            "mib_per_1000": size / 2**20 * per_1000,
        }
        print(
            f"build {name}: {seconds:.1f} s ({cpu:.1f} s CPU), {size / 2**20:.1f} MiB",
            file=sys.stderr,
            flush=True,
        )
    collate = IndexedCollator(tokenizer)
    start, start_cpu = time.perf_counter(), time.process_time()
    with torch.no_grad(), Reference().active(model) as ref:
        for i in range(0, len(features), batch):
            b = collate(features[i : i + batch])
            ref(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False)
    out["live_reference_forwards_seconds_per_1000"] = (time.perf_counter() - start) * per_1000
    out["live_reference_forwards_cpu_seconds_per_1000"] = (time.process_time() - start_cpu) * per_1000
    return out


class _Records:
    """Stands in for a ReferenceCache: hands the arm the records computed for this batch."""

    def __init__(self, records):
        self.records = records

    def fetch(self, indices, arms):
        return {arm: self.records for arm in arms}


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()))


def _grad(model, batch, arms, cache=None, weight_lm: bool = True) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss, terms, _ = arm_loss(model, batch, arms, reference_cache=cache)
    (loss if weight_lm else terms["kl"]).backward()
    return torch.cat(
        [p.grad.flatten() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None]
    )


def bench_cosine(model, tokenizer, sft_steps: int, batches: int, ks: list[int]) -> dict:
    collate = IndexedCollator(tokenizer)
    train = _features(tokenizer, 200, 4 * sft_steps)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for i in range(sft_steps):
        optimizer.zero_grad(set_to_none=True)
        arm_loss(model, collate(train[4 * i : 4 * i + 4]), [])[0].backward()
        optimizer.step()
    held = _features(tokenizer, 300, 4 * batches)  # disjoint from the SFT chats (200..)
    vocab = model.get_output_embeddings().weight.shape[0]
    rows: dict[int, dict[str, list[float]]] = {
        k: {"kl": [], "total": [], "ratio": [], "rest": []} for k in ks
    }
    for i in range(batches):
        batch = collate(held[4 * i : 4 * i + 4])
        live = [KLArm(1.0)]
        g_kl, g_total = _grad(model, batch, live, weight_lm=False), None
        live_total = [KLArm(0.1)]
        g_total = _grad(model, batch, live_total)
        with torch.no_grad():
            kl_live = float(arm_loss(model, batch, live)[1]["kl"])
            with Reference().active(model) as ref:
                ref_logits = ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        for k in ks:
            arm = _cached(KLArm(1.0, top_k=k))
            records = _Records(arm.cache_record(batch, ref_logits, None))
            c_kl = _grad(model, batch, [arm], records, weight_lm=False)
            arm_total = _cached(KLArm(0.1, top_k=k))
            c_total = _grad(model, batch, [arm_total], records)
            with torch.no_grad():
                kl_k = float(arm_loss(model, batch, [arm], reference_cache=records)[1]["kl"])
            rest = torch.cat([r["log_rest"] for r in records.records]).exp().mean()
            rows[k]["kl"].append(_cos(c_kl, g_kl))
            rows[k]["total"].append(_cos(c_total, g_total))
            rows[k]["ratio"].append(kl_k / kl_live)
            rows[k]["rest"].append(float(rest) if k < vocab else 0.0)
        print(
            f"batch {i + 1}/{batches}: live kl {kl_live:.4g}; "
            + ", ".join(f"k={k}: cos {rows[k]['kl'][-1]:.4f}" for k in ks),
            file=sys.stderr,
            flush=True,
        )
    return {
        str(k): {
            "cos_kl_mean": statistics.mean(v["kl"]),
            "cos_kl_min": min(v["kl"]),
            "cos_total_mean": statistics.mean(v["total"]),
            "cos_total_min": min(v["total"]),
            "kl_ratio_mean": statistics.mean(v["ratio"]),
            "ref_mass_outside_top_k": statistics.mean(v["rest"]),
        }
        for k, v in rows.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sft-steps", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--ks", default="16,64,256,1024,4096")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1: CPU time is clean)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    model = _lora(loaded.model)
    load_before = os.getloadavg()
    build = (
        {}
        if args.skip_build
        else bench_build(model, loaded.tokenizer, _features(loaded.tokenizer, 0, args.examples), args.batch)
    )
    cosine = bench_cosine(
        model, loaded.tokenizer, args.sft_steps, args.batches, [int(k) for k in args.ks.split(",")]
    )
    result = {
        "model": args.model,
        "default_top_k": DEFAULT_TOP_K,
        "threads": torch.get_num_threads(),
        "load_average": [load_before, os.getloadavg()],
        "build": build,
        "cosine": cosine,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    if build:
        print(
            f"\nbuild pass, {build['examples']} examples of {build['tokens_per_example']:.0f} tokens on average:"
        )
        print("| cached | seconds / 1,000 examples | MiB / 1,000 examples |\n|---|---|---|")
        for name in ("kl+ldifs", "kl", "ldifs"):
            print(f"| {name} | {build[name]['seconds_per_1000']:.0f} | {build[name]['mib_per_1000']:.0f} |")
        print(
            f"| (live: one epoch of reference forwards) | {build['live_reference_forwards_seconds_per_1000']:.0f} | - |"
        )
    print(f"\ngradient cosine to live KL after {args.sft_steps} SFT steps, {args.batches} batches of 4:")
    print(
        "| k | cos, kl term (mean / min) | cos, lm + 0.1 kl (mean / min) | KL_k / KL | reference mass outside top k |"
    )
    print("|---|---|---|---|---|")
    for k, row in cosine.items():
        print(
            f"| {k} | {row['cos_kl_mean']:.4f} / {row['cos_kl_min']:.4f} | {row['cos_total_mean']:.5f} / "
            f"{row['cos_total_min']:.5f} | {row['kl_ratio_mean']:.4f} | {row['ref_mass_outside_top_k']:.2e} |"
        )
    print(f"load average before / after: {load_before} / {os.getloadavg()}; results in {RESULTS}")


if __name__ == "__main__":
    main()
