# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # SecPE: private, robust prompt ensembling
#
# [Open in Colab](https://colab.research.google.com/github/jaxtrust/jaxtrust/blob/main/notebooks/secpe.ipynb)
#
# SecPE (Zhang et al., ECAI 2024) classifies with several prompt templates, sums their class
# scores (the soft vote) and takes the argmax under homomorphic encryption. This notebook
#
# 1. trains a small causal LM on the generated 8-topic task,
# 2. scores six prompts and the soft vote,
# 3. attacks single prompts and the ensemble with token substitutions,
# 4. runs the soft vote's argmax under TFHE when a `.venv-fhe` (Concrete) can be found.
#
# Set `JAXTRUST_SMOKE=1` to shrink every loop (that is how the test suite runs this file).

# %%
# %pip install -q jaxtrust

# %%
import os

import numpy as np

from jaxtrust import fhe
from jaxtrust.privacy.secpe import (
    ensemble_argmax,
    prompt_predictions,
    prompt_scores,
    robust_accuracy,
)
from jaxtrust.privacy.secpe.testbeds import inhouse_testbed
from jaxtrust.privacy.secpe.topics import TopicTask

SMOKE = os.environ.get("JAXTRUST_SMOKE") == "1"
task = TopicTask(seed=0, confusion=0.2)
bed = inhouse_testbed(task, seed=0, steps=60 if SMOKE else 300, examples=600 if SMOKE else 2000)
print(bed.description)

# %% [markdown]
# ## Single prompts vs the soft vote

# %%
texts, labels = task.sample(40 if SMOKE else 200, split="test", seed=0)
scores = prompt_scores(bed.model, bed.ensemble, texts)  # [n, m prompts, k = 8 classes]
single = (prompt_predictions(scores) == labels[:, None]).mean(axis=0)
print(
    "single prompts:", np.round(single, 3), "soft vote:", (ensemble_argmax(scores) == labels).mean()
)

# %% [markdown]
# ## Under a label-preserving token-substitution attack (fillers only; cue words protected)

# %%
n_attack = 12 if SMOKE else 100
report = robust_accuracy(
    bed.model,
    bed.ensemble,
    texts[:n_attack],
    labels[:n_attack],
    budget=1 if SMOKE else 2,
    allowed_tokens=bed.allowed,
    protected_tokens=bed.protected,
    candidates_per_position=4,
)
print("robust single:", np.round(report["robust"]["single"], 3))
print("robust soft vote:", report["robust"]["ensemble"])

# %% [markdown]
# ## The soft vote's argmax under TFHE (runs in `.venv-fhe` by delegation)

# %%
status = fhe.environment_status("fhe")
if status["in_process"] or status["delegation"]:
    result = fhe.encrypted_ensemble_argmax(scores[:2], bits=4)  # 4 bits: seconds, not minutes
    print("encrypted argmax", result.argmax, "equals plaintext:", result.matches)
else:
    print("no fhe environment:", status["error"] or "set JAXTRUST_FHE_PYTHON")
