# ruff: noqa: F722
r"""How well a membership score separates members from non-members: ROC, AUC, TPR at low FPR.

Carlini et al. (*Membership Inference Attacks From First Principles*, S&P 2022) argue that an
attack must be judged by its true-positive rate at a low false-positive rate (0.1 %, 1 %), not
by its average accuracy or AUC alone; :func:`roc_metrics` reports all three, computed with
scikit-learn's ``roc_curve`` / ``roc_auc_score``. The TPR at FPR :math:`\alpha` is the largest
TPR over ROC points with :math:`\mathrm{FPR} \le \alpha` (the most an attacker reaches while
keeping its false alarms within :math:`\alpha`).

Example:
  >>> import numpy as np
  >>> r = roc_metrics(np.array([0.9, 0.8, 0.2, 0.1]), np.array([True, True, False, False]))
  >>> r.auc, r.tpr_at_1pct
  (1.0, 1.0)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from jaxtyping import Bool, Float

__all__ = ["ROCMetrics", "roc_metrics", "tpr_at_fpr"]


class ROCMetrics(NamedTuple):
    """ROC summary of a membership attack.

    Attributes:
      auc: area under the ROC curve (0.5 = chance).
      tpr_at_0_1pct: TPR at FPR <= 0.1 %.
      tpr_at_1pct: TPR at FPR <= 1 %.
      balanced_accuracy: best (TPR + TNR) / 2 over thresholds.
      fpr, tpr: the ROC curve (NumPy arrays).
      n_members, n_nonmembers: counts.
    """

    auc: float
    tpr_at_0_1pct: float
    tpr_at_1pct: float
    balanced_accuracy: float
    fpr: np.ndarray
    tpr: np.ndarray
    n_members: int
    n_nonmembers: int

    def summary(self) -> dict[str, float]:
        """The scalar fields as a JSON-able dict."""
        return {
            "auc": self.auc,
            "tpr_at_0_1pct": self.tpr_at_0_1pct,
            "tpr_at_1pct": self.tpr_at_1pct,
            "balanced_accuracy": self.balanced_accuracy,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
        }


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    """Largest TPR among ROC points with FPR <= ``max_fpr`` (0 if none)."""
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr}")
    ok = np.asarray(fpr) <= max_fpr
    return float(np.max(np.asarray(tpr)[ok])) if ok.any() else 0.0


def roc_metrics(scores: Float[np.ndarray, " n"], is_member: Bool[np.ndarray, " n"]) -> ROCMetrics:
    """ROC curve, AUC and TPR at 0.1 % / 1 % FPR of ``scores`` (larger = member).

    Args:
      scores: per-sample membership scores.
      is_member: ground truth (True = the sample was in the target's training set).

    Returns:
      A :class:`ROCMetrics`.

    Raises:
      ValueError: shapes differ, non-finite scores, or only one class present.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    s = np.asarray(scores, np.float64)
    m = np.asarray(is_member)
    if s.ndim != 1 or m.shape != s.shape:
        raise ValueError(
            f"scores and is_member must be 1-D of equal length, got {s.shape}, {m.shape}"
        )
    if m.dtype != bool:
        raise TypeError(f"is_member must be a boolean array, got dtype {m.dtype}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    n_in, n_out = int(m.sum()), int((~m).sum())
    if n_in == 0 or n_out == 0:
        raise ValueError(
            f"need members and non-members, got {n_in} members and {n_out} non-members"
        )
    fpr, tpr, _ = roc_curve(m, s)
    return ROCMetrics(
        auc=float(roc_auc_score(m, s)),
        tpr_at_0_1pct=tpr_at_fpr(fpr, tpr, 1e-3),
        tpr_at_1pct=tpr_at_fpr(fpr, tpr, 1e-2),
        balanced_accuracy=float(np.max((tpr + 1.0 - fpr) / 2.0)),
        fpr=fpr,
        tpr=tpr,
        n_members=n_in,
        n_nonmembers=n_out,
    )
