# ruff: noqa: F722
r"""LLM Dataset Inference (Maini et al., 2024): learn a linear combination of MIA features on
one half of the data, t-test the other half.

Each sample carries a feature vector of membership scores (:func:`jaxtrust.privacy.mia.
lm_features`: loss, zlib, Min-K%, Min-K%++). The suspect set :math:`X` and the reference set
:math:`Y` (known non-members of the same distribution) are each split at random into a fitting
half and a testing half. On the fitting halves, features are standardised (by the fitting
reference half's mean and deviation) and an L2-regularised logistic regression learns
:math:`w` separating suspect (label 1) from reference (label 0),

.. math:: \min_w \frac1N \sum_i \log(1 + e^{-y_i' w^\top \phi_i}) + \frac{\lambda}{2}\|w\|^2 ,

:math:`y' = \pm 1`. The testing halves are scored with :math:`s = w^\top \phi` and a one-sided
Welch t-test (:func:`~jaxtrust.privacy.memhunter.testing.dataset_test`) decides. Because
:math:`w` never saw the testing halves, the test keeps its level under :math:`H_0` whatever
:math:`w` is.

Example:
  >>> import numpy as np
  >>> rng = np.random.default_rng(0)
  >>> member = rng.normal([1.0, 0.0], 1, (60, 2))
  >>> other = rng.normal([0.0, 0.0], 1, (60, 2))
  >>> dataset_inference(member, other, seed=0).test.reject
  True
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from jaxtyping import ArrayLike, Float

from jaxtrust.privacy.memhunter.testing import DatasetTest, check_alpha, dataset_test

__all__ = ["DatasetInferenceResult", "dataset_inference", "fit_logistic"]


class DatasetInferenceResult(NamedTuple):
    """Dataset Inference's outcome: the test on the held-out halves and the learned weights."""

    test: DatasetTest
    weights: np.ndarray
    bias: float


def fit_logistic(
    features: Float[ArrayLike, "n d"],
    labels: Float[ArrayLike, " n"],
    *,
    l2: float = 1e-2,
    iterations: int = 25,
) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (the bias is not penalised).

    Args:
      features: ``[n, d]``.
      labels: ``[n]`` in {0, 1}.
      l2: the ridge strength :math:`\\lambda` (> 0 keeps the Hessian invertible).
      iterations: Newton steps.

    Returns:
      ``(weights [d], bias)``.

    Raises:
      ValueError: shapes disagree, labels not in {0, 1}, or ``l2`` not positive.
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(labels, np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be [n, d] and labels [n], got {x.shape}, {y.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    if not l2 > 0:
        raise ValueError(f"l2 must be > 0, got {l2!r}")
    n, d = x.shape
    xb = np.concatenate([x, np.ones((n, 1))], axis=1)
    theta = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 1e-8
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(xb @ theta)))
        grad = xb.T @ (p - y) / n + reg * theta
        hess = (xb * (p * (1 - p))[:, None]).T @ xb / n + np.diag(reg)
        theta = theta - np.linalg.solve(hess, grad)
    return theta[:-1], float(theta[-1])


def dataset_inference(
    suspect_features: Float[ArrayLike, "n d"],
    reference_features: Float[ArrayLike, "m d"],
    *,
    alpha: float = 0.05,
    seed: int = 0,
    fit_fraction: float = 0.5,
    l2: float = 1e-2,
) -> DatasetInferenceResult:
    """Maini et al.'s Dataset Inference on per-sample MIA feature vectors.

    Args:
      suspect_features: ``[n, d]`` features of the suspect dataset.
      reference_features: ``[m, d]`` features of the known non-member set.
      alpha: the test level, in (0, 1).
      seed: host seed of the random split.
      fit_fraction: the share of each set used to fit the combination (the rest is tested).
      l2: ridge strength of the logistic regression.

    Returns:
      :class:`DatasetInferenceResult`.

    Raises:
      ValueError: ``alpha`` outside (0, 1), feature widths differ, or a half would hold
        fewer than 2 samples (an empty or tiny dataset).

    Reference: Maini, Jia, Papernot, Dziedzic, *LLM Dataset Inference: Did you train on my
    dataset?* (NeurIPS 2024).
    """
    alpha = check_alpha(alpha)
    xs = np.asarray(suspect_features, np.float64)
    xr = np.asarray(reference_features, np.float64)
    if xs.ndim != 2 or xr.ndim != 2 or xs.shape[1] != xr.shape[1]:
        raise ValueError(
            f"suspect_features and reference_features must be [n, d] with one d, got "
            f"{xs.shape} and {xr.shape}"
        )
    if not 0.0 < fit_fraction < 1.0:
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction!r}")
    rng = np.random.default_rng(seed)

    def halves(x, name):
        k = int(round(fit_fraction * x.shape[0]))
        if k < 2 or x.shape[0] - k < 2:
            raise ValueError(
                f"{name} has {x.shape[0]} samples; each half needs >= 2 (dataset too small)"
            )
        perm = rng.permutation(x.shape[0])
        return x[perm[:k]], x[perm[k:]]

    s_fit, s_test = halves(xs, "suspect_features")
    r_fit, r_test = halves(xr, "reference_features")
    mean, std = r_fit.mean(0), r_fit.std(0) + 1e-8
    fit = (np.concatenate([s_fit, r_fit]) - mean) / std
    labels = np.concatenate([np.ones(len(s_fit)), np.zeros(len(r_fit))])
    w, b = fit_logistic(fit, labels, l2=l2)
    score = lambda x: ((x - mean) / std) @ w  # noqa: E731
    return DatasetInferenceResult(dataset_test(score(s_test), score(r_test), alpha=alpha), w, b)
