# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # MAPE-Unlearn: update only the heads and filters that hold the forget set
#
# [Open in Colab](https://colab.research.google.com/github/jaxtrust/jaxtrust/blob/main/notebooks/mape.ipynb)
#
# MAPE-Unlearn (arXiv:2508.17233) scores every attention head and feed-forward filter of a
# Transformer by the Fisher information of a mask on it, on the data to forget and on the data
# to keep, selects the modules that matter for the first and not the second under a parameter
# budget, and runs an ordinary unlearning objective that moves only them. This notebook
#
# 1. trains a small ViT classifier and the Retrain reference (the model that never saw the
#    forget set),
# 2. unlearns a random tenth of the training rows with NegGrad+ on all weights, with MAPE, and
#    with MAPE's budget on random modules (the control),
# 3. compares unlearning, retain and test accuracy, MIA-efficacy and the gap to Retrain.
#
# `jaxtrust reproduce mape` runs the fair comparison (every method tuned with the same budget,
# several seeds, MNIST-1D). Set `JAXTRUST_SMOKE=1` to shrink every step (that is how the test
# suite runs this file; its numbers then mean nothing).

# %%
# %pip install -q jaxtrust

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from jaxtrust.models import EncoderConfig, ViT, ViTConfig
from jaxtrust.unlearning.baselines import (
    TrainConfig,
    UnlearnConfig,
    retrain,
    train_classifier,
    unlearn,
)
from jaxtrust.unlearning.mape import MAPEConfig, mape_unlearn, module_shape
from jaxtrust.unlearning.metrics import avg_gap, unlearning_metrics

SMOKE = os.environ.get("JAXTRUST_SMOKE") == "1"
N_TRAIN = 160 if SMOKE else 2000
TRAIN_STEPS = 20 if SMOKE else 1500
UNLEARN_STEPS = 4 if SMOKE else 150

# %% [markdown]
# ## Data, the original model and Retrain
# Four Gaussian classes in 16 dimensions, with a fifth of the training labels flipped so that
# the model has something to memorise; the forget set is a random tenth of the training rows.

# %%
rng = np.random.default_rng(0)
centers = rng.normal(size=(4, 16)) * 1.2


def sample(n, noisy):
    y = rng.integers(0, 4, n)
    x = centers[y] + rng.normal(size=(n, 16))
    if noisy:
        flip = rng.random(n) < 0.2
        y = np.where(flip, rng.integers(0, 4, n), y)
    return {"x": x.astype(np.float32), "y": y.astype(np.int32)}


train, test = sample(N_TRAIN, noisy=True), sample(200, noisy=False)
forget_rows = rng.choice(N_TRAIN, N_TRAIN // 10, replace=False)
keep_rows = np.setdiff1d(np.arange(N_TRAIN), forget_rows)
forget = {k: v[forget_rows] for k, v in train.items()}
retain = {k: v[keep_rows] for k, v in train.items()}


def init(seed):
    encoder = EncoderConfig(dim=16, num_layers=2, num_heads=4, mlp_dim=32)
    config = ViTConfig(input_shape=(16,), patch=4, num_classes=4, encoder=encoder)
    return ViT(config, rngs=nnx.Rngs(seed))


recipe = TrainConfig(steps=TRAIN_STEPS, batch_size=64, learning_rate=3e-3, warmup_steps=2)
original = train_classifier(init(0), train, recipe, seed=0).model
reference = retrain(init, retain, recipe, seed=0).model
print(module_shape(original))

# %% [markdown]
# ## Unlearning: all weights, MAPE's modules, random modules
# All three use NegGrad+ (ascent on the forget set, descent on the retain set) with the same
# steps and learning rate; MAPE and the control update 30 % of the head and filter weights.

# %%
base = UnlearnConfig(
    learning_rate=1e-3, steps=UNLEARN_STEPS, forget_batch=16, retain_batch=64, alpha=0.5
)
models = {"original": original, "retrain": reference}
models["neggrad_plus"] = unlearn("neggrad_plus", original, forget, retain, base, seed=0).model
for name, selection in (("mape", "fisher"), ("random_modules", "random")):
    config = MAPEConfig(budget=0.3, unlearn=base, selection=selection, retain_samples=0)
    result = mape_unlearn(original, forget, retain, config, seed=0)
    models[name] = result.model
    print(name, "heads per layer", result.selection.heads.sum(axis=1).tolist())

# %% [markdown]
# ## Metrics
# UA: accuracy on the forget set, RA: on the retain set, TA: on the test set, MIA: the share of
# forget rows an SVC membership attack calls non-members (all in %). The closer to Retrain, the
# better: the average gap is the mean absolute difference over the four.

# %%
metrics = {name: unlearning_metrics(m, forget, retain, test) for name, m in models.items()}
gaps = {name: avg_gap(v, metrics["retrain"]) for name, v in metrics.items()}
print(f"{'model':<16}" + "".join(f"{k:>8}" for k in ("UA", "RA", "TA", "MIA", "gap")))
for name, v in metrics.items():
    row = "".join(f"{x:8.1f}" for x in (*v, gaps[name]))
    print(f"{name:<16}{row}")

fig, ax = plt.subplots(figsize=(6, 3))
names = [n for n in gaps if n != "retrain"]
ax.bar(names, [gaps[n] for n in names], color="tab:blue")
ax.set_ylabel("average gap to Retrain (points)")
ax.set_title("closer to Retrain is better")
plt.tight_layout()
plt.show()
