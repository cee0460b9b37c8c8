# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # MemHunter: did this model memorise my dataset?
#
# [Open in Colab](https://colab.research.google.com/github/jaxtrust/jaxtrust/blob/main/notebooks/memhunter.ipynb)
#
# Wu, Lou, Zheng, Chen, *MemHunter: Automated and Verifiable Memorization Detection at
# Dataset-scale in LLMs* (2024) train a small **memory-inducing prompter** in rounds of
# rejection sampling: it writes prompts, the target continues them, and the prompts whose
# continuations reproduce known training text (ROUGE-L, longest common substring) are kept
# and fine-tuned on. For a suspect dataset, the prompter's prompts give one memorization score
# per text, and a **dataset-level hypothesis test** compares them with a reference set of
# same-distribution texts known to be unseen. This notebook
#
# 1. trains a byte-level target on Python standard-library docstrings with a planted member
#    dataset (duplicated 16x) and a control that never saw it,
# 2. trains the prompter against the target on public text it is known to have seen,
# 3. tests a member dataset and a non-member dataset, on the target and on the control,
# 4. runs the Dataset Inference baseline (Maini et al., 2024) on the same data.
#
# `jaxtrust reproduce memhunter` runs the whole comparison (power vs dataset size and
# duplication, FPR, extraction at equal queries, GCG and the plug-in). Set `JAXTRUST_SMOKE=1`
# to shrink every step (that is how the test suite runs this file; its numbers then mean
# nothing).

# %%
# %pip install -q jaxtrust

# %%
import os

import jax
import matplotlib.pyplot as plt

from jaxtrust.privacy.memhunter import (
    PrompterConfig,
    dataset_inference,
    dataset_test,
    init_prompter,
    memhunter_scores,
    train_prompter,
)
from jaxtrust.privacy.memhunter.world import (
    TOKENIZER,
    TargetSpec,
    WorldConfig,
    build_world,
    encode_split,
    train_target,
    training_pool,
)
from jaxtrust.privacy.mia import lm_features, token_statistics

SMOKE = os.environ.get("JAXTRUST_SMOKE") == "1"

# %% [markdown]
# ## 1. The world: stdlib passages, a planted member dataset, target and control

# %%
world_cfg = WorldConfig(
    background=64 if SMOKE else 400,
    dataset_size=8 if SMOKE else 40,
    duplications=(16,),
    nonmember_pool=8 if SMOKE else 40,
    reference=12 if SMOKE else 80,
)
world = build_world(world_cfg, seed=0)
spec = TargetSpec("llama", 32 if SMOKE else 64, 1 if SMOKE else 2)
steps = 20 if SMOKE else 400
target = train_target(spec, world, steps=steps, seed=0)
control = train_target(spec, world, steps=steps, seed=0, members=False)
print(spec.name, "target loss", target.info["final_loss"], "control", control.info["final_loss"])
print("a member passage:", repr(world.members[16][0]))

# %% [markdown]
# ## 2. The prompter, trained in rounds against the target
#
# It reads a passage's first 32 bytes and writes a prompt; it is trained on background
# passages (public text every model saw), never on the datasets tested below.


# %%
pconfig = PrompterConfig(
    rounds=1 if SMOKE else 2,
    steps_per_round=5 if SMOKE else 60,
    batch_size=16 if SMOKE else 64,
    num_candidates=2 if SMOKE else 4,
    prompt_len=8 if SMOKE else 32,
    continuation_len=16 if SMOKE else 48,
    units="words",
    keep_threshold=0.0 if SMOKE else 0.3,
)
aux = world.background[: 16 if SMOKE else 128]
aux_h, aux_r = encode_split(aux, world_cfg)
prompter0 = init_prompter(
    TOKENIZER,
    aux_h,
    hidden=32 if SMOKE else 64,
    layers=1 if SMOKE else 2,
    steps=10 if SMOKE else 150,
    prompt_len=pconfig.prompt_len,
)
trace = train_prompter(prompter0, target.model, TOKENIZER, TOKENIZER, aux_h, aux_r, pconfig, seed=0)
rounds = trace.rounds
plt.plot(
    [r["round"] for r in rounds], [r["mean_best"] for r in rounds], marker="o", label="best of K"
)
plt.plot(
    [r["round"] for r in rounds],
    [r["mean_greedy"] for r in rounds],
    marker="o",
    label="greedy prompt",
)
plt.xlabel("round")
plt.ylabel("ROUGE-L precision on known members")
plt.legend()
plt.show()

# %% [markdown]
# ## 3. Dataset-level tests: member vs non-member datasets, target vs control


# %%
def scores(model, texts, key):
    h, r = encode_split(texts, world_cfg)
    pc = pconfig
    return memhunter_scores(
        trace.model,
        model,
        TOKENIZER,
        TOKENIZER,
        h,
        r,
        num_prompts=pc.num_candidates,
        key=key,
        prompt_len=pc.prompt_len,
        continuation_len=pc.continuation_len,
        batch_size=pc.batch_size,
        units="words",
    ).precision


key = jax.random.key(0)
for name, model in (("target", target.model), ("control", control.model)):
    ref = scores(model, world.reference, key)
    for label, texts in (("members", world.members[16]), ("non-members", world.nonmembers)):
        out = dataset_test(scores(model, texts, key), ref, alpha=0.05)
        print(
            f"{name:8s} {label:12s} p(Welch)={out.p_welch:.3g} p(MWU)={out.p_mannwhitney:.3g}"
            f" reject={out.reject}"
        )

# %% [markdown]
# ## 4. Baseline: Dataset Inference (MIA features, a learned linear combination, a t-test)


# %%
def features(model, texts):
    return lm_features(token_statistics(model, training_pool(texts, world_cfg)), texts)


for name, model in (("target", target.model), ("control", control.model)):
    ref = features(model, world.reference)
    res = dataset_inference(features(model, world.members[16]), ref, seed=0)
    print(f"{name:8s} members: p={res.test.p:.3g} reject={res.test.reject}")

# %% [markdown]
# The target memorised the 16x-duplicated dataset, so both tests reject on it; the control
# never saw it and the non-member dataset is unseen by both, so there a rejection is a false
# positive (expected 5 % of the time at alpha = 0.05). The reproduction measures those rates
# over hundreds of datasets, plus power as the dataset shrinks and the duplication falls.
