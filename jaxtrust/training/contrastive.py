# ruff: noqa: F722
"""Contrastive image-text losses: CLIP's symmetric InfoNCE and SigLIP's pairwise sigmoid.

Both take a batch of paired embeddings (row ``i`` of ``a`` goes with row ``i`` of ``b``), L2-
normalise them, and score every pair by :math:`s_{ij} = \\langle \\hat a_i, \\hat b_j \\rangle`.
Optional ``groups`` mark rows that are positives of each other (two captions of one image, two
copies of one scene): rows with equal group ids count as matches. Everything is float32.

References:
  Radford et al., *Learning Transferable Visual Models From Natural Language Supervision*,
  ICML 2021 (CLIP). Zhai et al., *Sigmoid Loss for Language Image Pre-Training*, ICCV 2023
  (SigLIP).

Example:
  >>> import jax.numpy as jnp
  >>> a = jnp.eye(3)
  >>> loss, m = clip_loss(a, a, logit_scale=jnp.log(100.0))
  >>> float(m["a_to_b_accuracy"])
  1.0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

__all__ = ["clip_loss", "normalize", "siglip_loss"]


def normalize(x: Float[ArrayLike, "... dim"], eps: float = 1e-6) -> Float[Array, "... dim"]:
    """``x / max(||x||, eps)`` along the last axis, in float32."""
    x = jnp.asarray(x, jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def _pair_inputs(a, b, groups):
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"a and b must be paired [batch, dim] embeddings of one shape, got {a.shape} and "
            f"{b.shape}"
        )
    if a.shape[0] < 1:
        raise ValueError("the batch is empty")
    n = a.shape[0]
    if groups is None:
        positives = jnp.eye(n, dtype=bool)
    else:
        groups = jnp.asarray(groups)
        if groups.shape != (n,) or not jnp.issubdtype(groups.dtype, jnp.integer):
            raise ValueError(f"groups must be an int array of shape ({n},), got {groups.shape}")
        positives = groups[:, None] == groups[None, :]
    return normalize(a) @ normalize(b).T, positives


def clip_loss(
    a: Float[ArrayLike, "batch dim"],
    b: Float[ArrayLike, "batch dim"],
    *,
    logit_scale: Float[ArrayLike, ""],
    groups: Int[ArrayLike, " batch"] | None = None,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    r"""Symmetric InfoNCE (CLIP) over a batch of pairs.

    With logits :math:`z_{ij} = e^{\tau} s_{ij}` (``logit_scale`` :math:`=\tau`, learnable, CLIP
    initialises it at :math:`\log(1/0.07)`) and target distribution :math:`q_{ij}` uniform over
    the positives of row :math:`i` (the diagonal without ``groups``):

    .. math::
       \mathcal{L} = \tfrac12\Big(-\tfrac1n\sum_{i,j} q_{ij}\log\mathrm{softmax}_j(z_{ij})
       - \tfrac1n\sum_{i,j} q_{ji}\log\mathrm{softmax}_i(z_{ij})\Big).

    Args:
      a: ``[n, d]`` embeddings of one modality (images).
      b: ``[n, d]`` paired embeddings of the other (texts).
      logit_scale: log of the inverse temperature (a scalar, usually a trained parameter).
      groups: ``[n]`` ids; rows with equal ids are positives of each other.

    Returns:
      ``(loss, metrics)``, metrics ``loss``, ``a_to_b_accuracy``, ``b_to_a_accuracy`` (the
      arg-max is a positive).
    """
    sims, positives = _pair_inputs(a, b, groups)
    logits = jnp.exp(jnp.asarray(logit_scale, jnp.float32)) * sims
    target = positives.astype(jnp.float32)
    target = target / jnp.sum(target, axis=1, keepdims=True)
    loss_ab = -jnp.mean(jnp.sum(target * jax.nn.log_softmax(logits, axis=1), axis=1))
    loss_ba = -jnp.mean(jnp.sum(target.T * jax.nn.log_softmax(logits, axis=0), axis=0))
    loss = 0.5 * (loss_ab + loss_ba)
    rows = jnp.arange(sims.shape[0])
    acc_ab = jnp.mean(positives[rows, jnp.argmax(logits, axis=1)].astype(jnp.float32))
    acc_ba = jnp.mean(positives[jnp.argmax(logits, axis=0), rows].astype(jnp.float32))
    return loss, {"loss": loss, "a_to_b_accuracy": acc_ab, "b_to_a_accuracy": acc_ba}


def siglip_loss(
    a: Float[ArrayLike, "batch dim"],
    b: Float[ArrayLike, "batch dim"],
    *,
    logit_scale: Float[ArrayLike, ""],
    logit_bias: Float[ArrayLike, ""],
    groups: Int[ArrayLike, " batch"] | None = None,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    r"""Pairwise sigmoid loss (SigLIP) over a batch of pairs.

    With :math:`z_{ij} = e^{\tau} s_{ij} + \beta` and labels :math:`y_{ij} = +1` for positives,
    :math:`-1` otherwise:

    .. math:: \mathcal{L} = -\tfrac1n \sum_{i,j} \log\sigma(y_{ij} z_{ij}).

    SigLIP initialises :math:`\tau = \log 10`, :math:`\beta = -10`.

    Args:
      a, b: ``[n, d]`` paired embeddings.
      logit_scale: :math:`\tau`. logit_bias: :math:`\beta`.
      groups: ``[n]`` ids; rows with equal ids are positives of each other.

    Returns:
      ``(loss, metrics)``, metrics ``loss`` and ``a_to_b_accuracy``.
    """
    sims, positives = _pair_inputs(a, b, groups)
    logits = jnp.exp(jnp.asarray(logit_scale, jnp.float32)) * sims + jnp.asarray(
        logit_bias, jnp.float32
    )
    labels = jnp.where(positives, 1.0, -1.0)
    loss = -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / sims.shape[0]
    rows = jnp.arange(sims.shape[0])
    acc = jnp.mean(positives[rows, jnp.argmax(logits, axis=1)].astype(jnp.float32))
    return loss, {"loss": loss, "a_to_b_accuracy": acc}
