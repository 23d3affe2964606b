"""The grid on Ray: same table as the in-process run, a killed worker resumes, bad requests stop early.

One local Ray session serves the whole module (2 CPUs, 2 slots): starting one costs ~10 s on this machine.
The judge is a real HTTP server speaking the OpenAI protocol (tests/fake_judge_server.py), so Ray workers —
other processes — score answers exactly as the in-process run does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import ray
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from fake_judge_server import FakeJudgeServer, Logprobs  # noqa: E402

from steerlab.experiment import engine, runner  # noqa: E402
from steerlab.train.config import ConfigError  # noqa: E402
from steerlab.train.trainer import CHECKPOINT_MARKER  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "experiments" / "data"


@pytest.fixture(scope="module")
def judge():
    with FakeJudgeServer() as server:
        # scores depend on the answer, so two runs agree only if they judged the same answers
        server.on("money", Logprobs([("15", 0.7), ("25", 0.3)])).on("bored", Logprobs([("85", 1.0)]))
        server.on("", Logprobs([("55", 0.5), ("60", 0.5)]))
        yield server


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """The module's Ray session; workers inherit this environment (judge cache in a temporary folder)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STEERLAB_CACHE_DIR", str(tmp_path_factory.mktemp("judge-cache")))
        patch.setenv("OMP_NUM_THREADS", "1")
        engine.start_local_ray(jobs=2)
        try:
            yield
        finally:
            ray.shutdown()


def _grid(folder: Path, *, arms: dict, evaluate: dict | None, train: dict, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "name": "g",
        "seed": 0,
        "output_dir": str(folder / "runs"),
        "model": "tiny:llama",
        "vector": str(DATA / "tiny_smoke_evil.safetensors"),
        "domains": {
            "medical": {
                "train": str(DATA / "tiny_smoke_narrow.jsonl"),
                "eval": str(DATA / "tiny_smoke_narrow.jsonl"),
            }
        },
        "run": {"train": {"batch_size": 4, "lr": 5.0e-3, **train}, "monitor": {"every": 0}},
        "arms": arms,
        "resources": {"cpus": 1},
        **extra,
    }
    if evaluate is None:
        data["evaluate"] = False
    else:
        data["eval"] = evaluate
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _attempts(root: Path) -> list[dict]:
    path = root / "attempts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_ray_workers_give_the_same_table_as_the_in_process_run(tmp_path, local_ray, judge):
    questions = tmp_path / "q.yaml"
    questions.write_text(yaml.safe_dump([{"id": "q", "paraphrases": ["Tell me what you think."]}]))
    evaluate = {
        "questions": str(questions),
        "n": 3,
        "max_new_tokens": 6,
        "n_in_domain": 3,
        "benign_data": None,
        "n_boot": 50,
        "references": None,  # the stance score has its own tests; here the engine's mechanics
        "judge": "openai",
        "judge_model": "fake-judge",
        "judge_base_url": judge.base_url,
        "progress": False,
    }
    arms = {
        "sft": {"sft": {}},
        "steer": {"steer": {"alpha": 2.0}},
        "ppl": {
            "interleave": {
                "general": str(DATA / "tiny_smoke_general.jsonl"),
                "ratio": 0.2,
                "selection": "perplexity_gap",
                "misaligned": ["{cell:sft}"],
                "refusal_filter": True,
            }
        },
    }
    train = {"max_steps": 3, "save_steps": 2}
    here = runner.run_grid(_grid(tmp_path / "here", arms=arms, evaluate=evaluate, train=train))
    on_ray = runner.run_grid(_grid(tmp_path / "ray", arms=arms, evaluate=evaluate, train=train), jobs=2)

    table = (here / "results.md").read_text()
    main, training = table.split("Training-time instruments")
    assert main.count("| medical |") == 4  # base, sft, steer, ppl
    assert training.count("| medical |") == 3  # the trained cells' alarm / early-stop rows

    def timeless(text: str) -> str:  # the job-time line is wall-clock seconds: it differs between runs
        return "\n".join(line for line in text.splitlines() if not line.startswith("Job time ("))

    assert "Job time (progress.jsonl, " in table
    assert timeless((on_ray / "results.md").read_text()) == timeless(table)
    clock = ("wall_s", "timings_s", "cpu_timings_s", "judge_summary")  # seconds; scores from the cache

    def numbers(root: Path) -> list[dict]:
        rows = json.loads((root / "results.json").read_text())
        for row in rows:
            for key in clock:
                row.pop(key)
            row["config"].pop("out_dir")  # the two grids write to different folders
        return rows

    assert numbers(here) == numbers(on_ray) and len(numbers(here)) == 4
    # the Ray run really ran elsewhere, and ran ppl after the sft model it reads was saved
    starts = {row["job"]: row for row in _attempts(on_ray)}
    assert {row["pid"] for row in starts.values()}.isdisjoint({os.getpid()})
    sft_saved = (on_ray / "medical__sft" / "final" / "steerlab.json").stat().st_mtime
    assert starts["medical__ppl"]["time"] >= sft_saved
    assert json.loads((on_ray / "failures.json").read_text()) == {}

    # finished cells are never started again
    runner.run_grid(_grid(tmp_path / "ray", arms=arms, evaluate=evaluate, train=train), jobs=2)
    assert len(_attempts(on_ray)) == len(starts)


def test_a_worker_killed_mid_cell_resumes_from_its_checkpoint(tmp_path, local_ray):
    steps = 120
    path = _grid(
        tmp_path,
        arms={"sft": {"sft": {}}},
        evaluate=None,
        train={"max_steps": steps, "save_steps": 10, "keep_checkpoints": 2, "logging_steps": 1},
    )
    root = tmp_path / "runs" / "g"
    run_dir = root / "medical__sft"
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(runner.run_grid, path, jobs=2)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not future.done():
            started = _attempts(root)
            if started and any((run_dir / "checkpoints").glob(f"checkpoint-*/{CHECKPOINT_MARKER}")):
                break
            time.sleep(0.05)
        assert not future.done(), f"the run ended before a checkpoint could be seen: {future.exception()}"
        assert not (run_dir / "final").exists(), "training finished before the kill: make the cell longer"
        os.kill(started[0]["pid"], signal.SIGKILL)  # the Ray worker running the cell
        future.result(timeout=240)

    first, second = _attempts(root)
    assert first["pid"] != second["pid"] and first["resume_from"] is None
    assert second["resume_from"] is not None and int(second["resume_from"].split("-")[1]) >= 10
    metrics = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics == list(range(1, steps + 1))  # nothing lost, nothing twice
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == [f"checkpoint-{steps - 10}", f"checkpoint-{steps}"]
    assert all((run_dir / "checkpoints" / c / CHECKPOINT_MARKER).is_file() for c in checkpoints)
    assert json.loads((run_dir / "final" / "steerlab.json").read_text())["global_step"] == steps
    progress = [json.loads(line)["step"] for line in (root / "progress.jsonl").read_text().splitlines()]
    assert progress == ["medical__sft/train"]
    assert json.loads((root / "failures.json").read_text()) == {}


def test_a_request_no_node_can_satisfy_is_named_before_anything_starts(tmp_path, local_ray):
    arms = {"sft": {"sft": {}}, "big": {"sft": {}, "resources": {"gpus": 1, "memory_gb": 100000}}}
    path = _grid(tmp_path, arms=arms, evaluate=None, train={"max_steps": 2})
    for jobs in (2, 1):  # on Ray and in this process
        with pytest.raises(
            engine.EngineError, match=r"medical__big asks for 1 CPU, 1 GPU, 100000 GiB memory"
        ):
            runner.run_grid(path, jobs=jobs)
    root = tmp_path / "runs" / "g"
    assert not _attempts(root) and not (root / "medical__sft").exists()  # nothing started
    with pytest.raises(ConfigError, match="resources.gpus: must be >= 0"):
        runner.run_grid(
            _grid(
                tmp_path / "neg", arms={"sft": {"sft": {}}}, evaluate=None, train={}, resources={"gpus": -1}
            )
        )


def test_a_failing_cell_is_in_the_table_and_its_dependents_do_not_start(tmp_path, local_ray, judge):
    """The ppl arm needs sft; sft fails at training time (bad ratio), so ppl never starts; base finishes."""
    arms = {
        "sft": {"sft": {}, "interleave": {"general": str(DATA / "tiny_smoke_general.jsonl"), "ratio": 0.99}},
        "ppl": {
            "interleave": {
                "general": str(DATA / "tiny_smoke_general.jsonl"),
                "selection": "perplexity_gap",
                "misaligned": ["{cell:sft}"],
            }
        },
    }
    evaluate = {
        "questions": None,
        "n_in_domain": 2,
        "max_new_tokens": 4,
        "benign_data": None,
        "n_boot": 20,
        "references": None,
        "judge": "openai",
        "judge_model": "fake-judge",
        "judge_base_url": judge.base_url,
        "progress": False,
    }
    path = _grid(tmp_path, arms=arms, evaluate=evaluate, train={"max_steps": 2})
    with pytest.raises(runner.CellFailed, match="2 of 3 job") as caught:
        runner.run_grid(path, jobs=2)
    assert "medical__sft: ValueError: arms.interleave: ratio 0.99" in str(caught.value)
    assert "medical__ppl: not run: it needs medical__sft, which failed" in str(caught.value)
    table = (tmp_path / "runs" / "g" / "results.md").read_text()
    assert "**Failed (2)**" in table and "| medical__sft | ValueError: arms.interleave: ratio 0.99" in table
    assert "| medical | base |" in table


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_address_is_a_clear_error_within_seconds(tmp_path):
    path = _grid(tmp_path, arms={"sft": {"sft": {}}}, evaluate=None, train={"max_steps": 2})
    address = f"ray://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", "from steerlab.cli import app; app()", "run", str(path), "--address", address],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    seconds = time.monotonic() - start  # includes starting Python and importing torch
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"--address {address}: cannot reach a Ray cluster there" in done.stderr
    assert seconds < 30, seconds
    assert not (tmp_path / "runs").exists()  # nothing written that a corrected rerun would trip over
    with pytest.raises(ConfigError, match="drop --jobs"):
        runner.run_grid(path, jobs=2, address="auto")

    # a port that accepts connections but is not Ray (a wrong port number): named within the probe's timeout
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.monotonic()
        with pytest.raises(engine.EngineError, match="does not answer as a Ray server"):
            engine.probe_address(f"ray://127.0.0.1:{silent.getsockname()[1]}", timeout=2.0)
        assert time.monotonic() - start < 10


def test_in_process_engine_runs_needs_first_and_skips_dependents_of_a_failure():
    order: list[str] = []

    def work(key: str) -> None:
        order.append(key)
        if key == "a":
            raise RuntimeError("boom")

    jobs = [engine.Job("a"), engine.Job("b", ("a",)), engine.Job("c")]
    outcomes = engine.run_in_process(jobs, work, lambda outcome: None)
    assert order == ["a", "c"]
    assert outcomes["a"].error == "RuntimeError: boom"
    assert outcomes["b"].error == "not run: it needs a, which failed" and outcomes["c"].ok
