# ruff: noqa: F722
"""AQUA's audit: insert watermarks into a service's knowledge base, send their secret probes
through the black-box text interface, and test the answers.

The owner holds ``W`` watermarks with ``P`` probes each. On a suspect service it counts the
probes whose answer contains the expected answer, :math:`S = \\sum_w s_w` out of
:math:`n = \\sum_w P_w`, and rejects "the service does not use my images" when the one-sided
exact binomial p-value :math:`P(X \\ge S)`, :math:`X \\sim B(n, p_0)`, is below
:math:`\\alpha`. The clean rate :math:`p_0` is the Clopper-Pearson upper bound of the success
rate of probes whose watermarks were never inserted (a clean reference system, or the suspect
itself probed with unused keys) (:func:`calibrate`). Per probe it also records whether the
watermark was in the top-``k`` (AQUA's rank and CGSR).

Reference:
  Chen, Lou, Wang, *Safeguarding Multimodal Knowledge Copyright in the RAG-as-a-Service
  Environment*, ICLR 2026 (arXiv:2506.10030).

Example::

    marked, ids = insert_watermarks(system, watermarks, copies=1)
    p0 = calibrate(clean_reference, unused_watermarks)
    result = probe(marked, watermarks, watermark_ids=ids)
    verdict = audit(result, p0=p0, alpha=0.01)   # a Verification
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from jaxtyping import Bool, Int

from jaxtrust.multimodal.aqua.verify import (
    Verification,
    clean_rate_bound,
    count_successes,
    verify,
)
from jaxtrust.multimodal.aqua.watermarks import Watermark
from jaxtrust.multimodal.rag import RAGSystem, insert, rag_answer

__all__ = ["ProbeResult", "audit", "calibrate", "insert_watermarks", "probe"]


def _check_watermarks(watermarks: Sequence[Watermark]) -> list[Watermark]:
    if isinstance(watermarks, Watermark):
        raise TypeError("watermarks must be a sequence of Watermark, not one Watermark")
    watermarks = list(watermarks)
    if not watermarks:
        raise ValueError("watermarks is empty: an audit needs at least one watermark")
    for w in watermarks:
        if not isinstance(w, Watermark):
            raise TypeError(f"watermarks must hold Watermark objects, got {type(w).__name__}")
    return watermarks


def insert_watermarks(
    system: RAGSystem,
    watermarks: Sequence[Watermark],
    *,
    copies: int = 1,
    transform: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> tuple[RAGSystem, list[np.ndarray]]:
    """A new service whose base also holds ``copies`` of every watermark image.

    Args:
      system: the service (not modified).
      watermarks: the owner's watermarks.
      copies: copies of each image (AQUA inserts 1 to 1000).
      transform: optional ``transform(image, copy_index) -> image`` the images undergo on the
        way in (robustness experiments).

    Returns:
      ``(system, ids)``: the new service and, per watermark, the ids of its copies.

    Raises:
      ValueError: no watermarks, ``copies < 1``, or an image of the wrong size / mode.
    """
    watermarks = _check_watermarks(watermarks)
    if not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies must be a positive int, got {copies!r}")
    images = []
    for w in watermarks:
        for c in range(copies):
            images.append(w.image if transform is None else transform(w.image, c))
    new, ids = insert(system, np.stack(images))
    return new, [ids[i * copies : (i + 1) * copies] for i in range(len(watermarks))]


class ProbeResult(NamedTuple):
    """Probe outcomes, per watermark ``w`` and probe ``p``.

    Attributes:
      successes: ``[W]`` probes whose answer contained the expected answer.
      trials: ``[W]`` probes sent.
      correct: ``[W, P]`` per probe success (padded with False for shorter probe sets).
      hits: ``[W, P]`` whether a copy of the watermark was in the top-``k`` (False when
        ``watermark_ids`` were not given).
      ranks: ``[W, P]`` 0-based rank of the first copy in the top-``k`` (``k`` on a miss).
      answers: the answers, per watermark.
    """

    successes: Int[np.ndarray, " w"]
    trials: Int[np.ndarray, " w"]
    correct: Bool[np.ndarray, "w p"]
    hits: Bool[np.ndarray, "w p"]
    ranks: Int[np.ndarray, "w p"]
    answers: list[list[str]]


def probe(
    system: RAGSystem,
    watermarks: Sequence[Watermark],
    *,
    watermark_ids: Sequence[np.ndarray] | None = None,
    query_filter: Callable[[np.ndarray], np.ndarray] | None = None,
) -> ProbeResult:
    """Send every watermark's probes to ``system`` (one batch) and score the answers.

    Args:
      system: the suspect service.
      watermarks: the watermarks whose probes to send.
      watermark_ids: per watermark, the ids of its copies in ``system`` (for hits and ranks).
      query_filter: the service's query defence (see :func:`jaxtrust.multimodal.rag.
        rag_answer`); refused probes count as failures.

    Returns:
      A :class:`ProbeResult`.
    """
    watermarks = _check_watermarks(watermarks)
    if watermark_ids is not None and len(watermark_ids) != len(watermarks):
        raise ValueError(
            f"watermark_ids has {len(watermark_ids)} entries, watermarks {len(watermarks)}"
        )
    queries = [q for w in watermarks for q in w.probes]
    out = rag_answer(system, queries, query_filter=query_filter)
    width = max(len(w.probes) for w in watermarks)
    n = len(watermarks)
    correct = np.zeros((n, width), bool)
    hits = np.zeros((n, width), bool)
    ranks = np.full((n, width), system.k, np.int64)
    answers, successes, trials = [], [], []
    lo = 0
    for i, w in enumerate(watermarks):
        rows = slice(lo, lo + len(w.probes))
        texts = out.answers[rows]
        answers.append(texts)
        ok = [count_successes([t], w.answer) == 1 for t in texts]
        correct[i, : len(ok)] = ok
        successes.append(sum(ok))
        trials.append(len(ok))
        if watermark_ids is not None:
            hit = np.isin(out.search.ids[rows], np.asarray(watermark_ids[i]))
            hits[i, : len(ok)] = hit.any(axis=1)
            ranks[i, : len(ok)] = np.where(hit.any(axis=1), np.argmax(hit, axis=1), system.k)
        lo += len(w.probes)
    return ProbeResult(
        np.asarray(successes, np.int64), np.asarray(trials, np.int64), correct, hits, ranks, answers
    )


def calibrate(
    system: RAGSystem, watermarks: Sequence[Watermark], *, confidence: float = 0.95
) -> float:
    """Clean-rate bound :math:`p_0`: the one-sided Clopper-Pearson upper bound (at
    ``confidence``) of the success rate of ``watermarks``' probes on ``system``, where they
    were never inserted."""
    result = probe(system, watermarks)
    return clean_rate_bound(
        int(result.successes.sum()), int(result.trials.sum()), confidence=confidence
    )


def audit(result: ProbeResult, *, p0: float, alpha: float = 0.01) -> Verification:
    """Pooled binomial test of all probes in ``result`` against the clean rate ``p0``."""
    if not isinstance(result, ProbeResult):
        raise TypeError(f"result must be a ProbeResult, got {type(result).__name__}")
    return verify(int(result.successes.sum()), int(result.trials.sum()), p0=p0, alpha=alpha)
