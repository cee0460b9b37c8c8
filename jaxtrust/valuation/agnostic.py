r"""Model-agnostic valuers on window features: KNN-Shapley, Data-OOB, random.

Windows are split into context features ``X`` (each window's context, standardised by its own
mean and standard deviation) and targets ``Y`` (the horizon in the same units), so these valuers
see the same scale-free forecasting problem as the foundation model.

* KNN-Shapley (Jia et al., "Efficient Task-Specific Data Valuation for Nearest Neighbor
  Algorithms", VLDB 2019), exact, for the utility
  :math:`U(S) = \frac1K \sum_{j \in \mathrm{top}_K(S)} a_j` with agreement
  :math:`a_j = -\|y_j - y_{test}\|^2 / H`. With training points sorted by distance to the test
  point, :math:`s_{(N)} = a_{(N)}/N` and
  :math:`s_{(i)} = s_{(i+1)} + \frac{a_{(i)} - a_{(i+1)}}{K}\frac{\min(K, i)}{i}`; the
  recursion is linear in the agreements, so it is exact for any real-valued agreement, not only
  for Jia et al.'s 0/1 label match. Values are averaged over the test points.
* Data-OOB (Kwon & Zou, "Data-OOB: Out-of-bag Estimate as a Simple and Efficient Data Value",
  ICML 2023) with bagged ridge regressors from context to horizon: the value of window i is
  the mean over the bags that left it out of :math:`-\|f_b(x_i) - y_i\|^2 / H`.
"""

# ruff: noqa: F722
from __future__ import annotations

import numpy as np
from jaxtyping import Float

__all__ = ["data_oob_scores", "knn_shapley_scores", "random_scores", "window_features"]


def window_features(
    windows: Float[np.ndarray, "n length"], horizon: int
) -> tuple[Float[np.ndarray, "n context"], Float[np.ndarray, "n horizon"]]:
    """``(X, Y)``: contexts and horizons, standardised by each context's mean and std."""
    w = np.asarray(windows, np.float64)
    if w.ndim != 2 or not 0 < horizon < w.shape[1]:
        raise ValueError(f"windows must be [n, length > horizon={horizon}], got {w.shape}")
    ctx, fut = w[:, :-horizon], w[:, -horizon:]
    mu = ctx.mean(1, keepdims=True)
    sd = ctx.std(1, keepdims=True)
    sd = np.where(sd < 1e-6, 1.0, sd)
    return (ctx - mu) / sd, (fut - mu) / sd


def knn_shapley_scores(
    x_train: Float[np.ndarray, "n d"],
    y_train: Float[np.ndarray, "n h"],
    x_test: Float[np.ndarray, "m d"],
    y_test: Float[np.ndarray, "m h"],
    *,
    k: int = 5,
) -> Float[np.ndarray, " n"]:
    """Exact KNN-Shapley values for the agreement utility (see the module docstring).

    Args:
      x_train, y_train: ``[n, d]`` features and ``[n, h]`` targets of the valued points.
      x_test, y_test: the held-out points the utility is measured on.
      k: neighbours K.

    Returns:
      ``[n]`` values (positive: helpful relative to the others).

    Example:
      >>> x = np.array([[0.0], [1.0], [5.0]]); y = np.array([[0.0], [1.0], [9.0]])
      >>> v = knn_shapley_scores(x, y, np.array([[0.2]]), np.array([[0.1]]), k=1)
      >>> int(np.argmax(v)), int(np.argmin(v))
      (0, 2)
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    x_train, y_train = np.asarray(x_train, float), np.asarray(y_train, float)
    x_test, y_test = np.asarray(x_test, float), np.asarray(y_test, float)
    n = x_train.shape[0]
    if y_train.shape[0] != n or x_test.shape[0] != y_test.shape[0]:
        raise ValueError("x and y must have the same number of rows")
    values = np.zeros(n)
    ranks = np.arange(1, n + 1)
    for xt, yt in zip(x_test, y_test, strict=True):
        order = np.argsort(np.sum((x_train - xt) ** 2, axis=1), kind="stable")
        a = -np.mean((y_train[order] - yt) ** 2, axis=1)
        s = np.zeros(n)
        s[-1] = a[-1] / n
        coef = np.minimum(k, ranks[:-1]) / ranks[:-1] / k
        for i in range(n - 2, -1, -1):
            s[i] = s[i + 1] + (a[i] - a[i + 1]) * coef[i]
        values[order] += s
    return values / len(x_test)


def data_oob_scores(
    x: Float[np.ndarray, "n d"],
    y: Float[np.ndarray, "n h"],
    *,
    num_models: int = 100,
    ridge: float = 1.0,
    seed: int = 0,
) -> Float[np.ndarray, " n"]:
    """Data-OOB with bootstrap-bagged ridge regressors (see the module docstring).

    Args:
      x, y: ``[n, d]`` features and ``[n, h]`` targets.
      num_models: bags B.
      ridge: ridge penalty.
      seed: bootstrap seed.

    Returns:
      ``[n]`` values; a window never out of bag gets the mean value.
    """
    if not isinstance(num_models, int) or num_models < 1:
        raise ValueError(f"num_models must be a positive int, got {num_models!r}")
    x, y = np.asarray(x, float), np.asarray(y, float)
    n, d = x.shape
    rng = np.random.default_rng(seed)
    total, count = np.zeros(n), np.zeros(n)
    xb = np.concatenate([x, np.ones((n, 1))], axis=1)
    for _ in range(num_models):
        idx = rng.integers(0, n, size=n)
        oob = np.setdiff1d(np.arange(n), idx)
        if oob.size == 0:
            continue
        a = xb[idx]
        w = np.linalg.solve(a.T @ a + ridge * np.eye(d + 1), a.T @ y[idx])
        total[oob] += -np.mean((xb[oob] @ w - y[oob]) ** 2, axis=1)
        count[oob] += 1
    mean = total[count > 0].sum() / max(count[count > 0].sum(), 1)
    return np.where(count > 0, total / np.maximum(count, 1), mean)


def random_scores(n: int, *, seed: int = 0) -> Float[np.ndarray, " n"]:
    """Uniform random values: the floor every valuer must beat."""
    return np.random.default_rng(seed).random(n)
