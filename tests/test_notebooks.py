"""The notebooks: committed without outputs, in sync with their jupytext sources, and run top to bottom.

The ``.py`` files (jupytext percent format) are the source; the ``.ipynb`` files are generated from them
(``jupytext --update --to ipynb notebooks/0*.py``) and committed without outputs. Every notebook executes
here on the tiny model (``STEERLAB_NB_MODEL=tiny``), so a change in the library that
breaks one fails the suite. See `kernel` for the one kernel they share.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import ipykernel  # noqa: F401  (the kernel the notebooks run in; part of the dev extra)
import jupytext
import nbformat
import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = sorted(p.stem for p in NB_DIR.glob("[0-9][0-9]_*.py"))
KERNEL = "steerlab-test-python"
PLOTLY_MIME = "application/json"  # what plotly's "json" renderer displays: no browser, no network
# What each notebook leaves in its output folder: proof it got to the end and did its job.
PRODUCES = {
    "01_extract_persona_vector": ["evil.safetensors", "evil.json", "evil.probe.safetensors"],
    "02_train_with_preventive_steering": ["runs/sft/monitor.jsonl", "runs/steer/monitor.jsonl"],
    "03_representation_drift": ["runs/ldifs/monitor.jsonl", "report.html"],
}


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in nb.cells]


def test_every_notebook_has_its_source_and_its_ipynb():
    assert len(NAMES) == 3, NAMES
    assert sorted(p.stem for p in NB_DIR.glob("*.ipynb")) == NAMES
    assert set(PRODUCES) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_has_no_outputs_and_matches_its_source(name):
    ipynb = NB_DIR / f"{name}.ipynb"
    nb = nbformat.read(ipynb, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{ipynb} cell {i}: committed with outputs (regenerate it from the .py)"
            assert cell.execution_count is None, f"{ipynb} cell {i}: committed with an execution count"
    assert nb.metadata.kernelspec.name == "python3"
    source = jupytext.read(NB_DIR / f"{name}.py")
    assert _cells(nb) == _cells(source), (
        f"{ipynb} is out of sync with {name}.py: run `jupytext --update --to ipynb notebooks/{name}.py`"
    )
    first_code = next(c.source for c in source.cells if c.cell_type == "code")
    assert 'os.environ.get("STEERLAB_NB_MODEL", "tiny")' in first_code


def _kernel_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERLAB_NB_")}
    return env | {
        "STEERLAB_NB_MODEL": "tiny",
        "PLOTLY_RENDERER": "json",
        "OMP_NUM_THREADS": "1",  # tiny models are dominated by per-op overhead: one thread is fastest
        "TOKENIZERS_PARALLELISM": "false",
    }


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> Iterator[KernelManager]:
    """One kernel for all notebooks, running this interpreter (the project's venv).

    Why shared: importing torch, transformers and peft dominates a tiny-model notebook (10-25 s on a busy
    2-core machine); each notebook still starts from an empty namespace (``%reset -f``), so one that uses a
    name another defined fails. The spec lives in a temporary folder, so the kernels installed on the
    machine neither matter nor change.
    """
    root = tmp_path_factory.mktemp("kernels")
    (root / KERNEL).mkdir()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "steerlab tests", "language": "python"}
    (root / KERNEL / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(root)]))
    km.start_kernel(env=_kernel_env(), cwd=str(root))
    yield km
    km.shutdown_kernel(now=True)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_on_the_tiny_model(name, tmp_path, kernel):
    if not kernel.is_alive():  # a previous notebook killed it
        kernel.restart_kernel(now=True)
    out = tmp_path / "out"
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    prelude = (
        f"import os\nos.environ['STEERLAB_NB_OUT'] = {str(out)!r}\nos.chdir({str(tmp_path)!r})\n"
        "get_ipython().run_line_magic('reset', '-f')"
    )
    nb.cells.insert(0, nbformat.v4.new_code_cell(prelude))
    client = NotebookClient(nb, km=kernel, timeout=300)
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{name}.ipynb failed on the tiny model:\n{error}")
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
    shows = [c for c in nb.cells[1:] if c.cell_type == "code" and "fig.show()" in c.source]
    assert shows, f"{name}: no figure shown"
    for cell in shows:
        mimes = {key for o in cell.outputs if o.output_type == "display_data" for key in o.data}
        assert PLOTLY_MIME in mimes, f"{name}: a fig.show() cell displayed no figure: {cell.source[:80]!r}"
    for rel in PRODUCES[name]:
        assert (out / rel).is_file(), f"{name}: expected {out / rel}"
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "a notebook wrote outside its OUT folder"
