"""Scale-out: a 2-process CPU run (torchrun, gloo) with steer + kl follows the 1-process loss curve.

Same global batch (2 processes x 2 vs 1 process x 4), same seed. accelerate hands consecutive per-device
batches of one seeded sampler to the processes, so each optimizer step sees the same 4 examples; every loss
term is a token sum over the global token count (see `steerlab.train.trainer`), so the only difference is
the order of float additions (the gloo all-reduce). Tolerance: relative 1e-5 on every logged value.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from steerlab.train.config import config_from_dict
from steerlab.train.fixtures import tiny_config, write_config, write_tiny_data
from steerlab.train.run import train

TOLERANCE = 1e-5


@pytest.mark.skipif(
    shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun"
)
def test_two_process_run_matches_one_process_run(tmp_path):
    paths = write_tiny_data(tmp_path)
    arms = {"steer": {"vector": str(paths["vector"]), "alpha": 2.0}, "kl": {"weight": 0.5}}
    common = {"arms": arms, "monitor": {"every": 2}}
    one = tiny_config(
        tmp_path, paths, name="one", train={"max_steps": 4, "batch_size": 4, "save_steps": 10}, **common
    )
    two = tiny_config(
        tmp_path, paths, name="two", train={"max_steps": 4, "batch_size": 2, "save_steps": 10}, **common
    )
    cfg_path = write_config(tmp_path / "two.yaml", two)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "steerlab.cli.train", str(cfg_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(config_from_dict(one))
    finally:
        torch.set_num_threads(before)
    from steerlab.train.jsonl import JsonlLog

    rows_two = JsonlLog(tmp_path / "runs" / "two" / "metrics.jsonl").rows()
    rows_one = single.metrics
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one] == [1, 2, 3, 4]
    assert rows_one[-1]["kl"] > 0
    for a, b in zip(rows_two, rows_one, strict=True):
        for key in ("loss", "lm_loss", "kl", "grad_norm", "lr"):
            assert a[key] == pytest.approx(b[key], rel=TOLERANCE, abs=1e-9), (a["step"], key, a[key], b[key])
    import json

    run_info = json.loads((tmp_path / "runs" / "two" / "run.json").read_text())
    assert run_info["world_size"] == 2
    mon_two = JsonlLog(tmp_path / "runs" / "two" / "monitor.jsonl").rows()
    assert [m["step"] for m in mon_two] == [m["step"] for m in single.monitor] == [0, 2, 4]
    for a, b in zip(mon_two, single.monitor, strict=True):
        assert a["projection"] == pytest.approx(b["projection"], rel=TOLERANCE)
