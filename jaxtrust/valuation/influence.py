r"""Gradient-based valuers on an :class:`~jaxtrust.valuation.objectives.Objective`: TracIn and
influence functions (conjugate gradient and LiSSA on Hessian-vector products).

Sign convention shared by every valuer in :mod:`jaxtrust.valuation`: a **positive value means
the window helps**, i.e. training on it lowers the context (validation) loss.

* TracIn, one checkpoint (Pruthi, Liu, Kale, Sundararajan, "Estimating Training Data Influence
  by Tracing Gradient Descent", NeurIPS 2020):
  :math:`v_i = \eta\,\nabla L_{ctx}(\theta)^\top \nabla \ell_i(\theta)`.
* Influence functions (Koh & Liang, "Understanding Black-box Predictions via Influence
  Functions", ICML 2017): :math:`v_i = \nabla L_{ctx}^\top (H + \lambda I)^{-1} \nabla \ell_i`,
  with :math:`H = \nabla^2 L_{train}`; the inverse-HVP :math:`s = (H+\lambda I)^{-1}\nabla
  L_{ctx}` is solved once, by CG or by LiSSA (Agarwal, Bullins, Hazan, "Second-Order Stochastic
  Optimization for Machine Learning in Linear Time", JMLR 2017), then each window costs one
  gradient and a dot product.

Per-window gradients are computed in vmapped chunks (``jax.lax.map`` with ``batch_size``), so
valuing thousands of windows is one compiled program.
"""

# ruff: noqa: F722
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float

from jaxtrust.training.memo import memoize
from jaxtrust.valuation.objectives import Objective, check_windows

__all__ = [
    "InverseHVP",
    "influence_scores",
    "inverse_hvp",
    "per_window_grad_dots",
    "tracin_scores",
]


def _check_chunk(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def per_window_grad_dots(
    objective: Objective,
    windows: Float[ArrayLike, "n length"],
    direction: Float[ArrayLike, " params"],
    *,
    chunk_size: int = 32,
) -> Float[Array, " n"]:
    r""":math:`d^\top \nabla_\theta \ell_i(\theta)` for every window i (flat direction d).

    Args:
      objective: the loss and parameters.
      windows: ``[n, length]`` windows.
      direction: flat ``[params]`` vector (``ravel_pytree`` order of ``objective.params``).
      chunk_size: windows per vmapped chunk.

    Returns:
      ``[n]`` dot products.
    """
    _check_chunk(chunk_size)
    loss = objective.loss

    def build():
        def run(params, ws, d):
            def one(w):
                g = jax.grad(loss)(params, w[None], jnp.ones((1,)))
                return jnp.dot(ravel_pytree(g)[0], d)

            return jax.lax.map(one, ws, batch_size=chunk_size)

        return jax.jit(run)

    run = memoize("valuation.grad_dots", (loss, chunk_size), build)
    return run(objective.params, jnp.asarray(windows), jnp.asarray(direction))


def _context_grad(objective: Objective, context: jax.Array) -> jax.Array:
    g = jax.grad(objective.loss)(objective.params, context, jnp.ones((context.shape[0],)))
    return ravel_pytree(g)[0]


def tracin_scores(
    objective: Objective,
    train: Float[ArrayLike, "n length"],
    context: Float[ArrayLike, "m length"],
    *,
    learning_rate: float = 1.0,
    chunk_size: int = 32,
) -> Float[Array, " n"]:
    r"""TracIn at one checkpoint: :math:`\eta\,\nabla L_{ctx}^\top \nabla \ell_i`.

    Args:
      objective: the loss and parameters.
      train: ``[n, length]`` windows to value.
      context: ``[m, length]`` held-out context windows.
      learning_rate: :math:`\eta` (scales every value alike).
      chunk_size: windows per vmapped chunk.

    Returns:
      ``[n]`` values (positive: helpful).

    Example::

      values = tracin_scores(tsfm_objective(model), train_windows, context_windows)
    """
    train = check_windows(train, "train")
    context = check_windows(context, "context", train.shape[1])
    g_ctx = _context_grad(objective, context)
    return learning_rate * per_window_grad_dots(objective, train, g_ctx, chunk_size=chunk_size)


class InverseHVP(NamedTuple):
    """``solution`` :math:`\\approx (H + \\lambda I)^{-1} b` and the relative residual
    :math:`\\|(H+\\lambda I)s - b\\| / \\|b\\|`."""

    solution: Float[Array, " params"]
    residual: Float[Array, ""]


def inverse_hvp(
    hvp: Callable[[jax.Array], jax.Array],
    b: Float[Array, " params"],
    *,
    method: str = "cg",
    damping: float = 1e-3,
    iterations: int = 50,
    scale: float | jax.Array = 10.0,
) -> InverseHVP:
    r"""Solve :math:`(H + \lambda I) s = b` with Hessian-vector products only.

    * ``cg``: conjugate gradient (``jax.scipy.sparse.linalg.cg``, ``iterations`` at most);
      needs :math:`H + \lambda I` positive definite (raise ``damping`` otherwise).
    * ``lissa``: the Neumann recursion :math:`s_0 = b/c`,
      :math:`s_{k+1} = b/c + (I - (H + \lambda I)/c)\,s_k`, which converges to the solution when
      ``scale`` c exceeds the largest eigenvalue of :math:`H + \lambda I`.

    Args:
      hvp: ``v -> H v`` on flat vectors.
      b: the right-hand side.
      method: ``"cg"`` or ``"lissa"``.
      damping: :math:`\lambda \ge 0`.
      iterations: CG iterations / LiSSA recursion depth.
      scale: LiSSA's c.

    Returns:
      :class:`InverseHVP`.

    Example:
      >>> a = jnp.array([[2.0, 0.5], [0.5, 1.0]])
      >>> s = inverse_hvp(lambda v: a @ v, jnp.ones(2), damping=0.0).solution
      >>> bool(jnp.allclose(a @ s, jnp.ones(2), atol=1e-5))
      True
    """
    if method not in ("cg", "lissa"):
        raise ValueError(f"method must be 'cg' or 'lissa', got {method!r}")
    if not damping >= 0:
        raise ValueError(f"damping must be >= 0, got {damping!r}")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    if isinstance(scale, int | float) and not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")

    def damped(v):
        return hvp(v) + damping * v

    if method == "cg":
        s, _ = jax.scipy.sparse.linalg.cg(damped, b, maxiter=iterations, tol=1e-10)
    else:

        def body(s, _):
            return b / scale + s - damped(s) / scale, None

        s, _ = jax.lax.scan(body, b / scale, None, length=iterations)
    residual = jnp.linalg.norm(damped(s) - b) / jnp.maximum(jnp.linalg.norm(b), 1e-30)
    return InverseHVP(s, residual)


def influence_scores(
    objective: Objective,
    train: Float[ArrayLike, "n length"],
    context: Float[ArrayLike, "m length"],
    *,
    method: str = "cg",
    damping: float = 1e-3,
    iterations: int = 50,
    scale: float | None = None,
    hessian_windows: Float[ArrayLike, "k length"] | None = None,
    chunk_size: int = 32,
) -> Float[Array, " n"]:
    r"""Influence-function values :math:`\nabla L_{ctx}^\top (H+\lambda I)^{-1}\nabla \ell_i`.

    :math:`H` is the Hessian of the mean training loss over ``hessian_windows`` (default
    ``train``), applied as forward-over-reverse HVPs (``jax.jvp`` of ``jax.grad``).

    Args:
      objective: the loss and parameters.
      train: ``[n, length]`` windows to value.
      context: ``[m, length]`` held-out context windows.
      method / damping / iterations / scale: see :func:`inverse_hvp`; ``scale=None`` sets
        LiSSA's c to 1.5 times the top eigenvalue of :math:`H + \lambda I`, estimated by 20
        power iterations.
      hessian_windows: windows defining H (a subsample keeps each HVP cheap).
      chunk_size: windows per vmapped chunk of the per-window gradients.

    Returns:
      ``[n]`` values (positive: helpful).
    """
    train = check_windows(train, "train")
    context = check_windows(context, "context", train.shape[1])
    hw = train if hessian_windows is None else check_windows(hessian_windows, "hessian_windows")
    loss = objective.loss

    def build():
        def solve(params, hw, g):
            flat, unravel = ravel_pytree(params)
            ones = jnp.ones((hw.shape[0],))

            def train_grad(v):
                return ravel_pytree(jax.grad(loss)(unravel(v), hw, ones))[0]

            def hvp(v):
                return jax.jvp(train_grad, (flat,), (v,))[1]

            c = scale
            if c is None:

                def power(v, _):
                    w = hvp(v)
                    return w / jnp.maximum(jnp.linalg.norm(w), 1e-30), None

                v0 = jnp.ones_like(g) / jnp.sqrt(g.size)
                v, _ = jax.lax.scan(power, v0, None, length=20)
                c = 1.5 * (jnp.abs(jnp.dot(v, hvp(v))) + damping)
            return inverse_hvp(
                hvp, g, method=method, damping=damping, iterations=iterations, scale=c
            )

        return jax.jit(solve)

    solve = memoize("valuation.influence", (loss, method, damping, iterations, scale), build)
    s = solve(objective.params, hw, _context_grad(objective, context)).solution
    return per_window_grad_dots(objective, train, s, chunk_size=chunk_size)
