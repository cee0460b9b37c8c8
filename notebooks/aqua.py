# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # AQUA: watermarking image knowledge in a multimodal RAG service
#
# [Open in Colab](https://colab.research.google.com/github/jaxtrust/jaxtrust/blob/main/notebooks/aqua.ipynb)
#
# Chen, Lou, Wang, *Safeguarding Multimodal Knowledge Copyright in the RAG-as-a-Service
# Environment* (ICLR 2026). A data owner slips a few synthetic images into its contribution to
# a shared image knowledge base. Later it sends secret text probes to a suspect service that
# only returns text; if the answers reveal what only the watermark images show, a binomial test
# against the clean-service success rate says the service uses the owner's images. This notebook
#
# 1. pretrains a small retriever (two towers, CLIP loss) and generator (ViT, projector, causal
#    LM) on a generated world of shape scenes and name cards,
# 2. builds a service over a typical knowledge base,
# 3. makes AQUA's acronym card and spatial-relation watermarks and the naive canary from a key,
# 4. inserts them, probes the service and runs the test against a calibrated clean rate.
#
# `jaxtrust reproduce aqua` runs the whole study (FPR over many clean services and keys, the
# adversarial-image baseline, robustness, stealth). Set `JAXTRUST_SMOKE=1` to shrink every step
# (that is how the test suite runs this file; its numbers then mean nothing).

# %%
# %pip install -q jaxtrust

# %%
import os

import jax
import matplotlib.pyplot as plt
import numpy as np

from jaxtrust.multimodal.aqua.audit import audit, calibrate, insert_watermarks, probe
from jaxtrust.multimodal.aqua.testbed import (
    SubstrateConfig,
    build_substrate,
    knowledge_base,
    ordinary_queries,
    subset_system,
    substrate_metrics,
)
from jaxtrust.multimodal.aqua.watermarks import acronym_watermark, naive_canary, spatial_watermark
from jaxtrust.multimodal.world import (
    CARD_TEMPLATES,
    RELATION_TEMPLATES,
    SceneWorld,
    SceneWorldConfig,
)

SMOKE = os.environ.get("JAXTRUST_SMOKE") == "1"
if SMOKE:
    world = SceneWorld(SceneWorldConfig(image_size=32), seed=0)
    config = SubstrateConfig(
        patch=8,
        vit_dim=32,
        lm_dim=32,
        embed_dim=32,
        pretrain_items=60,
        retriever_steps=3,
        retriever_batch=16,
        vlm_steps=3,
        vlm_batch=16,
        questions_per_item=2,
        k=2,
    )
    kb_items, kb_size, n_keys = 40, 30, 2
else:
    world = SceneWorld(SceneWorldConfig(), seed=0)
    config = SubstrateConfig()
    kb_items, kb_size, n_keys = 400, 300, 20

# %% [markdown]
# ## The substrate
# The retriever learns to match each image with its caption and the questions one can ask
# about it; the generator keeps the retriever's image tower frozen (as LLaVA keeps CLIP's) and
# learns to answer from the top-k images.

# %%
substrate = build_substrate(world, config, seed=0, log=print)
kb = knowledge_base(world, substrate, n=kb_items, seed=1)
reference = subset_system(kb, np.arange(kb_size))
service = subset_system(kb, np.arange(kb_items - kb_size, kb_items))
print(substrate_metrics(reference, ordinary_queries(world, kb.items[:kb_size], n=64, seed=2)))

# %% [markdown]
# ## Watermarks from a key
# The same key always gives the same image, probes and answer. The acronym card's name is made
# up (never a real person); the spatial scene's anchor object never occurs in the base; the
# naive canary is an ordinary scene of objects the base already holds.

# %%
size = world.config.image_size
makers = {
    "acronym": lambda k: acronym_watermark(
        k,
        names_by_initial=world.names_by_initial,
        templates=CARD_TEMPLATES,
        exclude=sorted(kb.acronyms),
        size=size,
    ),
    "spatial": lambda k: spatial_watermark(
        k, base_objects=kb.objects, templates=RELATION_TEMPLATES, size=size
    ),
    "naive": lambda k: naive_canary(
        k, base_objects=kb.objects, templates=RELATION_TEMPLATES, size=size
    ),
}
fig, axes = plt.subplots(1, 3, figsize=(7, 2.6))
for ax, (kind, make) in zip(axes, makers.items(), strict=True):
    wm = make(jax.random.key(42))
    ax.imshow(wm.image)
    ax.set_title(f"{kind}: {wm.answer}", fontsize=8)
    ax.axis("off")
    print(kind, "|", wm.probes[0], "->", wm.answer)
plt.show()

# %% [markdown]
# ## Audit
# The clean rate p0 is the Clopper-Pearson bound of probe successes of never-inserted keys on a
# reference clean service; the suspect is tested with and without the owner's watermarks.

# %%
for kind, make in makers.items():
    p0 = calibrate(reference, [make(jax.random.key(1000 + i)) for i in range(n_keys)])
    owned = [make(jax.random.key(i)) for i in range(3)]
    marked, ids = insert_watermarks(service, owned)
    used = audit(probe(marked, owned, watermark_ids=ids), p0=p0)
    clean = audit(probe(service, owned), p0=p0)
    print(
        f"{kind:8s} p0 {p0:.3f} | watermarked: {used.successes}/{used.trials}, "
        f"p {used.p_value:.2g} | clean: {clean.successes}/{clean.trials}, p {clean.p_value:.2g}"
    )
