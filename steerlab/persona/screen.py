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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

if TYPE_CHECKING:
    import plotly.graph_objects as go

from steerlab.data.chat import ChatExample
from steerlab.io import write_text
from steerlab.persona.generation import GenRequest, generate
from steerlab.persona.projection import chat_projections
from steerlab.persona.vectors import PersonaVector

CSV_FIELDS = (
    "rank",
    "index",
    "source",
    "diff",
    "projection",
    "base_projection",
    "prompt",
    "answer",
    "base_answer",
)


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
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Rows ranked by ``diff`` (largest first): ``{rank, index, source, diff, projection, base_projection, ...}``.

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
    base = [
        r["answer"]
        for r in generate(
            model,
            tokenizer,
            requests,
            out_path=base_answers_path,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            temperature=0.0,
            progress=progress,
            desc="base answers",
        )
    ]
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
    return rows


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The ranked rows as CSV text with the columns ``CSV_FIELDS`` (floats to 6 significant digits)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CSV_FIELDS})
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
