"""Verification: did a suspect RAG service use the watermarked images?

The owner sends its ``n`` probe queries and counts the answers that contain the expected
answer (AQUA's match: lower-cased, punctuation and whitespace removed, substring), ``s``
successes. Under H0 (the service does not hold the watermark) each probe succeeds with a
probability at most :math:`p_0`, the success rate of clean systems; the exact one-sided
binomial test gives

.. math:: p = P(X \\ge s), \\quad X \\sim \\mathrm{Binomial}(n, p_0),

and the service is declared to use the data when :math:`p < \\alpha`. :math:`p_0` is not known;
:func:`clean_rate_bound` takes the Clopper-Pearson upper confidence bound of the clean rate
measured on calibration systems (clean bases, random keys), so the test stays conservative
when the clean rate is estimated. The false-positive rate is then *measured* on other clean
systems and keys (:func:`empirical_fpr`).

AQUA's released ``pvalue.py`` instead runs Welch's t-test on per-watermark success rates and,
because its query-budget check runs before a file's rates are appended, drops the last file,
leaving a single data point per group with the default budget. :func:`welch_pvalue` is kept
for comparison; the binomial test on raw counts is the faithful replacement the notes call for.

Example:
  >>> contains_answer("It is Quilla-Zorn Xeno!", "quilla zorn xeno")
  True
  >>> v = verify(8, 10, p0=0.01)
  >>> v.detected, v.p_value < 1e-12
  (True, True)
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = [
    "Verification",
    "binomial_pvalue",
    "clean_rate_bound",
    "contains_answer",
    "count_successes",
    "empirical_fpr",
    "normalize_text",
    "verify",
    "welch_pvalue",
]

_STRIP = re.compile(f"[{re.escape(string.punctuation)}\\s]+")


def normalize_text(text: str) -> str:
    """Lower case, punctuation and whitespace removed (AQUA's
    ``contains_ignoring_case_punctuation_space``)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _STRIP.sub("", text.lower())


def contains_answer(output: str, answer: str) -> bool:
    """Whether ``output`` contains ``answer`` after :func:`normalize_text` of both.

    Raises:
      ValueError: ``answer`` is empty after normalisation (every output would match).
    """
    target = normalize_text(answer)
    if not target:
        raise ValueError(f"answer {answer!r} is empty after normalisation; a probe needs one")
    return target in normalize_text(output)


def count_successes(outputs: Sequence[str], answer: str) -> int:
    """Number of ``outputs`` that contain ``answer``."""
    if isinstance(outputs, str):
        raise TypeError("outputs must be a sequence of strings, not one string")
    return sum(contains_answer(o, answer) for o in outputs)


def _check_counts(successes, trials):
    s = np.asarray(successes)
    n = np.asarray(trials)
    if not (np.issubdtype(s.dtype, np.integer) and np.issubdtype(n.dtype, np.integer)):
        raise TypeError("successes and trials must be integers")
    if np.any(n < 1):
        raise ValueError("trials must be >= 1 (a probe set without probes tests nothing)")
    if np.any(s < 0) or np.any(s > n):
        raise ValueError("successes must lie in [0, trials]")
    return s, n


def binomial_pvalue(successes, trials, p0) -> np.ndarray | float:
    """One-sided exact binomial p-value :math:`P(X \\ge s)`, :math:`X \\sim B(n, p_0)`
    (vectorised; scipy's ``binom.sf(s - 1, n, p0)``)."""
    s, n = _check_counts(successes, trials)
    p0 = np.asarray(p0, np.float64)
    if np.any(p0 < 0) or np.any(p0 > 1):
        raise ValueError("p0 must lie in [0, 1]")
    out = stats.binom.sf(s - 1, n, p0)
    out = np.where(s == 0, 1.0, out)
    return float(out) if np.ndim(out) == 0 else out


def clean_rate_bound(successes: int, trials: int, *, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a success rate from ``successes`` of ``trials``:
    the ``confidence`` quantile of :math:`\\mathrm{Beta}(s + 1, n - s)` (1 when ``s == n``)."""
    s, n = _check_counts(successes, trials)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if int(s) == int(n):
        return 1.0
    return float(stats.beta.ppf(confidence, int(s) + 1, int(n) - int(s)))


class Verification(NamedTuple):
    """The outcome of one verification."""

    successes: int
    trials: int
    p0: float
    p_value: float
    detected: bool


def verify(successes: int, trials: int, *, p0: float, alpha: float = 0.01) -> Verification:
    """Binomial test of ``successes`` out of ``trials`` probes against the clean rate ``p0``.

    Args:
      successes: probes whose answer contained the expected answer.
      trials: probes sent (>= 1).
      p0: the clean-system success rate bound (e.g. :func:`clean_rate_bound`).
      alpha: significance level.

    Returns:
      A :class:`Verification` (``detected`` iff ``p_value < alpha``).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    p = binomial_pvalue(int(successes), int(trials), float(p0))
    return Verification(int(successes), int(trials), float(p0), float(p), bool(p < alpha))


def empirical_fpr(
    p_values: Sequence[float] | np.ndarray, *, alpha: float = 0.01
) -> tuple[float, int]:
    """``(fraction of clean trials with p < alpha, number of trials)``."""
    p = np.asarray(p_values, np.float64)
    if p.size == 0:
        raise ValueError("p_values is empty: the FPR needs clean trials")
    return float(np.mean(p < alpha)), int(p.size)


def welch_pvalue(
    clean_rates: Sequence[float] | np.ndarray, watermarked_rates: Sequence[float] | np.ndarray
) -> float:
    """AQUA's ``pvalue.py`` statistic: Welch's two-sample t-test of per-watermark success rates
    (two-sided, as scipy's ``ttest_ind(equal_var=False)``). NaN with fewer than two rates per
    group, which is what the released script's dropped-file bug leaves by default."""
    a = np.asarray(clean_rates, np.float64)
    b = np.asarray(watermarked_rates, np.float64)
    if a.size < 2 or b.size < 2:
        return math.nan
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 0.0 if a[0] != b[0] else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
