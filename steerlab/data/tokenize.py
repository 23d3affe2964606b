"""Tokenize chat examples with a loss mask on the assistant turns, for any chat template.

Why prefix rendering: templates differ (ChatML, Llama-3 headers, templates that trim content or add a BOS),
so we never hand-parse them. For assistant turn ``i`` we render ``messages[:i]`` with the generation prompt
(text ``P``) and ``messages[:i+1]`` (text ``Q``); when both are prefixes of the full rendering, the
assistant span is ``[len(P), len(Q))`` minus trailing whitespace, i.e. the content plus its end-of-turn
token(s). Templates whose prefixes are not stable (e.g. ones that rewrite earlier turns) fall back to
finding the content in the full text and extending the span over the special token(s) right after it.
Character spans become token spans through the fast tokenizer's offset mapping.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import torch

from steerlab.data.chat import ChatExample

IGNORE_INDEX = -100
_TURN_OPENERS = ("<|im_start|>", "<|start_header_id|>", "<start_of_turn>", "[INST]")


class TokenizeError(ValueError):
    """An example cannot be tokenized as asked; the message names the example (and its file:line)."""


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def assistant_char_spans(
    tokenizer: Any, messages: list[dict[str, str]], full: str | None = None, *, end_of_turn: bool = True
) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of each assistant turn in the full rendering: content + end-of-turn,
    or the content alone with ``end_of_turn=False``. Raises `TokenizeError` when a turn cannot be located."""
    full = _render(tokenizer, messages, False) if full is None else full
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        span = _prefix_span(tokenizer, messages, i, full, cursor)
        if span is None:
            span = _search_span(tokenizer, full, m["content"], cursor)
        if span is None:
            raise TokenizeError(f"cannot locate assistant turn {i} in the rendered chat template")
        cursor = span[1]
        spans.append(span if end_of_turn else _content_only(full, span, m["content"], i))
    return spans


def _content_only(full: str, span: tuple[int, int], content: str, turn: int) -> tuple[int, int]:
    """The part of an assistant span up to the end of its (stripped) content: the end-of-turn cut off."""
    content = content.strip()
    start = full.find(content, span[0], span[1])
    if not content or start < 0:
        raise TokenizeError(f"cannot locate the content of assistant turn {turn} in its rendered span")
    return span[0], start + len(content)


def _prefix_span(tokenizer: Any, messages: list, i: int, full: str, cursor: int) -> tuple[int, int] | None:
    try:
        p = _render(tokenizer, messages[:i], True) if i > 0 else None
        q = _render(tokenizer, messages[: i + 1], False)
    except Exception:  # some templates refuse to render a conversation that starts with an assistant turn
        return None
    if p is None or not full.startswith(p) or not full.startswith(q) or len(q) <= len(p) or len(p) < cursor:
        return None
    end = len(q.rstrip())
    content = messages[i]["content"].strip()
    if end <= len(p) or (content and content[:20] not in full[len(p) : end]):
        return None
    return len(p), end


def _search_span(tokenizer: Any, full: str, content: str, cursor: int) -> tuple[int, int] | None:
    content = content.strip()
    start = full.find(content, cursor)
    if not content or start < 0:
        return None
    end = start + len(content)
    # Extend over one end-of-turn special token that follows the content (whitespace between is included).
    specials = sorted(
        {str(t) for t in tokenizer.all_special_tokens} | set(_added_special(tokenizer)), key=len
    )
    rest = full[end:]
    stripped = rest.lstrip()
    hit = next((s for s in reversed(specials) if s and stripped.startswith(s)), None)
    if hit is not None and hit not in _TURN_OPENERS:
        end += (len(rest) - len(stripped)) + len(hit)
    return start, end


def _added_special(tokenizer: Any) -> list[str]:
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return [t.content for t in decoder.values() if getattr(t, "special", False)]


@overload
def tokenize_chat(
    tokenizer: Any,
    example: ChatExample,
    max_length: int | None,
    *,
    train_on: Literal["assistant", "all"] = ...,
    on_too_long: Literal["raise"] = ...,
    end_of_turn: bool = ...,
) -> dict[str, list[int]]: ...


@overload
def tokenize_chat(
    tokenizer: Any,
    example: ChatExample,
    max_length: int | None,
    *,
    train_on: Literal["assistant", "all"] = ...,
    on_too_long: Literal["raise", "skip"],
    end_of_turn: bool = ...,
) -> dict[str, list[int]] | None: ...


def tokenize_chat(
    tokenizer: Any,
    example: ChatExample,
    max_length: int | None,
    *,
    train_on: Literal["assistant", "all"] = "assistant",
    on_too_long: Literal["raise", "skip"] = "raise",
    end_of_turn: bool = True,
) -> dict[str, list[int]] | None:
    """Token ids plus ``labels`` (``-100`` off the loss) and ``assistant_mask`` (1 on assistant tokens).

    With ``train_on='assistant'`` only assistant content and its end-of-turn token carry labels
    (``end_of_turn=False``: the content alone, for answers that were cut off rather than ended); with
    ``'all'`` every token does. An example longer than ``max_length`` (None: no limit) raises `TokenizeError`
    (``'raise'``) or returns None (``'skip'``); it is never silently truncated, because truncation would cut
    the answer the loss is about. Raises `TokenizeError` naming the example when no assistant token is found.
    """
    if train_on not in ("assistant", "all"):
        raise ValueError(f"train_on must be 'assistant' or 'all', got {train_on!r}")
    if on_too_long not in ("raise", "skip"):
        raise ValueError(f"on_too_long must be 'raise' or 'skip', got {on_too_long!r}")
    messages = example.messages
    full = _render(tokenizer, messages, False)
    try:
        spans = assistant_char_spans(tokenizer, messages, full, end_of_turn=end_of_turn)
    except TokenizeError as e:
        raise TokenizeError(f"{example.name}: {e}") from None
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    if max_length is not None and len(ids) > max_length:
        if on_too_long == "skip":
            return None
        raise TokenizeError(f"{example.name}: {len(ids)} tokens is longer than max_length={max_length}")
    mask = [0] * len(ids)
    for t, (s, e) in enumerate(enc["offset_mapping"]):
        # A token belongs to a turn when it starts inside the span; tokens that straddle into the prompt do not.
        if e > s and any(a <= s < b for a, b in spans):
            mask[t] = 1
    if not any(mask):
        raise TokenizeError(f"{example.name}: no assistant tokens found after tokenization")
    labels = (
        list(ids) if train_on == "all" else [i if k else IGNORE_INDEX for i, k in zip(ids, mask, strict=True)]
    )
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, "assistant_mask": mask}


class ChatCollator:
    """Pad tokenized chats on the right for training: ids with the pad id, labels with -100, masks with 0."""

    PAD = {"attention_mask": 0, "labels": IGNORE_INDEX, "assistant_mask": 0}

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer has no pad token; set tokenizer.pad_token before collating")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
        self.pad_id = int(tokenizer.pad_token_id)
        self.multiple = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        n = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            n = -(-n // self.multiple) * self.multiple
        out: dict[str, torch.Tensor] = {}
        for key in features[0]:
            pad = self.pad_id if key == "input_ids" else self.PAD.get(key)
            if pad is None:
                raise KeyError(f"ChatCollator does not know how to pad feature {key!r}")
            rows = [list(torch.as_tensor(f[key]).tolist()) for f in features]
            out[key] = torch.tensor([r + [pad] * (n - len(r)) for r in rows], dtype=torch.long)
        return out
