# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # SHAPE: holistic preference triplets and DPO for a vision-language model
#
# [Open in Colab](https://colab.research.google.com/github/jaxtrust/jaxtrust/blob/main/notebooks/shape.ipynb)
#
# Chen et al., *SHAPE: Self-Improved Visual Preference Alignment by Iteratively Generating
# Holistic Winner* (2025), turn supervised image-text pairs into preference triplets without
# any human or GPT labels: the model answers several augmented views of the image, a
# summariser merges the answers into a more holistic *winner*, and the original (terse) text is
# the *loser*; DPO on the triplets, repeated for a few rounds with the previous round as the
# reference. This notebook
#
# 1. builds a scene world with terse captions and a co-occurrence bias, and a small VLM on it,
# 2. looks at augmented views and the summariser's merge,
# 3. runs one SHAPE round of DPO (`jaxtrust.training.dpo_finetune`),
# 4. measures POPE-style yes/no probes and CHAIR-style caption hallucination before and after.
#
# `jaxtrust reproduce shape` runs the whole comparison (SFT, SFT on winners, SeVa pairs,
# shuffled losers, SHAPE; several seeds). Set `JAXTRUST_SMOKE=1` to shrink every step (that is
# how the test suite runs this file; its numbers then mean nothing).

# %%
# %pip install -q jaxtrust

# %%
import os

import matplotlib.pyplot as plt

from jaxtrust.multimodal.shape import (
    augment_views,
    build_triplets,
    chair,
    pope_probes,
    pope_scores,
    preference_data,
    vlm_logits,
)
from jaxtrust.multimodal.shape.reproduce import (
    DESCRIBE,
    DETAIL,
    EXIST,
    ShapeExperimentConfig,
    build_vlm,
    sft_data,
)
from jaxtrust.multimodal.shape.world import BiasedSceneWorld
from jaxtrust.multimodal.vlm import answer, image_features, vlm_loss_fn
from jaxtrust.training import adamw_cosine, dpo_finetune, finetune

SMOKE = os.environ.get("JAXTRUST_SMOKE") == "1"
config = ShapeExperimentConfig(
    train_scenes=48 if SMOKE else 600, base_steps=8 if SMOKE else 1200, width=32 if SMOKE else 64
)

# %% [markdown]
# ## The world and the base model
# Training scenes carry a terse caption (one object), a full caption for 30 % of them, and
# yes/no object questions; a shape's fixed partner joins it 90 % of the time. The base VLM is
# trained on that end to end.

# %%
world = BiasedSceneWorld(config.world, seed=0)
scenes = world.scenes(config.train_scenes, seed=0, biased=True)
images = world.images(scenes, seed=0)
pool, terse = sft_data(world, scenes, images, "images", config, seed=0)
base = finetune(
    build_vlm(world, config, 0),
    pool,
    adamw_cosine(config.base_learning_rate, config.base_steps, warmup_steps=50),
    steps=config.base_steps,
    batch_size=config.batch_size,
    seed=0,
    loss_fn=vlm_loss_fn,
).model
print("partners:", world.partner)

# %% [markdown]
# ## Views and the holistic winner
# No flips (they would swap left and right); the summariser keeps objects at least two views
# agree on, plus the terse caption's own objects.

# %%
n = 8 if SMOKE else 64
views = augment_views(images[:4], views=4, seed=0)
fig, axes = plt.subplots(4, 5, figsize=(6, 5))
for i in range(4):
    for j, img in enumerate([images[i], *views[i]]):
        axes[i, j].imshow(img)
        axes[i, j].axis("off")
triplets = build_triplets(
    base,
    world.tokenizer,
    images[:n],
    terse[:n],
    colors=world.colors,
    shapes=world.shapes,
    seed=0,
    views=4,
    view_prompt=DETAIL,
)
for i in range(3):
    print("views:", triplets.view_answers[i])
    print("  winner:", triplets.winners[i], "| loser:", triplets.losers[i])

# %% [markdown]
# ## One SHAPE round of DPO and the hallucination probes
# The vision tower stays frozen (features computed once); the reference log-probabilities are
# computed once by `dpo_finetune` from the starting model.

# %%
feats = image_features(base, images[:n])[:, None]
prefs = preference_data(world.tokenizer, triplets, seq_len=config.seq_len, features=feats)
out = dpo_finetune(
    base,
    prefs,
    adamw_cosine(4e-4, 10 if SMOKE else 80),
    steps=10 if SMOKE else 80,
    batch_size=min(32, n),
    seed=0,
    beta=0.1,
    logits_fn=vlm_logits,
)
print(
    "reward accuracy, margin:", out.history[-1]["reward_accuracy"], out.history[-1]["reward_margin"]
)

test = world.scenes(16 if SMOKE else 100, seed=1, biased=False)
tfeats = image_features(base, world.images(test, seed=1))
present = [world.present(s) for s in test]
freq, co = world.statistics(scenes)
probes = pope_probes(present, shapes=world.shapes, frequency=freq, cooccurrence=co, seed=0)
for name, model in (("base", base), ("shape", out.model)):
    f1 = {}
    for split, p in probes.items():
        said = answer(
            model, world.tokenizer, [EXIST.format(s) for s in p.shapes],
            features=tfeats[p.rows][:, None], max_new_tokens=1,
        )  # fmt: skip
        f1[split] = round(pope_scores([a.startswith("yes") for a in said], p.labels)["f1"], 3)
    caps = answer(
        model, world.tokenizer, [DESCRIBE] * len(test), features=tfeats[:, None], max_new_tokens=20
    )
    print(name, "POPE F1", f1, "CHAIR", chair(caps, present, shapes=world.shapes))
