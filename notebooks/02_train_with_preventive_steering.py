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
# # 2. Training with preventive steering
#
# Fine-tuning on a narrow harmful dataset (bad medical advice, insecure code) can make a model broadly
# misaligned: *emergent misalignment*. The persona-vector view: training moves the model along the "evil"
# direction, and that shift shows up in answers far from the training domain.
#
# **Preventive steering** adds `alpha * v` to the residual stream *during training only*. The optimiser no
# longer needs to move the weights along `v` to fit the data — the hook already supplies that part — so the
# trained model (used without the hook) stays closer to the base persona.
#
# What to take away: a **persona monitor** (the projection of the model's activations on `v`, measured on
# fixed held-out chats every few steps) shows the difference *during* training — `sft` drifts up towards
# (or past) the level of the base model prompted to be evil, `steer` does not.
#
# **Parameters.** `STEERLAB_NB_MODEL=tiny` (default: a seeded test model, tiny random data and a random
# vector — the code path is real, the curves are noise) or a registry name (`smollm2-135m-instruct`: the
# shipped evil vector and 64 harmful medical-advice chats). `STEERLAB_NB_VECTOR` replaces the vector (e.g.
# with the one notebook 1 saved). `STEERLAB_NB_OUT` is where runs go; rerunning with the same folder resumes.

# %%
import os
import tempfile
from pathlib import Path

import steerlab
from steerlab.data.chat import ChatExample, load_chat_jsonl
from steerlab.persona.traits import load_trait, system_prompt
from steerlab.persona.vectors import PersonaVector
from steerlab.plots import load_monitor_runs, projection_figure
from steerlab.train.config import config_from_dict, dump_config
from steerlab.train.monitor import PersonaMonitor
from steerlab.train.run import load_base, train

MODEL = os.environ.get("STEERLAB_NB_MODEL", "tiny")
OUT = Path(os.environ.get("STEERLAB_NB_OUT") or tempfile.mkdtemp(prefix="steerlab-nb02-"))
OUT.mkdir(parents=True, exist_ok=True)
TINY = MODEL == "tiny"
REPO = Path(steerlab.__file__).resolve().parents[1]  # experiments/ and vectors/ of the checkout
print(f"model: {MODEL}; writing to {OUT}")

# %% [markdown]
# ## Data, monitor chats and the vector
#
# Three inputs: the narrow training set, held-out *monitor chats* (a prompt and a fixed, benign answer; the
# monitor reads them teacher-forced, so every step is measured on the same tokens) and the persona vector.

# %%
if TINY:
    from steerlab.train.fixtures import write_tiny_data

    files = write_tiny_data(OUT / "data")  # narrow/general/monitor chats + a random vector for tiny:llama
    model_name, train_file, monitor_file = "tiny:llama", files["narrow"], files["monitor"]
    vector_file = files["vector"]
else:
    model_name = MODEL
    train_file = REPO / "experiments" / "data" / "medical_train.jsonl"
    monitor_file = REPO / "experiments" / "data" / "monitor_chats.jsonl"
    vector_file = REPO / "vectors" / MODEL / "evil.safetensors"
vector_file = Path(os.environ.get("STEERLAB_NB_VECTOR") or vector_file)
if not vector_file.is_file():
    raise FileNotFoundError(
        f"{vector_file}: no evil vector for {MODEL}; run notebook 1 and set STEERLAB_NB_VECTOR to its output"
    )
vector = PersonaVector.load(vector_file)
print(f"training data {train_file}\nmonitor chats {monitor_file}")
print(f"vector {vector_file} (trait {vector.meta.trait}, chosen layer {vector.layer})")

# %% [markdown]
# ## The run config, in code
#
# The same structure as an `experiments/*.yaml` file, validated the same way (a misspelt key is an error
# naming it). Two runs differ only in their arms: `sft` (plain fine-tuning) and `steer` (preventive
# steering with the vector at its chosen layer). Both fine-tune a LoRA adapter with the monitor on.

# %%
ALPHA = 4.0


def run_config(name: str, arms: dict) -> dict:
    return {
        "name": name,
        "seed": 0,
        "output_dir": str(OUT / "runs"),
        "model": {"name": model_name},
        "finetune": {"method": "lora", "r": 4, "alpha": 8}
        if TINY
        else {"method": "lora", "r": 32, "alpha": 64},
        "data": {"train": str(train_file), "max_length": 96 if TINY else 128, "limit": None if TINY else 64},
        "train": {
            "max_steps": 8 if TINY else -1,
            "epochs": 1,
            "batch_size": 4 if TINY else 8,
            "lr": 5e-3 if TINY else 1e-3,
            "save_steps": 4,
            "logging_steps": 1,
        },
        "arms": arms,
        "monitor": {
            "every": 1 if TINY else 2,
            "chats": str(monitor_file),
            "vector": str(vector_file),
            "limit": 16,
        },
    }


configs = {
    "sft": config_from_dict(run_config("sft", {"sft": {}})),
    "steer": config_from_dict(run_config("steer", {"steer": {"vector": str(vector_file), "alpha": ALPHA}})),
}
print(dump_config(configs["steer"]))

# %% [markdown]
# ## Train both runs
#
# `resume=True` makes the cell safe to rerun: a finished run is left as it is, a killed one continues from
# its last complete checkpoint.

# %%
results = {name: train(cfg, resume=True) for name, cfg in configs.items()}
for name, result in results.items():
    print(f"{name}: {result.global_step} steps, {len(result.monitor)} monitor rows in {result.run_dir}")

# %% [markdown]
# ## Two reference levels
#
# A projection value means little alone. The chart marks where the *base* model sits on the monitor chats,
# and where it sits when its system prompt tells it to be evil: the distance between the two is what
# "becoming evil" looks like along this direction. Both are read exactly like the curves (mean over the
# answer tokens at the vector's layer, on the same chats), with the monitor's own measurement.

# %%
base_model, base_tokenizer = load_base(configs["sft"].model)
chats = list(load_chat_jsonl(monitor_file))[:16]
evil_system = {"role": "system", "content": system_prompt(load_trait("evil"), 0, "pos")}
levels = {}
for label, system in (("base", []), ("prompted", [evil_system])):
    reading = PersonaMonitor(  # the monitor itself, so both levels are read exactly like the curves
        tokenizer=base_tokenizer,
        chats=[ChatExample(messages=system + chat.messages) for chat in chats],
        log_path=OUT / f"level_{label}.jsonl",
        reference_cache=OUT / f"level_{label}_reference.safetensors",
        arm=label,
        every=1,
        max_length=256,
        vector=vector.vector(),
        projection_layer=vector.layer,
    )
    levels[label] = reading.measure(base_model, step=0)["projection"]
runs = load_monitor_runs([r.run_dir for r in results.values()])
print(
    f"base level {levels['base']:.3f} (the sft run's monitor at step 0: {runs['sft'][0]['projection']:.3f}); "
    f"prompted level {levels['prompted']:.3f}"
)

# %% [markdown]
# ## The persona projection across training
#
# One line per run. Read it against the two dotted/dashed levels: how far towards "prompted evil" does each
# run go, and when? A `steer` line that falls far *below* the base level is an overshoot: the model learned
# to cancel the vector the hook added, and keeps cancelling it once the hook is gone. It is not evil, but
# it did change along `v`; a smaller `ALPHA` trades some protection for less overshoot.

# %%
fig = projection_figure(runs, prompted_level=levels["prompted"], trait=vector.meta.trait)
fig.show()

# %% [markdown]
# ## The comparison, in numbers
#
# Where each run started and ended, and at how many monitored steps `steer` sits below `sft` — printed as
# measured, whichever way it comes out.

# %%
for name, rows in runs.items():
    first, last = rows[0], rows[-1]
    print(f"{name:>6}: step 0 {first['projection']:+.3f} -> step {last['step']} {last['projection']:+.3f}")
steer_at = {r["step"]: r["projection"] for r in runs["steer"]}
shared = [r for r in runs["sft"] if r["step"] > 0 and r["step"] in steer_at]
below = sum(steer_at[r["step"]] < r["projection"] for r in shared)
print(
    f"steer is below sft at {below} of {len(shared)} monitored steps after step 0"
    + (" (tiny model: a random vector, so this says nothing)" if TINY else "")
)
