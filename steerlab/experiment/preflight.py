"""Check every cell before a grid spends hours: its training data parses and fits, its layers exist.

A grid runs for hours; a long example in the interleaving pool used to stop it only when that cell came up.
``check_cells`` reads what each cell to be trained will read — its narrow examples (with the inoculation
prompt when that arm is on), its whole interleaving pool (after the refusal filter: any of it may be
picked) and the calibration chats of holding steering — and tokenizes it under the cell's own ``max_length``. All problems are reported at once, each
naming the cell and the file:line. ``check_layers`` checks each cell's layer settings against the model's
depth, read from its config without its weights (`steerlab.models.model_depth`), so ``layer: 99`` stops the
grid before any cell starts rather than when its cell comes up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from steerlab.data.chat import ChatExample, load_chat_jsonl
from steerlab.data.inoculate import inoculate
from steerlab.data.interleave import DEFAULT_REFUSAL_MARKERS, refusal_filter
from steerlab.data.tokenize import TokenizeError, tokenize_chat
from steerlab.experiment.grid import Cell
from steerlab.train.config import ConfigError, ExperimentConfig


def cell_examples(cfg: ExperimentConfig) -> list[ChatExample]:
    """Every example the cell may train on: its narrow data (inoculated if asked) and its whole general pool."""
    narrow = list(load_chat_jsonl(cfg.data.train, on_error=cfg.data.on_bad_record))
    if cfg.data.limit:
        narrow = narrow[: cfg.data.limit]
    if cfg.arms.inoculate is not None:
        arm = cfg.arms.inoculate
        narrow = [inoculate(ex, arm.system_prompt, existing=arm.existing) for ex in narrow]
    general: list[ChatExample] = []
    if cfg.arms.interleave is not None:
        arm = cfg.arms.interleave
        general = list(load_chat_jsonl(arm.general, on_error=cfg.data.on_bad_record))
        if arm.refusal_filter:
            markers = DEFAULT_REFUSAL_MARKERS if arm.refusal_markers is None else tuple(arm.refusal_markers)
            general = refusal_filter(general, markers, arm.first_words)
    return narrow + general


def arm_reading_examples(cfg: ExperimentConfig) -> list[ChatExample]:
    """Chats an arm reads the model on from a file of its own (holding steering's ``calibration_file``), as
    the arm reads them: they must fit ``max_length`` whatever ``data.on_too_long`` says (a reading cannot
    skip a chat). The held-out lines of the training file that arms read by default are passed over when
    too long (`steerlab.train.heldout`)."""
    from steerlab.train.arms.steer_hold import calibration_file_chats

    hold = cfg.arms.steer_hold
    if hold is None or hold.calibration_file is None:
        return []
    return calibration_file_chats(hold)


def check_cells(cells: Sequence[Cell], tokenizer: Any, *, most: int = 10) -> int:
    """Raise ``ConfigError`` listing (up to ``most``) problems; returns the number of examples checked."""
    problems: list[str] = []
    checked = 0
    seen: dict[tuple, list[str]] = {}
    for cell in cells:
        cfg = cell.config
        key = (
            cfg.data.train,
            cfg.data.limit,
            cfg.data.max_length,
            cfg.data.train_on,
            cfg.data.on_too_long,
            cfg.data.on_bad_record,
            repr(cfg.arms.inoculate),
            repr(cfg.arms.interleave),
            repr(cfg.arms.steer_hold),
        )
        if key not in seen:
            found: list[str] = []
            # (examples, train_on, on_too_long): the training stream as configured, an arm's readings strictly
            for read, train_on, on_too_long in (
                (cell_examples, cfg.data.train_on, cfg.data.on_too_long),
                (arm_reading_examples, "assistant", "raise"),
            ):
                try:
                    examples = read(cfg)
                except (OSError, ValueError) as error:  # ChatDataError and ConfigError are ValueErrors
                    examples = []
                    found.append(str(error))
                for ex in examples:
                    try:
                        tokenize_chat(
                            tokenizer, ex, cfg.data.max_length, train_on=train_on, on_too_long=on_too_long
                        )
                    except TokenizeError as error:
                        found.append(str(error))
                checked += len(examples)
            seen[key] = found
        problems += [f"cell {cell.key}: {p}" for p in seen[key]]
    if problems:
        shown = "\n  ".join(problems[:most])
        more = f"\n  (+{len(problems) - most} more)" if len(problems) > most else ""
        raise ConfigError(
            f"{len(problems)} problem(s) in the grid's training data, found before any training:\n  {shown}{more}"
        )
    return checked


# the config fields that name decoder blocks, in any arm's section or the monitor's (one int or a list)
LAYER_FIELDS = ("layer", "layers", "ldifs_layers")


def layer_problems(cfg: ExperimentConfig, depth: int) -> list[str]:
    """Each layer setting of a cell's config outside the model's blocks ``0 .. depth - 1``, as
    ``"arms.steer.layer: 99 ..."`` (arms found through their config fields, not by name)."""
    sections = [(f"arms.{name}", section) for name, section in cfg.arms.items()] + [("monitor", cfg.monitor)]
    problems = []
    for where, section in sections:
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if f.name not in LAYER_FIELDS or value is None:
                continue
            bad = [
                layer for layer in (value if isinstance(value, list) else [value]) if not 0 <= layer < depth
            ]
            if bad:
                shown = bad[0] if len(bad) == 1 and not isinstance(value, list) else bad
                problems.append(
                    f"{where}.{f.name}: {shown} is outside the model's layers 0..{depth - 1} ({depth} blocks)"
                )
    return problems


def check_layers(cells: Sequence[Cell], depth: int, model: str) -> None:
    """Raise ``ConfigError`` listing every layer setting of ``cells`` outside ``model``'s ``depth`` blocks."""
    problems = [f"cell {cell.key}: {p}" for cell in cells for p in layer_problems(cell.config, depth)]
    if problems:
        shown = "\n  ".join(problems)
        raise ConfigError(
            f"{len(problems)} layer setting(s) outside {model!r}, found before any training:\n  {shown}"
        )
