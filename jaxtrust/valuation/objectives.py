"""The functional interface every valuer shares: ``loss_fn(params, windows, weights) -> scalar``.

A valuer never sees a model object: it takes a pure loss of a parameter pytree on a batch of
windows, weighted per window (weights make leave-one-out and removal curves one compiled program:
dropping window i is setting its weight to 0). :func:`tsfm_objective` builds that loss for a
:class:`~jaxtrust.models.tsfm.TSFM`; any other model plugs in the same way.

Example:
  >>> from flax import nnx
  >>> from jaxtrust.models.tsfm import TSFM, TSFMConfig
  >>> model = TSFM(TSFMConfig.tiny(), rngs=nnx.Rngs(0))
  >>> objective = tsfm_objective(model)
  >>> float(objective.loss(objective.params, jnp.ones((2, 80)), jnp.ones(2))) >= 0
  True
"""

# ruff: noqa: F722
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from jaxtrust.models.tsfm import TSFM, patch_targets

__all__ = ["Objective", "check_windows", "tsfm_objective"]

LossFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


class Objective(NamedTuple):
    """A weighted loss and the parameters it is evaluated at.

    Attributes:
      loss: ``loss(params, windows [n, L], weights [n]) -> scalar``, the weighted mean of the
        per-window losses, :math:`\\sum_i w_i \\ell_i / \\max(\\sum_i w_i, \\epsilon)`.
      params: the parameter pytree (the pretrained model's).
      rebuild: ``rebuild(params) -> model``.
    """

    loss: LossFn
    params: Any
    rebuild: Callable[[Any], Any]


def _per_window(model: TSFM, windows: jax.Array, last_patch_only: bool) -> jax.Array:
    c = model.config
    context, targets = patch_targets(windows, c)
    out = model(context)
    count = jnp.maximum(context.shape[1], 1)
    mu = jnp.sum(context, axis=1) / count
    std = jnp.sqrt(jnp.sum((context - mu[:, None]) ** 2, axis=1) / count)
    s = jnp.where(std < 1e-6, 1.0, std)[:, None, None]
    err = ((out.mean - targets) / s) ** 2
    if last_patch_only:
        return jnp.mean(err[:, -1], axis=-1)
    return jnp.mean(err, axis=(1, 2))


def tsfm_objective(model: TSFM, *, last_patch_only: bool = True) -> Objective:
    r"""The point-forecast loss of a TSFM as an :class:`Objective`.

    Per window: :math:`\ell = \frac1H \sum_j ((\hat y_j - y_j)/s)^2` for the forecast after the
    last patch (``last_patch_only``, the forecast a user sees and LTSV's context MSE) or the
    mean over every patch's forecast; ``s`` is the window context's standard deviation.

    Args:
      model: the forecaster (its parameters become ``Objective.params``).
      last_patch_only: score only the final forecast.

    Returns:
      :class:`Objective`.
    """
    if not isinstance(model, TSFM):
        raise TypeError(f"model must be a TSFM, got {type(model).__name__}")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p, windows, weights):
        per = _per_window(nnx.merge(graphdef, p, rest), windows, last_patch_only)
        w = weights.astype(jnp.float32)
        return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1e-12)

    # Jitted once here, so eager calls are one compiled program and every valuer's memoised
    # program can key on this function.
    return Objective(jax.jit(loss), params, lambda p: nnx.merge(graphdef, p, rest))


def check_windows(windows: Any, name: str, length: int | None = None) -> Float[Array, "n length"]:
    """``windows`` as a finite float32 ``[n, length]`` array, or a ValueError naming ``name``."""
    if not hasattr(windows, "shape") or len(windows.shape) != 2:
        raise ValueError(
            f"{name} must be a [n, length] array, got {getattr(windows, 'shape', windows)}"
        )
    if windows.shape[0] < 1:
        raise ValueError(f"{name} is empty")
    if length is not None and windows.shape[1] != length:
        raise ValueError(f"{name} must have windows of length {length}, got {windows.shape[1]}")
    if not np.isfinite(np.asarray(windows)).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return jnp.asarray(windows, jnp.float32)
