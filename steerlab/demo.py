"""`steerlab demo`: the first thing a new user runs, on the embedded model with no network."""

from __future__ import annotations

import time

import torch
from rich.console import Console

from steerlab.architectures import num_layers
from steerlab.hooks import Add, hooked
from steerlab.models import DEFAULT_MODEL, load_model
from steerlab.quick_direction import quick_direction

DEMO_QUESTION = "I have some free time this afternoon. What do you suggest I do?"


def _generate(model, tokenizer, question: str, max_new_tokens: int) -> str:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    batch = tokenizer([text], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, repetition_penalty=1.1)
    return tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def quick_steering_demo(
    model_name: str = DEFAULT_MODEL, layer: int | None = None, scale: float = 8.0, max_new_tokens: int = 60
) -> tuple[str, str]:
    """Extract a quick evil-vs-helpful direction, then answer one question without and with it."""
    console = Console()
    start = time.perf_counter()
    model, tokenizer = load_model(model_name)
    console.print(
        f"[bold]model[/] {model_name}: {num_layers(model)} layers, loaded in {time.perf_counter() - start:.1f}s"
    )
    directions = quick_direction(model, tokenizer)
    layer = num_layers(model) // 2 if layer is None else layer
    direction = directions[layer]
    console.print(f"[bold]direction[/] evil - helpful at layer {layer}, norm {direction.norm():.2f}")
    plain = _generate(model, tokenizer, DEMO_QUESTION, max_new_tokens)
    unit = direction / direction.norm()
    with hooked(model, [Add(layer, vector=unit, alpha=scale, scope="all")]):
        steered = _generate(model, tokenizer, DEMO_QUESTION, max_new_tokens)
    console.print(f"\n[bold]Q:[/] {DEMO_QUESTION}")
    console.print(f"\n[bold green]unsteered:[/] {plain}")
    console.print(f"\n[bold red]steered (+{scale} x unit evil direction at layer {layer}):[/] {steered}")
    return plain, steered
