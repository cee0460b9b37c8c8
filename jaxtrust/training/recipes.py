"""Optimiser recipes the library's own fine-tunes use, written once.

Example:
  >>> tx = adamw_cosine(1e-3, steps=100, warmup_steps=10)
  >>> import jax.numpy as jnp
  >>> state = tx.init({"w": jnp.zeros(3)})
"""

from __future__ import annotations

import re

import jax
import optax

from jaxtrust.training.sharding import path_to_str

__all__ = ["adamw_cosine", "freeze", "warmup_cosine"]


def warmup_cosine(
    learning_rate: float, steps: int, *, warmup_steps: int = 0, final_fraction: float = 0.05
) -> optax.Schedule:
    r"""Linear warmup from 0 to ``learning_rate`` over ``warmup_steps``, then cosine decay to
    ``final_fraction * learning_rate`` at ``steps``.

    Args:
      learning_rate: peak step size (> 0).
      steps: total steps of the run (>= 1).
      warmup_steps: warmup length; clipped to ``steps - 1``.
      final_fraction: end value as a fraction of the peak, in ``[0, 1]``.

    Returns:
      An optax schedule.
    """
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
    if not 0.0 <= final_fraction <= 1.0:
        raise ValueError(f"final_fraction must be in [0, 1], got {final_fraction}")
    warmup = min(warmup_steps, steps - 1)
    return optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup, max(steps, warmup + 1), learning_rate * final_fraction
    )


def adamw_cosine(
    learning_rate: float,
    steps: int,
    *,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    clip_norm: float | None = 1.0,
    final_fraction: float = 0.05,
) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW on a :func:`warmup_cosine` schedule.

    Args:
      learning_rate: peak step size.
      steps: total steps (for the schedule).
      warmup_steps: linear warmup steps.
      weight_decay: AdamW's decoupled weight decay.
      clip_norm: clip the gradient's global norm to this (``None``: no clipping).
      final_fraction: end of the cosine as a fraction of the peak.

    Returns:
      An optax ``GradientTransformation``.
    """
    schedule = warmup_cosine(
        learning_rate, steps, warmup_steps=warmup_steps, final_fraction=final_fraction
    )
    adamw = optax.adamw(schedule, weight_decay=weight_decay)
    if clip_norm is None:
        return adamw
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0 or None, got {clip_norm}")
    return optax.chain(optax.clip_by_global_norm(clip_norm), adamw)


def freeze(tx: optax.GradientTransformation, pattern: str) -> optax.GradientTransformation:
    """``tx`` for every parameter except those whose ``/``-joined path matches ``pattern``
    (``re.search``), which get zero updates (frozen towers, locked encoders).

    Unlike a zero gradient, this also keeps weight decay and momentum from moving the frozen
    parameters, and their optimiser state is empty.

    Args:
      tx: the transformation of the trainable parameters.
      pattern: regular expression over parameter paths (e.g. ``r"^vision/"``).

    Returns:
      An optax ``GradientTransformation`` (``optax.partition`` of ``tx`` and
      ``optax.set_to_zero``).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = freeze(optax.sgd(1.0), r"^frozen")
      >>> params = {"frozen": jnp.ones(2), "free": jnp.ones(2)}
      >>> grads = {"frozen": jnp.ones(2), "free": jnp.ones(2)}
      >>> updates, _ = tx.update(grads, tx.init(params), params)
      >>> updates["frozen"].tolist(), updates["free"].tolist()
      ([0.0, 0.0], [-1.0, -1.0])
    """
    try:
        regex = re.compile(pattern)
    except (re.error, TypeError) as err:
        raise ValueError(f"pattern must be a regular expression, got {pattern!r}: {err}") from None

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if regex.search(path_to_str(path)) else "train", params
        )

    return optax.partition({"train": tx, "frozen": optax.set_to_zero()}, labels)
