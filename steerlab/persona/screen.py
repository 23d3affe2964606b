"""Data screening: which training examples push a model along a persona direction before it trains on them.

For each example the signal is ``projection(dataset answer) - projection(base model's own answer)`` to the
same prompt, both read teacher-forced by the base model at the vector's layer (response-token mean on the
unit direction). Subtracting the model's own answer removes what the *prompt* contributes, so the number
says how much more trait-like the dataset's answer is than what the model would have said — the screening
signal of the persona-vector work. The base answers are greedy, generated in batches and kept in a
resumable JSONL next to the output.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

if TYPE_CHECKING:
    import plotly.graph_objects as go

from steerlab.data.chat import ChatExample
from steerlab.io import write_text
from steerlab.persona.generation import GREEDY, GenRequest, generate
from steerlab.persona.projection import chat_projections
from steerlab.persona.vectors import PersonaVector

# The screening CSV that `steerlab.plots.io.load_screening` reads (its required columns: rank, index,
# projection_diff, flagged); the row key ``diff`` is written as ``projection_diff``.
CSV_COLUMNS = {
    "rank": "rank",
    "index": "index",
    "source": "source",
    "projection_diff": "diff",
    "flagged": "flagged",
    "projection": "projection",
    "base_projection": "base_projection",
    "prompt": "prompt",
    "answer": "answer",
    "base_answer": "base_answer",
}
CSV_FIELDS = tuple(CSV_COLUMNS)
DEFAULT_FLAG_SHARE = 0.05  # the share of examples flagged: the top of the ranking


def flag_top(rows: Sequence[dict[str, Any]], share: float = DEFAULT_FLAG_SHARE) -> None:
    """Mark the ``share`` of ranked ``rows`` with the largest finite ``diff`` as ``flagged`` (at least one when
    ``share > 0``); rows without a finite diff are never flagged. Raises ValueError for a share outside [0, 1].
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"flag share must be in [0, 1], got {share}")
    finite = [r for r in rows if math.isfinite(r["diff"])]
    n = 0 if share == 0 or not finite else max(1, round(share * len(finite)))
    top = {id(r) for r in sorted(finite, key=lambda r: -r["diff"])[:n]}
    for row in rows:
        row["flagged"] = id(row) in top


def _last_user(example: ChatExample) -> str:
    users = [m["content"] for m in example.prompt_messages() if m["role"] == "user"]
    return users[-1] if users else ""


def screen(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[ChatExample],
    vector: PersonaVector,
    *,
    layer: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    base_answers_path: str | Path | None = None,
    flag_share: float = DEFAULT_FLAG_SHARE,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Rows ranked by ``diff`` (largest first): ``{rank, index, source, diff, flagged, projection, ...}``.

    ``flagged`` marks the top ``flag_share`` of the ranking (see `flag_top`).

    Projections are in residual-stream units on the unit direction at ``layer`` (default: the chosen one);
    NaN diffs (empty answers) rank last. The screening signal follows Chen et al., "Persona Vectors"
    (arXiv:2507.21509). Raises ``ValueError`` for no examples, `IncompatibleVectorError` for a vector made for
    another model.
    """
    if not examples:
        raise ValueError("no examples to screen")
    vector.check_model(model)
    layer = vector.layer if layer is None else layer
    prompts = [ex.prompt_messages() for ex in examples]
    answers = [ex.assistant_turns()[-1] for ex in examples]
    requests = [GenRequest(f"ex{i}", p) for i, p in enumerate(prompts)]
    # the base model's own answers are greedy by design: only their length and batching are knobs
    sampling = replace(GREEDY, max_new_tokens=max_new_tokens, batch_size=batch_size)
    records = generate(
        model,
        tokenizer,
        requests,
        sampling,
        out_path=base_answers_path,
        progress=progress,
        desc="base answers",
    )
    base = [r["answer"] for r in records]
    data_proj = chat_projections(
        model, tokenizer, prompts, answers, vector, layer, batch_size=batch_size, progress=progress
    )
    base_proj = chat_projections(
        model, tokenizer, prompts, base, vector, layer, batch_size=batch_size, progress=progress
    )
    rows = []
    for i, ex in enumerate(examples):
        diff = data_proj[i] - base_proj[i]
        rows.append(
            {
                "index": i,
                "source": ex.source or "",
                "diff": diff,
                "projection": data_proj[i],
                "base_projection": base_proj[i],
                "prompt": _last_user(ex),
                "answer": answers[i],
                "base_answer": base[i],
            }
        )
    rows.sort(key=lambda r: (-r["diff"] if math.isfinite(r["diff"]) else math.inf, r["index"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    flag_top(rows, flag_share)
    return rows


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.6g}" if isinstance(value, float) else value


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The ranked rows as CSV text with the columns ``CSV_FIELDS`` (floats to 6 significant digits, flags as
    true/false, a diff without a value as ``nan``); rows that were never flagged get ``flagged`` false."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in rows:
        cells = {column: row[key] for column, key in CSV_COLUMNS.items() if key != "flagged"}
        writer.writerow({k: _cell(v) for k, v in {**cells, "flagged": row.get("flagged", False)}.items()})
    return buffer.getvalue()


def histogram(
    rows: Sequence[dict[str, Any]], *, title: str = "Screening: projection minus base-answer projection"
) -> go.Figure:
    """A histogram of the finite ``diff`` values (40 bins)."""
    import plotly.graph_objects as go  # noqa: F811 - imported here at run time, for types above

    fig = go.Figure(go.Histogram(x=[r["diff"] for r in rows if math.isfinite(r["diff"])], nbinsx=40))
    fig.update_layout(
        title=title,
        xaxis_title="projection difference (dataset answer - base answer)",
        yaxis_title="examples",
    )
    return fig


def write_outputs(
    rows: Sequence[dict[str, Any]], csv_path: str | Path, html_path: str | Path | None = None
) -> None:
    """Write the CSV (and the histogram as HTML when ``html_path`` is given), each atomically."""
    write_text(csv_path, to_csv(rows))
    if html_path is not None:
        write_text(html_path, histogram(rows).to_html(include_plotlyjs="cdn"))
