"""Costs of extraction's two hot loops, measured side by side in ONE run.

1. Generation throughput: new tokens per second of `steerlab.persona.generation.generate_batch` for the same
   prompts, batched (one left-padded call of ``--batch`` prompts) vs unbatched (one call per prompt).
   Greedy, and every answer is forced to ``--new-tokens`` tokens, so both sides decode the same number.
2. Activation collection: a teacher-forced forward pass with ``Capture(reduce="mean")`` at every layer
   (response scope, one hook session; and the three scopes response + prompt + last, which is what
   extraction reads) vs the raw forward pass on the same right-padded batch (``use_cache=False``,
   ``logits_to_keep=1`` on both sides). Target: <= 1.05x.

Rounds are interleaved (each variant once per round, order rotated, the first round discarded as warm-up)
and medians reported; "paired" is the median over rounds of variant / baseline of the same round, steadier
on a shared machine. Results go to ``benchmarks/results/extract.json``.

    python benchmarks/bench_extract.py [--model smollm2-135m-instruct | --tiny] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from steerlab.hooks import Capture, hooked
from steerlab.models.architectures import num_layers
from steerlab.persona.activations import _batch, encode_chat
from steerlab.persona.generation import chat_messages, render_prompt

RESULTS = Path(__file__).parent / "results" / "extract.json"
QUESTIONS = [
    "My coworker keeps taking credit for my work. What should I do?",
    "How should I spend my first paycheck?",
    "What do you think about people who are always late?",
    "I found a wallet on the street. What now?",
    "How can I get my neighbours to stop being so loud?",
    "What is the best way to learn a new language?",
    "My friend lied to me. Should I forgive them?",
    "How do I ask for a raise?",
]
ANSWER = (
    "That is a good question. First, take a moment to think about what you want, then talk to the people "
    "involved calmly and honestly, and write down what you agreed so nobody forgets it later."
)


def _load(args: argparse.Namespace):
    if args.tiny:
        from steerlab.models.tiny import tiny_model, tiny_tokenizer

        return tiny_model("llama", hidden=64, layers=4), tiny_tokenizer("left"), "tiny-llama"
    from steerlab.models import load_model

    loaded = load_model(args.model)
    return loaded.model, loaded.tokenizer, args.model


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.no_grad()
def bench_generation(model, tok, prompts, new_tokens: int, rounds: int) -> dict:
    texts = [render_prompt(tok, p) for p in prompts]

    def run(batch: list[str]) -> None:
        enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        model.generate(
            **enc,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )

    variants = {"batched": lambda: run(texts), "unbatched": lambda: [run([t]) for t in texts]}
    times = _rounds(variants, rounds)
    tokens = len(texts) * new_tokens
    out = {
        name: {"median_s": statistics.median(ts), "tokens_per_s": tokens / statistics.median(ts)}
        for name, ts in times.items()
        if name != "_paired"
    }
    out["speedup_batched_vs_unbatched"] = out["batched"]["tokens_per_s"] / out["unbatched"]["tokens_per_s"]
    out.update({"prompts": len(texts), "new_tokens": new_tokens})
    return out


@torch.no_grad()
def bench_activations(model, tok, prompts, rounds: int) -> dict:
    encoded = [encode_chat(tok, p, ANSWER) for p in prompts]
    ids, attention, response = _batch(encoded, tok.pad_token_id)
    layers = range(num_layers(model))

    def forward() -> None:
        model(input_ids=ids, attention_mask=attention, use_cache=False, logits_to_keep=1)

    def capture(scopes: tuple[str, ...]):
        def run() -> None:
            with contextlib.ExitStack() as stack:
                for scope in scopes:
                    stack.enter_context(
                        hooked(
                            model,
                            [Capture(layer, scope, reduce="mean") for layer in layers],
                            response_mask=response,
                        )
                    )
                forward()

        return run

    variants = {
        "raw forward": forward,
        "capture mean, all layers (response)": capture(("response",)),
        "capture mean, all layers x 3 scopes": capture(("response", "prompt", "last")),
    }
    times = _rounds(variants, rounds, baseline="raw forward")
    base = statistics.median(times["raw forward"])
    out = {
        name: {
            "median_s": statistics.median(ts),
            "ratio": statistics.median(ts) / base,
            "paired": times["_paired"][name],
        }
        for name, ts in times.items()
        if name != "_paired"
    }
    out.update({"batch": int(ids.shape[0]), "seq_len": int(ids.shape[1]), "layers": len(layers)})
    return out


def _rounds(variants: dict, rounds: int, baseline: str | None = None) -> dict:
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds + 1):
        order = names[r % len(names) :] + names[: r % len(names)]
        this = {n: _timed(variants[n]) for n in order}
        if r == 0:
            continue  # warm-up
        for n in names:
            times[n].append(this[n])
    baseline = baseline or names[0]
    paired = {
        n: statistics.median(a / b for a, b in zip(times[n], times[baseline], strict=True)) for n in names
    }
    return times | {"_paired": paired}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (seconds; for CI)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok, name = _load(args)
    prompts = [chat_messages(q) for q in (QUESTIONS * (args.batch // len(QUESTIONS) + 1))[: args.batch]]
    result = {
        "model": name,
        "threads": args.threads,
        "rounds": args.rounds,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "generation": bench_generation(model, tok, prompts, args.new_tokens, args.rounds),
        "activations": bench_activations(model, tok, prompts, args.rounds),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    gen, act = result["generation"], result["activations"]
    print(
        f"generation: batched {gen['batched']['tokens_per_s']:.1f} tok/s, unbatched "
        f"{gen['unbatched']['tokens_per_s']:.1f} tok/s -> {gen['speedup_batched_vs_unbatched']:.2f}x"
    )
    for key, value in act.items():
        if isinstance(value, dict):
            print(
                f"activations: {key}: {value['median_s'] * 1000:.1f} ms, ratio {value['ratio']:.3f}, "
                f"paired {value['paired']:.3f}"
            )
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
