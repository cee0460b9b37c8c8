# ruff: noqa: F722
r"""Per-sample membership signals from a classifier's logits, and batched logits of a model.

Every score is oriented so that **larger means "more likely a member"**:

* ``loss``: :math:`-\ell(x, y) = \log p_y` (Yeom et al., CSF 2018);
* ``confidence``: :math:`p_y`, the true-class probability (Salem et al., NDSS 2019);
* ``entropy``: :math:`-H(p) = \sum_i p_i \log p_i` (Shokri et al., S&P 2017; Salem et al.);
* ``modified_entropy``: :math:`-\mathrm{Mentr}(p, y)` with
  :math:`\mathrm{Mentr} = -(1 - p_y)\log p_y - \sum_{i \ne y} p_i \log(1 - p_i)`
  (Song & Mittal, *Systematic Evaluation of Privacy Risks of Machine Learning Models*,
  USENIX Security 2021);
* ``logit_confidence``: :math:`\phi = \log \frac{p_y}{1 - p_y} = z_y - \log\sum_{j \ne y}
  e^{z_j}`, LiRA's Gaussian-friendly statistic (Carlini et al., S&P 2022), computed from the
  logits without forming :math:`1 - p_y`.

Example:
  >>> import numpy as np
  >>> logits = np.array([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
  >>> s = membership_scores(logits, np.array([0, 0]), "confidence")
  >>> bool(s[0] > s[1])
  True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, ArrayLike, Float, Int

from jaxtrust.training.memo import memoize

__all__ = ["SCORES", "logit_confidence", "membership_scores", "predict_logits"]

_EPS = 1e-12


def logit_confidence(
    logits: Float[ArrayLike, "n classes"], labels: Int[ArrayLike, " n"]
) -> Float[Array, " n"]:
    r""":math:`\phi = z_y - \operatorname{logsumexp}_{j \ne y} z_j` (LiRA's statistic).

    Args:
      logits: ``[n, classes]`` (or any leading batch axes) float logits.
      labels: true labels ``[n]``.

    Returns:
      ``[n]`` float32 logit-scaled confidences.
    """
    z = jnp.asarray(logits, jnp.float32)
    y = jnp.asarray(labels)
    true = jnp.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    others = jnp.where(jax.nn.one_hot(y, z.shape[-1], dtype=bool), -jnp.inf, z)
    return true - jax.nn.logsumexp(others, axis=-1)


def _check(logits, labels) -> tuple[jax.Array, jax.Array]:
    z = jnp.asarray(logits)
    y = jnp.asarray(labels)
    if z.ndim != 2:
        raise ValueError(f"logits must be [n, classes], got shape {tuple(z.shape)}")
    if y.shape != z.shape[:1]:
        raise ValueError(f"labels must have shape ({z.shape[0]},), got {tuple(y.shape)}")
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(f"labels must be integers, got dtype {y.dtype}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= z.shape[1]):
        raise ValueError(f"labels must be in [0, {z.shape[1]}), got [{int(y.min())}, {y.max()}]")
    return z.astype(jnp.float32), y


def _loss(z, y):
    return jnp.take_along_axis(jax.nn.log_softmax(z, -1), y[:, None], axis=-1)[:, 0]


def _confidence(z, y):
    return jnp.exp(_loss(z, y))


def _entropy(z, y):
    logp = jax.nn.log_softmax(z, -1)
    return jnp.sum(jnp.exp(logp) * logp, axis=-1)


def _modified_entropy(z, y):
    p = jax.nn.softmax(z, -1)
    onehot = jax.nn.one_hot(y, z.shape[-1], dtype=bool)
    p_y = jnp.sum(jnp.where(onehot, p, 0.0), -1)
    # Song & Mittal: the true class is penalised by log p_y, the others by log(1 - p_i).
    true_term = -(1.0 - p_y) * jnp.log(jnp.maximum(p_y, _EPS))
    other = jnp.where(onehot, 0.0, -p * jnp.log(jnp.maximum(1.0 - p, _EPS)))
    return -(true_term + jnp.sum(other, -1))


SCORES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "loss": _loss,
    "confidence": _confidence,
    "entropy": _entropy,
    "modified_entropy": _modified_entropy,
    "logit_confidence": logit_confidence,
}


def membership_scores(
    logits: Float[ArrayLike, "n classes"], labels: Int[ArrayLike, " n"], kind: str = "loss"
) -> Float[np.ndarray, " n"]:
    """Per-sample membership score of kind ``kind`` (larger = more likely a member).

    Args:
      logits: ``[n, classes]`` logits of the target model.
      labels: ``[n]`` true labels.
      kind: one of :data:`SCORES` (``loss``, ``confidence``, ``entropy``,
        ``modified_entropy``, ``logit_confidence``).

    Returns:
      ``[n]`` float64 NumPy scores.

    Raises:
      KeyError: unknown ``kind``. ValueError/TypeError: bad shapes, labels out of range.
    """
    if kind not in SCORES:
        raise KeyError(f"unknown score kind {kind!r}; known: {sorted(SCORES)}")
    z, y = _check(logits, labels)
    return np.asarray(SCORES[kind](z, y), np.float64)


def predict_logits(
    model: nnx.Module,
    x: Float[ArrayLike, "n ..."],
    *,
    batch_size: int = 512,
    apply: Callable[[nnx.Module, jax.Array], jax.Array] | None = None,
) -> Float[np.ndarray, "n classes"]:
    """Logits of ``model`` on every row of ``x``, in fixed-size chunks (one compiled program).

    The last chunk is padded to ``batch_size`` so that every call of one model compiles once.

    Args:
      model: a Flax NNX classifier (``model(x) -> [b, classes]``).
      x: inputs, rows along the first axis.
      batch_size: rows per chunk.
      apply: ``apply(model, x_chunk) -> logits`` (default ``model(x_chunk)``).

    Returns:
      ``[n, classes]`` float32 NumPy logits.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    graphdef, state = nnx.split(model)
    fn = _logits_program(graphdef, apply)
    return _chunked(lambda chunk: fn(state, chunk), np.asarray(x), batch_size)


def _chunked(fn: Callable[[Any], Any], x: np.ndarray, batch_size: int) -> np.ndarray:
    n = x.shape[0]
    if n == 0:
        raise ValueError("x has no rows")
    size = batch_size  # fixed chunk shape: one compile whatever the set size
    outs = []
    for start in range(0, n, size):
        chunk = x[start : start + size]
        pad = size - chunk.shape[0]
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)], axis=0)
        out = np.asarray(fn(jnp.asarray(chunk)))
        outs.append(out[: size - pad] if pad else out)
    return np.concatenate(outs, axis=0)


def _logits_program(graphdef, apply):
    def build():
        def run(state, x):
            m = nnx.merge(graphdef, state)
            return (m(x) if apply is None else apply(m, x)).astype(jnp.float32)

        return jax.jit(run)

    return memoize("privacy.mia.logits", (graphdef, apply), build)
