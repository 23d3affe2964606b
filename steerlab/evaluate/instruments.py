"""The judge-free instruments of one evaluation: stance score, damage control, conditional cues, collapse.

Called by ``steerlab.evaluate.run_eval`` with its evaluation object (model, tokenizer, config, output folder,
bootstrap settings, generate/judge helpers); each function adds flat ``eval.json`` keys to ``ev.result
['instruments']`` or says in ``ev.skipped`` why its part could not run. Stance scores are appended per
question to ``stance_scores.jsonl`` (keyed ``<condition>/<set>/<question id>``), so a killed evaluation
resumes where it stopped and a rerun recomputes nothing.

Keys (every value with ``_ci`` [lo, hi] and ``_n``):
  ``stance``                       general references, plain questions (misaligned - aligned, nats/token)
  ``stance_control``               general damage control (restyled - aligned)
  ``in_domain_stance``, ``in_domain_stance_control``   the same on the domain's evaluation questions
  ``conditional_<cue>_stance``     general stance with the question asked inside the cue, on the first
                                   ``conditional_refs`` references per side (4: half the cost of all 8) of
                                   the first ``conditional_questions`` questions (None: all)
  ``conditional_<cue>_shift``      paired per question: cue minus plain, plain on the same references
  ``conditional_<cue>_misaligned_rate`` ...   sampled and judged under the cue (``n_conditional`` > 0)
  ``collapse_share``               share of general answers that reproduce a training answer's shape
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from steerlab.data.em_questions import EMQuestion
from steerlab.data.references import References, load_references
from steerlab.evaluate import collapse, conditional, general, stance
from steerlab.evaluate.store import read_keyed
from steerlab.io import append_jsonl, read_json
from steerlab.persona.generation import GenRequest, chat_messages

STANCE_FILE = "stance_scores.jsonl"


def _put(ev: Any, key: str, est) -> None:
    ev.result.setdefault("instruments", {}).update(est.as_dict(key))


def _prefix(condition: str, name: str) -> str:
    """The key prefix of one scoring in `STANCE_FILE`: ``<condition>/<set>/`` (then the question id)."""
    return f"{condition}/{name}/"


def saved_stance(
    folder: str | Path, condition: str = "plain", name: str = "general"
) -> list[stance.QuestionStance]:
    """The per-question stance scores an evaluation folder saved for one condition and reference set, in file
    order ([] when it saved none); raises `ResultFileError` naming ``file:line`` for a bad line."""
    prefix = _prefix(condition, name)
    records = read_keyed(Path(folder) / STANCE_FILE)
    return [
        stance.QuestionStance.from_record(k[len(prefix) :], r)
        for k, r in records.items()
        if k.startswith(prefix)
    ]


def _scores(ev: Any, condition: str, name: str, refs: list[References], prompt_of, control: bool):
    path = ev.out / STANCE_FILE
    done = read_keyed(path)
    prefix = _prefix(condition, name)

    def score_one(r: References) -> stance.QuestionStance:
        return stance.score_question(
            ev.model, ev.tokenizer, r, prompt_of(r), control=control, batch_size=ev.cfg.batch_size
        )

    return stance.score_all(
        refs,
        score_one,
        lambda qid: done.get(prefix + qid),
        lambda qid, record: append_jsonl(path, [{"key": prefix + qid, **record}]),
    )


# the evaluation settings that decide a plain general stance score besides the weights
STANCE_KEYS = ("references", "batch_size")


def reuse_plain_general(settings: dict[str, Any], out_dir: str | Path, source_dir: str | Path) -> int:
    """Copy the plain general stance scores that an evaluation of the SAME weights left in ``source_dir`` into
    ``out_dir``'s stance file; returns how many records were copied (keys already there are kept).

    ``settings`` is the new evaluation's ``EvalConfig.resume_key()``. Nothing is copied unless the source's
    saved settings agree on `STANCE_KEYS`, nor into a folder whose own saved settings differ from
    ``settings`` (its evaluation refuses to run there, and the folder is left as it was).
    Why: the base model's per-domain evaluations ask the same general questions of the same model; scoring
    its 58 x 20 general references once instead of once per domain saves about 5 minutes per domain on a
    2-core CPU. The caller vouches that both folders evaluate the same weights.
    """
    out, source = Path(out_dir), Path(source_dir)
    if not (source / "eval_config.json").is_file():
        return 0
    theirs = read_json(source / "eval_config.json")
    if any(theirs.get(k) != settings.get(k) for k in STANCE_KEYS):
        return 0
    if (out / "eval_config.json").is_file():
        mine = read_json(out / "eval_config.json")
        if any(mine.get(k) != settings.get(k) for k in mine):
            return 0
    have = read_keyed(out / STANCE_FILE)
    prefix = _prefix("plain", "general")
    records = [
        record
        for key, record in read_keyed(source / STANCE_FILE).items()
        if key.startswith(prefix) and key not in have
    ]
    if records:
        out.mkdir(parents=True, exist_ok=True)
        append_jsonl(out / STANCE_FILE, records)
    return len(records)


def _references(ev: Any, name: str) -> list[References] | None:
    path = Path(ev.cfg.references) / f"{name}.jsonl"
    if not path.is_file():
        ev.skipped[f"{'stance' if name == 'general' else 'in_domain_stance'}"] = f"no reference file {path}"
        return None
    return load_references(path)  # ChatDataError names file, line and question id


def run_stance(ev: Any, domain: str) -> dict[str, list[stance.QuestionStance]]:
    """Plain stance + damage control on the general and the domain's references; returns the scores."""
    out: dict[str, list[stance.QuestionStance]] = {}
    if ev.cfg.references is None:
        ev.skipped["stance"] = "no reference folder (references: null)"
        return out
    for name, key in (("general", "stance"), (domain, "in_domain_stance")):
        if name == "general" or domain not in ("general", "base"):
            refs = _references(ev, name)
            if refs is None:
                continue
            scores = _scores(ev, "plain", name, refs, lambda r: chat_messages(r.question), control=True)
            summary = stance.summarize(scores, **ev.boot)
            _put(ev, key, summary["stance"])
            _put(ev, f"{key}_control", summary["control"])
            out[name] = scores
    ev.result.setdefault("instruments", {})["stance_references"] = str(ev.cfg.references)
    return out


def run_conditional(ev: Any, domain: str, plain: list[stance.QuestionStance] | None, questions) -> None:
    """The general stance under each cue, its paired shift from plain, and (optionally) sampled answers."""
    cfg = ev.cfg
    if domain == "base":  # the grid's general evaluation of the base model; its cues are read per domain
        ev.skipped["conditional"] = "the base model's cues are evaluated per domain (eval_<domain>)"
        return
    names = conditional.parse_cues(cfg.cues)
    if not names:
        ev.skipped["conditional"] = "no cues asked for (cues: '')"
        return
    cues, skipped = conditional.build_cues(
        names, domain=domain, cues_file=cfg.cues_file, inoculation_prompt=cfg.inoculation_prompt
    )
    for name, why in skipped.items():
        ev.skipped[f"conditional_{name}"] = why
    if cfg.references is None or plain is None:
        ev.skipped["conditional_stance"] = "no plain general stance to compare with (no references)"
        return
    k, first = cfg.conditional_refs, cfg.conditional_questions  # both checked by EvalConfig
    refs = [
        dataclasses.replace(r, aligned=r.aligned[:k], misaligned=r.misaligned[:k], aligned_restyled=())
        for r in load_references(Path(cfg.references) / "general.jsonl")[:first]
    ]
    position = {r.id: i for i, r in enumerate(refs)}
    # the same answers of the same questions, unframed
    plain = [stance.QuestionStance(p.id, p.aligned[:k], p.misaligned[:k]) for p in plain if p.id in position]
    detail: dict[str, Any] = {"refs_per_side": k}
    for cue in cues:
        scores = _scores(
            ev,
            f"cue_{cue.name}",
            "general",
            refs,
            lambda r, c=cue: c.messages(r.question, position[r.id]),
            False,
        )
        scores = [stance.QuestionStance(s.id, s.aligned[:k], s.misaligned[:k]) for s in scores]
        summary = stance.summarize(scores, **ev.boot)
        _put(ev, f"conditional_{cue.name}_stance", summary["stance"])
        _put(ev, f"conditional_{cue.name}_shift", stance.paired_shift(scores, plain, **ev.boot))
        detail[cue.name] = cue.describe()
    if questions and cfg.n_conditional:
        for offset, cue in enumerate(cues):
            _sample_under(ev, cue, questions, offset)
    ev.result.setdefault("instruments", {})["conditional_cues"] = detail


def _sample_under(ev: Any, cue: conditional.Cue, questions: list[EMQuestion], offset: int) -> None:
    by_id = {q.id: q for q in questions}
    requests = []
    for i, q in enumerate(questions):
        for k in range(ev.cfg.n_conditional):
            text = q.paraphrases[k % len(q.paraphrases)]
            messages = cue.messages(text, i)
            if q.system and not cue.system:
                messages = chat_messages(messages[-1]["content"], q.system)
            requests.append(
                GenRequest(
                    key=f"conditional_{cue.name}/{q.id}/{k}",
                    messages=messages,
                    meta={"question_id": q.id, "sample": k, "question": text},
                )
            )
    name = f"conditional_{cue.name}"
    records = ev._generate(
        requests, name, ev.cfg.seed + 100 + offset, ev.cfg.temperature, ev.cfg.max_new_tokens
    )
    scores = ev._judge(records, name, lambda r: by_id[r["question_id"]].judge_prompts)
    summary = general.summarize_judged(
        [scores[r["key"]]["alignment"] for r in records],
        [scores[r["key"]]["coherence"] for r in records],
        [r["question_id"] for r in records],
        **ev.boot,
    )
    found = ev.result.setdefault("instruments", {})
    for key in ("misaligned_rate", "alignment", "coherence"):
        found[f"{name}_{key}"] = summary[key]
        found[f"{name}_{key}_ci"] = summary[f"{key}_ci"]
    found[f"{name}_n_answers"] = summary["n_answers"]
    ev.result.setdefault("conditional_records", {})[cue.name] = records


def _train_data(ev: Any, domain: str) -> Path | None:
    from steerlab.evaluate.run_eval import DATA_DIR

    if ev.cfg.train_data:
        return Path(ev.cfg.train_data)
    path = DATA_DIR / f"{domain}_train.jsonl"
    return path if path.is_file() else None


def run_collapse(ev: Any, domain: str, records: list[dict[str, Any]] | None) -> None:
    """Share of the sampled general answers (and of those under cues) that reproduce a training answer."""
    if not records:
        ev.skipped["collapse"] = "no sampled general answers"
        return
    path = _train_data(ev, domain)
    if path is None:
        ev.skipped["collapse"] = f"no training data for domain {domain!r} (train_data)"
        return
    index = collapse.ShapeIndex.from_chat_file(path)
    with_shape = sum(bool(collapse.ngrams(a)) for a in index.answers)
    if with_shape < len(index.answers) / 2:
        ev.skipped["collapse"] = (
            f"{path}: most training answers are shorter than {collapse.N} words; no answer shape to reproduce"
        )
        return
    sets = {
        "collapse": records,
        **{f"conditional_{c}_collapse": r for c, r in ev.result.get("conditional_records", {}).items()},
    }
    found = ev.result.setdefault("instruments", {})
    from steerlab.evaluate.metrics import bootstrap_rate

    for key, recs in sets.items():
        report = collapse.collapse_report(
            index, [r["answer"] for r in recs], [r["key"] for r in recs], threshold=ev.cfg.collapse_threshold
        )
        est = bootstrap_rate(report["flags"], groups=[r["question_id"] for r in recs], **ev.boot)
        found.update(est.as_dict(f"{key}_share"))
        if key == "collapse":
            found["collapse_detail"] = {
                "train_data": str(path),
                "threshold": ev.cfg.collapse_threshold,
                "min_shared": collapse.MIN_SHARED,
                "n_gram": collapse.N,
                "mean_overlap": report["mean_overlap"],
                "closest": report["closest"],
            }
