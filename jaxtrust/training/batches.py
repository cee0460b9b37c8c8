"""Shuffled epoch batching over an in-memory pool, indexed by the global step.

:func:`epoch_batches` turns a pool of equally long arrays (``{"tokens": [n, seq], ...}``) into
the ``batches_fn(step) -> batch`` that :func:`jaxtrust.training.fit` takes: the rows of step
``i`` are a deterministic function of ``(seed, i)``, every row is seen once per epoch, and a
run resumed at step ``i`` sees exactly the batches an uninterrupted run would.

Example:
  >>> import numpy as np
  >>> pool = {"x": np.arange(10)}
  >>> batches = epoch_batches(pool, batch_size=4, seed=0)
  >>> sorted(np.concatenate([batches(0)["x"], batches(1)["x"]]).tolist()) != list(range(8))
  True
  >>> len(batches(7)["x"])
  4
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["epoch_batches", "pool_size"]


def pool_size(pool: Mapping[str, Any]) -> int:
    """Number of rows of a pool whose values share their leading dimension.

    Raises:
      ValueError: the pool is empty or its arrays disagree on the number of rows.
    """
    if not isinstance(pool, Mapping) or not pool:
        raise ValueError("pool must be a non-empty mapping of arrays with a shared first axis")
    sizes = {k: int(np.shape(v)[0]) for k, v in pool.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"pool arrays must share their first dimension, got {sizes}")
    n = next(iter(sizes.values()))
    if n == 0:
        raise ValueError("pool has no rows")
    return n


def epoch_batches(
    pool: Mapping[str, Any],
    batch_size: int,
    *,
    seed: int | Sequence[int],
    shuffle: bool = True,
) -> Callable[[int], dict[str, np.ndarray]]:
    """``batches_fn(step)``: rows ``[step * B, (step + 1) * B)`` of a concatenation of epochs.

    The epochs are successive permutations of the pool drawn from one
    ``np.random.default_rng(seed)`` (the identity with ``shuffle=False``); a batch that
    straddles two epochs takes the tail of one and the head of the next, so every batch has
    exactly ``batch_size`` rows. Permutations are drawn lazily and kept, so any step can be
    asked for in any order (resumption).

    Args:
      pool: arrays with a shared first (row) axis, NumPy or JAX.
      batch_size: rows per batch (>= 1; may exceed the pool, rows then repeat).
      seed: host-side seed (an int or a sequence of ints) of the epoch permutations.
      shuffle: permute each epoch.

    Returns:
      ``batches_fn(step: int) -> dict`` of NumPy arrays.
    """
    n = pool_size(pool)
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    host = {k: np.asarray(v) for k, v in pool.items()}
    rng = np.random.default_rng(seed)
    epochs: list[np.ndarray] = []

    def epoch(e: int) -> np.ndarray:
        while len(epochs) <= e:
            epochs.append(rng.permutation(n) if shuffle else np.arange(n))
        return epochs[e]

    def batches_fn(step: int) -> dict[str, np.ndarray]:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        start = int(step) * int(batch_size)
        positions = np.arange(start, start + int(batch_size))
        rows = np.empty(int(batch_size), dtype=np.int64)
        for e in np.unique(positions // n):
            sel = positions // n == e
            rows[sel] = epoch(int(e))[positions[sel] % n]
        return {k: v[rows] for k, v in host.items()}

    return batches_fn
