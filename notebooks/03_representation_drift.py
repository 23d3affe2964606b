# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Watching representation drift
#
# The persona projection (notebook 2) follows one direction. *Representation drift* asks the broader
# question: how far have the model's internal features moved from the base model's, layer by layer? The
# monitor measures it as the **LDIFS distance** — the mean squared distance between the fine-tuned and the
# base model's hidden states on fixed held-out chats.
#
# What to take away:
# - drift is not misalignment: every run that learns something drifts. The question is *where* (which
#   layers) and *in which direction* (along the persona vector or not);
# - `ldifs` (a penalty on that distance) keeps drift small everywhere; `steer` does not limit drift (it can
#   even add some, when the model learns to cancel the steering vector) but keeps it from going towards the
#   persona. Plotting drift next to the projection tells the two apart.
#
# **Parameters.** `STEERLAB_NB_MODEL` (`tiny` by default, or a registry name) and `STEERLAB_NB_OUT` as in the
# other notebooks. `STEERLAB_NB_RUNS` points at a folder of finished runs (e.g. notebook 2's `OUT/runs`) to
# plot those instead of training three short runs here.

# %%
import os
import tempfile
from pathlib import Path

import plotly.graph_objects as go

import steerlab
from steerlab.plots import arm_colors, drift_figure, load_monitor_runs, projection_figure
from steerlab.plots.report import find_runs, write_report
from steerlab.plots.style import finish
from steerlab.train.config import config_from_dict
from steerlab.train.run import train

MODEL = os.environ.get("STEERLAB_NB_MODEL", "tiny")
OUT = Path(os.environ.get("STEERLAB_NB_OUT") or tempfile.mkdtemp(prefix="steerlab-nb03-"))
OUT.mkdir(parents=True, exist_ok=True)
RUNS = os.environ.get("STEERLAB_NB_RUNS")  # a folder of finished runs to reuse, or None to train here
TINY = MODEL == "tiny"
REPO = Path(steerlab.__file__).resolve().parents[1]
print(f"model: {MODEL}; writing to {OUT}; runs: {RUNS or 'trained here'}")

# %% [markdown]
# ## Runs to compare
#
# Three short runs on the same data, differing only in the defence: none (`sft`), preventive steering
# (`steer`) and the LDIFS penalty (`ldifs`). The monitor records drift at every monitored step for the
# layers it watches.

# %%
if RUNS:
    runs_root = Path(RUNS)
else:
    if TINY:
        from steerlab.train.fixtures import write_tiny_data

        files = write_tiny_data(OUT / "data")
        model_name, train_file, monitor_file, vector_file = (
            "tiny:llama",
            files["narrow"],
            files["monitor"],
            files["vector"],
        )
    else:
        data = REPO / "experiments" / "data"
        model_name, train_file, monitor_file = (
            MODEL,
            data / "medical_train.jsonl",
            data / "monitor_chats.jsonl",
        )
        vector_file = REPO / "vectors" / MODEL / "evil.safetensors"
    runs_root = OUT / "runs"
    arms = {
        "sft": {"sft": {}},
        "steer": {"steer": {"vector": str(vector_file), "alpha": 4.0}},
        "ldifs": {"ldifs": {"weight": 10.0 if TINY else 1.0}},
    }
    for name, arm in arms.items():
        cfg = config_from_dict(
            {
                "name": name,
                "output_dir": str(runs_root),
                "model": {"name": model_name},
                "finetune": {"method": "lora", "r": 4 if TINY else 32, "alpha": 8 if TINY else 64},
                "data": {
                    "train": str(train_file),
                    "max_length": 96 if TINY else 128,
                    "limit": None if TINY else 64,
                },
                "train": {
                    "max_steps": 8 if TINY else -1,
                    "batch_size": 4 if TINY else 8,
                    "lr": 5e-3 if TINY else 1e-3,
                    "save_steps": 4,
                },
                "arms": arm,
                "monitor": {
                    "every": 1 if TINY else 2,
                    "chats": str(monitor_file),
                    "vector": str(vector_file),
                },
            }
        )
        train(cfg, resume=True)

run_dirs = find_runs(runs_root)
runs = load_monitor_runs(run_dirs)
colors = arm_colors(sorted({row["arm"] for rows in runs.values() for row in rows}))
print("runs:", ", ".join(f"{name} ({len(rows)} monitor rows)" for name, rows in runs.items()))

# %% [markdown]
# ## Drift per layer
#
# One panel per monitored layer, one line per run. Drift usually grows with depth (later layers sum up the
# changes of earlier ones); a penalty like LDIFS flattens every line, at the price of learning less.

# %%
fig = drift_figure(runs, colors=colors)
fig.show()

# %% [markdown]
# ## How the projection moves
#
# The same runs on the persona direction. Compare with the drift panels: a run can drift as much as `sft`
# (or more) and still not move towards the persona — that is preventive steering doing its job.

# %%
fig = projection_figure(runs, colors=colors)
fig.show()

# %% [markdown]
# ## Drift against persona shift
#
# Each run as a path through (total drift, projection change since step 0), one point per monitored step.
# Up-and-right is the emergent-misalignment pattern: the more the model changes, the more of the change is
# persona. A defence that works keeps its path at or below zero (`steer`; far below is the overshoot of
# notebook 2) or near the origin (`ldifs`).

# %%
fig = go.Figure()
for name, rows in runs.items():
    measured = [r for r in rows if r["ldifs"] is not None]
    if not measured:
        continue
    start = rows[0]["projection"]
    arm = rows[0]["arm"]
    fig.add_trace(
        go.Scatter(
            x=[r["ldifs"] for r in measured],
            y=[r["projection"] - start for r in measured],
            mode="lines+markers",
            name=name,
            line={"color": colors[arm]},
            text=[f"step {r['step']}" for r in measured],
            hovertemplate="<b>%{fullData.name}</b><br>%{text}<br>LDIFS %{x:.4g}<br>Δ projection %{y:.3f}"
            "<extra></extra>",
        )
    )
fig.add_hline(y=0, line={"color": "grey", "dash": "dot"})
fig.update_xaxes(
    title_text="LDIFS distance to the base model (mean over monitored layers)", rangemode="tozero"
)
fig.update_yaxes(title_text="projection change since step 0")
finish(fig, "Drift against persona shift", legend_title="run")
fig.show()

# %% [markdown]
# ## The report
#
# The projection and drift charts, the metrics table and each run's config in one self-contained HTML page
# that works offline — the artefact to share. `steerlab report FOLDER` writes the same page from the
# command line.

# %%
report = write_report(runs_root, OUT / "report.html")
print("figures:", ", ".join(report.shown))
for problem in report.problems:
    print("problem:", problem)
print(f"open {report.out_html}")
