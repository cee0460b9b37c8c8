r"""The paper's claims, read off a noise sweep.

Zhang et al. (USENIX Security 2025) sweep the strength :math:`\sigma` of an activation error and
observe that safety degrades *before* utility: the refusal rate falls at a smaller
:math:`\sigma` than the one where perplexity rises (or task accuracy falls). On a grid
:math:`\sigma_0 = 0 < \sigma_1 < \dots`, with baseline values at :math:`\sigma_0`,

.. math::
   \sigma_{\text{refusal}} = \min\{\sigma_i : r(\sigma_i) < r(0) - \Delta_r\}, \quad
   \sigma_{\text{ppl}} = \min\{\sigma_i : p(\sigma_i) > p(0)(1 + \Delta_p)\},

(likewise :math:`\sigma_{\text{utility}}` with a drop :math:`\Delta_u`), and "safety before
perplexity" holds iff :math:`\sigma_{\text{refusal}}` exists and is strictly smaller than
:math:`\sigma_{\text{ppl}}` (:math:`+\infty` when perplexity never rises); a tie on the grid
does not count. The "most vulnerable approximation" (MVA) QuadA trains against is the sweep
point of lowest refusal whose perplexity stays within a budget (:func:`mva_sigma`).

A sweep is a mapping with equally long sequences ``sigma``, ``refusal_rate``, ``perplexity``
and ``utility`` (``sigma[0]`` the exact model).

Reference:
  Zhang et al., `Activation Approximations Can Incur Safety Vulnerabilities Even in Aligned
  LLMs: Comprehensive Analysis and Defense <https://arxiv.org/abs/2502.00840>`_, USENIX
  Security 2025.

Example:
  >>> sweep = {"sigma": [0.0, 0.1, 0.2], "refusal_rate": [1.0, 0.5, 0.2],
  ...          "perplexity": [2.0, 2.1, 3.0], "utility": [0.9, 0.9, 0.5]}
  >>> claims = sweep_claims(sweep, refusal_drop=0.1, perplexity_rise=0.1, utility_drop=0.1)
  >>> claims.sigma_refusal_drops, claims.sigma_perplexity_rises, claims.safety_before_perplexity
  (0.1, 0.2, True)
  >>> mva_sigma(sweep, 2.0)
  0.2
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

__all__ = ["SweepClaims", "first_crossing", "mva_sigma", "sweep_claims"]

_SWEEP_KEYS = ("sigma", "refusal_rate", "perplexity", "utility")
Sweep = Mapping[str, Sequence[float | int]]


class SweepClaims(NamedTuple):
    """Where each metric first degrades on a sweep, and whether safety degraded first.

    ``None`` where a metric never degrades on the grid.
    """

    sigma_refusal_drops: float | None
    sigma_perplexity_rises: float | None
    sigma_utility_drops: float | None
    safety_before_perplexity: bool
    safety_before_utility: bool


def first_crossing(
    xs: Sequence[float | int], ys: Sequence[float | int], threshold: float, *, above: bool
) -> float | None:
    """The first ``x`` whose ``y`` is strictly above (or below) ``threshold``; None if none is.

    Example:
      >>> first_crossing([1, 2, 3], [0.5, 0.4, 0.3], 0.45, above=False)
      2.0
    """
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys must have the same length, got {len(xs)} and {len(ys)}")
    for x, y in zip(xs, ys, strict=True):
        if (y > threshold) if above else (y < threshold):
            return float(x)
    return None


def _check_sweep(sweep: Sweep, keys: Sequence[str]) -> None:
    if not isinstance(sweep, Mapping):
        raise TypeError(f"sweep must be a mapping of sequences, got {type(sweep).__name__}")
    missing = [k for k in keys if k not in sweep]
    if missing:
        raise KeyError(f"sweep lacks {missing}; expected keys {tuple(keys)}")
    lengths = {k: len(sweep[k]) for k in keys}
    if len(set(lengths.values())) != 1 or lengths["sigma"] < 2:
        raise ValueError(f"sweep needs equally long sequences of >= 2 points, got {lengths}")
    if sweep["sigma"][0] != 0:
        raise ValueError(f"sweep['sigma'][0] must be 0 (the exact model), got {sweep['sigma'][0]}")


def sweep_claims(
    sweep: Sweep,
    *,
    refusal_drop: float,
    perplexity_rise: float,
    utility_drop: float,
) -> SweepClaims:
    """The first sigma where refusal, perplexity and utility degrade, and the claims.

    Args:
      sweep: ``sigma``, ``refusal_rate``, ``perplexity``, ``utility`` (see the module docstring).
      refusal_drop: :math:`\\Delta_r`, an absolute drop of the refusal rate.
      perplexity_rise: :math:`\\Delta_p`, a relative rise of perplexity (0.1 = +10 %).
      utility_drop: :math:`\\Delta_u`, an absolute drop of utility.

    Returns:
      :class:`SweepClaims`.
    """
    _check_sweep(sweep, _SWEEP_KEYS)
    s = sweep["sigma"]
    safety = first_crossing(
        s, sweep["refusal_rate"], sweep["refusal_rate"][0] - refusal_drop, above=False
    )
    ppl = first_crossing(
        s, sweep["perplexity"], sweep["perplexity"][0] * (1 + perplexity_rise), above=True
    )
    util = first_crossing(s, sweep["utility"], sweep["utility"][0] - utility_drop, above=False)

    def before(other: float | None) -> bool:
        # strictly earlier on the grid; a tie (same grid point) does not count
        return safety is not None and safety < (math.inf if other is None else other)

    return SweepClaims(safety, ppl, util, before(ppl), before(util))


def mva_sigma(sweep: Sweep, budget: float) -> float:
    """The sweep's most vulnerable approximation: the sigma > 0 of lowest refusal rate whose
    perplexity stays within ``budget`` times the exact model's (ties: the smaller sigma).

    Falls back to the first sigma > 0 when every point exceeds the budget.

    Args:
      sweep: ``sigma``, ``refusal_rate``, ``perplexity``.
      budget: allowed perplexity ratio (>= 1).

    Returns:
      The chosen sigma.
    """
    _check_sweep(sweep, _SWEEP_KEYS[:3])
    if not budget >= 1:
        raise ValueError(f"budget must be a perplexity ratio >= 1, got {budget}")
    base = sweep["perplexity"][0]
    candidates = [
        (r, s)
        for s, r, p in zip(sweep["sigma"], sweep["refusal_rate"], sweep["perplexity"], strict=True)
        if s > 0 and p <= budget * base
    ]
    if not candidates:
        return float(sweep["sigma"][1])
    return float(min(candidates)[1])
