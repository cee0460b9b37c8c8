# ruff: noqa: F722
r"""How much of a reference text a model's output reproduces: LCS, longest common substring,
ROUGE-L.

For an output :math:`o` and a reference :math:`r` (token sequences),

* :math:`\mathrm{LCS}(o, r)` is the length of the longest common *subsequence* and ROUGE-L
  precision / recall / F1 are :math:`P = \mathrm{LCS}/|o|`, :math:`R = \mathrm{LCS}/|r|`,
  :math:`F = 2PR/(P + R)` (Lin, *ROUGE: A Package for Automatic Evaluation of Summaries*, 2004);
* :math:`\mathrm{LCSubstr}(o, r)` is the length of the longest common *contiguous* run, the
  verbatim-extraction criterion.

MemHunter scores "flexible" (near-verbatim) memorization with these (Wu, Lou, Zheng, Chen,
*MemHunter: Automated and Verifiable Memorization Detection at Dataset-scale in LLMs*, 2024).
Both are computed for a whole batch of pairs at once: the dynamic programme runs over the
output's positions, vectorised over the pairs and the reference positions, with the row update
of the subsequence DP written as a running maximum
(:math:`c_j = \max_{j' \le j} \max(p_{j'}, p_{j'-1} + [o_i = r_{j'}])`).

Example:
  >>> m = memorization_scores([[1, 2, 3, 4]], [[9, 1, 2, 4, 3]])
  >>> int(m.lcs[0]), int(m.substring[0]), float(m.precision[0])
  (3, 2, 0.75)
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from jaxtyping import Float, Int

__all__ = ["MemorizationScores", "memorization_scores", "word_ids"]

_WORD = re.compile(r"\w+|[^\w\s]")


def word_ids(text: str) -> list[int]:
    """Word-level units of ``text`` (runs of word characters, single punctuation marks) as
    CRC-32 ids: the unit in which ROUGE-L is usually computed, for byte-level models whose
    byte LCS of unrelated English is already high.

    Example:
      >>> word_ids("a b") == word_ids("a  b")
      True
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return [zlib.crc32(w.encode("utf-8")) for w in _WORD.findall(text)]


class MemorizationScores(NamedTuple):
    """Per-pair overlap of outputs with references (NumPy ``[n]`` each).

    Attributes:
      lcs: longest common subsequence length.
      substring: longest common substring length.
      precision / recall / f1: ROUGE-L from ``lcs`` (0 where a length is 0).
      output_length / reference_length: the sequence lengths.
    """

    lcs: Int[np.ndarray, " n"]
    substring: Int[np.ndarray, " n"]
    precision: Float[np.ndarray, " n"]
    recall: Float[np.ndarray, " n"]
    f1: Float[np.ndarray, " n"]
    output_length: Int[np.ndarray, " n"]
    reference_length: Int[np.ndarray, " n"]


def _padded(
    seqs: Sequence[Sequence[int | np.integer]], fill: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(seqs, str) or not isinstance(seqs, Sequence | np.ndarray):
        raise TypeError(f"{name} must be a sequence of token-id sequences")
    lengths = np.array([len(s) for s in seqs], np.int64)
    width = max(1, int(lengths.max(initial=0)))
    out = np.full((len(seqs), width), fill, np.int64)
    for i, s in enumerate(seqs):
        row = np.asarray(s, np.int64)
        if row.size and row.min() < 0:
            raise ValueError(f"{name}[{i}] has negative token ids")
        out[i, : row.size] = row
    return out, lengths


def memorization_scores(
    outputs: Sequence[Sequence[int | np.integer]], references: Sequence[Sequence[int | np.integer]]
) -> MemorizationScores:
    """LCS, longest common substring and ROUGE-L of each output against its reference.

    Args:
      outputs: the model's continuations (token ids; lengths may differ).
      references: the true texts, one per output.

    Returns:
      :class:`MemorizationScores`.

    Raises:
      ValueError: ``outputs`` and ``references`` differ in length, are empty, or hold negative
        ids. TypeError: not sequences of sequences.
    """
    if len(outputs) != len(references):
        raise ValueError(
            f"outputs ({len(outputs)}) and references ({len(references)}) must pair up"
        )
    if len(outputs) == 0:
        raise ValueError("outputs is empty")
    # Distinct negative fills never match each other or a real token.
    o, lo = _padded(outputs, -1, "outputs")
    r, lr = _padded(references, -2, "references")
    n, m = r.shape
    prev_lcs = np.zeros((n, m + 1), np.int64)
    prev_sub = np.zeros((n, m + 1), np.int64)
    best_sub = np.zeros(n, np.int64)
    for i in range(o.shape[1]):
        eq = (o[:, i : i + 1] == r).astype(np.int64)  # [n, m]
        sub = np.zeros_like(prev_sub)
        sub[:, 1:] = (prev_sub[:, :-1] + 1) * eq
        best_sub = np.maximum(best_sub, sub.max(1))
        cand = np.maximum(prev_lcs[:, 1:], prev_lcs[:, :-1] + eq)
        cur = np.zeros_like(prev_lcs)
        cur[:, 1:] = np.maximum.accumulate(cand, axis=1)
        prev_lcs, prev_sub = cur, sub
    lcs = prev_lcs[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(lo > 0, lcs / np.maximum(lo, 1), 0.0)
        rc = np.where(lr > 0, lcs / np.maximum(lr, 1), 0.0)
        f = np.where(p + rc > 0, 2 * p * rc / np.where(p + rc > 0, p + rc, 1.0), 0.0)
    return MemorizationScores(lcs, best_sub, p, rc, f, lo, lr)
