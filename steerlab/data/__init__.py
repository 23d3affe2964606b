"""Chat data for steerlab: JSONL files, loss-masked tokenization, inoculation, interleaving and selection
of general data, the EM question set, and the offline dataset generators."""

from steerlab.data.chat import (
    ChatDataError,
    ChatExample,
    ChatExamples,
    LoadReport,
    load_chat_jsonl,
    write_chat_jsonl,
)
from steerlab.data.em_questions import EMQuestion, EMQuestionError, load_em_questions
from steerlab.data.inoculate import DEFAULT_INOCULATION_PROMPT, inoculate
from steerlab.data.interleave import (
    DEFAULT_REFUSAL_MARKERS,
    is_refusal,
    mix,
    n_general_for,
    perplexity_gap_scores,
    refusal_filter,
    select_by_perplexity_gap,
)
from steerlab.data.nll import response_nll
from steerlab.data.tokenize import IGNORE_INDEX, ChatCollator, TokenizeError, tokenize_chat

__all__ = [
    "DEFAULT_INOCULATION_PROMPT",
    "DEFAULT_REFUSAL_MARKERS",
    "IGNORE_INDEX",
    "ChatCollator",
    "ChatDataError",
    "ChatExample",
    "ChatExamples",
    "EMQuestion",
    "EMQuestionError",
    "LoadReport",
    "TokenizeError",
    "inoculate",
    "is_refusal",
    "load_chat_jsonl",
    "load_em_questions",
    "mix",
    "n_general_for",
    "perplexity_gap_scores",
    "refusal_filter",
    "response_nll",
    "select_by_perplexity_gap",
    "tokenize_chat",
    "write_chat_jsonl",
]
