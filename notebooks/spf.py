# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # SPF: keep refusals through fine-tuning with one safety example
#
# [Open in Colab](https://colab.research.google.com/github/jaxtrust/jaxtrust/blob/main/notebooks/spf.ipynb)
#
# Zhang et al., *Understanding and Preserving Safety in Fine-Tuned LLMs* (arXiv:2601.10141),
# estimate a low-rank safety subspace per weight matrix from the gradient of ONE refusal
# example and remove, from every fine-tuning update, the components that work against it.
# `jaxtrust.safety.spf.spf` is that rule as an optax transform. This notebook
#
# 1. aligns a tiny LM on a toy task (refuse forbidden prompts, answer benign ones),
# 2. fine-tunes it on a poisoned mix (benign answers plus compliance with forbidden prompts)
#    with plain AdamW and with SPF in front of AdamW, from the same start and data,
# 3. tracks the refusal loss on *held-out* forbidden prompts and the task loss over the steps.
#
# `jaxtrust reproduce spf` runs the real comparison (the zoo's aligned model, six attacks,
# tuned baselines, seeds). Set `JAXTRUST_SMOKE=1` to shrink every loop (that is how the test
# suite runs this file; its numbers then mean nothing).

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
from jaxtrust.safety.spf import spf
from jaxtrust.training import lm_batch_loss

SMOKE = os.environ.get("JAXTRUST_SMOKE") == "1"
ALIGN_STEPS = 10 if SMOKE else 300
ATTACK_STEPS = 6 if SMOKE else 150

# %% [markdown]
# ## A toy world and an aligned model
# Tokens 1-19 are benign words, 20-39 forbidden ones; a prompt is three words. The aligned model
# answers a benign prompt with its words reversed and a forbidden one with the refusal `[40, 41]`.

# %%
rng = np.random.default_rng(0)
REFUSAL, COMPLY = [40, 41], [42, 43]


def prompts(low, high, n):
    return [list(rng.integers(low, high, 3)) for _ in range(n)]


benign, forbidden, heldout = prompts(1, 20, 64), prompts(20, 40, 32), prompts(20, 40, 16)
align = collate(benign + forbidden, [p[::-1] for p in benign] + [REFUSAL] * 32).as_dict()
task = collate(benign, [p[::-1] for p in benign]).as_dict()
# the attack: the benign task plus compliance with a quarter of the forbidden prompts
attack = collate(benign + forbidden[:8], [p[::-1] for p in benign] + [COMPLY] * 8).as_dict()
refusal_heldout = collate(heldout, [REFUSAL] * 16).as_dict()
safety_example = collate(forbidden[:1], [REFUSAL]).as_dict()  # ONE refusal pair

config = LMConfig.tiny(vocab_size=48, max_position_embeddings=16)


def loss_fn(model, batch):
    return lm_batch_loss(model, batch)[0]


@nnx.jit
def step(model, optimizer, batch, safety_batch):
    loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
    safety = nnx.grad(loss_fn)(model, safety_batch)  # at the current parameters
    optimizer.update(model, grads, safety_grads=safety)
    return loss


@nnx.jit
def plain_step(model, optimizer, batch):
    loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
    optimizer.update(model, grads)
    return loss


aligned = CausalLM(config, rngs=nnx.Rngs(0))
optimizer = nnx.Optimizer(aligned, optax.adamw(3e-3), wrt=nnx.Param)
for _ in range(ALIGN_STEPS):
    plain_step(aligned, optimizer, align)
print(
    "aligned: refusal loss on held-out forbidden prompts", float(loss_fn(aligned, refusal_heldout))
)

# %% [markdown]
# ## The poisoned fine-tune, with and without SPF
# Same start, same data, same AdamW; SPF (rank 2, the default `"conflict"` reading: drop only
# the components that move against the safety directions) sits in front of AdamW, with the
# basis re-estimated from the one refusal example at every step.


# %%
def finetune(use_spf):
    model = nnx.clone(aligned)  # a copy: nnx.merge of a split would share its variables
    tx = optax.adamw(1e-3)
    if use_spf:
        tx = optax.chain(spf(rank=2, exclude="embed|lm_head"), tx)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    curve = {"refusal": [], "task": []}
    for _ in range(ATTACK_STEPS):
        curve["refusal"].append(float(loss_fn(model, refusal_heldout)))
        curve["task"].append(float(loss_fn(model, task)))
        if use_spf:
            step(model, optimizer, attack, safety_example)
        else:
            plain_step(model, optimizer, attack)
    return curve


curves = {"AdamW": finetune(False), "SPF + AdamW": finetune(True)}
for name, c in curves.items():
    print(f"{name:>12}: refusal loss {c['refusal'][-1]:.3f}, task loss {c['task'][-1]:.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for name, c in curves.items():
    axes[0].plot(c["refusal"], label=name)
    axes[1].plot(c["task"], label=name)
axes[0].set_title("refusal loss, held-out forbidden prompts")
axes[1].set_title("task loss (benign)")
for ax in axes:
    ax.set_xlabel("fine-tuning step")
    ax.legend()
plt.tight_layout()
plt.show()
