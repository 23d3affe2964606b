"""`steerlab run GRID --dry-run`: every cell stepped on a stand-in, estimates on the real architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from steerlab.experiment.dryrun import dry_run_grid
from steerlab.experiment.estimate import estimate_memory, padded_tokens_per_step
from steerlab.models.tiny import tiny_model
from steerlab.train.config import ConfigError, config_from_dict

DATA = Path(__file__).resolve().parents[1] / "experiments" / "data"


def _architecture(tmp_path: Path) -> tuple[Path, int]:
    """A small qwen2 config standing in for "the real model" (the test cannot hold a 7B config's RAM)."""
    model = tiny_model("qwen2", hidden=32, layers=3)
    path = tmp_path / "real.json"
    path.write_text(json.dumps(model.config.to_dict()))
    return path, sum(p.numel() for p in model.parameters())


def _grid(tmp_path: Path, architecture: Path, **extra) -> Path:
    data = {
        "name": "g",
        "output_dir": str(tmp_path / "runs"),
        "model": "someone/not-downloaded",  # a hub id: the dry run must never load it
        "vector": str(tmp_path / "not-extracted-yet.safetensors"),
        "domains": {
            "medical": {
                "train": str(DATA / "tiny_smoke_narrow.jsonl"),
                "eval": str(DATA / "tiny_smoke_narrow.jsonl"),
            }
        },
        "run": {
            "model": {"dtype": "bfloat16"},
            "finetune": {"method": "lora", "r": 4, "alpha": 8, "rslora": True},
            "data": {"max_length": 96},
            "train": {"batch_size": 2, "grad_accum": 2, "gradient_checkpointing": True},
            "monitor": {"every": 5, "chats": str(DATA / "tiny_smoke_monitor.jsonl")},
        },
        "arms": {
            "sft": {"sft": {}},
            "kl": {"kl": {"weight": 0.1}},
            "steer": {"steer": {"alpha": 5.0}},
            "ppl": {
                "interleave": {
                    "general": str(DATA / "tiny_smoke_general.jsonl"),
                    "ratio": 0.2,
                    "selection": "perplexity_gap",
                    "misaligned": ["{cell:sft}"],
                    "refusal_filter": True,
                }
            },
        },
        "evaluate": False,
        "dry_run": {"architecture": str(architecture), "layers": 2, "hidden": 16},
        **extra,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_dry_run_steps_every_cell_on_a_standin_and_estimates_the_real_model(tmp_path):
    architecture, params = _architecture(tmp_path)
    report = dry_run_grid(_grid(tmp_path, architecture))
    cells = {c.key: c for c in report.cells}
    assert sorted(cells) == ["medical__kl", "medical__ppl", "medical__sft", "medical__steer"]
    assert [c.key for c in report.cells].index("medical__sft") < [c.key for c in report.cells].index(
        "medical__ppl"
    )
    assert not report.failed and all(c.steps == 2 for c in report.cells)
    assert report.params == params  # counted on the meta-device model of the real config
    sft, kl = cells["medical__sft"].memory, cells["medical__kl"].memory
    assert sft.weights == 2 * params  # bf16
    assert sft.arm_extra == 0 < kl.arm_extra and kl.total > sft.total
    assert sft.optimizer == 8 * sft.trainable_params and sft.activations > 0
    text = report.text()
    assert "| medical__kl |" in text and "does not exist yet" in text and "stand-in" in text
    root = tmp_path / "runs" / "g-dry-run"
    saved = {c["key"]: c for c in json.loads((root / "dry_run.json").read_text())["cells"]}
    assert saved["medical__kl"]["memory_bytes"]["total"] == kl.total
    assert (root / "medical__ppl" / "final").is_dir() and not (tmp_path / "runs" / "g").exists()
    standin = json.loads((root / "model" / "config.json").read_text())
    assert standin["model_type"] == "qwen2" and standin["num_hidden_layers"] == 2


def test_activation_memory_follows_batch_length_and_checkpointing(tmp_path):
    architecture, _ = _architecture(tmp_path)
    arch = {k: v for k, v in json.loads(architecture.read_text()).items() if not k.startswith("_")}

    def activations(batch: int, length: int, ckpt: bool) -> int:
        cfg = config_from_dict(
            {
                "name": "x",
                "model": {"name": "x", "dtype": "bfloat16"},
                "data": {"train": "x", "max_length": length},
                "train": {"batch_size": batch, "gradient_checkpointing": ckpt},
                "monitor": {"every": 0},
            },
            source="test",
        )
        return estimate_memory(arch, cfg)[0].activations

    base = activations(1, 64, False)
    assert activations(2, 64, False) == pytest.approx(2 * base, rel=0.01)  # linear in the batch
    # linear in length (up to small shared tensors): no T x T attention matrix is kept, as on a GPU kernel
    assert activations(1, 128, False) == pytest.approx(2 * base, rel=0.01)
    assert activations(1, 64, True) < base


def test_tokens_per_step_pad_each_micro_batch_to_its_longest():
    assert padded_tokens_per_step([10] * 8, batch=2, accum=2, seed=0) == 40
    assert padded_tokens_per_step([1, 100], batch=2, accum=1, seed=0) == 200


def test_bad_dry_run_settings_are_named(tmp_path):
    architecture, _ = _architecture(tmp_path)
    with pytest.raises(ConfigError, match=r"dry_run: unknown key\(s\) layer;"):
        dry_run_grid(_grid(tmp_path, architecture, dry_run={"layer": 2}))
    with pytest.raises(ConfigError, match=r"dry_run.gpu.mfu: a share of peak"):
        dry_run_grid(
            _grid(tmp_path, architecture, dry_run={"architecture": str(architecture), "gpu": {"mfu": 3}})
        )
    with pytest.raises(ConfigError, match="dry_run.architecture: the dry run needs the config.json"):
        dry_run_grid(_grid(tmp_path, architecture, dry_run={}))


def _one_cell(tmp_path: Path, architecture: Path, model: str, max_length: int) -> Path:
    path = _grid(tmp_path, architecture, model=model, vector=None)
    data = yaml.safe_load(path.read_text())
    data["arms"] = {"sft": {"sft": {}}}
    data["run"]["data"]["max_length"] = max_length
    data["run"]["monitor"] = {"every": 0}
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_preflight_checks_lengths_with_the_real_tokenizer_when_this_machine_has_it(tmp_path):
    """The stand-in tokenizer's counts are not the real model's: with a tokenizer on this machine (here the
    test model's) an example over max_length is an error naming the file; with a hub id nothing is
    downloaded, the stand-in only reads the data, and the report says that lengths were not checked."""
    architecture, _ = _architecture(tmp_path)
    narrow = DATA / "tiny_smoke_narrow.jsonl"
    with pytest.raises(ConfigError, match=rf"{narrow.name}:1: \d+ tokens is longer than max_length=8"):
        dry_run_grid(_one_cell(tmp_path, architecture, "tiny:llama", 8))
    report = dry_run_grid(_one_cell(tmp_path, architecture, "someone/not-downloaded", 8))
    assert not report.failed and report.cells[0].steps == 2
    assert any("lengths against max_length are checked by the real run" in n for n in report.notes)
    assert "(stand-in tokenizer: records read and templated, lengths not checked)" in report.text()
