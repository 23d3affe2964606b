"""`steerlab extract | steer | screen | vectors show | vectors export`: thin wrappers over the vector modules."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from steerlab.cli import options as opt
from steerlab.hooks.scopes import ScopeName
from steerlab.persona.steering import Mode

vectors_app = typer.Typer(help="Inspect and export persona vectors.", no_args_is_help=True)


def _threads(n: int = 0) -> None:
    """``n`` > 0 pins torch's CPU threads (on a busy shared CPU, 1 thread is often faster than 2)."""
    if n > 0:
        import torch

        torch.set_num_threads(n)


NUMBERS = "a finite number or comma-separated finite numbers"
LAYERS = "'chosen', 'all' or comma-separated layer numbers"
_check_alphas = opt.list_callback(opt.finite_float, NUMBERS)
_check_layers = opt.list_callback(int, LAYERS, keep=("chosen", "all"))


def _judges(kind: str, judge_model: str | None, base_url: str | None):
    if kind == "offline":
        return None, None
    from steerlab.judges import OpenAIJudge, PromptJudgeScorer

    judge = OpenAIJudge(judge_model, base_url=base_url) if judge_model else OpenAIJudge(base_url=base_url)
    return judge, PromptJudgeScorer.coherence(judge)


def _write_figure(make: Callable[[], Any], path: Path) -> str:
    """Write the figure ``make()`` builds to ``path`` as HTML; a figure its data cannot make is reported, not
    raised, because the numbers it would draw are already saved."""
    from steerlab.io import write_text
    from steerlab.plots import PlotDataError

    try:
        write_text(path, make().to_html(include_plotlyjs="cdn"))
    except PlotDataError as error:
        return f"no figure ({error})"
    return str(path)


def extract_cmd(
    model: Annotated[str, typer.Option(help="registry name, folder or hub id")] = "smollm2-135m-instruct",
    trait: Annotated[str, typer.Option(help="packaged trait name or a trait JSON file")] = "evil",
    out: Annotated[Path | None, typer.Option(help="vector path (default vectors/<model>/<trait>)")] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="resumable work folder (default runs/extract-<model>-<trait>)")
    ] = None,
    samples: Annotated[int, typer.Option(help="samples per (question, instruction, side)")] = 2,
    instructions: Annotated[
        int | None, typer.Option(help="candidate instruction pairs: the first N (0 = all)")
    ] = 0,
    select_instructions: Annotated[
        int, typer.Option(help="keep the K candidates the model follows best on extraction answers (0 = all)")
    ] = 2,
    max_new_tokens: opt.MaxNewTokens = 40,
    batch_size: opt.BatchSize = 32,
    temperature: opt.Temperature = 1.0,
    top_p: Annotated[float, typer.Option(help="nucleus sampling mass", callback=opt.check_finite)] = 0.9,
    seed: opt.Seed = 0,
    filter: Annotated[
        Literal["judge", "none"],
        typer.Option(help="'judge': keep only judge-confirmed pairs; 'none': keep all"),
    ] = "none",
    judge: Annotated[
        Literal["offline", "openai"],
        typer.Option(help="'offline' (probe + perplexity) or 'openai' (OPENAI_API_KEY env)"),
    ] = "offline",
    judge_model: Annotated[str | None, typer.Option(help="judge model for --judge openai")] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL")] = None,
    steer_alpha: Annotated[
        float, typer.Option(help="coefficient for the per-layer steering effect", callback=opt.check_finite)
    ] = 2.0,
    n_steer_layers: Annotated[int, typer.Option(help="layers to measure the steering effect on")] = 5,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0 = torch's default)")] = 0,
) -> None:
    """Extract a persona vector (generate, read activations, difference, choose a layer) and save it."""
    from steerlab.models import load_model
    from steerlab.persona.extract import ExtractConfig, extract, save_result, summary
    from steerlab.persona.traits import load_trait

    _threads(threads)
    spec = load_trait(trait)
    safe = Path(model).name if Path(model).exists() else model.replace("/", "--")
    out = out or Path("vectors") / safe / spec.name
    workdir = workdir or Path("runs") / f"extract-{safe}-{spec.name}"
    config = ExtractConfig(
        samples_per_prompt=samples,
        n_instructions=instructions or None,
        select_instructions=select_instructions or None,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        filter=filter,
        steer_alpha=steer_alpha,
        n_steer_layers=n_steer_layers,
    )
    trait_judge, coherence = _judges(judge, judge_model, judge_base_url)
    scorer = None
    if trait_judge is not None:
        from steerlab.judges import PromptJudgeScorer

        scorer = PromptJudgeScorer.for_trait(trait_judge, spec)
    loaded = load_model(model)
    result = extract(
        loaded.model,
        loaded.tokenizer,
        spec,
        workdir=workdir,
        config=config,
        judge=scorer,
        coherence=coherence,
        model_name=model,
    )
    from steerlab.plots.layers import layer_separation_figure

    vector_path, probe_path = save_result(result, out)
    typer.echo(summary(result.stats))
    stats = result.vector.meta.stats
    figure = _write_figure(lambda: layer_separation_figure(stats, trait=spec.name), workdir / "layers.html")
    typer.echo(f"saved {vector_path} (+ .json), probe judge {probe_path}; layer plot {figure}")


def steer_cmd(
    vector: Annotated[Path, typer.Option(help="vector file (.safetensors or .json)")],
    model: Annotated[
        str | None, typer.Option(help="model (default: the one the vector was made for)")
    ] = None,
    layer: Annotated[int | None, typer.Option(help="layer (default: the vector's chosen layer)")] = None,
    alpha: Annotated[
        str,
        typer.Option(help="coefficient, or comma-separated coefficients for a sweep", callback=_check_alphas),
    ] = "4",
    mode: Annotated[Mode, typer.Option(help="'add' (+alpha*v) or 'ablate' (project v out)")] = "add",
    scope: Annotated[ScopeName, typer.Option(help="token scope the vector acts on")] = "response",
    question: Annotated[
        list[str] | None, typer.Option(help="question(s); default: the trait's eval questions")
    ] = None,
    trait: Annotated[
        str | None, typer.Option(help="trait for default questions (default: the vector's)")
    ] = None,
    system: Annotated[
        str | None, typer.Option(help="system prompt while generating; 'pos' = the trait's first pos prompt")
    ] = None,
    sweep: Annotated[
        bool, typer.Option("--sweep", help="score every alpha (probe judge + perplexity)")
    ] = False,
    probe: Annotated[Path | None, typer.Option(help="probe judge file (default: <vector>.probe)")] = None,
    out: Annotated[Path | None, typer.Option(help="sweep output folder")] = None,
    max_new_tokens: opt.MaxNewTokens = 48,
    temperature: opt.Temperature = 0.0,
    samples: Annotated[int, typer.Option(help="samples per question in a sweep")] = 1,
    seed: opt.Seed = 0,
    n_questions: Annotated[int, typer.Option(help="use only the first N questions (0 = all)")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0 = torch's default)")] = 0,
) -> None:
    """Generate with the vector added or ablated; with --sweep, report trait score, coherence and perplexity."""
    from steerlab.models import load_model
    from steerlab.persona.generation import SamplingSettings
    from steerlab.persona.traits import load_trait, system_prompt
    from steerlab.persona.vectors import PersonaVector

    _threads(threads)
    alphas = opt.parse_list(alpha, opt.finite_float, NUMBERS)
    pv = PersonaVector.load(vector)  # the vector and the trait before the model: bad input fails fast
    spec = load_trait(trait or pv.meta.trait) if (not question or system == "pos") else None
    questions = list(question) if question else list(spec.eval_questions)
    questions = questions[:n_questions] if n_questions > 0 else questions
    loaded = load_model(model or pv.meta.model_id)
    if mode == "ablate":
        alphas = alphas[:1]
    settings = {
        "layer": layer,
        "mode": mode,
        "scope": scope,
        "system": system_prompt(spec, 0, "pos") if system == "pos" else system,
        "sampling": SamplingSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed),
    }
    if not sweep:
        _print_steered(loaded, pv, questions, alphas, settings)
        return
    probe_path = probe or Path(f"{PersonaVector.paths(vector)[0].with_suffix('')}.probe.safetensors")
    _sweep_and_report(loaded, pv, probe_path, questions, alphas, samples, out, settings)


def _print_steered(loaded: Any, pv: Any, questions: list[str], alphas: list[float], settings: dict) -> None:
    """One JSON line per (alpha, question) with the steered answer."""
    from steerlab.persona.steering import generate_steered

    for a in alphas:
        answers = generate_steered(loaded.model, loaded.tokenizer, questions, pv, alpha=a, **settings)
        for q, answer in zip(questions, answers, strict=True):
            line = {"alpha": a, "mode": settings["mode"], "question": q, "answer": answer}
            typer.echo(json.dumps(line, ensure_ascii=False))


def _sweep_and_report(
    loaded: Any,
    pv: Any,
    probe_path: Path,
    questions: list[str],
    alphas: list[float],
    samples: int,
    out: Path | None,
    settings: dict,
) -> None:
    """Run the scored sweep (probe judge + perplexity coherence), print a line per alpha, write the figure."""
    from steerlab.evaluate.sweep import sweep
    from steerlab.judges.coherence import PerplexityCoherenceScorer
    from steerlab.judges.probe import ProbeJudge

    judge = ProbeJudge.load(probe_path, loaded.model, loaded.tokenizer)
    coherence = PerplexityCoherenceScorer(loaded.model, loaded.tokenizer)
    rows = sweep(
        loaded.model,
        loaded.tokenizer,
        questions,
        pv,
        alphas,
        trait_scorer=judge,
        coherence_scorer=coherence,
        samples=samples,
        out_dir=out,
        **settings,
    )
    keys = ("alpha", "trait_score", "trait_score_ci", "coherence", "perplexity", "repetition")
    for row in rows:
        typer.echo(json.dumps({k: row[k] for k in keys}))
    if out is not None:
        from steerlab.io import json_safe
        from steerlab.plots.sweep import steering_sweep_figure

        name = pv.meta.trait
        figure = _write_figure(lambda: steering_sweep_figure(json_safe(rows), trait=name), out / "sweep.html")
        typer.echo(f"wrote {out / 'sweep.json'} and {figure}")


def screen_cmd(
    data: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="chat JSONL ({'messages': [...]} per line)")
    ],
    vector: Annotated[Path, typer.Option(help="vector file")],
    out: Annotated[Path | None, typer.Option(help="ranked CSV (default <data>.screen.csv)")] = None,
    model: Annotated[str | None, typer.Option(help="model (default: the vector's)")] = None,
    layer: Annotated[int | None, typer.Option(help="layer (default: the vector's chosen layer)")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="length of the base model's own answers")] = 64,
    batch_size: opt.BatchSize = 16,
    flag_share: Annotated[
        float,
        typer.Option(help="share of examples flagged: the top of the ranking", callback=opt.check_finite),
    ] = 0.05,
) -> None:
    """Rank training examples by how far their answers sit along the vector beyond the model's own answers."""
    from steerlab.data.chat import load_chat_jsonl
    from steerlab.models import load_model
    from steerlab.persona.screen import screen, write_outputs
    from steerlab.persona.vectors import PersonaVector

    _threads()
    examples = load_chat_jsonl(data)  # the data and the vector before the model: bad input fails fast
    pv = PersonaVector.load(vector)
    loaded = load_model(model or pv.meta.model_id)
    out = out or data.with_suffix(".screen.csv")
    rows = screen(
        loaded.model,
        loaded.tokenizer,
        examples,
        pv,
        layer=layer,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        base_answers_path=out.with_suffix(".base.jsonl"),
        flag_share=flag_share,
    )
    html = out.with_suffix(".html")
    write_outputs(rows, out, html)
    for row in rows[:5]:
        typer.echo(f"{row['rank']:>4}  diff {row['diff']:+.3f}  {row['source']}  {row['prompt'][:60]!r}")
    typer.echo(f"wrote {out} and {html}")


@vectors_app.command("show")
def show_cmd(file: Annotated[Path, typer.Argument(help="vector file (.safetensors or .json)")]) -> None:
    """Print a vector's metadata and its per-layer norms (chosen layer starred)."""
    from dataclasses import asdict

    from steerlab.persona.vectors import PersonaVector

    pv = PersonaVector.load(file)
    meta = asdict(pv.meta)
    stats = meta.pop("stats")
    for key, value in meta.items():
        typer.echo(f"{key}: {value}")
    for key in ("choice_reason", "at_chosen_layer", "counts", "probe", "seconds"):
        if key in stats:
            typer.echo(f"{key}: {json.dumps(stats[key])}")
    curves = stats.get("layer_curves", {})
    typer.echo("layer  norm      " + "  ".join(f"{name[:22]:>22}" for name in curves))
    for layer, norm in pv.norms().items():
        star = "*" if layer == pv.meta.chosen_layer else " "
        cells = "  ".join(
            f"{(c[layer] if c[layer] is not None else float('nan')):>22.3f}" for c in curves.values()
        )
        typer.echo(f"{layer:>4}{star} {norm:9.3f} {cells}")


@vectors_app.command("export")
def export_cmd(
    file: Annotated[Path, typer.Argument(help="vector file")],
    gguf: Annotated[Path, typer.Option("--gguf", help="output llama.cpp control-vector GGUF")],
    layers: Annotated[
        str, typer.Option(help="'chosen', 'all', or comma-separated layers", callback=_check_layers)
    ] = "chosen",
    scale: Annotated[
        float, typer.Option(help="multiply the directions by this", callback=opt.check_finite)
    ] = 1.0,
    normalize: Annotated[bool, typer.Option(help="unit-normalise each direction first")] = False,
) -> None:
    """Write llama.cpp's control-vector GGUF (use with llama-cli --control-vector-scaled FILE SCALE)."""
    from steerlab.persona.gguf import export_gguf
    from steerlab.persona.vectors import PersonaVector

    pv = PersonaVector.load(file)
    which: str | list[int] = layers if layers in ("chosen", "all") else opt.parse_list(layers, int, LAYERS)
    path = export_gguf(pv, gguf, layers=which, scale=scale, normalize=normalize)
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add ``extract``, ``steer``, ``screen`` and the ``vectors`` group to the main app."""
    app.command("extract")(extract_cmd)
    app.command("steer")(steer_cmd)
    app.command("screen")(screen_cmd)
    app.add_typer(vectors_app, name="vectors")
