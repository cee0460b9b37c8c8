"""The client's quantization of per-prompt scores into the integers the encrypted circuit sums.

SecPE (Zhang et al., ECAI 2024, arXiv:2502.00847) sums m per-prompt k-class score vectors under
encryption. TFHE computes on small unsigned integers, so the client maps each input's float scores
to ``[0, L]`` with one affine map per input (shared by its prompts and classes, so the sum stays a
soft vote on a common scale) such that the sum of m prompts fits ``bits`` bits. The plaintext
argmax of the quantized sum (:func:`plaintext_argmax`, lowest index on ties) is the reference every
encrypted circuit must reproduce.

Example:
  >>> q, spec = quantize_scores(np.array([[[0.1, 0.9], [0.4, 0.2]]]), bits=4)
  >>> plaintext_argmax(q).tolist()
  [1]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from jaxtyping import Float, Int

__all__ = [
    "MAX_BITS",
    "QuantSpec",
    "check_bits",
    "check_quantized",
    "levels_for",
    "plaintext_argmax",
    "quantize_scores",
]

MAX_BITS = 8


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """The client's quantization of score vectors (see :func:`quantize_scores`).

    Attributes:
      bits: bit width of the encrypted SUM over prompts (the circuit's input range is
        ``[0, 2**bits)`` after summation).
      prompts: m, the number of prompts summed.
      classes: k.
      levels: L, the largest per-prompt integer; ``prompts * levels <= 2**bits - 1``.
      offset: per-input minimum subtracted, shape [n].
      scale: per-input quantization step (score units per integer), shape [n].
    """

    bits: int
    prompts: int
    classes: int
    levels: int
    offset: np.ndarray
    scale: np.ndarray

    def dequantize(self, ints: np.ndarray) -> np.ndarray:
        """Approximate scores from per-prompt integers [n, m, k]."""
        return ints * self.scale[:, None, None] + self.offset[:, None, None]


def levels_for(bits: int, prompts: int) -> int:
    """Largest per-prompt integer L with ``prompts * L <= 2**bits - 1``."""
    levels = (2**bits - 1) // prompts
    if levels < 1:
        raise ValueError(
            f"bits={bits} cannot hold the sum of {prompts} prompts (need 2**bits - 1 >= prompts)"
        )
    return levels


def check_bits(bits: int) -> None:
    """Raise ValueError unless ``bits`` is an integer in ``[2, MAX_BITS]``."""
    if (
        isinstance(bits, bool)
        or not isinstance(bits, (int, np.integer))
        or not 2 <= bits <= MAX_BITS
    ):
        raise ValueError(f"bits must be an integer in [2, {MAX_BITS}], got {bits!r}")


def _check_scores(scores: Any) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 3 or scores.shape[0] < 1 or scores.shape[1] < 1 or scores.shape[2] < 2:
        raise ValueError(
            f"scores must have shape [n, m, k] with n, m >= 1 and k >= 2, got {scores.shape}"
        )
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(
        scores.dtype, np.complexfloating
    ):
        raise TypeError(f"scores must be real numbers, got dtype {scores.dtype}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    return scores.astype(np.float64)


def quantize_scores(
    scores: Float[np.ndarray, "n m k"], bits: int
) -> tuple[Int[np.ndarray, "n m k"], QuantSpec]:
    """Quantize per-prompt score vectors so that their encrypted sum fits ``bits`` bits.

    Rule (per input i, one affine map shared by all its m prompts and k classes, so the sum over
    prompts stays a soft vote on a common scale)::

        L      = floor((2**bits - 1) / m)                  # per-prompt integer range [0, L]
        lo_i   = min_{j,c} scores[i, j, c]
        step_i = (max_{j,c} scores[i, j, c] - lo_i) / L     (1 when all scores are equal)
        q[i, j, c] = round((scores[i, j, c] - lo_i) / step_i)        in [0, L]

    so ``sum_j q[i, j, c] <= m L <= 2**bits - 1``. The plaintext argmax of that quantized sum is
    the reference the encrypted result must equal; its disagreement with the float argmax is the
    quantization error, reported separately.

    Args:
      scores: float array [n, m, k] (n inputs, m prompts, k >= 2 classes).
      bits: bit width of the encrypted sum, 2..8.

    Returns:
      ``(q, spec)``: int64 array [n, m, k] in ``[0, L]`` and the :class:`QuantSpec`.

    Example:
      >>> q, spec = quantize_scores(np.array([[[0.1, 0.9], [0.4, 0.2]]]), bits=4)
      >>> int(spec.levels), q.tolist()
      (7, [[[0, 7], [3, 1]]])
    """
    check_bits(bits)
    scores = _check_scores(scores)
    n, m, k = scores.shape
    levels = levels_for(bits, m)
    lo = scores.min(axis=(1, 2))
    span = scores.max(axis=(1, 2)) - lo
    step = np.where(span > 0, span / levels, 1.0)
    q = np.rint((scores - lo[:, None, None]) / step[:, None, None]).astype(np.int64)
    q = np.clip(q, 0, levels)
    return q, QuantSpec(bits=int(bits), prompts=m, classes=k, levels=levels, offset=lo, scale=step)


def check_quantized(q: Any, *, prompts: int, classes: int, bits: int) -> np.ndarray:
    """Validate client integers [n, m, k] (or [m, k]) against a circuit's shape and range."""
    q = np.asarray(q)
    if not np.issubdtype(q.dtype, np.integer):
        raise TypeError(f"quantized scores must be integers, got dtype {q.dtype}")
    if q.shape[-2:] != (prompts, classes):
        raise ValueError(
            f"quantized scores must end in shape (m={prompts}, k={classes}) to match the circuit, "
            f"got {q.shape}"
        )
    levels = levels_for(bits, prompts)
    if q.size and (q.min() < 0 or q.max() > levels):
        raise ValueError(
            f"quantized scores must lie in [0, {levels}] (bits={bits}, m={prompts}: the sum must "
            f"fit {bits} bits), "
            f"got {q.min()}..{q.max()}; use quantize_scores"
        )
    return q.astype(np.int64)


def plaintext_argmax(q: Int[np.ndarray, "n m k"]) -> Int[np.ndarray, " n"]:
    """Argmax of the summed integers, lowest index on ties (numpy's rule)."""
    return np.argmax(np.asarray(q).sum(axis=-2), axis=-1)
