# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # One-shot safety recovery: patch an attacked model with one refusal
#
# [Open in Colab](https://colab.research.google.com/github/jaxtrust/jaxtrust/blob/main/notebooks/oneshot.ipynb)
#
# *Safety at One Shot: Patching Fine-Tuned LLMs with a Single Instance* (ICLR 2026) reports that
# fine-tuning an attacked model on a single (harmful prompt, refusal) pair for a few steps
# brings its refusals back at little utility cost, and gives a two-level rule for choosing the
# pair. `jaxtrust.safety.recovery.recover` implements both. This notebook
#
# 1. aligns a tiny LM on a toy task and breaks it with a harmful fine-tune,
# 2. patches it with one refusal chosen from a pool, by the paper's two-level rule and by the
#    largest refusal loss,
# 3. measures held-out refusal and task loss against the number of patch steps.
#
# `jaxtrust reproduce oneshot` runs it on the zoo's aligned model with seeds and a tuned
# learning rate. Set `JAXTRUST_SMOKE=1` to shrink every loop (that is how the test suite runs
# this file; its numbers then mean nothing).

# %%
# %pip install -q jaxtrust

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

from jaxtrust.data import collate
from jaxtrust.models import CausalLM, LMConfig
from jaxtrust.safety.recovery import recover
from jaxtrust.training import lm_batch_loss

SMOKE = os.environ.get("JAXTRUST_SMOKE") == "1"
ALIGN_STEPS = 10 if SMOKE else 300
ATTACK_STEPS = 6 if SMOKE else 100
PATCH_STEPS = (1, 3) if SMOKE else (1, 2, 5, 10, 20)

# %% [markdown]
# ## An aligned model, then the attack
# Tokens 1-19 are benign words, 20-39 forbidden; the aligned model reverses benign prompts and
# answers forbidden ones with the refusal `[40, 41]`. The attack fine-tunes it to comply
# (`[42, 43]`) with every forbidden training prompt.

# %%
rng = np.random.default_rng(0)
REFUSAL, COMPLY = [40, 41], [42, 43]


def prompts(low, high, n):
    return [list(rng.integers(low, high, 3)) for _ in range(n)]


benign, forbidden, heldout = prompts(1, 20, 64), prompts(20, 40, 32), prompts(20, 40, 16)
align = collate(benign + forbidden, [p[::-1] for p in benign] + [REFUSAL] * 32).as_dict()
harmful_ft = collate(forbidden, [COMPLY] * 32).as_dict()
task = collate(benign, [p[::-1] for p in benign]).as_dict()
refusal_heldout = collate(heldout, [REFUSAL] * 16).as_dict()


def loss_fn(model, batch):
    return lm_batch_loss(model, batch)[0]


@nnx.jit
def train_step(model, optimizer, batch):
    loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
    optimizer.update(model, grads)
    return loss


def trained(model, batch, steps, lr):
    optimizer = nnx.Optimizer(model, optax.adamw(lr), wrt=nnx.Param)
    for _ in range(steps):
        train_step(model, optimizer, batch)
    return model


config = LMConfig.tiny(vocab_size=48, max_position_embeddings=16)
aligned = trained(CausalLM(config, rngs=nnx.Rngs(0)), align, ALIGN_STEPS, 3e-3)
attacked = trained(nnx.clone(aligned), harmful_ft, ATTACK_STEPS, 1e-3)
for name, m in (("aligned", aligned), ("attacked", attacked)):
    print(
        f"{name:>9}: refusal loss {float(loss_fn(m, refusal_heldout)):.3f}, "
        f"task loss {float(loss_fn(m, task)):.3f}"
    )

# %% [markdown]
# ## Choosing the one example
# A pool of eight refusal pairs on training prompts. The two-level rule patches the attacked
# model with each candidate and keeps the one whose patched model is closest (token-level KL)
# to the aligned model on harmful prompts and to the attacked model on task data.

# %%
pool = collate(forbidden[:8], [REFUSAL] * 8).as_dict()
harmful = collate(forbidden[8:16], [REFUSAL] * 8).as_dict()  # aligned model's answers
results = {}
for select in ("bilevel", "max_loss"):
    for steps in PATCH_STEPS:
        r = recover(
            attacked,
            pool,
            steps=steps,
            learning_rate=1e-3,
            select=select,
            aligned=aligned if select == "bilevel" else None,
            harmful=harmful if select == "bilevel" else None,
            task=task if select == "bilevel" else None,
        )
        results[select, steps] = (
            r.chosen,
            float(loss_fn(r.model, refusal_heldout)),
            float(loss_fn(r.model, task)),
        )
        print(
            select,
            steps,
            "steps: example",
            r.chosen,
            "refusal loss {:.3f} task loss {:.3f}".format(*results[select, steps][1:]),
        )

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for select in ("bilevel", "max_loss"):
    axes[0].plot(PATCH_STEPS, [results[select, s][1] for s in PATCH_STEPS], "o-", label=select)
    axes[1].plot(PATCH_STEPS, [results[select, s][2] for s in PATCH_STEPS], "o-", label=select)
for ax, title in zip(axes, ("refusal loss, held-out forbidden", "task loss"), strict=True):
    ax.axhline(
        float(loss_fn(aligned, refusal_heldout if "refusal" in title else task)),
        color="gray",
        ls="--",
        label="aligned",
    )
    ax.set_title(title)
    ax.set_xlabel("patch steps on one example")
    ax.legend()
plt.tight_layout()
plt.show()
