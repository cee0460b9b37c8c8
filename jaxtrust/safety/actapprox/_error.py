"""One entry point for the error of any technique against the exact computation."""

from __future__ import annotations

import math

import jax

from jaxtrust.safety.actapprox._base import Technique
from jaxtrust.safety.actapprox.noise import GaussianNoise, LaplaceNoise
from jaxtrust.safety.actapprox.polynomial import Polynomial, polynomial_error
from jaxtrust.safety.actapprox.quantization import OmniQuant, SmoothQuant, quantization_error


def approximation_error(technique: Technique, *, reduce: str = "max", **kwargs) -> float:
    """Max or mean absolute error of ``technique`` against the exact function on a stated range.

    * polynomial: ``|approx(x) - f(x)|`` on an even grid, f = GELU/SiLU on [-8, 8] (default,
      ``activation="gelu"``) or the softmax exp on [-16, 0] (``function="exp"``); see
      :func:`~jaxtrust.safety.actapprox.polynomial.polynomial_error`.
    * quantization: relative error ``|Q(x) - x| / mean|x|`` of the per-token quantizer on
      N(0, 1) tokens with outlier channels, or on given ``activations=``
      (:func:`~jaxtrust.safety.actapprox.quantization_error`).
    * noise: ``E|eps|`` (sigma sqrt(2/pi) for Gaussian, scale for Laplace); unbounded, so
      ``reduce="max"`` raises.
    * sparsification: data-dependent (the error is the zeroed entries of the calibration
      activations); raises TypeError.

    Example:
      >>> from jaxtrust.safety.actapprox import technique
      >>> approximation_error(technique("nexus")) < 1e-3
      True
    """
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    if isinstance(technique, Polynomial):
        return polynomial_error(technique, reduce=reduce, **kwargs)
    if isinstance(technique, (SmoothQuant, OmniQuant)):
        return quantization_error(technique, reduce=reduce, **kwargs)
    if isinstance(technique, (GaussianNoise, LaplaceNoise)):
        if kwargs:
            raise TypeError(f"noise techniques take no options, got {sorted(kwargs)}")
        if reduce == "max":
            raise ValueError("noise is unbounded: use reduce='mean' (E|eps|)")
        strength = technique.strength
        if isinstance(strength, jax.Array):
            strength = float(strength)
        return (
            strength * math.sqrt(2.0 / math.pi)
            if isinstance(technique, GaussianNoise)
            else strength
        )
    raise TypeError(
        f"the error of {type(technique).__name__} depends on the data; measure it on calibration "
        "activations (record_activations)"
    )
