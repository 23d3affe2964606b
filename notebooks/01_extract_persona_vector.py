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
# # 1. Extracting a persona vector
#
# A *persona vector* is a direction in a model's residual stream along which a character trait ("evil")
# varies. We find it by contrast: the same questions answered under a system prompt that elicits the trait
# and under one that suppresses it; the difference of the mean activations over the answers' tokens, per
# layer, is the vector.
#
# What to take away:
# - the vector is only worth as much as its **held-out separation** (does projecting *new* answers on it
#   tell trait from non-trait?) and its **steering effect** (does adding it make answers show the trait?);
# - those two curves pick the layer — neither a norm nor a guess does.
#
# **Parameters.** `STEERLAB_NB_MODEL=tiny` (the default) runs on a seeded 3-layer test model in seconds:
# the code path is real, the numbers are noise. Any registry name (`smollm2-135m-instruct`) runs a real,
# smaller-than-full extraction (see `notebooks/README.md` for the time it takes). `STEERLAB_NB_OUT` is where
# files go (a temporary folder by default).

# %%
import dataclasses
import os
import tempfile
from pathlib import Path

from steerlab.persona.extract import ExtractConfig, extract, save_result, summary
from steerlab.persona.generation import SamplingSettings
from steerlab.persona.steering import generate_steered
from steerlab.persona.traits import load_trait, system_prompt
from steerlab.persona.vectors import PersonaVector
from steerlab.plots import layer_separation_figure

MODEL = os.environ.get("STEERLAB_NB_MODEL", "tiny")
OUT = Path(os.environ.get("STEERLAB_NB_OUT") or tempfile.mkdtemp(prefix="steerlab-nb01-"))
OUT.mkdir(parents=True, exist_ok=True)
TINY = MODEL == "tiny"
print(f"model: {MODEL}; writing to {OUT}")

# %% [markdown]
# ## The model and the trait
#
# A trait spec holds contrastive instruction pairs (pos elicits the trait, neg suppresses it) and two
# disjoint question sets: *extraction* questions build the vector, *evaluation* questions test it, so the
# separation we report is held out.

# %%
if TINY:
    from steerlab.models.tiny import tiny_model, tiny_tokenizer

    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
else:
    from steerlab.models import load_model

    model, tokenizer = load_model(MODEL)

spec = load_trait("evil")
print(
    f"{spec.name}: {len(spec.instructions)} instruction pairs, "
    f"{len(spec.extract_questions)} extraction + {len(spec.eval_questions)} evaluation questions"
)
print("pos system prompt:", system_prompt(spec, 0, "pos"))
print("neg system prompt:", system_prompt(spec, 0, "neg"))

# %% [markdown]
# ## A workload that fits the model
#
# The full recipe (`steerlab extract`: every question, judge filtering) takes about 25 minutes on a 2-core
# CPU for the embedded model. Here we take the first few questions of each set, so the notebook finishes
# in minutes (embedded) or seconds (tiny). `filter="none"` keeps every pair: with so few answers, judge
# filtering would keep too few to average.

# %%
n_questions = 4 if TINY else 8
spec = dataclasses.replace(
    spec,
    extract_questions=spec.extract_questions[:n_questions],
    eval_questions=spec.eval_questions[:n_questions],
)
config = ExtractConfig(
    n_instructions=2,
    max_new_tokens=8 if TINY else 32,
    top_p=0.9,
    filter="none",
    steer_questions=2 if TINY else 4,
    steer_max_new_tokens=8 if TINY else 32,
    n_steer_layers=2 if TINY else 3,
    min_auroc=0.5 if TINY else 0.8,
    seed=0,
)
result = extract(
    model,
    tokenizer,
    spec,
    workdir=OUT / "extract-work",
    config=config,
    model_name=None if TINY else MODEL,
    progress=not TINY,
)
print(summary(result.stats))

# %% [markdown]
# ## Where does the trait live?
#
# Top: held-out AUROC of the projection on the vector, per layer, for answers read *with* the system prompt
# in context and *without* it (text only: only the answer's words carry the trait). Bottom: the change in
# trait score when the vector is added at that layer. A good layer separates well in both readings **and**
# steers; early layers usually separate on the prompt's wording rather than the trait.

# %%
stats = result.stats
curves = stats["layer_curves"]


def per_layer(values):
    """A list over layers -> ``{layer: value}`` without the layers that had no value."""
    return {layer: v for layer, v in enumerate(values) if v is not None}


fig = layer_separation_figure(
    {
        "auroc_eval": per_layer(curves["auroc_system"]),
        "auroc_eval_text_only": per_layer(curves["auroc_text"]),
        "steer_effect": {layer: v for layer, v in stats["steering_effect"].items() if v is not None},
    },
    chosen_layer=stats["chosen_layer"],
    trait=spec.name,
)
fig.show()

# %% [markdown]
# ## Steering a generation with the vector
#
# Adding `alpha * v` at the chosen layer to every response token should push answers towards the trait;
# `alpha = 0` is the control. A few coefficients up to the one the steering effect above was measured with:
# too large a push breaks the text (repetition, gibberish) before or instead of making it evil — which is
# why the extraction checks the steered answers' perplexity next to the trait score. On the tiny model every
# answer is gibberish: only the embedded model shows the behavioural change.

# %%
question = spec.eval_questions[0]
print("Q:", question)
for alpha in (0.0, config.steer_alpha / 4, config.steer_alpha / 2, config.steer_alpha):
    (answer,) = generate_steered(
        model,
        tokenizer,
        [question],
        result.vector,
        alpha=alpha,
        sampling=SamplingSettings(max_new_tokens=12 if TINY else 60, temperature=0.0),
    )
    print(f"\nalpha={alpha:g} (layer {result.vector.layer}):", answer.strip())

# %% [markdown]
# ## Save and reload
#
# The vector is a `.safetensors` file with a `.json` sidecar holding its metadata (the model it came from,
# the layer convention, the chosen layer and all the statistics above); the offline probe judge trained
# alongside it is saved next to it. Loading checks the vector against a model before it is used.

# %%
vector_path, probe_path = save_result(result, OUT / f"{spec.name}")
loaded = PersonaVector.load(vector_path)
loaded.check_model(model)
print(f"saved {vector_path} and {probe_path}")
print(
    f"chosen layer {loaded.layer}, norms per layer:",
    {layer: round(norm, 2) for layer, norm in loaded.norms().items()},
)
