# ruff: noqa: F722
"""Harmlessness and stealth of watermarks, and AQUA's retrieval metrics.

* :func:`retrieval_rank`: AQUA's ``rank.py``, the mean 0-based rank of the watermark in the
  top-``k`` of its probes, a miss counting as ``k``.
* :func:`conditional_success`: AQUA's CGSR, the success rate among probes whose top-``k``
  held the watermark.
* :func:`watermark_retrieval_rate`: harmlessness, the fraction of ordinary queries whose
  top-``k`` contains any watermark (lower is more harmless).
* :func:`knn_outlier_scores` and :func:`auroc`: stealth, how well a detector that flags
  knowledge-base images far from their nearest neighbours separates watermarks from ordinary
  items (AUROC 0.5: indistinguishable; 1: every watermark stands out).
* :func:`fit_query_filter`: a service-side defence that refuses queries unlike ordinary ones.

Example:
  >>> auroc([0.9, 0.8], [0.1, 0.2, 0.85])
  0.8333333333333334
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from jaxtyping import Float, Int
from scipy import stats

__all__ = [
    "QueryFilter",
    "auroc",
    "conditional_success",
    "fit_query_filter",
    "knn_outlier_scores",
    "retrieval_rank",
    "watermark_retrieval_rate",
]


def retrieval_rank(retrieved: Int[np.ndarray, "q k"], watermark_ids) -> float:
    """Mean over probes of the 0-based rank of the first watermark id in ``retrieved`` (a
    miss counts as ``k``)."""
    retrieved = np.asarray(retrieved)
    if retrieved.ndim != 2 or retrieved.shape[0] == 0:
        raise ValueError(f"retrieved must have shape [queries, k], got {retrieved.shape}")
    hit = np.isin(retrieved, np.asarray(watermark_ids))
    k = retrieved.shape[1]
    ranks = np.where(hit.any(axis=1), np.argmax(hit, axis=1), k)
    return float(ranks.mean())


def conditional_success(
    hits: Sequence[bool] | np.ndarray, successes: Sequence[bool] | np.ndarray
) -> float:
    """Success rate among probes whose watermark was retrieved (NaN if none was)."""
    hits = np.asarray(hits, bool)
    successes = np.asarray(successes, bool)
    if hits.shape != successes.shape:
        raise ValueError(f"hits {hits.shape} and successes {successes.shape} differ in shape")
    return float(successes[hits].mean()) if hits.any() else float("nan")


def watermark_retrieval_rate(retrieved: Int[np.ndarray, "q k"], watermark_ids) -> float:
    """Fraction of queries whose top-``k`` contains any of ``watermark_ids``."""
    retrieved = np.asarray(retrieved)
    if retrieved.ndim != 2 or retrieved.shape[0] == 0:
        raise ValueError(f"retrieved must have shape [queries, k], got {retrieved.shape}")
    return float(np.isin(retrieved, np.asarray(watermark_ids)).any(axis=1).mean())


def knn_outlier_scores(
    reference: Float[np.ndarray, "n d"], queries: Float[np.ndarray, "m d"], *, k: int = 5
) -> np.ndarray:
    """Mean cosine distance of each query to its ``k`` nearest reference rows (unit-norm
    embeddings); larger = more of an outlier."""
    reference = np.asarray(reference, np.float32)
    queries = np.asarray(queries, np.float32)
    if reference.ndim != 2 or queries.ndim != 2 or reference.shape[1] != queries.shape[1]:
        raise ValueError(
            f"reference and queries must be [n, d] and [m, d], got {reference.shape}, "
            f"{queries.shape}"
        )
    if not 1 <= k <= len(reference):
        raise ValueError(f"k must be in [1, {len(reference)}], got {k}")
    sims = queries @ reference.T
    top = -np.sort(-sims, axis=1)[:, :k]
    return 1.0 - top.mean(axis=1)


def auroc(
    positive_scores: Sequence[float] | np.ndarray, negative_scores: Sequence[float] | np.ndarray
) -> float:
    """Area under the ROC curve of scores that should be higher for positives
    (Mann-Whitney U / (n_pos n_neg), ties counted half)."""
    pos = np.asarray(positive_scores, np.float64)
    neg = np.asarray(negative_scores, np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("auroc needs at least one positive and one negative score")
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


class QueryFilter(NamedTuple):
    """Serve a query iff its similarity to its nearest ordinary queries reaches ``threshold``."""

    reference: np.ndarray
    threshold: float
    k: int

    def __call__(self, query_embeddings: np.ndarray) -> np.ndarray:
        score = 1.0 - knn_outlier_scores(self.reference, query_embeddings, k=self.k)
        return score >= self.threshold


def fit_query_filter(
    ordinary: Float[np.ndarray, "n d"], *, reject_rate: float = 0.05, k: int = 5
) -> QueryFilter:
    """A :class:`QueryFilter` calibrated to refuse ``reject_rate`` of ordinary queries: the
    threshold is that quantile of each ordinary query's mean similarity to its ``k`` nearest
    *other* ordinary queries."""
    ordinary = np.asarray(ordinary, np.float32)
    if ordinary.ndim != 2 or len(ordinary) <= k:
        raise ValueError(f"ordinary must be [n > k, d] embeddings, got {ordinary.shape}")
    if not 0.0 <= reject_rate < 1.0:
        raise ValueError(f"reject_rate must be in [0, 1), got {reject_rate}")
    sims = ordinary @ ordinary.T
    np.fill_diagonal(sims, -np.inf)
    score = (-np.sort(-sims, axis=1)[:, :k]).mean(axis=1)
    return QueryFilter(ordinary, float(np.quantile(score, reject_rate)), int(k))
