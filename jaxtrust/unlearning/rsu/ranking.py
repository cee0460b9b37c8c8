# ruff: noqa: F722
r"""RSU's ranking module: per-sample privacy risk of the forget set, pluggable.

A *risk* is a per-sample score, larger = more exposed. Three rankers:

* :func:`lira_risk` — the LiRA membership score of each sample against the trained model
  (Carlini et al., S&P 2022), with shadow models trained on random halves of the training pool
  (:func:`jaxtrust.privacy.mia.train_shadow_models`); the "privacy risk" of the RSU abstract.
* :func:`loss_risk` — the negative loss under the trained model (Yeom et al., 2018): cheap,
  no shadows.
* :func:`memorization_risk` — Feldman & Zhang's held-out estimate of memorization from the same
  shadows: :math:`\mathrm{mem}(i) = \mathbb E_{k: i \in S_k}[p_y] - \mathbb E_{k: i \notin S_k}
  [p_y]` (true-class confidence with and without the sample); the ranking of RUM (Zhao et al.,
  NeurIPS 2024).

:func:`split_by_risk` cuts the forget set into stages ordered ``low_to_high``, ``high_to_low``
or ``random`` (random chunks, the control).

Example:
  >>> import numpy as np
  >>> [s.tolist() for s in split_by_risk(np.array([0.3, 0.1, 0.9, 0.5]), 2, "low_to_high")]
  [[1, 0], [3, 2]]
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool, Float, Int

from jaxtrust.privacy.mia.lira import lira_scores
from jaxtrust.privacy.mia.scores import logit_confidence, membership_scores

__all__ = ["ORDERS", "lira_risk", "loss_risk", "memorization_risk", "split_by_risk"]

ORDERS = ("low_to_high", "high_to_low", "random")


def _phi(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.asarray(logit_confidence(logits, labels), np.float64)


def lira_risk(
    target_logits: Float[np.ndarray, "n c"],
    labels: Int[np.ndarray, " n"],
    shadow_logits: Float[np.ndarray, "k n c"],
    shadow_in: Bool[np.ndarray, "k n"],
    *,
    online: bool = True,
) -> Float[np.ndarray, " n"]:
    """LiRA score of every sample against the target model (larger = more exposed)."""
    z = np.asarray(shadow_logits)
    if z.ndim != 3 or z.shape[1:] != np.asarray(target_logits).shape:
        raise ValueError(
            f"shadow_logits must be [K, n, c] matching target_logits {np.shape(target_logits)}, "
            f"got {z.shape}"
        )
    stats = np.stack([_phi(z[k], labels) for k in range(z.shape[0])])
    return lira_scores(_phi(target_logits, labels), stats, shadow_in, online=online)


def loss_risk(
    target_logits: Float[np.ndarray, "n c"], labels: Int[np.ndarray, " n"]
) -> Float[np.ndarray, " n"]:
    """Negative cross-entropy under the target model (larger = better fitted)."""
    return membership_scores(target_logits, labels, "loss")


def memorization_risk(
    labels: Int[np.ndarray, " n"],
    shadow_logits: Float[np.ndarray, "k n c"],
    shadow_in: Bool[np.ndarray, "k n"],
) -> Float[np.ndarray, " n"]:
    """Feldman-Zhang memorization: mean true-class confidence IN minus OUT."""
    z = np.asarray(shadow_logits)
    m = np.asarray(shadow_in)
    if m.shape != z.shape[:2]:
        raise ValueError(f"shadow_in must be [K, n] = {z.shape[:2]}, got {m.shape}")
    conf = np.stack([membership_scores(z[k], labels, "confidence") for k in range(z.shape[0])])
    n_in, n_out = m.sum(0), (~m).sum(0)
    if (n_in == 0).any() or (n_out == 0).any():
        raise ValueError("every sample needs IN and OUT shadow models")
    return np.where(m, conf, 0).sum(0) / n_in - np.where(~m, conf, 0).sum(0) / n_out


def split_by_risk(
    risk: Float[np.ndarray, " n"], num_stages: int, order: str, *, seed: int = 0
) -> list[np.ndarray]:
    """Positions of the forget set per stage, in unlearning order.

    Args:
      risk: per-sample risk of the forget set.
      num_stages: number of stages (>= 1, <= n).
      order: ``low_to_high`` (least exposed first), ``high_to_low``, or ``random``
        (a random partition into equal stages, ignoring the risk).
      seed: host seed of the random order.

    Returns:
      ``num_stages`` integer arrays of positions into the forget set (a partition).
    """
    r = np.asarray(risk, np.float64)
    if r.ndim != 1 or r.size == 0 or not np.all(np.isfinite(r)):
        raise ValueError("risk must be a non-empty 1-D array of finite scores")
    if not isinstance(num_stages, int) or not 1 <= num_stages <= r.size:
        raise ValueError(f"num_stages must be an int in [1, {r.size}], got {num_stages!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if order == "random":
        ranked = np.random.default_rng(seed).permutation(r.size)
    else:
        ranked = np.argsort(r, kind="stable")
        if order == "high_to_low":
            ranked = ranked[::-1]
    return [np.asarray(c, np.int64) for c in np.array_split(ranked, num_stages)]
