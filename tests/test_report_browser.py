"""The HTML report: what it contains, and that a real headless Chromium draws every figure without console errors.

The browser tests need Debian's ``chromium`` (``.ci/install_chromium.sh`` installs it) and skip, saying so,
only when no Chromium binary can be found. Set ``STEERLAB_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from steerlab.plots import PlotDataError
from steerlab.plots import synthetic as syn
from steerlab.plots.report import write_report

CHROMIUM = next(
    (
        p
        for p in (
            os.environ.get("STEERLAB_CHROMIUM"),
            shutil.which("chromium"),
            shutil.which("chromium-browser"),
            shutil.which("google-chrome"),
        )
        if p
    ),
    None,
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary found (run .ci/install_chromium.sh)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
CONSOLE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)|(Uncaught .*)")


def _chromium(url: str, *extra: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="steerlab-chromium-") as profile:
        return subprocess.run(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=2000",
                *extra,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )


def render(page: Path) -> tuple[str, list[str]]:
    """(DOM after scripts ran, console messages and uncaught errors) for a local page."""
    proc = _chromium(page.resolve().as_uri(), "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [m.group(1) or m.group(2) for m in map(CONSOLE.search, proc.stderr.splitlines()) if m]
    return proc.stdout, console


def figures_drawn(dom: str) -> dict[str, int]:
    """Figure key -> number of plotly ``main-svg`` layers drawn inside it (0 means it did not render)."""
    parts = re.split(r'data-figure="([^"]+)"', dom)
    return {key: body.count('class="main-svg"') for key, body in zip(parts[1::2], parts[2::2], strict=True)}


def screenshot(page: Path, out: Path, height: int) -> Path:
    proc = _chromium(page.resolve().as_uri(), f"--screenshot={out}", f"--window-size=1280,{height}")
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-2000:]
    keep = os.environ.get("STEERLAB_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(keep) / out.name)
    return out


# ---- report content (no browser) -----------------------------------------------------------------------


def test_experiment_report_has_every_figure_once_and_plotlyjs_once(tmp_path):
    root = syn.write_experiment(tmp_path / "exp", arms=("sft", "steer"))
    result = write_report(root)
    page = result.out_html.read_text()
    assert result.out_html == root / "report.html" and not result.problems and not result.absent
    assert result.shown == [
        "Persona projection across training",
        "Representation drift (LDIFS)",
        "Arms compared",
        "Steering sweep",
        "Per-layer separation: evil",
        "Screening histogram",
    ]
    assert page.count('data-figure="') == 6
    assert page.count("plotly.js v") == 1 and not re.search(
        r"<script[^>]+src=", page
    )  # embedded once, offline
    assert "steer&#x27;s monitor projection minus sft&#x27;s at step 100: " in page
    assert "stays below" not in page  # the monitor has no spread: a difference, never an effect
    assert "arm: sft" in page and "<table>" in page  # config and metrics table


def test_run_report_says_which_figures_are_absent_and_why(tmp_path):
    run = syn.write_run(tmp_path / "runs" / "sft-1", "sft")
    result = write_report(run, tmp_path / "out" / "r.html")
    assert result.shown == ["Persona projection across training", "Representation drift (LDIFS)"]
    assert set(result.absent) == {
        "Arms compared",
        "Steering sweep",
        "Per-layer separation",
        "Screening histogram",
    }
    page = result.out_html.read_text()
    assert "Not shown" in page and "no sweep.json / sweep.jsonl in" in page


def test_run_table_shows_the_drift_alarm_and_early_stopping(tmp_path):
    import json

    alarmed = syn.write_run(tmp_path / "exp" / "sft", "sft")
    (alarmed / "alarm.json").write_text(
        json.dumps({"threshold": 6.0, "fired_step": 8, "fired_projection": 6.5, "stopped": False})
    )
    stopped = syn.write_run(tmp_path / "exp" / "early", "early_stop")
    (stopped / "alarm.json").write_text(json.dumps({"threshold": 6.0, "fired_step": None}))
    (stopped / "early_stop.json").write_text(json.dumps({"stopped_at": 12, "final_weights_step": 4}))
    page = write_report(tmp_path / "exp").out_html.read_text()
    assert "drift alarm (step: projection / threshold)" in page
    assert "<td>8: 6.50 / 6.00</td>" in page and "<td>not crossed (6.00)</td>" in page
    assert "<td>12; 4</td>" in page


def test_runs_found_one_level_down_and_cli(tmp_path):
    import typer
    from typer.testing import CliRunner

    from steerlab.cli.report import register

    root = tmp_path / "exp"
    for arm in ("sft", "steer"):
        syn.write_run(root / "runs" / arm, arm)
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command, so "report" stays a subcommand
    out = CliRunner().invoke(app, ["report", str(root), "--out", str(tmp_path / "r.html")])
    assert out.exit_code == 0, out.output
    assert f"report written: open {(tmp_path / 'r.html').resolve()}" in out.output
    page = (tmp_path / "r.html").read_text()
    assert "runs/sft" in page and "runs/steer" in page and page.count('data-figure="') == 2
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "not a folder" in missing.output


def test_malformed_input_is_reported_on_the_page_or_raised_when_strict(tmp_path):
    root = syn.write_experiment(tmp_path / "exp")
    with (root / "steer" / "monitor.jsonl").open("a") as handle:
        handle.write('{"step": "late", "arm": "steer", "projection": 1.0, "projection_layer": 2}\n')
    result = write_report(root)
    assert (
        len(result.problems) == 1
        and "steer/monitor.jsonl:12: key 'step' must be an integer" in result.problems[0]
    )
    assert "Problems with the input" in result.out_html.read_text()
    assert "Persona projection across training" in result.shown  # the sft run still draws
    with pytest.raises(PlotDataError, match=r"monitor\.jsonl:12"):
        write_report(root, tmp_path / "strict.html", strict=True)
    assert not (tmp_path / "strict.html").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(PlotDataError, match="nothing to report"):
        write_report(tmp_path / "empty")


def test_png_writes_images_or_says_no_renderer(tmp_path):
    root = syn.write_run(tmp_path / "run", "sft")
    result = write_report(root, png=True)
    if result.png_note:
        assert result.png_note.startswith("no renderer") and not result.pngs
    else:
        assert [p.name for p in result.pngs] == ["00_projection.png", "01_drift.png"]
        assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in result.pngs)


def test_png_without_kaleido_says_no_renderer(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaleido", None)  # makes "import kaleido" raise ImportError
    result = write_report(syn.write_run(tmp_path / "run", "sft"), png=True)
    assert result.pngs == [] and result.png_note.startswith("no renderer: kaleido is not installed")
    assert result.out_html.is_file()


# ---- real browser --------------------------------------------------------------------------------------


@needs_chromium
def test_console_error_detection_works(tmp_path):
    """The detector must see a script error, or the no-errors checks below would prove nothing."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><body><div id=a></div><script>document.getElementById('a').textContent='ran';"
        "notAFunction();</script></body></html>"
    )
    dom, console = render(page)
    assert 'id="a">ran<' in dom
    assert any("notAFunction" in message for message in console), console


@needs_chromium
def test_experiment_report_renders_every_figure_in_chromium(tmp_path):
    root = syn.write_experiment(tmp_path / "exp", arms=syn.EIGHT_ARMS, domains=("medical", "financial"))
    result = write_report(root)
    dom, console = render(result.out_html)
    drawn = figures_drawn(dom)
    assert list(drawn) == ["projection", "drift", "arms", "sweep", "layers-evil", "screening"]
    assert all(n >= 1 for n in drawn.values()), drawn
    assert console == []
    assert re.search(r'id="js-errors"[^>]*>\s*</div>', dom), "the page's own render check reported a problem"
    shot = screenshot(result.out_html, tmp_path / "experiment_report.png", 6000)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


@needs_chromium
def test_run_report_renders_in_chromium(tmp_path):
    run = syn.write_run(tmp_path / "runs" / "steer-1", "steer")
    result = write_report(run)
    dom, console = render(result.out_html)
    drawn = figures_drawn(dom)
    assert list(drawn) == ["projection", "drift"] and all(n >= 1 for n in drawn.values()), drawn
    assert console == []


def test_figures_drawn_parser_counts_per_figure():
    dom = '<div data-figure="a"><svg class="main-svg"></svg></div><div data-figure="b"></div>'
    assert figures_drawn(dom) == {"a": 1, "b": 0}
    assert figures_drawn("<html></html>") == {}


def test_persona_prompted_level_comes_from_the_monitor_step_zero_row(tmp_path):
    import json

    run = syn.write_run(tmp_path / "runs" / "sft-1", "sft")
    rows = [json.loads(line) for line in (run / "monitor.jsonl").read_text().splitlines()]
    rows[0]["prompted_projection"] = 6.5
    (run / "monitor.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = write_report(run, tmp_path / "r.html").out_html.read_text()
    assert "from the monitor at step 0 (sft-1)" in page
    assert "No steered-prompt level" not in page


def test_grid_takeaways_compare_each_arm_with_the_sft_of_its_own_domain(tmp_path):
    from steerlab.plots.report import Run, takeaways

    def run(name: str, values: list[float]) -> Run:
        rows = [{"step": 8 * i, "arm": "sft", "projection": v} for i, v in enumerate(values)]
        return Run(name=name, path=tmp_path / name, monitor=rows)

    runs = [
        run("medical__sft", [0.0, 5.0]),
        run("medical__steer", [0.0, 1.0]),
        run("arithmetic__sft", [0.0, -10.0]),
        run("arithmetic__steer", [0.0, -5.0]),
    ]
    lines = takeaways(runs)
    assert lines[0] == (
        "arithmetic: steer's monitor projection minus sft's at step 8: +5.00 (-5.00 vs -10.00); "
        "lower at 0 of 1 monitored steps after step 0."
    )
    assert lines[1].startswith(
        "medical: steer's monitor projection minus sft's at step 8: -4.00 (1.00 vs 5.00)"
    )
    assert lines[2].startswith(
        "Monitor projections are means over the monitor's chats with no recorded spread"
    )
    assert takeaways([run("sft-1", [0.0, 2.0])]) == []  # one arm alone: nothing to compare
