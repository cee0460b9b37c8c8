"""A scanned optimisation loop for small inner problems.

Some methods solve a small optimisation inside their own algorithm: a few full-batch steps on
one example (one-shot recovery), a per-sample fine-tune (data valuation), a mask or an input
perturbation. :func:`scan_optimize` runs ``steps`` updates of an optax transformation as one
``lax.scan``, so the whole inner problem is one compiled program that can itself be ``jit``-ed,
``vmap``-ed over samples, or differentiated.

Example:
  >>> import jax.numpy as jnp, optax
  >>> loss = lambda p, target: jnp.sum((p["w"] - target) ** 2)
  >>> params, losses = scan_optimize(loss, {"w": jnp.zeros(2)}, optax.sgd(0.25), 20, jnp.ones(2))
  >>> bool(losses[-1] < 1e-6), losses.shape
  (True, (21,))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PyTree

__all__ = ["scan_optimize"]


def scan_optimize(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    tx: optax.GradientTransformation,
    steps: int,
    *args: Any,
) -> tuple[PyTree, Float[Array, " steps_plus_one"]]:
    r"""``steps`` updates :math:`\theta \leftarrow \theta + \mathrm{tx}(\nabla_\theta
    \mathcal{L}(\theta, \ldots))`, scanned.

    Args:
      loss_fn: ``loss_fn(params, *args) -> scalar``.
      params: the initial parameters (any pytree of float arrays).
      tx: the optax transformation (its state starts fresh).
      steps: number of updates (a Python int >= 0; static).
      *args: extra arguments of ``loss_fn`` (data), passed unchanged at every step.

    Returns:
      ``(params, losses)``: the final parameters and ``[steps + 1]`` float32 losses, the loss
      before each update and after the last.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")

    def body(carry, _):
        p, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(p, *args)
        updates, opt_state = tx.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), jnp.asarray(loss, jnp.float32)

    (params, _), losses = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
    final = jnp.asarray(loss_fn(params, *args), jnp.float32)
    return params, jnp.concatenate([losses, final[None]])
