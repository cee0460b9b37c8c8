# ruff: noqa: F722
r"""Dataset-level hypothesis tests: is a suspect dataset scored higher than a reference set?

Given per-sample scores of a suspect dataset :math:`X = (x_1..x_n)` and of a reference set
:math:`Y = (y_1..y_m)` known not to be in training and drawn from the same distribution, the
null hypothesis is :math:`H_0: X \overset{d}{=} Y` (the suspect data is not a member) and the
alternative is that members score higher. Two one-sided tests:

* Welch's t: :math:`t = (\bar x - \bar y) / \sqrt{s_x^2/n + s_y^2/m}` with the
  Welch–Satterthwaite degrees of freedom
  :math:`\nu = (s_x^2/n + s_y^2/m)^2 / \big(\frac{(s_x^2/n)^2}{n-1} + \frac{(s_y^2/m)^2}{m-1}\big)`,
  :math:`p = P(T_\nu \ge t)`;
* Mann–Whitney U: :math:`U = \#\{(i, j): x_i > y_j\} + \frac12 \#\{x_i = y_j\}`, :math:`p`
  from :func:`scipy.stats.mannwhitneyu` (``alternative="greater"``).

The decision at level :math:`\alpha` rejects :math:`H_0` when the chosen test's p-value is at
most :math:`\alpha` (``"both"``: Bonferroni over the two, :math:`2\min(p_t, p_U) \le \alpha`).
Used by MemHunter (Wu et al., 2024) and by Dataset Inference (Maini et al., *LLM Dataset
Inference: Did you train on my dataset?*, NeurIPS 2024), whose aggregate is a t-test.

Example:
  >>> import numpy as np
  >>> rng = np.random.default_rng(0)
  >>> dataset_test(rng.normal(1.0, 1, 50), rng.normal(0.0, 1, 50)).reject
  True
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.stats
from jaxtyping import ArrayLike, Float

__all__ = ["DatasetTest", "TESTS", "check_alpha", "dataset_test", "welch_t"]

TESTS = ("welch", "mannwhitney", "both")


class WelchT(NamedTuple):
    """Welch's statistic, its degrees of freedom and the one-sided p-value."""

    t: float
    df: float
    p: float


class DatasetTest(NamedTuple):
    """The outcome of :func:`dataset_test`.

    Attributes:
      t, df, p_welch: Welch's one-sided t-test.
      u, p_mannwhitney: the one-sided Mann–Whitney test.
      p: the p-value the decision used; reject: ``p <= alpha``.
      alpha, test: the level and the test used.
      n_suspect, n_reference: the sample sizes.
    """

    t: float
    df: float
    p_welch: float
    u: float
    p_mannwhitney: float
    p: float
    reject: bool
    alpha: float
    test: str
    n_suspect: int
    n_reference: int


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float, or ``ValueError`` unless it lies strictly inside (0, 1)."""
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.floating):
        raise TypeError(f"alpha must be a number in (0, 1), got {type(alpha).__name__}")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


def _vector(x, name: str) -> np.ndarray:
    v = np.asarray(x, np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-sample scores, got shape {v.shape}")
    if v.size < 2:
        raise ValueError(f"{name} needs at least 2 samples (an empty dataset cannot be tested)")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} holds non-finite scores")
    return v


def welch_t(suspect: Float[ArrayLike, " n"], reference: Float[ArrayLike, " m"]) -> WelchT:
    """One-sided Welch t-test of ``mean(suspect) > mean(reference)`` (formula above).

    Args:
      suspect: per-sample scores of the suspect dataset (>= 2).
      reference: per-sample scores of the reference set (>= 2).

    Returns:
      ``WelchT(t, df, p)``; with both variances zero, ``t`` is 0 and ``p`` 1 when the means
      tie, ``±inf`` and ``p`` 0 or 1 otherwise.

    Raises:
      ValueError: fewer than 2 samples, non-finite scores, not 1-D.
    """
    x, y = _vector(suspect, "suspect"), _vector(reference, "reference")
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    diff = x.mean() - y.mean()
    se2 = vx + vy
    if se2 == 0.0:
        if diff == 0.0:
            return WelchT(0.0, float(x.size + y.size - 2), 1.0)
        return WelchT(float(np.sign(diff) * np.inf), float(x.size + y.size - 2), float(diff < 0))
    t = diff / np.sqrt(se2)
    df = se2**2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    return WelchT(float(t), float(df), float(scipy.stats.t.sf(t, df)))


def dataset_test(
    suspect: Float[ArrayLike, " n"],
    reference: Float[ArrayLike, " m"],
    *,
    alpha: float = 0.05,
    test: str = "welch",
) -> DatasetTest:
    """Test whether ``suspect`` scores exceed ``reference`` scores, and decide at ``alpha``.

    Args:
      suspect: per-sample scores (larger = more memorised) of the suspect dataset.
      reference: the same scores of a same-distribution set known to be unseen.
      alpha: the level, in (0, 1).
      test: ``"welch"``, ``"mannwhitney"`` or ``"both"`` (Bonferroni).

    Returns:
      :class:`DatasetTest`.

    Raises:
      ValueError: ``alpha`` outside (0, 1), an empty (or 1-sample) dataset, non-finite
        scores. KeyError: unknown ``test``.
    """
    alpha = check_alpha(alpha)
    if test not in TESTS:
        raise KeyError(f"unknown test {test!r}; known: {TESTS}")
    x, y = _vector(suspect, "suspect"), _vector(reference, "reference")
    w = welch_t(x, y)
    mw = scipy.stats.mannwhitneyu(x, y, alternative="greater")
    p = {"welch": w.p, "mannwhitney": float(mw.pvalue), "both": min(1.0, 2 * min(w.p, mw.pvalue))}
    return DatasetTest(
        w.t,
        w.df,
        w.p,
        float(mw.statistic),
        float(mw.pvalue),
        float(p[test]),
        bool(p[test] <= alpha),
        alpha,
        test,
        int(x.size),
        int(y.size),
    )
