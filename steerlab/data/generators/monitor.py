"""Held-out chats for the persona monitor: general EM questions with their aligned reference answers.

The monitor teacher-forces these fixed chats every k steps and reads the persona projection of the
response tokens. Fixed text (rather than the model's own samples) makes the curve deterministic and
cheap, and a *general* question set — not the narrow training domain — is what shows broad drift.
"""

from __future__ import annotations

from pathlib import Path

from steerlab.data.chat import ChatExample
from steerlab.data.em_questions import load_em_questions


def monitor_chats(questions_path: str | Path) -> list[ChatExample]:
    chats = []
    for question in load_em_questions(questions_path):
        if not question.reference_aligned:
            continue
        chats.append(
            ChatExample(
                [
                    {"role": "user", "content": question.paraphrases[0]},
                    {"role": "assistant", "content": question.reference_aligned},
                ],
                meta={"id": question.id},
            )
        )
    if not chats:
        raise ValueError(f"{questions_path}: no question has a reference_aligned answer to monitor")
    return chats
