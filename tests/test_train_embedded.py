"""Smoke run of every arm on the embedded SmolLM2 model: a few steps on short sequences (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from steerlab.data.chat import load_chat_jsonl, write_chat_jsonl
from steerlab.train.config import config_from_dict
from steerlab.train.fixtures import tiny_vector
from steerlab.train.run import train

pytestmark = pytest.mark.slow
DATA = Path(__file__).resolve().parents[1] / "experiments" / "data"
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from steerlab.models import load_model

    folder = tmp_path_factory.mktemp("embedded")
    narrow = write_chat_jsonl(
        folder / "narrow.jsonl", list(load_chat_jsonl(DATA / "medical_train.jsonl"))[:8]
    )
    general = write_chat_jsonl(
        folder / "general.jsonl", list(load_chat_jsonl(DATA / "medical_train_aligned.jsonl"))[8:24]
    )
    monitor = write_chat_jsonl(
        folder / "monitor.jsonl", list(load_chat_jsonl(DATA / "medical_eval.jsonl"))[:4]
    )
    model = load_model(MODEL).model
    vector = tiny_vector(model, layer=15, scale=0.05).save(folder / "evil")
    return folder, {"narrow": narrow, "general": general, "monitor": monitor, "vector": vector}


def _run(setup, name, arms):
    folder, paths = setup
    cfg = config_from_dict(
        {
            "name": name,
            "output_dir": str(folder / "runs"),
            "model": {"name": MODEL},
            "finetune": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
            "data": {"train": str(paths["narrow"]), "max_length": 256},
            "train": {"max_steps": 2, "batch_size": 2, "lr": 1e-4, "save_steps": 2},
            "arms": arms,
            "monitor": {
                "every": 2,
                "chats": str(paths["monitor"]),
                "vector": str(paths["vector"]),
                "limit": 2,
            },
        }
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        return train(cfg)
    finally:
        torch.set_num_threads(before)


def test_every_arm_runs_on_the_embedded_model(setup):
    """Three runs cover the six arms (they compose): sft; steer + kl + ldifs; interleave + inoculate."""
    folder, paths = setup
    sft = _run(setup, "sft", {"sft": {}})
    defended = _run(
        setup,
        "steer_kl_ldifs",
        {
            "steer": {"vector": str(paths["vector"]), "alpha": 4.0},
            "kl": {"weight": 0.1},
            "ldifs": {"weight": 1.0},
        },
    )
    data_arms = _run(
        setup,
        "interleave_inoculate",
        {
            "inoculate": {},
            "interleave": {
                "general": str(paths["general"]),
                "ratio": 0.2,
                "selection": "perplexity_gap",
                "misaligned": [str(sft.run_dir)],
                "refusal_filter": True,
            },
        },
    )
    results = {"sft": sft, "defended": defended, "data": data_arms}
    for name, result in results.items():
        rows, monitor = result.metrics, result.monitor
        assert [r["step"] for r in rows] == [1, 2], name
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows), name
        assert [m["step"] for m in monitor] == [0, 2] and monitor[0]["ldifs"] == 0.0, name
        assert monitor[1]["ldifs"] > 0, name
        assert (result.final_dir / "adapter_config.json").is_file(), name
    first, second = defended.metrics
    assert first["kl"] == 0.0 and first["ldifs"] == 0.0 and second["kl"] > 0 and second["ldifs"] > 0
    report = json.loads((data_arms.run_dir / "data_report.json").read_text())["interleave"]
    assert report["n_general"] == 2 and len(report["scores"]) == report["n_after_refusal_filter"]
    assert data_arms.monitor[0]["arm"] == "interleave+inoculate"
    # all runs start from the same model, so the step-0 projection is the same whatever the arm
    assert len({round(r.monitor[0]["projection"], 4) for r in results.values()}) == 1
