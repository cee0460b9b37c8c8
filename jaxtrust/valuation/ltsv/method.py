r"""LTSV: time-series data valuation by one-step in-context fine-tuning, with temporal block
aggregation.

Per-window value (Wu, Li, Leng, Suo, Lou, Li, Ng, "Lightweight Time Series Data Valuation on
Time Series Foundation Models via In-Context Finetuning", 2025):

.. math:: v(z) = L_{ctx}(\theta_0) - L_{ctx}(U^k(\theta_0, z)),

where :math:`U^k` is ``steps`` optax updates on the single window z and :math:`L_{ctx}` the mean
loss on a held-out context set. To first order, with SGD and step :math:`\eta`,
:math:`v(z) \approx \eta \nabla L_{ctx}^\top \nabla \ell_z` (TracIn with an identity
preconditioner); with Adam the step is sign-normalised instead.

Temporal block aggregation (the paper's figure; the formulas follow TimeInf, Zhang et al., ICLR
2025): the windows are overlapping blocks of one series; a time point's score is the mean of the
scores of the blocks that contain it, and a window's aggregated score is the mean of its points'
scores.

Every fine-tune is a lane of one compiled program: ``scan_optimize`` inside a ``vmap`` over a
chunk of windows, chunks mapped by ``jax.lax.map``; with several devices the windows are sharded
over a 1-D ``NamedSharding`` mesh.
"""

# ruff: noqa: F722
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from jaxtyping import Array, ArrayLike, Float, Int

from jaxtrust.training.inner import scan_optimize
from jaxtrust.training.memo import memoize
from jaxtrust.valuation.objectives import Objective, check_windows

__all__ = ["BlockScores", "aggregate_blocks", "ltsv_scores", "ltsv_scores_loop"]


def _value_fn(loss, tx, steps: int):
    """``value(params, window, context) -> context loss after fine-tuning on the window``."""

    def value(params0, window, context):
        params, _ = scan_optimize(loss, params0, tx, steps, window[None], jnp.ones((1,)))
        return loss(params, context, jnp.ones((context.shape[0],)))

    return value


def ltsv_scores(
    objective: Objective,
    train: Float[ArrayLike, "n length"],
    context: Float[ArrayLike, "m length"],
    *,
    tx: optax.GradientTransformation | None = None,
    steps: int = 1,
    chunk_size: int = 32,
    shard: bool = True,
) -> Float[Array, " n"]:
    """LTSV values of every training window (vmapped over chunks; see the module docstring).

    Args:
      objective: the loss and the pretrained parameters.
      train: ``[n, length]`` windows to value.
      context: ``[m, length]`` held-out context windows (LTSV's context set).
      tx: the one-sample optimiser (default ``optax.sgd(1e-2)``).
      steps: updates on each window (LTSV: one).
      chunk_size: windows per vmapped chunk (bounds memory).
      shard: with several devices, shard the windows over them (``NamedSharding``).

    Returns:
      ``[n]`` values (positive: fine-tuning on the window lowers the context loss).

    Example::

      values = ltsv_scores(tsfm_objective(model), train_windows, context_windows,
                           tx=optax.sgd(1e-2))
    """
    train = check_windows(train, "train")
    context = check_windows(context, "context", train.shape[1])
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    tx = optax.sgd(1e-2) if tx is None else tx
    loss, params = objective.loss, objective.params
    base = loss(params, context, jnp.ones((context.shape[0],)))
    value = _value_fn(loss, tx, steps)
    n = train.shape[0]
    devices = jax.devices()
    if shard and len(devices) > 1 and n % len(devices) == 0:
        mesh = jax.sharding.Mesh(np.array(devices), ("windows",))
        sharding = NamedSharding(mesh, PartitionSpec("windows"))
        replicated = NamedSharding(mesh, PartitionSpec())

        def build_sharded():
            return jax.jit(
                jax.vmap(value, in_axes=(None, 0, None)),
                in_shardings=(replicated, sharding, replicated),
                out_shardings=sharding,
            )

        run = memoize("ltsv.sharded", (loss, tx, steps, len(devices)), build_sharded)
        return base - run(params, jax.device_put(train, sharding), context)

    def build():
        return jax.jit(
            lambda p, ws, c: jax.lax.map(lambda w: value(p, w, c), ws, batch_size=chunk_size)
        )

    run = memoize("ltsv.scores", (loss, tx, steps, chunk_size), build)
    return base - run(params, train, context)


def ltsv_scores_loop(
    objective: Objective,
    train: Float[ArrayLike, "n length"],
    context: Float[ArrayLike, "m length"],
    *,
    tx: optax.GradientTransformation | None = None,
    steps: int = 1,
) -> Float[Array, " n"]:
    """The same values as :func:`ltsv_scores`, one window at a time (the reference loop)."""
    train = check_windows(train, "train")
    context = check_windows(context, "context", train.shape[1])
    tx = optax.sgd(1e-2) if tx is None else tx
    base = objective.loss(objective.params, context, jnp.ones((context.shape[0],)))
    value = jax.jit(_value_fn(objective.loss, tx, steps))
    return jnp.stack([base - value(objective.params, w, context) for w in train])


class BlockScores(NamedTuple):
    """Aggregated scores.

    Attributes:
      point: ``[series_len]`` per time point (0 where no block covers it).
      coverage: ``[series_len]`` number of blocks covering each point.
      sample: ``[n]`` per block, the mean of its points' scores.
    """

    point: Float[np.ndarray, " time"]
    coverage: Int[np.ndarray, " time"]
    sample: Float[np.ndarray, " n"]


def aggregate_blocks(
    scores: Float[np.ndarray, " n"],
    starts: Int[np.ndarray, " n"],
    block_len: int,
    series_len: int,
) -> BlockScores:
    r"""Temporal block aggregation of overlapping windows.

    .. math:: p_t = \frac{1}{|S_t|}\sum_{i \in S_t} v_i, \quad
       S_t = \{i : s_i \le t < s_i + L\}, \qquad \bar v_i = \frac1L \sum_{t=s_i}^{s_i+L-1} p_t.

    Args:
      scores: ``[n]`` block values.
      starts: ``[n]`` start index of each block in the series.
      block_len: L.
      series_len: length of the series.

    Returns:
      :class:`BlockScores`.

    Example:
      >>> out = aggregate_blocks(np.array([1.0, 3.0]), np.array([0, 1]), 2, 3)
      >>> out.point.tolist(), out.sample.tolist()
      ([1.0, 2.0, 3.0], [1.5, 2.5])
    """
    scores = np.asarray(scores, np.float64)
    starts = np.asarray(starts, np.int64)
    if scores.ndim != 1 or starts.shape != scores.shape:
        raise ValueError(
            f"scores and starts must be [n] of one length, got {scores.shape}, {starts.shape}"
        )
    if not isinstance(block_len, int | np.integer) or block_len < 1:
        raise ValueError(f"block_len must be a positive int, got {block_len!r}")
    if starts.size and (starts.min() < 0 or starts.max() + block_len > series_len):
        raise ValueError(
            f"blocks [start, start + {block_len}) must lie in the series of {series_len} points"
        )
    total = np.zeros(series_len)
    coverage = np.zeros(series_len, np.int64)
    for s, v in zip(starts, scores, strict=True):
        total[s : s + block_len] += v
        coverage[s : s + block_len] += 1
    point = np.where(coverage > 0, total / np.maximum(coverage, 1), 0.0)
    sample = np.array([point[s : s + block_len].mean() for s in starts])
    return BlockScores(point, coverage, sample)
