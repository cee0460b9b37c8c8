# ruff: noqa: F722
r"""The likelihood-ratio attack (LiRA) with shadow models trained as one vmapped batch.

Carlini, Chien, Nasr, Song, Terzis, Tramèr, *Membership Inference Attacks From First
Principles*, IEEE S&P 2022. For each candidate sample :math:`(x, y)` and the logit-scaled
confidence :math:`\phi = \log\frac{p_y}{1-p_y}` (:func:`~jaxtrust.privacy.mia.scores.
logit_confidence`), shadow models trained with (IN) and without (OUT) the sample give Gaussians
:math:`\mathcal N(\mu_{in}, \sigma_{in}^2)` and :math:`\mathcal N(\mu_{out}, \sigma_{out}^2)`;
the target model's :math:`\phi_t` is scored by

* **online**: :math:`\Lambda = \log \mathcal N(\phi_t; \mu_{in}, \sigma_{in}^2) - \log
  \mathcal N(\phi_t; \mu_{out}, \sigma_{out}^2)`;
* **offline** (OUT models only, one-sided test): :math:`\Lambda = -\log\big(1 -
  \Phi((\phi_t - \mu_{out}) / \sigma_{out})\big)`.

With few shadows the per-sample variances are noisy; ``variance="global"`` (the paper's
fixed-variance variant, advised below 64 shadows) uses one pooled residual standard deviation
per side, :math:`\sigma^2 = \operatorname{mean}_{i,k}(\phi_{ik} - \mu_i)^2`. Query augmentations
(the paper's flips and shifts) are not used.

Shadow training (:func:`train_shadow_models`): the K models' train states are stacked along a
leading axis and :func:`jaxtrust.training.make_train_step`'s step is ``jax.vmap``-ed over it,
``steps_per_call`` steps at a time inside one ``lax.scan``; model ``k`` sees shuffled epochs
(:func:`jaxtrust.training.epoch_batches`) of its own IN rows. With a ``mesh``, the model axis
is split over the mesh's ``data`` axis with ``NamedSharding`` (K divisible by its size): each
device trains its own models, no collectives.

Example:
  >>> import numpy as np
  >>> masks = balanced_in_masks(4, 6, seed=0)
  >>> masks.sum(axis=0).tolist()
  [2, 2, 2, 2, 2, 2]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Bool, Float, Int

from jaxtrust.privacy.mia.metrics import ROCMetrics, roc_metrics
from jaxtrust.privacy.mia.scores import logit_confidence
from jaxtrust.training.batches import epoch_batches, pool_size
from jaxtrust.training.memo import memoize
from jaxtrust.training.step import TrainState, make_train_step

__all__ = [
    "ShadowModels",
    "balanced_in_masks",
    "lira_evaluate",
    "lira_leave_one_out",
    "lira_scores",
    "stacked_logits",
    "train_shadow_models",
]


def balanced_in_masks(num_models: int, n: int, *, seed: int) -> Bool[np.ndarray, "k n"]:
    """IN/OUT assignment where every sample is IN for exactly half of the models.

    Args:
      num_models: K, an even number >= 2.
      n: number of candidate samples.
      seed: host seed.

    Returns:
      ``[K, n]`` bool, column sums all ``K / 2``.
    """
    if not isinstance(num_models, int) or num_models < 2 or num_models % 2:
        raise ValueError(f"num_models must be an even int >= 2, got {num_models!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    u = np.random.default_rng(seed).uniform(size=(num_models, n))
    ranks = np.argsort(np.argsort(u, axis=0), axis=0)
    return ranks < num_models // 2


class ShadowModels(NamedTuple):
    """K models trained as one batch.

    Attributes:
      graphdef: the shared model graph.
      params: ``nnx.State`` of parameters with a leading K axis.
      rest: ``nnx.State`` of the other variables, leading K axis.
      in_masks: ``[K, n]`` bool, which pool rows each model trained on.
      losses: ``[steps, K]`` training losses.
      seconds: wall time of the training (compilation included).
    """

    graphdef: nnx.GraphDef
    params: Any
    rest: Any
    in_masks: np.ndarray
    losses: np.ndarray
    seconds: float

    @property
    def num_models(self) -> int:
        return int(self.in_masks.shape[0])

    def model(self, k: int) -> nnx.Module:
        """Shadow model ``k`` as an NNX module."""
        take = lambda t: jax.tree.map(lambda a: a[k], t)  # noqa: E731
        return nnx.merge(self.graphdef, take(self.params), take(self.rest))


def _stack_init(init_fn, keys):
    # Eager inits stacked on the host: compiling a vmapped init costs more than K small inits.
    parts = [nnx.split(init_fn(key), nnx.Param, ...) for key in keys]
    graphdef = parts[0][0]
    stack = lambda *xs: jnp.stack(xs)  # noqa: E731
    params = jax.tree.map(stack, *[p[1] for p in parts])
    rest = jax.tree.map(stack, *[p[2] for p in parts])
    return graphdef, params, rest


def _chunk_program(graphdef, loss_fn, tx, mesh, key):
    def build():
        step = make_train_step(graphdef, loss_fn, tx, donate=False)

        def run(state: TrainState, idx, pool):
            def body(s, i):
                batch = jax.tree.map(lambda a: a[i], pool)
                s, metrics = jax.vmap(step)(s, batch)
                return s, metrics["loss"]

            return jax.lax.scan(body, state, idx)

        if mesh is None:
            return jax.jit(run, donate_argnums=(0,))
        models = NamedSharding(mesh, PartitionSpec("data"))
        per_step = NamedSharding(mesh, PartitionSpec(None, "data"))
        replicated = NamedSharding(mesh, PartitionSpec())
        return jax.jit(
            run,
            in_shardings=(models, per_step, replicated),
            out_shardings=(models, per_step),
            donate_argnums=(0,),
        )

    if key is None:
        return build()
    mesh_key = None if mesh is None else (tuple(mesh.shape.items()), tuple(mesh.devices.flat))
    return memoize("privacy.mia.shadows", (graphdef, key, mesh_key), build)


def train_shadow_models(
    init_fn: Callable[[jax.Array], nnx.Module],
    pool: Mapping[str, Any],
    in_masks: Bool[np.ndarray, "k n"],
    *,
    loss_fn: Callable,
    tx: optax.GradientTransformation,
    steps: int,
    batch_size: int,
    seed: int,
    mesh: Mesh | None = None,
    steps_per_call: int = 64,
    step_key: Hashable | None = None,
) -> ShadowModels:
    """Train K models, model ``k`` on the pool rows where ``in_masks[k]``, as one vmapped batch.

    Args:
      init_fn: ``init_fn(key) -> nnx.Module``, a fresh model from a raw PRNG key (traceable).
      pool: arrays with a shared first axis of n rows (e.g. ``{"x", "y"}``); moved to the
        device once and gathered there.
      in_masks: ``[K, n]`` bool, e.g. :func:`balanced_in_masks`; every model needs >= 1 row.
      loss_fn: ``loss_fn(model, batch, key) -> (loss, aux)`` as in
        :func:`jaxtrust.training.make_train_step`.
      tx: the optax transformation (each model gets its own state).
      steps: optimiser steps per model.
      batch_size: rows per step per model.
      seed: seeds the inits, the per-step keys and the epoch permutations.
      mesh: optional mesh from :func:`jaxtrust.training.make_mesh`; models are split over its
        ``data`` axis (K must be divisible by its size).
      steps_per_call: steps per compiled ``lax.scan`` call.
      step_key: hashable name of ``(loss_fn, tx)``; with it the compiled program is memoised.

    Returns:
      A :class:`ShadowModels`.
    """
    masks = np.asarray(in_masks)
    if masks.dtype != bool or masks.ndim != 2:
        raise TypeError(f"in_masks must be a [K, n] bool array, got {masks.dtype} {masks.shape}")
    n = pool_size(pool)
    k, width = masks.shape
    if width != n:
        raise ValueError(f"in_masks has {width} columns but the pool has {n} rows")
    empty = np.flatnonzero(masks.sum(axis=1) == 0)
    if empty.size:
        raise ValueError(f"shadow models {empty.tolist()} have no IN rows")
    for name, value in (
        ("steps", steps),
        ("batch_size", batch_size),
        ("steps_per_call", steps_per_call),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if mesh is not None:
        size = int(mesh.shape["data"])
        if k % size:
            raise ValueError(
                f"number of shadow models {k} must be divisible by mesh 'data' size {size}"
            )
    start = time.perf_counter()
    keys = jax.random.split(jax.random.PRNGKey(seed), k)
    graphdef, params, rest = _stack_init(init_fn, keys)
    state = TrainState(
        params=params,
        rest=rest,
        opt_state=jax.vmap(tx.init)(params),
        step=jnp.zeros((k,), jnp.int32),
        rng=jax.random.split(jax.random.PRNGKey(seed + 1), k),
    )
    device_pool = {key: jnp.asarray(v) for key, v in pool.items()}
    if mesh is not None:
        state = jax.device_put(state, NamedSharding(mesh, PartitionSpec("data")))
        device_pool = jax.device_put(device_pool, NamedSharding(mesh, PartitionSpec()))
    program = _chunk_program(graphdef, loss_fn, tx, mesh, step_key)
    feeds = [
        epoch_batches({"i": np.flatnonzero(masks[j])}, batch_size, seed=[seed, j]) for j in range(k)
    ]
    losses = []
    for t0 in range(0, steps, steps_per_call):
        t1 = min(steps, t0 + steps_per_call)
        idx = np.stack([np.stack([feed(t)["i"] for feed in feeds]) for t in range(t0, t1)]).astype(
            np.int32
        )
        state, loss = program(state, jnp.asarray(idx), device_pool)
        losses.append(np.asarray(loss))
    jax.block_until_ready(state.params)
    return ShadowModels(
        graphdef,
        state.params,
        state.rest,
        masks,
        np.concatenate(losses, axis=0),
        time.perf_counter() - start,
    )


def stacked_logits(
    shadows: ShadowModels,
    x: Float[np.ndarray, "n ..."],
    *,
    batch_size: int = 512,
    apply: Callable[[nnx.Module, jax.Array], jax.Array] | None = None,
) -> Float[np.ndarray, "k n c"]:
    """Logits of every shadow model on every row of ``x`` (vmapped over models).

    Returns:
      ``[K, n, classes]`` float32 NumPy logits.
    """
    graphdef = shadows.graphdef

    def build():
        def run(params, rest, xb):
            def one(p, r):
                m = nnx.merge(graphdef, p, r)
                return (m(xb) if apply is None else apply(m, xb)).astype(jnp.float32)

            return jax.vmap(one)(params, rest)

        return jax.jit(run)

    fn = memoize("privacy.mia.stacked_logits", (graphdef, apply), build)
    x = np.asarray(x)
    n = x.shape[0]
    outs = []
    for s in range(0, n, batch_size):
        chunk = x[s : s + batch_size]
        pad = batch_size - chunk.shape[0]
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        out = np.asarray(fn(shadows.params, shadows.rest, jnp.asarray(chunk)))
        outs.append(out[:, : out.shape[1] - pad] if pad else out)
    return np.concatenate(outs, axis=1)


def _gauss_fit(stats: np.ndarray, mask: np.ndarray, variance: str, side: str):
    count = mask.sum(axis=0)
    if np.any(count == 0):
        bad = np.flatnonzero(count == 0)
        raise ValueError(
            f"{bad.size} samples have no {side} shadow model (first {bad[:5].tolist()}); "
            f"use more shadow models or balanced_in_masks"
        )
    mean = np.where(mask, stats, 0.0).sum(axis=0) / count
    resid2 = np.where(mask, (stats - mean) ** 2, 0.0)
    if variance == "global":
        std = np.full(mean.shape, np.sqrt(resid2.sum() / mask.sum()))
    else:
        std = np.sqrt(resid2.sum(axis=0) / count)
    return mean, np.maximum(std, 1e-6)


def lira_scores(
    target_stats: Float[np.ndarray, " n"],
    shadow_stats: Float[np.ndarray, "k n"],
    shadow_in: Bool[np.ndarray, "k n"],
    *,
    online: bool = True,
    variance: str = "global",
) -> Float[np.ndarray, " n"]:
    """LiRA membership scores of a target model's statistics (larger = member).

    Args:
      target_stats: ``[n]`` :math:`\\phi` of the target model on the candidates.
      shadow_stats: ``[K, n]`` :math:`\\phi` of the shadow models on the same candidates.
      shadow_in: ``[K, n]`` whether each candidate was in each shadow's training set.
      online: likelihood ratio of IN vs OUT (else the offline one-sided OUT test).
      variance: ``"global"`` (pooled, for few shadows) or ``"per_example"``.

    Returns:
      ``[n]`` float64 scores.

    Raises:
      ValueError: shape mismatch, unknown ``variance``, a candidate without OUT (or, online,
        IN) shadows.
    """
    t = np.asarray(target_stats, np.float64)
    s = np.asarray(shadow_stats, np.float64)
    m = np.asarray(shadow_in)
    if m.dtype != bool:
        raise TypeError(f"shadow_in must be bool, got {m.dtype}")
    if s.ndim != 2 or m.shape != s.shape or t.shape != s.shape[1:]:
        raise ValueError(
            f"expected target_stats [n], shadow_stats and shadow_in [K, n]; got {t.shape}, "
            f"{s.shape}, {m.shape}"
        )
    if variance not in ("global", "per_example"):
        raise ValueError(f"variance must be 'global' or 'per_example', got {variance!r}")
    mu_out, sd_out = _gauss_fit(s, ~m, variance, "OUT")
    if not online:
        return -scipy.stats.norm.logsf(t, mu_out, sd_out)
    mu_in, sd_in = _gauss_fit(s, m, variance, "IN")
    return scipy.stats.norm.logpdf(t, mu_in, sd_in) - scipy.stats.norm.logpdf(t, mu_out, sd_out)


def lira_leave_one_out(
    stats: Float[np.ndarray, "k n"],
    in_masks: Bool[np.ndarray, "k n"],
    *,
    online: bool = True,
    variance: str = "global",
) -> Float[np.ndarray, "k n"]:
    """Each model in turn is the target and the other K - 1 its shadows.

    Returns:
      ``[K, n]`` scores; row ``k`` attacks model ``k`` (its truth is ``in_masks[k]``).
    """
    s = np.asarray(stats, np.float64)
    m = np.asarray(in_masks)
    k = s.shape[0]
    if k < 3:
        raise ValueError(f"leave-one-out needs >= 3 models, got {k}")
    rows = []
    for j in range(k):
        others = np.arange(k) != j
        rows.append(lira_scores(s[j], s[others], m[others], online=online, variance=variance))
    return np.stack(rows)


def lira_evaluate(
    shadows: ShadowModels,
    x: Float[np.ndarray, "n ..."],
    y: Int[np.ndarray, " n"],
    *,
    online: bool = True,
    variance: str = "global",
    max_targets: int | None = None,
) -> ROCMetrics:
    """Leave-one-out LiRA over the shadow population, ROC pooled over targets.

    Args:
      shadows: from :func:`train_shadow_models` on the pool ``(x, y)``.
      x, y: the pool (rows in the order of ``shadows.in_masks``' columns).
      online, variance: see :func:`lira_scores`.
      max_targets: attack only the first this many models (default all).

    Returns:
      :class:`~jaxtrust.privacy.mia.metrics.ROCMetrics` over ``targets x n`` decisions.
    """
    logits = stacked_logits(shadows, x)
    stats = np.asarray(jax.vmap(logit_confidence, in_axes=(0, None))(logits, jnp.asarray(y)))
    scores = lira_leave_one_out(stats, shadows.in_masks, online=online, variance=variance)
    k = scores.shape[0] if max_targets is None else min(max_targets, scores.shape[0])
    return roc_metrics(scores[:k].ravel(), shadows.in_masks[:k].ravel())
