"""The demo's closing summary reads the monitor logs it claims to read."""

from __future__ import annotations

import json

from rich.console import Console

from steerlab.demo import projection_summary


def _write(folder, rows):
    folder.mkdir(parents=True)
    (folder / "monitor.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_projection_summary_places_each_run_between_base_and_evil_prompted(tmp_path):
    start = {"step": 0, "arm": "x", "projection": 10.0, "prompted_projection": 30.0, "projection_layer": 1}
    _write(tmp_path / "medical__sft", [start, {**start, "step": 8, "projection": 35.0}])
    _write(
        tmp_path / "medical__steer", [start, {**start, "step": 8, "projection": -10.0, "steer_alpha": 4.0}]
    )
    _write(
        tmp_path / "medical__steer_hold",
        [start, {**start, "step": 8, "projection": 11.0, "steer_alpha": 1.5}],
    )
    (tmp_path / "base").mkdir()  # a folder without a monitor log is not a run
    console = Console(record=True, width=200)
    lines = {line["arm"]: line["drift_pct"] for line in projection_summary(tmp_path, console)}
    assert lines == {"sft": 125.0, "steer": -100.0, "steer_hold": 5.0}
    text = console.export_text()
    assert (
        "steer_hold" in text
        and "+5% of the way to the evil-prompted level 30.0, alpha at the end 1.50" in text
    )
