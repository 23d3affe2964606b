"""Held-out chats that arms read the model on during training, and the two readings they take.

`steer_hold` sets its steering coefficient from the model's persona projection on a calibration set, and
`early_stop` stops on the LM loss of a held-out split; both need chats the evaluation never sees and that
the run does not train on (or, with ``split``, that it stops training on):

* ``rest``: the lines of ``data.train`` after the first ``data.limit`` — the same narrow domain, written
  the same way, but not in this run's training stream. Needs ``data.limit`` to leave enough lines.
* ``split``: a seeded draw of ``n`` chats taken out of the training stream (the run trains on the others).

The training files are checked against the evaluation questions when they are written
(`steerlab.data.written`: no evaluation question within 0.15 content-word overlap of a training question),
and `check_disjoint` refuses a held-out chat whose user message is one of the monitor chats', so neither the
monitor's reading nor any evaluation question can set a training decision.

Readings (`ChatBatches`) are taken in eval mode, under no_grad and with no hook op of any arm (arms hold
their ops only inside the trainer's training forward): the model's own, unsteered state.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steerlab.data.chat import ChatExample, load_chat_jsonl
from steerlab.data.tokenize import IGNORE_INDEX, ChatCollator, tokenize_chat
from steerlab.train.schema import ConfigError

if TYPE_CHECKING:
    from steerlab.train.config import ExperimentConfig

Source = Literal["rest", "split"]


def _user_text(example: ChatExample) -> str:
    return " ".join(" ".join(m["content"].split()).lower() for m in example.messages if m["role"] == "user")


def rest_of_training_file(
    cfg: ExperimentConfig, n: int, tokenizer: Any, what: str
) -> tuple[list[ChatExample], dict[str, Any]]:
    """The first ``n`` chats of ``data.train`` after the run's first ``data.limit`` that fit ``max_length``.

    Returns (chats, report); the report names every line passed over as too long. Raises `ConfigError`
    (key relative to the arm's section, ``what``) when there is no limit, too few lines are left, or a chosen
    chat could be a trained one (`check_not_trained`).
    """
    limit = cfg.data.limit
    if limit is None:
        raise ConfigError(
            f"{what}: 'rest' takes the lines after data.limit, but data.limit is not set; set it or use 'split'"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:  # the config refuses it too
        raise ConfigError(f"{what}: 'rest' needs data.limit >= 1, got {limit!r}")
    lines = list(load_chat_jsonl(cfg.data.train, on_error=cfg.data.on_bad_record))
    trained, rest = lines[:limit], lines[limit:]
    chosen: list[ChatExample] = []
    too_long: list[str] = []
    for example in rest:
        if len(chosen) == n:
            break
        if tokenize_chat(tokenizer, example, cfg.data.max_length, on_too_long="skip") is None:
            too_long.append(example.name)
            continue
        chosen.append(example)
    if len(chosen) < n:
        raise ConfigError(
            f"{what}: {cfg.data.train} has {len(chosen)} usable lines after data.limit={cfg.data.limit} "
            f"({len(too_long)} too long), {n} needed; lower n, lower data.limit or use 'split'"
        )
    check_not_trained(trained, chosen, what)
    report = {"source": "rest", "file": str(cfg.data.train), "n": n, "first": chosen[0].name}
    report |= {"last": chosen[-1].name, "too_long_passed_over": too_long}
    return chosen, report


def check_not_trained(trained: Sequence[ChatExample], held: Sequence[ChatExample], what: str) -> None:
    """Refuse held-out chats that could be trained ones: the same line (file:line), or the same user message
    as a trained chat (a line repeated in the file). Raises `ConfigError` naming both chats.

    Why: a held-out reading on chats the run trains on measures memorisation (early_stop would never stop,
    steer_hold would calibrate on what it is pushing); the slice after ``data.limit`` alone cannot show that.
    """
    names = {ex.name: ex.name for ex in trained}
    users = {_user_text(ex): ex.name for ex in trained}
    for example in held:
        clash = names.get(example.name) or users.get(_user_text(example))
        if clash is not None:
            raise ConfigError(
                f"{what}: held-out chat {example.name} is (or asks what) training chat {clash} asks; a held-out "
                "set must not overlap the training stream"
            )


def split_stream(
    stream: Sequence[ChatExample], n: int, seed: int, what: str
) -> tuple[list[ChatExample], list[ChatExample]]:
    """A seeded draw of ``n`` chats out of ``stream``: (held out, the rest in their order).

    Raises `ConfigError` when the stream would keep fewer chats than it gives away, or holds out a chat the
    rest repeats (`check_not_trained`).
    """
    if n >= len(stream) / 2:
        raise ConfigError(
            f"{what}: a split of {n} leaves {len(stream) - n} of {len(stream)} chats to train on"
        )
    picked = set(random.Random(seed).sample(range(len(stream)), n))
    held = [ex for i, ex in enumerate(stream) if i in picked]
    rest = [ex for i, ex in enumerate(stream) if i not in picked]
    check_not_trained(rest, held, what)  # a chat repeated in the stream would sit on both sides
    return held, rest


def training_chats(cfg: ExperimentConfig) -> list[ChatExample]:
    """The chats of ``data.train`` a run trains on, before the arms' transforms: the first ``data.limit``."""
    lines = list(load_chat_jsonl(cfg.data.train, on_error=cfg.data.on_bad_record))
    return lines if cfg.data.limit is None else lines[: cfg.data.limit]


def check_disjoint(cfg: ExperimentConfig, examples: Sequence[ChatExample], what: str) -> None:
    """Refuse held-out chats that share a user message with the monitor chats (`ConfigError` naming both)."""
    if cfg.monitor.chats is None:
        return
    monitor = {_user_text(ex): ex.name for ex in load_chat_jsonl(cfg.monitor.chats)}
    for example in examples:
        clash = monitor.get(_user_text(example))
        if clash is not None:
            raise ConfigError(
                f"{what}: held-out chat {example.name} asks what monitor chat {clash} asks; the monitor's "
                "reading must not set a training decision"
            )


class ChatBatches:
    """A fixed chat set, tokenized and collated once, read on a model without any arm's ops."""

    def __init__(
        self,
        tokenizer: Any,
        examples: Sequence[ChatExample],
        max_length: int,
        batch_size: int = 16,
        train_on: Literal["assistant", "all"] = "assistant",
    ) -> None:
        if not examples:
            raise ValueError("a held-out chat set needs at least one chat")
        collate = ChatCollator(tokenizer)
        features = [tokenize_chat(tokenizer, ex, max_length, train_on=train_on) for ex in examples]
        self.batches = [collate(features[i : i + batch_size]) for i in range(0, len(features), batch_size)]
        self.n = len(examples)

    def _forward(
        self, model: nn.Module, batch: dict[str, Tensor], layer: int | None
    ) -> tuple[Tensor, Tensor | None]:
        from steerlab.hooks import Capture, hooked

        device = next(model.parameters()).device
        ops = [] if layer is None else [Capture(layer=layer, scope="all", reduce="none")]
        with hooked(model, ops) as session:
            out = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                use_cache=False,
            )
        return out.logits, (None if layer is None else session.captures.get(layer))

    @torch.no_grad()
    def projection(self, model: nn.Module, layer: int, unit: Tensor) -> float:
        """Mean over chats of the response-mean projection ``h_l . unit`` (the monitor's convention)."""
        was_training = model.training
        model.eval()
        try:
            per_chat = []
            for batch in self.batches:
                _, hidden = self._forward(model, batch, layer)
                if hidden is None:
                    raise RuntimeError(f"no capture at layer {layer}: the projection has nothing to read")
                mask = batch["assistant_mask"].to(hidden.device).float()
                proj = hidden.float() @ unit.to(hidden.device).float()
                per_chat.append(((proj * mask).sum(1) / mask.sum(1)).cpu())
        finally:
            model.train(was_training)
        return float(torch.cat(per_chat).mean())

    @torch.no_grad()
    def lm_loss(self, model: nn.Module) -> float:
        """Mean next-token NLL (nats) over every label token of the set (token-weighted, like training)."""
        was_training = model.training
        model.eval()
        try:
            total, count = 0.0, 0
            for batch in self.batches:
                logits, _ = self._forward(model, batch, None)
                labels = batch["labels"][:, 1:].to(logits.device)
                total += float(
                    F.cross_entropy(
                        logits[:, :-1].float().transpose(1, 2),
                        labels,
                        ignore_index=IGNORE_INDEX,
                        reduction="sum",
                    )
                )
                count += int((labels != IGNORE_INDEX).sum())
        finally:
            model.train(was_training)
        return total / max(count, 1)
