r"""An element-wise update mask as an optax transformation: train only selected weights.

:func:`masked_updates` multiplies every update element by a 0/1 mask of the parameters' shapes,
:math:`u \leftarrow u \odot M`. Put it **last** in a chain, so that nothing after it (weight
decay, momentum) moves a frozen element::

    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3), masked_updates(mask))

The mask lives in the transformation's state (a NamedTuple), not in a closure: a jitted train
step compiled once serves every mask (MAPE's selected heads and filters, SalUn's salient
weights, a random control), which is what lets a reproduction compare many masks without
recompiling. ``mask`` may be a pytree with the parameters' structure or a callable
``params -> mask`` (needed with ``nnx.Optimizer``, which initialises the transformation on
``Param`` nodes but updates it with raw arrays).

Unlike :func:`optax.masked`, which selects whole leaves and passes the others' updates through
unchanged, this zeroes the unselected elements of every leaf.

Example:
  >>> import jax.numpy as jnp, optax
  >>> params = {"w": jnp.ones(3)}
  >>> tx = optax.chain(optax.sgd(1.0), masked_updates({"w": jnp.array([1.0, 0.0, 1.0])}))
  >>> updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
  >>> updates["w"].tolist()
  [-1.0, -0.0, -1.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["MaskedUpdatesState", "mask_fraction", "masked_updates"]


class MaskedUpdatesState(NamedTuple):
    """State of :func:`masked_updates`: the float mask, with the parameters' structure."""

    mask: Any


def _leaf_value(x):
    return x.get_value() if hasattr(x, "get_value") else x


def masked_updates(mask: Any | Callable[[Any], Any]) -> optax.GradientTransformationExtraArgs:
    """Zero every update element where ``mask`` is 0 (see the module docstring).

    Args:
      mask: a pytree of arrays broadcastable to the parameters (bool or 0/1 floats) with the
        parameters' tree structure, or a callable ``params -> mask``.

    Returns:
      An optax ``GradientTransformationExtraArgs`` whose state holds the mask as floats.

    Raises:
      ValueError: (at ``init``) the mask's structure or shapes do not match the parameters.
    """

    def init_fn(params):
        m = mask(params) if callable(mask) else mask
        flat_p, treedef = jax.tree.flatten(params)
        flat_m = jax.tree.leaves(m)
        if len(flat_m) != len(flat_p):
            raise ValueError(
                f"mask has {len(flat_m)} leaves but the parameters have {len(flat_p)}; build "
                "it with the parameters' tree structure"
            )
        leaves = []
        for i, (p, mm) in enumerate(zip(flat_p, flat_m, strict=True)):
            p, mm = jnp.asarray(_leaf_value(p)), jnp.asarray(_leaf_value(mm))
            try:
                mm = jnp.broadcast_to(mm, p.shape)
            except ValueError:
                raise ValueError(
                    f"mask leaf {i} has shape {mm.shape}, not broadcastable to the "
                    f"parameter's {p.shape}"
                ) from None
            leaves.append(
                mm.astype(p.dtype if jnp.issubdtype(p.dtype, jnp.floating) else jnp.float32)
            )
        return MaskedUpdatesState(jax.tree.unflatten(treedef, leaves))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        flat_u, treedef = jax.tree.flatten(updates)
        flat_m = jax.tree.leaves(state.mask)
        out = [u * m.astype(u.dtype) for u, m in zip(flat_u, flat_m, strict=True)]
        return jax.tree.unflatten(treedef, out), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def mask_fraction(mask: Any) -> float:
    """Fraction of selected elements of a mask pytree (0/1 or bool leaves)."""
    leaves = [jnp.asarray(_leaf_value(x)) for x in jax.tree.leaves(mask)]
    total = sum(x.size for x in leaves)
    if total == 0:
        raise ValueError("mask has no elements")
    return float(sum(jnp.sum(x != 0) for x in leaves) / total)
