r"""Exact leave-one-out of fine-tuning, and remove-high / remove-low curves.

Fine-tuning here is ``steps`` full-batch updates of an optax transformation on the weighted
training loss (:func:`jaxtrust.training.scan_optimize`), deterministic, so that
:math:`\theta_{D}` and :math:`\theta_{D \setminus i}` differ only by window i (weight 0).
LOO value (positive: helpful, as every valuer here):

.. math:: v_i = L_{ctx}(\theta_{D\setminus i}) - L_{ctx}(\theta_D).

Every leave-one-out fine-tune is one ``vmap``-ped lane of a single compiled program.

Reference: Cook, "Detection of Influential Observation in Linear Regression", Technometrics 1977
(leave-one-out); Koh & Liang, ICML 2017 (LOO as the ground truth of influence).
"""

# ruff: noqa: F722
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float

from jaxtrust.training.inner import scan_optimize
from jaxtrust.training.memo import memoize
from jaxtrust.valuation.objectives import Objective, check_windows

__all__ = ["RemovalCurve", "finetuned_losses", "loo_scores", "removal_curve"]


def finetuned_losses(
    objective: Objective,
    train: Float[ArrayLike, "n length"],
    weights: Float[ArrayLike, "k n"],
    evaluate: Float[ArrayLike, "m length"],
    *,
    tx: optax.GradientTransformation,
    steps: int,
    chunk_size: int = 8,
) -> Float[Array, " k"]:
    """Fine-tune once per weight row (full batch, ``steps`` updates) and return each eval loss.

    Args:
      objective: the loss and the starting parameters.
      train: ``[n, length]`` training windows.
      weights: ``[k, n]`` per-window weights of each fine-tune (0 drops a window).
      evaluate: ``[m, length]`` windows the fine-tuned models are scored on (unweighted mean).
      tx: the optax transformation (fresh state per fine-tune).
      steps: updates per fine-tune.
      chunk_size: fine-tunes per vmapped chunk.

    Returns:
      ``[k]`` losses on ``evaluate``.
    """
    loss = objective.loss

    def build():
        def run(params0, train, ws, evaluate):
            ones = jnp.ones((evaluate.shape[0],))

            def one(w):
                params, _ = scan_optimize(loss, params0, tx, steps, train, w)
                return loss(params, evaluate, ones)

            return jax.lax.map(one, ws, batch_size=chunk_size)

        return jax.jit(run)

    run = memoize("valuation.finetuned_losses", (loss, tx, steps, chunk_size), build)
    return run(
        objective.params,
        jnp.asarray(train, jnp.float32),
        jnp.asarray(weights, jnp.float32),
        jnp.asarray(evaluate, jnp.float32),
    )


def loo_scores(
    objective: Objective,
    train: Float[ArrayLike, "n length"],
    context: Float[ArrayLike, "m length"],
    subset: Sequence[int] | np.ndarray,
    *,
    tx: optax.GradientTransformation,
    steps: int,
    chunk_size: int = 8,
) -> Float[Array, " k"]:
    """Exact fine-tuning leave-one-out values of the windows ``subset`` (see the module).

    Args:
      objective: the loss and pretrained parameters.
      train: ``[n, length]`` the fine-tuning set D.
      context: ``[m, length]`` held-out context windows.
      subset: indices into ``train`` to value.
      tx / steps: the fine-tuning recipe.
      chunk_size: fine-tunes per vmapped chunk.

    Returns:
      ``[len(subset)]`` values (positive: removing the window raises the context loss).

    Example::

      values = loo_scores(objective, train, context, range(20), tx=optax.adam(1e-3), steps=10)
    """
    train = check_windows(train, "train")
    context = check_windows(context, "context", train.shape[1])
    idx = np.asarray(subset, dtype=np.int64).reshape(-1)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= train.shape[0]:
        raise ValueError(f"subset must be non-empty indices in [0, {train.shape[0]}), got {idx}")
    weights = np.ones((idx.size + 1, train.shape[0]), np.float32)
    weights[np.arange(1, idx.size + 1), idx] = 0.0
    losses = finetuned_losses(
        objective, train, weights, context, tx=tx, steps=steps, chunk_size=chunk_size
    )
    return losses[1:] - losses[0]


class RemovalCurve(NamedTuple):
    """Loss on the evaluation windows after fine-tuning without a fraction of the data.

    Attributes:
      fractions: removed fractions.
      remove_high: loss after removing the highest-valued windows, per fraction.
      remove_low: loss after removing the lowest-valued windows, per fraction.
    """

    fractions: tuple[float, ...]
    remove_high: tuple[float, ...]
    remove_low: tuple[float, ...]


def removal_curve(
    objective: Objective,
    train: Float[ArrayLike, "n length"],
    values: Float[ArrayLike, " n"],
    evaluate: Float[ArrayLike, "m length"],
    fractions: Sequence[float],
    *,
    tx: optax.GradientTransformation,
    steps: int,
) -> RemovalCurve:
    """Fine-tune on ``train`` minus the top (or bottom) ``fraction`` by ``values``; score.

    A good valuer's remove-high curve rises (helpful data gone) and its remove-low curve falls
    (harmful data gone) compared with each other.

    Returns:
      :class:`RemovalCurve`.
    """
    train = check_windows(train, "train")
    values = np.asarray(values)
    if values.shape != (train.shape[0],):
        raise ValueError(f"values must have shape ({train.shape[0]},), got {values.shape}")
    order = np.argsort(-values, kind="stable")  # highest first
    n = train.shape[0]
    rows = []
    for high in (True, False):
        for f in fractions:
            if not 0.0 <= f < 1.0:
                raise ValueError(f"fractions must be in [0, 1), got {f}")
            k = int(round(f * n))
            w = np.ones(n, np.float32)
            if k:
                w[order[:k] if high else order[n - k :]] = 0.0
            rows.append(w)
    losses = np.asarray(
        finetuned_losses(objective, train, np.stack(rows), evaluate, tx=tx, steps=steps)
    )
    m = len(fractions)
    return RemovalCurve(
        tuple(float(f) for f in fractions),
        tuple(float(v) for v in losses[:m]),
        tuple(float(v) for v in losses[m:]),
    )
