# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # LTSV: valuing time-series windows on a time-series foundation model
#
# [Open in Colab](https://colab.research.google.com/github/jaxtrust/jaxtrust/blob/main/notebooks/ltsv.ipynb)
#
# Wu, Li et al., *Lightweight Time Series Data Valuation on Time Series Foundation Models via
# In-Context Finetuning* (2025), value a training window by fine-tuning the foundation model on
# it for one step and measuring how much the loss on a held-out context set drops; overlapping
# windows are then aggregated back to time points and windows (temporal block aggregation).
# This notebook
#
# 1. pretrains (or loads) the in-house TimesFM-style forecaster and checks it against
#    seasonal-naive,
# 2. plants corruptions in a real hourly series and values its windows with LTSV, TracIn and
#    conjugate-gradient influence,
# 3. compares detection AUROC and cost.
#
# `jaxtrust reproduce ltsv` runs the whole study (LOO, LiSSA, KNN-Shapley, Data-OOB, removal
# curves, seeds). Set `JAXTRUST_SMOKE=1` to shrink every step (that is how the test suite runs
# this file; its numbers then mean nothing).

# %%
# %pip install -q jaxtrust statsmodels vega_datasets

# %%
import os
import time

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.metrics import roc_auc_score

from jaxtrust.models.tsfm import forecast
from jaxtrust.valuation import influence_scores, tracin_scores, tsfm_objective
from jaxtrust.valuation.ltsv import aggregate_blocks, ltsv_scores
from jaxtrust.valuation.ltsv.reproduce import PRESETS, _series, _trial
from jaxtrust.zoo.forecaster import evaluate_forecaster, pretrained_forecaster

SMOKE = os.environ.get("JAXTRUST_SMOKE") == "1"
config = PRESETS["smoke" if SMOKE else "quick"]

# %% [markdown]
# ## 1. The forecaster
# Patches of 8 points, a residual-MLP patch embedding, instance normalisation by the first
# observed patch, a causal transformer over patches, point and quantile heads for the next 16
# points, autoregressive decoding for longer horizons.

# %%
fc = pretrained_forecaster(config.pretrain, 0)
print("pretrained" if not fc.from_cache else "loaded", fc.info.get("parameters"), "parameters")
scores = evaluate_forecaster(fc.model, fc.config)
for name, mase in scores["mase"].items():
    print(
        f"{name:15s} MASE {mase:6.3f}   seasonal-naive {scores['seasonal_naive_mase'][name]:6.3f}"
    )

# %%
series = _series(config)
mc = config.pretrain.model
ctx = jnp.asarray(series[None, 1000 : 1000 + mc.context_len])
out = forecast(fc.model, ctx, 2 * mc.output_patch_len)
t = np.arange(mc.context_len + 2 * mc.output_patch_len)
plt.plot(t, series[1000 : 1000 + len(t)], label="series")
plt.plot(t[mc.context_len :], np.asarray(out.mean[0]), label="forecast")
plt.fill_between(t[mc.context_len :], *np.asarray(out.quantiles[0, :, [0, -1]]), alpha=0.3)
plt.legend()
# %% [markdown]
# ## 2. Planted corruptions, three valuers

# %%
length = mc.context_len + mc.output_patch_len
trial = _trial(config, series, length, 0, mc.output_patch_len)
objective = tsfm_objective(fc.model)
train, context = jnp.asarray(trial["train"]), jnp.asarray(trial["context"])
print(trial["labels"].sum(), "of", len(trial["labels"]), "windows overlap a corruption")

results = {}
start = time.perf_counter()
raw = np.asarray(ltsv_scores(objective, train, context, tx=optax.sgd(1e-2), shard=False))
results["ltsv_no_aggregation"] = (raw, time.perf_counter() - start)
agg = aggregate_blocks(raw, trial["starts"], length, trial["series_len"]).sample
results["ltsv"] = (agg, results["ltsv_no_aggregation"][1])
start = time.perf_counter()
results["tracin"] = (np.asarray(tracin_scores(objective, train, context)), None)
results["tracin"] = (results["tracin"][0], time.perf_counter() - start)
start = time.perf_counter()
cg = influence_scores(objective, train, context, damping=0.1, iterations=config.cg_iterations)
results["influence_cg"] = (np.asarray(cg), time.perf_counter() - start)

# %% [markdown]
# ## 3. Detection and cost (low value = suspected corruption)

# %%
for name, (values, seconds) in results.items():
    auc = roc_auc_score(trial["labels"], -values)
    print(f"{name:20s} AUROC {auc:.3f}   {seconds:6.2f} s")
