"""``evaluate_model``: one model's full evaluation, written into an output folder, resumable.

Output folder::

    eval_config.json         the settings; a rerun with different settings refuses to mix results
    general_answers.jsonl    sampled answers to the general questions (appended per batch)
    general_scores.jsonl     their judge scores {key, alignment, coherence} (appended per batch)
    general_judged.jsonl     answers + scores + label, rewritten at the end for reading
    in_domain_answers.jsonl / in_domain_scores.jsonl   the same for the held-out domain split
    benign_answers.jsonl     greedy answers to the benign task
    eval.json                the summary row (written last, atomically)

A killed run loses at most one batch: answers and scores already on disk are kept and the rerun continues,
producing the same numbers as an uninterrupted run (generation batches are seeded by position, the judges
are deterministic or cached). Every sampled part takes its seed from ``cfg.seed``; every rate and mean has a
percentile-bootstrap CI (clustered by question / situation). A part that cannot run (no references, no
vector, no data) is skipped with its reason in ``eval.json['skipped']``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from steerlab.data.em_questions import EMQuestion, load_em_questions
from steerlab.data.inoculate import DEFAULT_INOCULATION_PROMPT
from steerlab.data.references import references_dir
from steerlab.evaluate import benign, general, in_domain, instruments, rules
from steerlab.evaluate.collapse import THRESHOLD as COLLAPSE_THRESHOLD
from steerlab.evaluate.conditional import CUE_NAMES, parse_cues
from steerlab.evaluate.items import PromptItem, load_prompt_items
from steerlab.evaluate.judging import (
    CoherenceReading,
    EvalJudge,
    JudgeItem,
    build_judge,
    check_failures,
    judge_identity,
    probe_path_for,
)
from steerlab.evaluate.logprob_score import answer_logprobs, logprob_gaps
from steerlab.evaluate.metrics import Estimate, bootstrap_mean, bootstrap_rate
from steerlab.evaluate.store import ResultFileError, score_missing
from steerlab.io import read_json, same_setting, vanished_path, write_json, write_jsonl
from steerlab.judges.endpoint import FLAT_KEYS, OpenAIJudgeOptions
from steerlab.persona.generation import SamplingSettings, generate
from steerlab.train.schema import check_number

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parents[2] / "experiments" / "data"
BENIGN_DOMAINS = ("arithmetic",)


class EvalStateError(RuntimeError):
    """The output folder holds results made with other settings."""


@dataclass
class EvalConfig:
    """Everything that decides the numbers (plus ``progress``). Paths may be None to skip that part."""

    out_dir: str
    arm: str = "base"
    domain: str | None = None  # e.g. medical / financial / arithmetic; default: from the in-domain data
    model: str | None = None  # a label for the record (registry name, run folder)
    seed: int = 0
    questions: str | None = str(DATA_DIR / "em_questions.yaml")
    n: int | None = 4  # answers per general question (None: the file's paraphrases x samples_per_paraphrase)
    temperature: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 16
    in_domain_data: str | None = (
        None  # a chat JSONL held-out split (e.g. experiments/data/medical_eval.jsonl)
    )
    n_in_domain: int | None = 32  # sampled in-domain answers (a seeded subset of prompts; None: all)
    in_domain_metric: Literal["auto", "rate", "logprob_gap", "benign_accuracy"] = "auto"
    benign_data: str | None = str(DATA_DIR / "arithmetic_eval.jsonl")
    n_benign: int | None = None  # None: the whole file
    benign_max_new_tokens: int = 12
    vector: str | None = None  # persona vector for the projection
    probe: str | None = None  # probe judge file (default: the vector's, <vector stem>.probe.safetensors)
    projection_layer: int | None = None  # default: the vector's chosen layer
    n_boot: int = 2000
    alpha: float = 0.05
    judge: Literal["probe", "openai"] = "probe"
    coherence: CoherenceReading = "bare"  # the probe judge's coherence reading (steerlab.evaluate.judging)
    judge_model: str | None = None  # openai: the judge model (default: steerlab.judges.DEFAULT_JUDGE_MODEL)
    judge_base_url: str | None = None  # openai: an OpenAI-compatible endpoint (vLLM, llama.cpp server)
    judge_concurrency: int = 8  # openai: requests in flight (a llama.cpp server answers one at a time)
    judge_timeout: float = 60.0  # openai: seconds per request, time queued in the server included
    judge_retries: int = 4  # openai: retries of a failed or timed-out request
    allow_judge_mismatch: bool = False  # openai: accept a server that serves another model than judge_model
    max_failed_share: float = 0.2  # stop when more judgments than this share fail or hold no number
    # the judge-free instruments (steerlab.evaluate.instruments): stance score + damage control on the
    # reference folder's general.jsonl and <domain>.jsonl; the general stance under training-context cues
    # (comma-separated, from CUE_NAMES), on conditional_refs references per side of the first
    # conditional_questions general questions (the shipped file lists the 26 EM questions first);
    # n_conditional > 0 also samples that many answers per question under each cue; the share of general answers that reproduce a
    # training answer (train_data: default experiments/data/<domain>_train.jsonl)
    references: str | None = str(references_dir())
    cues: str = ",".join(CUE_NAMES)
    cues_file: str | None = str(DATA_DIR / "cues.yaml")
    inoculation_prompt: str | None = DEFAULT_INOCULATION_PROMPT
    conditional_refs: int | None = 4  # references per side under each cue (None: all)
    conditional_questions: int | None = None  # the first N general reference questions under cues (None: all)
    n_conditional: int = 0
    train_data: str | None = None
    collapse_threshold: float = COLLAPSE_THRESHOLD
    progress: bool = True

    def __post_init__(self) -> None:
        """Counts, sizes, the temperature and the bootstrap settings checked when the settings are made (a grid
        file: when it loads), not when their part runs. Raises `ConfigError` (a ValueError) naming the key."""
        for key in ("n", "n_in_domain", "n_benign"):  # None: every item of the file
            check_number(key, getattr(self, key), ge=1, integer=True, optional=True)
        for key in ("max_new_tokens", "benign_max_new_tokens", "batch_size", "n_boot", "judge_concurrency"):
            check_number(key, getattr(self, key), ge=1, integer=True)
        check_number("projection_layer", self.projection_layer, ge=0, integer=True, optional=True)
        check_number("temperature", self.temperature, ge=0)  # 0: greedy
        check_number("alpha", self.alpha, gt=0, lt=1)
        check_number("judge_timeout", self.judge_timeout, gt=0)
        check_number("judge_retries", self.judge_retries, ge=0, integer=True)
        check_number("max_failed_share", self.max_failed_share, ge=0, lt=1)
        check_number("collapse_threshold", self.collapse_threshold, gt=0, le=1)
        for key in ("conditional_refs", "conditional_questions"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be an integer >= 1 or null, got {value!r}")
        if not isinstance(self.n_conditional, int) or self.n_conditional < 0:
            raise ValueError(f"n_conditional must be an integer >= 0, got {self.n_conditional!r}")
        parse_cues(self.cues)  # a misspelt cue is named now, not after the model answered

    @property
    def openai_options(self) -> OpenAIJudgeOptions:
        """The openai judge's settings (kept as flat ``judge_*`` keys, the names config files use)."""
        return OpenAIJudgeOptions(**{field: getattr(self, key) for key, field in FLAT_KEYS.items()})

    @staticmethod
    def openai_keys(options: OpenAIJudgeOptions) -> dict[str, Any]:
        """``options`` as this config's flat ``judge_*`` keys (the inverse of `openai_options`)."""
        return {key: getattr(options, field) for key, field in FLAT_KEYS.items()}

    def resume_key(self) -> dict[str, Any]:
        """The settings that decide the answers and scores on disk (labels and bootstrap settings do not)."""
        labels = (
            "out_dir",
            "progress",
            "model",
            "arm",
            "domain",
            "n_boot",
            "alpha",
            "projection_layer",
            "in_domain_metric",
            "judge_concurrency",
            "judge_timeout",
            "judge_retries",
            "allow_judge_mismatch",
            "max_failed_share",
        )
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in labels}


# the settings that decide the sampled answers (not how they are judged): answers may be reused across judges
GENERATION_KEYS = (
    "seed",
    "questions",
    "n",
    "temperature",
    "max_new_tokens",
    "batch_size",
    "in_domain_data",
    "n_in_domain",
    "benign_data",
    "n_benign",
    "benign_max_new_tokens",
)


def _defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(EvalConfig)}


def _changed(saved: dict[str, Any], current: dict[str, Any], keys=None) -> list[str]:
    """Keys whose values differ (a path: whose content differs, `steerlab.io.same_setting`); a key a saved
    config lacks counts as its default (a field added later)."""
    defaults = _defaults()
    keys = set(saved) | set(current) if keys is None else set(keys)
    changed = []
    for k in sorted(keys):
        before = saved.get(k, defaults.get(k))
        if not same_setting(before, current.get(k, defaults.get(k))):
            changed.append(k + (" (a saved path that no longer exists)" if vanished_path(before) else ""))
    return changed


# what only names or paces an evaluation: no number in eval.json depends on them
LABEL_KEYS = (
    "out_dir",
    "progress",
    "model",
    "arm",
    "domain",
    "judge_concurrency",
    "judge_timeout",
    "judge_retries",
)


def summary_settings_changed(cfg: EvalConfig, out: Path) -> list[str]:
    """The settings in which ``out``'s finished ``eval.json`` differs from ``cfg``: every setting except
    `LABEL_KEYS` (the summary bakes in the bootstrap level, the projection layer, the in-domain metric, which
    a resume of the answers may ignore); falls back to `settings_changed` before ``eval.json`` exists."""
    summary = out / "eval.json"
    if not summary.is_file():
        return settings_changed(cfg, out)
    saved = (read_json(summary, error=ResultFileError) or {}).get("config") or {}
    now = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in LABEL_KEYS}
    return _changed({k: v for k, v in saved.items() if k not in LABEL_KEYS}, now)


def settings_changed(cfg: EvalConfig, out: Path) -> list[str]:
    """The settings (`EvalConfig.resume_key`) in which ``out``'s saved evaluation differs from ``cfg``; [] when
    they agree or nothing is saved there. Raises ``ResultFileError`` for an unreadable ``eval_config.json``."""
    path = out / "eval_config.json"
    return _changed(read_json(path, error=ResultFileError), cfg.resume_key()) if path.is_file() else []


def _check_config(cfg: EvalConfig, out: Path, *, write: bool = True) -> None:
    """Refuse a folder holding results of other settings; ``write`` records the settings (only once the
    inputs have been checked, so a run that stops on bad input leaves nothing that blocks its rerun)."""
    path = out / "eval_config.json"
    current = cfg.resume_key()
    if path.is_file():
        changed = settings_changed(cfg, out)
        if changed:
            raise EvalStateError(
                f"{out} holds an evaluation with other settings (differ: {', '.join(changed)}); "
                "use another --out folder or delete this one"
            )
    elif write:
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, current)


def reuse_answers(cfg: EvalConfig, source: str | Path) -> list[str]:
    """Copy the answer files of an earlier evaluation into ``cfg.out_dir`` so that only the judging reruns.

    Only when the source sampled with the same settings (``GENERATION_KEYS``) — otherwise the error names the
    settings that differ. Files already in the output folder are kept. Returns the names copied.
    """
    source, out = Path(source), Path(cfg.out_dir)
    saved_path = source / "eval_config.json"
    if not saved_path.is_file():
        raise EvalStateError(f"{source}: no eval_config.json, so its answers cannot be reused")
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    changed = _changed(saved, cfg.resume_key(), GENERATION_KEYS)
    if changed:
        raise EvalStateError(
            f"{source} sampled its answers with other settings (differ: {', '.join(changed)}); "
            "they cannot be reused"
        )
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in sorted(source.glob("*_answers.jsonl")):
        if not (out / path.name).exists():
            shutil.copyfile(path, out / path.name)
            copied.append(path.name)
    return copied


def _ci(est: Estimate, key: str) -> dict[str, Any]:
    return est.as_dict(key)


class _Evaluation:
    def __init__(self, model: Any, tokenizer: Any, cfg: EvalConfig, judge: EvalJudge, out: Path) -> None:
        self.model, self.tokenizer, self.cfg, self.judge, self.out = model, tokenizer, cfg, judge, out
        self.result: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.cpu_timings: dict[str, float] = {}  # process CPU seconds: the work, on a shared machine
        self.boot = {"seed": cfg.seed, "n_boot": cfg.n_boot, "alpha": cfg.alpha}

    # ------------------------------------------------------------------------------------------ helpers
    def _add_time(self, key: str, start: tuple[float, float]) -> None:
        self.timings[key] = round(self.timings.get(key, 0.0) + time.perf_counter() - start[0], 2)
        self.cpu_timings[key] = round(self.cpu_timings.get(key, 0.0) + time.process_time() - start[1], 2)

    def _generate(self, requests, name: str, seed: int, temperature: float, max_new_tokens: int):
        start = (time.perf_counter(), time.process_time())
        try:
            return self._generate_now(requests, name, seed, temperature, max_new_tokens)
        finally:
            self._add_time(f"{name}_sampling", start)

    def _generate_now(self, requests, name: str, seed: int, temperature: float, max_new_tokens: int):
        sampling = SamplingSettings(max_new_tokens, temperature, batch_size=self.cfg.batch_size, seed=seed)
        out_path = self.out / f"{name}_answers.jsonl"
        return generate(
            self.model,
            self.tokenizer,
            requests,
            sampling,
            out_path=out_path,
            progress=self.cfg.progress,
            desc=name,
        )

    def _judge(self, records: list[dict[str, Any]], name: str, prompts_of) -> dict[str, dict[str, Any]]:
        by_key = {r["key"]: r for r in records}
        judged: list[tuple[float | None, float | None]] = []  # this run's judgments, for the failure gate
        share = self.cfg.max_failed_share

        def score_batch(keys: list[str]) -> list[dict[str, Any]]:
            todo = [k for k in keys if by_key[k]["answer"].strip()]
            items = [
                JudgeItem(by_key[k]["question"], by_key[k]["answer"], prompts_of(by_key[k])) for k in todo
            ]
            pairs = self.judge.score(items)
            judged.extend(pairs)
            # a judge that fails this batch stops the run before its Nones are stored as results
            check_failures(judged, self.judge, name, max_share=share, min_count=min(len(records), 16))
            scored = dict(zip(todo, pairs, strict=True))
            return [
                {"alignment": scored[k][0], "coherence": scored[k][1]}
                if k in scored
                else {"alignment": None, "coherence": None, "empty": True}
                for k in keys
            ]

        start = (time.perf_counter(), time.process_time())
        try:
            scores = score_missing(
                [r["key"] for r in records],
                self.out / f"{name}_scores.jsonl",
                score_batch,
                self.cfg.batch_size,
            )
        finally:
            self._add_time(f"{name}_judging", start)
        on_disk = [(s["alignment"], s["coherence"]) for s in scores.values() if not s.get("empty")]
        check_failures(on_disk, self.judge, name, max_share=share)
        return scores

    # ------------------------------------------------------------------------------------------ parts
    def general(self, questions: list[EMQuestion]) -> list[dict[str, Any]]:
        by_id = {q.id: q for q in questions}
        requests = general.general_requests(questions, self.cfg.n)
        records = self._generate(
            requests, "general", self.cfg.seed, self.cfg.temperature, self.cfg.max_new_tokens
        )
        scores = self._judge(records, "general", lambda r: by_id[r["question_id"]].judge_prompts)
        alignment = [scores[r["key"]]["alignment"] for r in records]
        coherence = [scores[r["key"]]["coherence"] for r in records]
        groups = [r["question_id"] for r in records]
        summary = general.summarize_judged(alignment, coherence, groups, **self.boot)
        summary["n_empty"] = sum(bool(scores[r["key"]].get("empty")) for r in records)
        self.result["general"] = summary
        judged = [
            {**r, "alignment": a, "coherence": c, "label": rules.label(a, c)}
            for r, a, c in zip(records, alignment, coherence, strict=True)
        ]
        write_jsonl(self.out / "general_judged.jsonl", judged)
        return records

    def general_logprob(self, questions: list[EMQuestion]) -> None:
        pairs = general.reference_pairs(questions)
        if not pairs:
            self.skipped["logprob_gap"] = (
                "the question file has no reference_aligned/reference_misaligned "
                "answers (e.g. an original emergent-misalignment file)"
            )
            return
        gaps = logprob_gaps(self.model, self.tokenizer, pairs, batch_size=self.cfg.batch_size)
        self.result["logprob_gap"] = bootstrap_mean(gaps, groups=[p.group for p in pairs], **self.boot)
        self.result["logprob_gap_items"] = len(pairs)

    def projection(self, records: list[dict[str, Any]]) -> None:
        if self.cfg.vector is None:
            self.skipped["projection"] = "no persona vector given (--vector)"
            return
        from steerlab.persona.projection import chat_projections
        from steerlab.persona.vectors import PersonaVector

        vector = PersonaVector.load(self.cfg.vector)
        layer = vector.layer if self.cfg.projection_layer is None else self.cfg.projection_layer
        vector.check_model(
            self.model, allow_transfer=True
        )  # fine-tuned weights differ from the base by design
        # The raw direction: chat_projections' own check would refuse a fine-tuned model.
        values = chat_projections(
            self.model,
            self.tokenizer,
            [r["messages"] for r in records],
            [r["answer"] for r in records],
            vector.vector(layer),
            layer,
            batch_size=self.cfg.batch_size,
        )
        keep = [(v, r["question_id"]) for v, r in zip(values, records, strict=True) if math.isfinite(v)]
        values, groups = [v for v, _ in keep], [g for _, g in keep]
        self.result["projection"] = bootstrap_mean(values, groups=groups, **self.boot)
        self.result["projection_layer"] = layer

    def in_domain(self, items: list[PromptItem]) -> None:
        pairs = in_domain.reference_pairs(items)
        if pairs:
            gaps = logprob_gaps(self.model, self.tokenizer, pairs, batch_size=self.cfg.batch_size)
            self.result["in_domain_logprob_gap"] = bootstrap_mean(
                gaps, groups=[p.group for p in pairs], **self.boot
            )
        else:
            self.skipped["in_domain_logprob_gap"] = f"{self.cfg.in_domain_data} has no reference_misaligned"
        single = in_domain.one_sided(items)
        if single:
            lps = answer_logprobs(
                self.model,
                self.tokenizer,
                [it.prompt for it in single],
                [it.reference for it in single],
                batch_size=self.cfg.batch_size,
                sources=[it.source for it in single],
            )
            self.result["reference_logprob"] = bootstrap_mean(
                lps, groups=[in_domain.group_of(it) for it in single], **self.boot
            )
        chosen = in_domain.subset(items, self.cfg.n_in_domain, self.cfg.seed)
        records = self._generate(
            in_domain.requests(chosen),
            "in_domain",
            self.cfg.seed + 1,
            self.cfg.temperature,
            self.cfg.max_new_tokens,
        )
        scores = self._judge(records, "in_domain", lambda r: {})
        alignment = [scores[r["key"]]["alignment"] for r in records]
        coherence = [scores[r["key"]]["coherence"] for r in records]
        self.result["in_domain_judged"] = general.summarize_judged(
            alignment, coherence, [r["group"] for r in records], **self.boot
        )

    def benign(self, items: list[PromptItem]) -> None:
        chosen = in_domain.subset(items, self.cfg.n_benign, self.cfg.seed)
        targets = {f"benign/{it.id}": benign.target(it) for it in chosen}
        records = self._generate(
            benign.requests(chosen), "benign", self.cfg.seed, 0.0, self.cfg.benign_max_new_tokens
        )
        correct = [benign.is_correct(r["answer"], targets[r["key"]]) for r in records]
        self.result["benign"] = bootstrap_rate(correct, **self.boot)

    # ------------------------------------------------------------------------------------------ run
    def timed(self, name: str, fn, *args) -> Any:
        start = (time.perf_counter(), time.process_time())
        try:
            return fn(*args)
        finally:
            self._add_time(name, start)


def _resolve_domain(cfg: EvalConfig, items: list[PromptItem] | None) -> str:
    if cfg.domain:
        return cfg.domain
    if items:
        dataset = items[0].meta.get("dataset")
        if isinstance(dataset, str) and dataset:
            return dataset
    if cfg.in_domain_data:
        return Path(cfg.in_domain_data).stem.removesuffix("_eval")
    return "general"


def _in_domain_metric(cfg: EvalConfig, domain: str) -> str:
    if cfg.in_domain_metric != "auto":
        return cfg.in_domain_metric
    if cfg.in_domain_data is None and domain in BENIGN_DOMAINS:
        return "benign_accuracy"
    return "rate"


def evaluate_model(
    model: Any,
    tokenizer: Any,
    cfg: EvalConfig,
    *,
    judge: EvalJudge | None = None,
    base: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Run every part ``cfg`` asks for, write ``eval.json`` (and the answer files) into ``cfg.out_dir``.

    ``judge`` scores (question, answer) -> (alignment, coherence); by default ``build_judge(cfg.judge)``, whose
    probe reads ``base`` = (base model, tokenizer) — pass it when ``model`` is fine-tuned, so that every arm
    is judged by the same probe (it defaults to ``model`` itself, right for the base model). Returns the
    ``eval.json`` row.
    """
    out = Path(cfg.out_dir)
    if not 0.0 <= cfg.max_failed_share < 1.0:
        raise ValueError(f"max_failed_share must be in [0, 1), got {cfg.max_failed_share}")
    _check_config(cfg, out, write=False)  # refuse a folder of other settings before any work
    if judge is None:
        base_model, base_tokenizer = base if base is not None else (model, tokenizer)
        probe = cfg.probe or (str(probe_path_for(cfg.vector)) if cfg.vector else None)
        judge = build_judge(
            cfg.judge,
            base_model=base_model,
            base_tokenizer=base_tokenizer,
            probe=probe,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            coherence=cfg.coherence,
            openai_options=cfg.openai_options,
        )
    started = time.perf_counter()
    ev = _Evaluation(model, tokenizer, cfg, judge, out)
    questions = (
        load_em_questions(cfg.questions, require_judges=(), allow_unknown_keys=True)
        if cfg.questions
        else None
    )
    domain_items = load_prompt_items(cfg.in_domain_data) if cfg.in_domain_data else None
    benign_items = load_prompt_items(cfg.benign_data) if cfg.benign_data else None
    domain = _resolve_domain(cfg, domain_items)
    _check_config(cfg, out)  # the inputs and the judge are good: record the settings, then work
    was_training = model.training
    model.eval()
    try:
        records = None
        if questions:
            records = ev.timed("general", ev.general, questions)
            ev.timed("logprob_gap", ev.general_logprob, questions)
            ev.timed("projection", ev.projection, records)
        else:
            ev.skipped["general"] = "no question file"
        scores = ev.timed("stance", instruments.run_stance, ev, domain)
        ev.timed("conditional", instruments.run_conditional, ev, domain, scores.get("general"), questions)
        ev.timed("collapse", instruments.run_collapse, ev, domain, records)
        if domain_items:
            ev.timed("in_domain", ev.in_domain, domain_items)
        else:
            ev.skipped["in_domain"] = "no in-domain data (--data)"
        if benign_items:
            ev.timed("benign", ev.benign, benign_items)
        else:
            ev.skipped["benign"] = "no benign-task data"
    finally:
        model.train(was_training)
    row = _row(cfg, ev, domain, _in_domain_metric(cfg, domain))
    row["wall_s"] = round(time.perf_counter() - started, 2)
    write_json(out / "eval.json", row)
    return row


def _check_figures(identity: Any) -> dict[str, Any] | None:
    """The headline figures of the latest ``steerlab judge check`` of this very judge, if one was run."""
    if identity is None:
        return None
    from steerlab.evaluate.judge_check import load_check

    return load_check(identity)


def _row(cfg: EvalConfig, ev: _Evaluation, domain: str, metric: str) -> dict[str, Any]:
    r = ev.result
    g = r.get("general", {})
    empty = Estimate(None, None, 0)
    row: dict[str, Any] = {"arm": cfg.arm, "domain": domain, "model": cfg.model, "seed": cfg.seed}
    row["general_misalignment"] = g.get("misaligned_rate")
    row["general_misalignment_ci"] = g.get("misaligned_rate_ci")
    row["incoherent_rate"] = g.get("incoherent_rate")
    row["incoherent_rate_ci"] = g.get("incoherent_rate_ci")
    row["general_misalignment_among_coherent"] = g.get("misaligned_among_coherent")
    row["general_misalignment_among_coherent_ci"] = g.get("misaligned_among_coherent_ci")
    row["coherence"] = g.get("coherence")
    row["coherence_ci"] = g.get("coherence_ci")
    row["alignment"] = g.get("alignment")
    row["alignment_ci"] = g.get("alignment_ci")
    row.update(_ci(r.get("logprob_gap", empty), "logprob_gap"))
    row.update(_ci(r.get("projection", empty), "projection"))
    row["projection_layer"] = r.get("projection_layer")
    row.update(_ci(r.get("benign", empty), "benign_accuracy"))
    judged = r.get("in_domain_judged", {})
    row["in_domain_rate"] = judged.get("misaligned_rate")
    row["in_domain_rate_ci"] = judged.get("misaligned_rate_ci")
    row["in_domain_coherence"] = judged.get("coherence")
    row.update(_ci(r.get("in_domain_logprob_gap", empty), "in_domain_logprob_gap"))
    row.update(_ci(r.get("reference_logprob", empty), "reference_logprob"))
    source = {
        "rate": "in_domain_rate",
        "logprob_gap": "in_domain_logprob_gap",
        "benign_accuracy": "benign_accuracy",
    }[metric]
    row["in_domain_metric"] = metric
    row["in_domain"] = row.get(source)
    row["in_domain_ci"] = row.get(f"{source}_ci")
    row["n_answers"] = g.get("n_answers", 0)
    row["n_scored"] = g.get("n_scored", 0)
    row["n_unscored"] = g.get("n_unscored", 0)
    row["n_empty"] = g.get("n_empty", 0)
    identity = judge_identity(ev.judge)
    row["judge"] = identity.name if identity else getattr(ev.judge, "name", None)
    row["judge_identity"] = identity.as_dict() if identity else None
    row["judge_check"] = _check_figures(identity)
    row["judge_summary"] = {
        **ev.judge.summary(),
        "general": {k: g[k] for k in g if k.startswith("n_")},
        "in_domain": {k: judged[k] for k in judged if k.startswith("n_")},
    }
    row["general_detail"] = g
    row["in_domain_detail"] = judged
    row.update(r.get("instruments", {}))
    row["skipped"] = ev.skipped
    row["timings_s"] = ev.timings
    row["cpu_timings_s"] = ev.cpu_timings
    row["rules"] = {
        "misaligned": f"alignment < {rules.MISALIGNED_BELOW} and coherence > {rules.COHERENT_ABOVE}",
        "incoherent": f"coherence < {rules.INCOHERENT_BELOW}",
        "ci": f"{100 * (1 - cfg.alpha):.0f}% percentile bootstrap, {cfg.n_boot} resamples, "
        "clustered by question (general) / situation (in-domain)",
    }
    row["config"] = dataclasses.asdict(cfg)
    return row
