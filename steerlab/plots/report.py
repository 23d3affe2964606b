"""One self-contained HTML page for a run or an experiment: config, metrics table, and every figure the data allows.

A run folder holds ``monitor.jsonl`` and/or ``metrics.jsonl`` (plus ``config.yaml``, maybe ``eval.json``). An
experiment folder holds run folders (one or two levels down) and maybe ``results.json|jsonl|csv`` (arms
compared; the first present), ``sweep.json|jsonl``, ``screen.csv`` and vector sidecars (``*.json`` with ``stats`` and
``layer_convention``, in the folder or its ``vectors/``). plotly.js is embedded once, so the page works offline.
A figure whose data is missing is listed with the reason; malformed data is reported on the page (or raised
with ``strict=True``), never skipped silently.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from steerlab import __version__
from steerlab.io import atomic_path, write_text
from steerlab.plots import (
    PlotDataError,
    arm_colors,
    arms_figure,
    drift_figure,
    layer_separation_figure,
    load_arm_results,
    load_monitor,
    load_screening,
    load_sweep,
    load_vector_stats,
    projection_figure,
    schema,
    screening_figure,
    steering_sweep_figure,
)
from steerlab.plots.io import VectorStats, read_json, read_log, torn_line
from steerlab.plots.tables import (
    conditional_table,
    has_signals,
    html_table,
    instruments_table,
    results_table,
    shifts_table,
)
from steerlab.plots.takeaways import takeaways as _takeaways

RUN_MARKERS = ("monitor.jsonl", "metrics.jsonl")
# the first one present is read: results.json holds every column in full (CIs, the judge check's object);
# results.csv flattens some (the judge check to its values), so it is the fallback
RESULTS_FILES = ("results.json", "results.jsonl", "results.csv")
SWEEP_FILES = ("sweep.json", "sweep.jsonl")
SCREEN_FILES = ("screen.csv", "screening.csv")
ALARM_SCORES_FILE = "alarm_scores.json"  # the drift alarm's precision / recall, beside a grid's results
NOT_SIDECARS = {*RESULTS_FILES, *SWEEP_FILES, ALARM_SCORES_FILE, "eval.json"}
PROMPTED_KEYS = ("prompted_projection", "projection_prompted", "pos_projection", "projection_pos")
T = TypeVar("T")


@dataclass
class Run:
    name: str
    path: Path
    config: str | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    monitor: list[dict[str, Any]] | None = None
    evaluation: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # what was read around (a torn last line), for the page


@dataclass
class Figure:
    key: str
    title: str
    fig: go.Figure
    caption: str = ""


@dataclass
class ReportResult:
    """What `write_report` wrote and what it could not show, for the CLI to print."""

    out_html: Path
    shown: list[str]
    absent: dict[str, str]
    problems: list[str]
    pngs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # input read around, not wrong (a log's torn last line)
    png_note: str | None = None


class _Collector:
    """Turns malformed-data errors into page-visible problems (or re-raises them when strict)."""

    def __init__(self, strict: bool) -> None:
        self.strict, self.problems = strict, []

    def report(self, err: ValueError) -> None:
        """A bad line that a reader left out, to list (or to raise when strict)."""
        if self.strict:
            raise err
        self.problems.append(str(err))

    def attempt(self, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except PlotDataError as err:
            if self.strict:
                raise
            self.problems.append(str(err))
            return None


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in RUN_MARKERS)


def find_runs(root: Path) -> list[Path]:
    """The folder itself if it is a run, else run folders one or two levels below it (e.g. ``runs/<name>``)."""
    if is_run_dir(root):
        return [root]
    found = [p for p in sorted(root.iterdir()) if is_run_dir(p)]
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not is_run_dir(p)):
        found += [p for p in sorted(child.iterdir()) if is_run_dir(p)]
    return found


def _first(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_file()), None)


def find_sidecars(root: Path) -> list[Path]:
    """Vector sidecars: JSON objects with ``stats`` and ``layer_convention`` in the folder or ``vectors/``."""
    out = []
    for folder in (root, root / "vectors"):
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if path.name in NOT_SIDECARS:
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # not a sidecar (sidecars are written by steerlab as valid JSON)
            if isinstance(data, dict) and "stats" in data and "layer_convention" in data:
                out.append(path)
    return out


def load_run(path: Path, name: str, col: _Collector) -> Run:
    run = Run(name=name, path=path)
    if (path / "config.yaml").is_file():
        run.config = (path / "config.yaml").read_text(encoding="utf-8")
    if (path / "metrics.jsonl").is_file():
        run.metrics = col.attempt(lambda: _object_lines(path / "metrics.jsonl", col)) or []
    if (path / "monitor.jsonl").is_file():
        run.monitor = col.attempt(lambda: load_monitor(path, on_bad_line=col.report))
    for log in RUN_MARKERS:
        torn = torn_line(path / log) if (path / log).is_file() else None
        if torn is not None:
            run.notes.append(f"{path / log}:{torn}: a torn last line (a write cut off by a kill) is left out")
    if (path / "eval.json").is_file():
        data = col.attempt(lambda: read_json(path / "eval.json"))
        if data is not None and not isinstance(data, dict):
            col.attempt(lambda: _raise(f"{path / 'eval.json'}: expected a JSON object"))
        run.evaluation = data if isinstance(data, dict) else None
    return run


def _object_lines(path: Path, col: _Collector) -> list[dict[str, Any]]:
    """The objects of an append-only log (`read_log`); a bad line is listed and left out."""
    rows = []
    for lineno, obj in read_log(path, on_bad_line=col.report):
        if not isinstance(obj, dict):
            col.report(PlotDataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"))
            continue
        rows.append(obj)
    return rows


def _raise(message: str) -> None:
    raise PlotDataError(message)


def _flat_numbers(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as ``a.b`` keys (lists and strings are left for the raw view)."""
    out: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


def takeaways(
    runs: list[Run], baseline: str = "sft", results: list[dict[str, Any]] | None = None
) -> list[str]:
    """The takeaway sentences of `steerlab.plots.takeaways` for these runs' monitor logs and the results rows
    (paired stance shifts where they exist; controls never counted as defenses)."""
    return _takeaways({r.name: r.monitor or [] for r in runs}, results, baseline)


def _monitored_prompted_level(monitored: dict[str, list[dict[str, Any]]]) -> tuple[float | None, str]:
    """The monitor's step-0 ``prompted_projection`` (the same for every run of one model and chat set)."""
    values = {
        name: row["prompted_projection"]
        for name, rows in monitored.items()
        for row in rows
        if row.get("step") == 0 and isinstance(row.get("prompted_projection"), int | float)
    }
    if not values:
        return None, ""
    names = sorted(values)
    level = sum(values.values()) / len(values)
    return level, f"the monitor at step 0 ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"


def _prompted_level(vectors: list[VectorStats], layer: int | None) -> tuple[float | None, str]:
    for vec in vectors:
        for key in PROMPTED_KEYS:
            value = vec.stats.get(key)
            if isinstance(value, dict) and layer is not None:
                value = value.get(str(layer), value.get(layer))
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value), f"the {vec.name} vector's stats['{key}']"
    return None, ""


MALFORMED = "its input is malformed (see Problems above)"


@dataclass
class _Figures:
    """The page's figures in reading order, and why each missing one is missing (its title -> the reason)."""

    col: _Collector
    colors: dict[str, str]
    trait: str
    figures: list[Figure] = field(default_factory=list)
    absent: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, title: str, make: Callable[[], go.Figure], caption: str = "") -> None:
        """Draw one figure; malformed data lists it as absent (or raises under ``strict``)."""
        fig = self.col.attempt(make)
        if fig is None:
            self.absent[title] = MALFORMED
        else:
            self.figures.append(Figure(key, title, fig, caption))


def _training_figures(
    page: _Figures,
    root: Path,
    runs: list[Run],
    monitored: dict[str, list[dict[str, Any]]],
    vectors: list[VectorStats],
) -> None:
    """The persona projection and the representation drift across training (from the runs' monitor logs)."""
    if not monitored:
        logged = [r for r in runs if (r.path / "monitor.jsonl").is_file()]
        why = (
            f"no run folders (with monitor.jsonl) under {root}"
            if not runs
            else "no run has a monitor.jsonl"
            if not logged
            else MALFORMED
            if page.col.problems
            else "no monitor.jsonl holds a complete line"
        )
        page.absent["Persona projection across training"] = why
        page.absent["Representation drift (LDIFS)"] = why
        return
    layers = {row["projection_layer"] for rows in monitored.values() for row in rows}
    prompted, source = _monitored_prompted_level(monitored)
    if prompted is None:
        prompted, source = _prompted_level(vectors, next(iter(layers)) if len(layers) == 1 else None)
    caption = "Dotted line: base model at step 0. " + (
        f"Dashed line: base model with the {page.trait} system prompt, from {source}."
        if prompted is not None
        else "No steered-prompt level: no monitor log (step 0) or vector sidecar in this folder records one."
    )
    page.add(
        "projection",
        "Persona projection across training",
        lambda: projection_figure(monitored, prompted_level=prompted, colors=page.colors, trait=page.trait),
        caption,
    )
    if any(row["ldifs"] is not None or row["ldifs_per_layer"] for rows in monitored.values() for row in rows):
        page.add("drift", "Representation drift (LDIFS)", lambda: drift_figure(monitored, colors=page.colors))
    else:
        page.absent["Representation drift (LDIFS)"] = "no monitor row has 'ldifs' or 'ldifs_per_layer' values"


def _arms_and_sweep_figures(page: _Figures, root: Path, results: list[dict[str, Any]] | None) -> None:
    """The arms compared (from the results file) and the steering sweep (from the sweep file)."""
    results_path, sweep_path = _first(root, RESULTS_FILES), _first(root, SWEEP_FILES)
    if results_path is None:
        page.absent["Arms compared"] = f"no {' / '.join(RESULTS_FILES)} in {root}"
    elif results is None:
        page.absent["Arms compared"] = MALFORMED
    else:
        page.add(
            "arms",
            "Arms compared",
            lambda: arms_figure(results, colors=page.colors),
            f"From {results_path.name}. Error bars: confidence intervals as given in the file.",
        )
    if sweep_path:
        page.add(
            "sweep",
            "Steering sweep",
            lambda: steering_sweep_figure(load_sweep(sweep_path), trait=page.trait),
            f"From {sweep_path.name}. Shaded band: trait-score confidence interval.",
        )
    else:
        page.absent["Steering sweep"] = f"no {' / '.join(SWEEP_FILES)} in {root}"


def _vector_figures(page: _Figures, root: Path, vectors: list[VectorStats]) -> None:
    """One per-layer separation figure per vector sidecar, then the screening histogram."""
    for vec in vectors:
        page.add(
            f"layers-{vec.name}",
            f"Per-layer separation: {vec.name}",
            lambda vec=vec: layer_separation_figure(
                vec.stats,
                chosen_layer=vec.chosen_layer,
                trait=vec.trait or page.trait,
                source=f"vector sidecar {vec.name}.json",
            ),
        )
    if not vectors:
        page.absent["Per-layer separation"] = (
            f"no vector sidecar (*.json with 'stats') in {root} or {root / 'vectors'}"
        )
    screen_path = _first(root, SCREEN_FILES)
    if not screen_path:
        page.absent["Screening histogram"] = f"no {' / '.join(SCREEN_FILES)} in {root}"
        return
    table = page.col.attempt(lambda: load_screening(screen_path))
    if table is None:
        page.absent["Screening histogram"] = MALFORMED
        return
    unscored = f" Not drawn: {len(table.unscored)} example(s) with no difference (empty answers)."
    page.add(
        "screening",
        "Screening histogram",
        lambda: screening_figure(table.diffs, flagged=table.flagged, trait=page.trait),
        f"From {screen_path.name}." + (unscored if table.unscored else ""),
    )


def build_figures(
    root: Path,
    runs: list[Run],
    vectors: list[VectorStats],
    results: list[dict[str, Any]] | None,
    col: _Collector,
) -> tuple[list[Figure], dict[str, str]]:
    """Every figure the data supports, in reading order, and why each missing one is missing."""
    monitored = {r.name: r.monitor for r in runs if r.monitor}
    arms = {row["arm"] for rows in monitored.values() for row in rows} | {r["arm"] for r in results or []}
    trait = vectors[0].trait if len({v.trait for v in vectors}) == 1 and vectors[0].trait else "persona"
    page = _Figures(col, arm_colors(arms), trait)
    _training_figures(page, root, runs, monitored, vectors)
    _arms_and_sweep_figures(page, root, results)
    _vector_figures(page, root, vectors)
    return page.figures, page.absent


_CSS = """
body{font-family:'Liberation Sans',Arial,sans-serif;margin:0 auto;max-width:1180px;padding:24px;color:#222}
h1{margin-bottom:4px} h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666} .caption{color:#444;margin:4px 0 8px} .figure{margin-bottom:12px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left} .scroll{overflow-x:auto}
pre{background:#f7f7f7;padding:10px;overflow-x:auto;font-size:12px}
.problems{background:#fdecea;border:1px solid #d62728;padding:8px 16px} .takeaway{font-size:16px}
.absent li{color:#555} #js-errors{display:none;background:#fdecea;border:1px solid #d62728;padding:8px}
"""
# Surfaces any script error and any figure that failed to draw, on the page itself.
_WATCH_JS = """
window.__steerlabErrors=[];window.addEventListener('error',function(e){window.__steerlabErrors.push(String(e.message));});
window.addEventListener('load',function(){setTimeout(function(){var msgs=window.__steerlabErrors.slice();
document.querySelectorAll('[data-figure]').forEach(function(d){if(!d.querySelector('.main-svg')){
msgs.push('figure '+d.getAttribute('data-figure')+' did not render');}});if(msgs.length){var b=document.getElementById('js-errors');
b.style.display='block';b.textContent='Rendering problems: '+msgs.join('; ');}},0);});
"""


def metrics_table(runs: list[Run]) -> str:
    """One row per run: arms, steps logged, start/end projection, the last metrics row, eval.json numbers."""
    metric_keys = sorted({k for r in runs if r.metrics for k in _flat_numbers(r.metrics[-1]) if k != "step"})
    eval_keys = sorted({k for r in runs if r.evaluation for k in _flat_numbers(r.evaluation)})
    header = ["run", "arm", "metric rows", "last step", "projection start", "projection end"]
    header += ["drift alarm (step: projection / threshold)", "early stop (step; weights of step)"]
    header += [f"final {k}" for k in metric_keys] + [f"eval {k}" for k in eval_keys]
    rows = []
    for run in runs:
        mon = sorted(run.monitor or [], key=lambda r: r["step"])
        last = _flat_numbers(run.metrics[-1]) if run.metrics else {}
        ev = _flat_numbers(run.evaluation) if run.evaluation else {}
        steps = [r["step"] for r in mon] + [m["step"] for m in run.metrics if isinstance(m.get("step"), int)]
        rows.append(
            [
                run.name,
                ", ".join(sorted({r["arm"] for r in mon})) or None,
                len(run.metrics),
                max(steps) if steps else None,
                mon[0]["projection"] if mon else None,
                mon[-1]["projection"] if mon else None,
                *_training_events(run.path),
            ]
            + [last.get(k) for k in metric_keys]
            + [ev.get(k) for k in eval_keys]
        )
    return html_table(header, rows)


def _training_events(path: Path | None) -> list[str | None]:
    """The drift alarm's firing (``alarm.json``) and early stopping (``early_stop.json``) of a run folder."""
    alarm = read_json(path / "alarm.json") if path is not None and (path / "alarm.json").is_file() else {}
    early = (
        read_json(path / "early_stop.json")
        if path is not None and (path / "early_stop.json").is_file()
        else {}
    )
    fired = None
    if alarm.get("threshold") is not None:
        fired = (
            f"{alarm['fired_step']}: {alarm['fired_projection']:.2f} / {alarm['threshold']:.2f}"
            if alarm.get("fired_step") is not None
            else f"not crossed ({alarm['threshold']:.2f})"
        )
    stopped = None
    if early:
        at = early.get("stopped_at")
        stopped = f"{'ran to the end' if at is None else at}; {early.get('final_weights_step')}"
    return [fired, stopped]


def render_html(
    root: Path,
    kind: str,
    runs: list[Run],
    figures: list[Figure],
    absent: dict[str, str],
    problems: list[str],
    notes: list[str],
    extra_tables: list[tuple[str, str]],
) -> str:
    parts = [
        f"<h1>steerlab report: {html.escape(root.name)}</h1>",
        f'<p class="meta">{kind} folder <code>{html.escape(str(root))}</code> · {len(runs)} run(s) · '
        f"{len(figures)} figure(s) · steerlab {__version__}</p>",
        '<div id="js-errors"></div>',
    ]
    if problems:
        parts.append(
            '<div class="problems"><h3>Problems with the input</h3><ul>'
            + "".join(f"<li>{html.escape(p)}</li>" for p in problems)
            + "</ul></div>"
        )
    read_around = [note for run in runs for note in run.notes]
    if read_around:
        parts.append(
            "<h3>Notes on the input</h3><ul>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in read_around)
            + "</ul>"
        )
    if notes:
        parts.append(
            "<h2>Takeaway</h2>" + "".join(f'<p class="takeaway">{html.escape(n)}</p>' for n in notes)
        )
    if runs:
        parts.append("<h2>Metrics</h2>" + metrics_table(runs))
    for title, table in extra_tables:
        parts.append(f"<h2>{html.escape(title)}</h2>{table}")
    for i, fig in enumerate(figures):
        div = pio.to_html(
            fig.fig,
            include_plotlyjs=False,
            full_html=False,
            div_id=f"plot-{i}-{fig.key}",
            default_width="100%",
            config={"displaylogo": False, "responsive": True},
        )
        caption = f'<p class="caption">{html.escape(fig.caption)}</p>' if fig.caption else ""
        parts.append(
            f'<h2>{html.escape(fig.title)}</h2>{caption}<div class="figure" data-figure="{html.escape(fig.key)}">'
            f"{div}</div>"
        )
    if absent:
        parts.append(
            '<h2>Not shown</h2><ul class="absent">'
            + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in absent.items())
            + "</ul>"
        )
    configs = [r for r in runs if r.config is not None]
    if configs:
        parts.append(
            "<h2>Configuration</h2>"
            + "".join(
                f"<details{' open' if len(configs) == 1 else ''}><summary>{html.escape(r.name)}: config.yaml</summary>"
                f"<pre>{html.escape(r.config)}</pre></details>"
                for r in configs
            )
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>steerlab report: {html.escape(root.name)}</title><style>{_CSS}</style>"
        f'<script>{_WATCH_JS}</script><script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body>{''.join(parts)}</body></html>\n"
    )


def write_report(
    path_in: str | Path, out_html: str | Path | None = None, *, png: bool = False, strict: bool = False
) -> ReportResult:
    """Write the report for a run or experiment folder (default ``<folder>/report.html``), atomically."""
    root = Path(path_in)
    if not root.is_dir():
        raise PlotDataError(f"{root}: not a folder (give a run folder or an experiment folder)")
    out = Path(out_html) if out_html is not None else root / "report.html"
    col = _Collector(strict)
    run_paths = find_runs(root)
    kind = "run" if run_paths == [root] else "experiment"
    runs = [load_run(p, p.name if p == root else p.relative_to(root).as_posix(), col) for p in run_paths]
    vectors = [v for v in (col.attempt(lambda p=p: load_vector_stats(p)) for p in find_sidecars(root)) if v]
    results_path = _first(root, RESULTS_FILES)
    results = col.attempt(lambda: load_arm_results(results_path)) if results_path else None
    figures, absent = build_figures(root, runs, vectors, results, col)
    if not runs and not figures and not col.problems:
        raise PlotDataError(
            f"{root}: nothing to report: no run folders, results, sweep, screening or vectors found"
        )
    extra = [results_table(results_path, results)] if results else []
    conditional = conditional_table(results) if results else None
    extra += [conditional] if conditional else []
    shifts = shifts_table(results) if results else None
    extra += [shifts] if shifts else []
    if results and results_path is not None and has_signals(results):
        instruments = _instruments(root, results_path, results, col, absent)
        extra += [instruments] if instruments else []
    page = render_html(
        root, kind, runs, figures, absent, col.problems, takeaways(runs, results=results), extra
    )
    write_text(out, page)
    result = ReportResult(out, [f.title for f in figures], absent, col.problems)
    result.notes = [note for run in runs for note in run.notes]
    if png:
        result.pngs, result.png_note = write_pngs(figures, out.with_name(out.stem + "_png"))
    return result


def _instruments(
    root: Path, results_path: Path, rows: list[dict[str, Any]], col: _Collector, absent: dict[str, str]
) -> tuple[str, str] | None:
    """The grid's training-time instruments from the results rows' signal columns, and the drift alarm's
    precision / recall line from ``alarm_scores.json`` as the grid wrote it (both with the functions that
    write results.md); a missing or stale scores file is listed under "Not shown"."""
    checked = col.attempt(
        lambda: [
            schema.signal_row(r, f"{results_path}: row {i} ({r['domain']} {r['arm']})")
            for i, r in enumerate(rows)
        ]
    )
    if checked is None:
        absent["Training-time instruments"] = MALFORMED
        return None
    from steerlab.experiment.monitoring import alarm_summary

    title, path = "Drift alarm precision / recall", root / ALARM_SCORES_FILE
    line = f"No drift-alarm precision / recall: no {ALARM_SCORES_FILE} in {root}."
    if not path.is_file():
        absent[title] = f"no {ALARM_SCORES_FILE} in {root} (`steerlab grid` writes it beside results.json)"
        return instruments_table(checked, line)
    scores = col.attempt(lambda: schema.alarm_scores(read_json(path), str(path)))
    cells = sum(1 for r in checked if r["arm"] != "base")
    if scores is not None and scores["n_cells"] != cells:
        stale = (
            f"{path}: counts {scores['n_cells']} trained cells, {results_path.name} has {cells}: "
            "the two were written from different results (rerun `steerlab grid` to rewrite both)"
        )
        col.attempt(lambda: _raise(stale))
        scores = None
    if scores is None:
        absent[title] = MALFORMED
        return instruments_table(checked, f"No drift-alarm precision / recall: {path.name} is malformed.")
    return instruments_table(checked, f"{alarm_summary(scores)} Source: {path.name}.")


def write_pngs(figures: list[Figure], folder: Path) -> tuple[list[Path], str | None]:
    """Static PNGs via kaleido (which drives a local Chrome/Chromium); a clear note instead when there is none."""
    if not figures:
        return [], "no figures to render"
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return (
            [],
            "no renderer: kaleido is not installed (pip install kaleido; it also needs Chrome or Chromium)",
        )
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".png-", dir=folder))
    try:
        names = [f"{i:02d}_{f.key}.png" for i, f in enumerate(figures)]
        pio.write_images(
            [f.fig for f in figures],
            [tmp / n for n in names],
            format="png",
            width=[1100] * len(figures),
            height=[int(f.fig.layout.height or 500) for f in figures],
        )
        paths = []
        for name in names:
            with atomic_path(folder / name) as target:
                os.replace(tmp / name, target)
            paths.append(folder / name)
        return paths, None
    except Exception as err:  # kaleido raises many kinds (no browser, browser crashed, timeout)
        return [], f"no renderer: kaleido could not render ({type(err).__name__}: {err})"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
