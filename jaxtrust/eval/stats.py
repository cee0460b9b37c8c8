"""Summaries every reproduction reports: means with standard errors, and per-seed claims.

Example:
  >>> mean_se([1.0, 2.0, 3.0])
  MeanSE(mean=2.0, se=0.5773502691896258, n=3)
  >>> proportion_se(0.5, 100)
  0.05
  >>> claim_count([True, False, True])
  {'holds': 2, 'seeds': 3}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["MeanSE", "claim_count", "mean_se", "proportion_se", "seed_summary"]


class MeanSE(NamedTuple):
    """A mean, its standard error (sample std / sqrt(n); 0 for n = 1) and the count."""

    mean: float
    se: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.se:.3f}"


def mean_se(values: Iterable[float]) -> MeanSE:
    """Mean and standard error of the mean of ``values`` (ddof = 1).

    Raises:
      ValueError: no values.
    """
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ValueError("values is empty: a mean over nothing is undefined")
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0
    return MeanSE(float(x.mean()), se, int(x.size))


def proportion_se(p: float, n: int) -> float:
    """Binomial standard error ``sqrt(p (1 - p) / n)`` of a rate measured on ``n`` items."""
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    return math.sqrt(p * (1.0 - p) / n)


def claim_count(holds: Sequence[bool | np.bool_]) -> dict[str, int]:
    """``{"holds": N, "seeds": M}``: on how many of M seeds a claim held."""
    flags = [bool(h) for h in holds]
    if not flags:
        raise ValueError("holds is empty")
    return {"holds": sum(flags), "seeds": len(flags)}


def seed_summary(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean, ``KEY_std`` (ddof 0, as earlier reports) and ``KEY_se`` of every numeric key
    shared by the per-seed dicts."""
    if not per_seed:
        raise ValueError("per_seed is empty")
    keys = [
        k
        for k, v in per_seed[0].items()
        if isinstance(v, int | float) and not isinstance(v, bool) and all(k in s for s in per_seed)
    ]
    out: dict[str, float] = {}
    for key in keys:
        values = np.asarray([float(s[key]) for s in per_seed])
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std())
        out[f"{key}_se"] = mean_se(values).se
    return out
