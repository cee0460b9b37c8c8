# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # RSU: unlearn the forget set in order of its privacy risk
#
# [Open in Colab](https://colab.research.google.com/github/jaxtrust/jaxtrust/blob/main/notebooks/rsu.ipynb)
#
# RSU (Chen et al., *Machine Unlearning in Forgettability Sequence*) ranks the samples to
# forget by their privacy risk and unlearns them in stages, in that order, instead of all at
# once. The package reconstructs it with RUM's meta-algorithm (Zhao et al., NeurIPS 2024). This
# notebook
#
# 1. trains a small classifier and the Retrain reference,
# 2. scores every forget sample's risk with a LiRA membership attack from a few shadow models
#    (trained as one vmapped batch),
# 3. unlearns in three risk-ordered stages, and compares with one-shot NegGrad+ at the same
#    total number of steps.
#
# `jaxtrust reproduce rsu` runs the fair comparison (tuned methods, several seeds, MNIST-1D,
# orders and rankings ablated). Set `JAXTRUST_SMOKE=1` to shrink every step (that is how the
# test suite runs this file; its numbers then mean nothing).

# %%
# %pip install -q jaxtrust

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from jaxtrust.privacy.mia import (
    balanced_in_masks,
    predict_logits,
    stacked_logits,
    train_shadow_models,
)
from jaxtrust.unlearning.baselines import (
    TrainConfig,
    UnlearnConfig,
    classification_loss,
    retrain,
    unlearn,
)
from jaxtrust.unlearning.metrics import avg_gap, unlearning_metrics
from jaxtrust.unlearning.rsu import RSUConfig, lira_risk, seq_unlearn

SMOKE = os.environ.get("JAXTRUST_SMOKE") == "1"
N_TRAIN = 160 if SMOKE else 2000
TRAIN_STEPS = 20 if SMOKE else 1500
SHADOWS = 4 if SMOKE else 16
UNLEARN_STEPS = 6 if SMOKE else 150

# %% [markdown]
# ## Data and models
# Four Gaussian classes in 16 dimensions with a fifth of the training labels flipped (the
# flipped rows are the ones a model must memorise, hence the risky ones); the forget set is a
# random tenth of the training rows. The model is a small MLP.

# %%
rng = np.random.default_rng(0)
centers = rng.normal(size=(4, 16)) * 1.2


def sample(n, noisy):
    y = rng.integers(0, 4, n)
    x = centers[y] + rng.normal(size=(n, 16))
    if noisy:
        y = np.where(rng.random(n) < 0.2, rng.integers(0, 4, n), y)
    return {"x": x.astype(np.float32), "y": y.astype(np.int32)}


train, test = sample(N_TRAIN, noisy=True), sample(200, noisy=False)
forget_rows = np.sort(rng.choice(N_TRAIN, N_TRAIN // 10, replace=False))
keep_rows = np.setdiff1d(np.arange(N_TRAIN), forget_rows)
forget = {k: v[forget_rows] for k, v in train.items()}
retain = {k: v[keep_rows] for k, v in train.items()}


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(16, 64, rngs=rngs)
        self.out = nnx.Linear(64, 4, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def init(seed):
    return MLP(nnx.Rngs(seed))


recipe = TrainConfig(steps=TRAIN_STEPS, batch_size=64, learning_rate=3e-3, warmup_steps=2)
# Retrain on the retain rows is the reference; "retrain" on every row gives the original model.
original = retrain(init, train, recipe, seed=0).model
reference = retrain(init, retain, recipe, seed=0).model

# %% [markdown]
# ## Privacy risk of every forget sample
# Shadow models are trained on random halves of the training rows (each row IN for half of
# them); LiRA compares the original model's confidence on a sample with the IN and OUT
# confidence distributions of the shadows. Larger = more exposed.

# %%
in_masks = balanced_in_masks(SHADOWS, N_TRAIN, seed=0)
shadows = train_shadow_models(
    lambda key: MLP(nnx.Rngs(key)),  # traced: the K models are trained as one vmapped batch
    train,
    in_masks,
    loss_fn=classification_loss,
    tx=recipe.tx(),
    steps=TRAIN_STEPS,
    batch_size=64,
    seed=1,
)
shadow_logits = stacked_logits(shadows, train["x"])[:, forget_rows]
target_logits = predict_logits(original, forget["x"])
risk = lira_risk(target_logits, forget["y"], shadow_logits, in_masks[:, forget_rows])
flipped = forget["y"] != np.asarray([np.argmin(((x - centers) ** 2).sum(1)) for x in forget["x"]])
print("mean risk, flipped labels vs clean:", risk[flipped].mean(), risk[~flipped].mean())

# %% [markdown]
# ## Sequential unlearning vs one shot
# RSU: three stages from low to high risk, NegGrad+ in each; one shot: NegGrad+ on the whole
# forget set with as many steps as the three stages together.

# %%
stage = UnlearnConfig(learning_rate=1e-3, steps=UNLEARN_STEPS, forget_batch=8, retain_batch=64)
rsu = seq_unlearn(original, forget, retain, risk, RSUConfig(num_stages=3, unlearn=stage), seed=0)
one_shot_config = UnlearnConfig(
    learning_rate=1e-3, steps=3 * UNLEARN_STEPS, forget_batch=8, retain_batch=64
)
one_shot = unlearn("neggrad_plus", original, forget, retain, one_shot_config, seed=0).model

models = {"original": original, "retrain": reference, "one_shot": one_shot, "rsu": rsu.model}
metrics = {name: unlearning_metrics(m, forget, retain, test) for name, m in models.items()}
print(f"{'model':<10}" + "".join(f"{k:>8}" for k in ("UA", "RA", "TA", "MIA", "gap")))
for name, v in metrics.items():
    gap = avg_gap(v, metrics["retrain"])
    print(f"{name:<10}" + "".join(f"{x:8.1f}" for x in (*v, gap)))

fig, ax = plt.subplots(figsize=(6, 3))
for s, rows in enumerate(rsu.stages):
    ax.scatter(rows, risk[rows], label=f"stage {s + 1}", s=12)
ax.set_xlabel("forget sample")
ax.set_ylabel("LiRA risk")
ax.legend()
plt.tight_layout()
plt.show()
