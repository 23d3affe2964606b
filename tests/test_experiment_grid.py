"""The experiment grid expands into validated run configs, in dependency order, and names bad keys."""

from __future__ import annotations

import pytest
import yaml

from steerlab.experiment.grid import load_grid
from steerlab.train.config import ConfigError

DATA = "../experiments/data"


def _grid(tmp_path, **override):
    root = tmp_path / "g"
    root.mkdir()
    data = {
        "name": "g",
        "model": "tiny:llama",
        "domains": {
            "medical": {"train": f"{DATA}/tiny_smoke_narrow.jsonl", "eval": f"{DATA}/tiny_smoke_narrow.jsonl"}
        },
        "run": {"train": {"max_steps": 2}, "monitor": {"every": 0}},
        "arms": {
            "ppl": {
                "interleave": {
                    "general": f"{DATA}/tiny_smoke_general.jsonl",
                    "selection": "perplexity_gap",
                    "misaligned": ["{cell:sft}"],
                }
            },
            "sft": {"sft": {}},
        },
        **override,
    }
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(autouse=True)
def _repo_data(monkeypatch, tmp_path):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "experiments").symlink_to(repo / "experiments")


def test_cells_follow_their_references(tmp_path):
    grid = load_grid(_grid(tmp_path))
    cells = grid.cells()
    assert [c.key for c in cells] == ["medical__sft", "medical__ppl"]
    assert cells[1].needs == ["sft"]
    misaligned = cells[1].config.arms.interleave.misaligned
    assert misaligned == [str((grid.root / "medical__sft").resolve())]
    assert cells[0].config.run_dir == grid.root / "medical__sft"


def test_unknown_keys_and_bad_references_are_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key\\(s\\) colour"):
        load_grid(_grid(tmp_path, colour="red"))


def test_a_reference_to_a_missing_arm(tmp_path):
    arms = {
        "ppl": {
            "interleave": {
                "general": f"{DATA}/tiny_smoke_general.jsonl",
                "misaligned": ["{cell:nope}"],
                "selection": "perplexity_gap",
            }
        }
    }
    with pytest.raises(ConfigError, match=r"\{cell:nope\} names an arm"):
        load_grid(_grid(tmp_path, arms=arms))
