"""Polynomialization: the GELU/SiLU and softmax replacements of private (MPC/FHE) inference.

Four works of the paper's "polynomialization" family, each as one :class:`Polynomial`
configuration (``name`` in ``POLYNOMIALS``):

* **Iron** (Hao et al., "Iron: Private Inference on Transformers", NeurIPS 2022). Iron does not
  publish one polynomial: it evaluates the tanh-form GELU with fixed-point protocols (exp,
  reciprocal). *Stand-in:* ``GELU(x) = 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))`` (SiLU:
  ``x sigmoid(x)``), ``tanh(z) = 2 sigmoid(2z) - 1``, ``sigmoid(u) = 1 / (1 + e^{-u})`` with
  ``e^{-|u|} ~ (1 - |u| / 2^r)^(2^r)`` (``r = exp_squarings``, default 4, 0 beyond ``2^r``) and
  every intermediate rounded to ``frac_bits`` (default 12) fractional bits, the fixed-point
  precision of Iron/CrypTFlow2-style protocols. The arithmetic pattern, not Iron's protocols.
* **BOLT** (Pang et al., "BOLT: Privacy-Preserving, Accurate and Efficient Inference for
  Transformers", IEEE S&P 2024): ``GELU(x) = 0`` for ``x < -2.7``, ``x`` for ``x > 2.7`` and
  ``0.5 x + P4(|x|)`` between, with BOLT's published degree-4 coefficients. *Faithful* (GELU).
* **BumbleBee** (Lu et al., "BumbleBee: Secure Two-party Inference Framework for Large
  Transformers", NDSS 2025): four pieces, ``0 | P3 on [-5, -1.97) | P6 on [-1.97, 3] | x``,
  with the coefficients of its SecretFlow-SPU implementation. *Faithful* (GELU).
* **NEXUS** (Zhang et al., "Secure Transformer Inference Made Non-interactive", NDSS 2025):
  ``0 | 0.5 x + P12(x) (even, degree 12) on [-3.5, 3.5] | x``, the coefficients of
  ``zju-abclab/NEXUS src/gelu.cpp``; in FHE the regions are selected with the composite sign
  polynomial ``f4 o f4 o g4 o g4`` of Cheon et al. (Asiacrypt 2020), available as
  ``selection="composite"`` (inputs scaled by ``1/sign_range`` and clipped to [-1, 1]).
  *Faithful* (GELU); the default ``selection="exact"`` is an ideal comparison.

SiLU models (the Llama family): the published polynomials are for GELU. Since
``SiLU(x) ~ 1.702 GELU(x / 1.702)``, each SiLU version keeps the *structure* (pieces, degrees,
basis), with breakpoints scaled by 1.702, and refits the coefficients by least squares to SiLU
(a stand-in; stated max errors in ``STATED_MAX_ERROR``).

Softmax (``softmax=True``): ``exp(x)`` for ``x = s - max(s) <= 0`` is replaced by
``(1 + x / 2^r)^(2^r)`` (r squarings) on ``[-T, 0]`` and 0 below ``-T``, the exp of
SecPE/NEXUS (``r = 7``, ``(1 + x/128)^128``) and the clipped-exp pattern of BOLT/BumbleBee
(here ``r = 6``, ``T = 13``: a documented choice, the per-paper exp details are not
reproduced). The normalisation is an exact division.

Example:
  >>> from jaxtrust.safety.actapprox import technique, polynomial_error
  >>> err = polynomial_error(technique("bolt"), activation="gelu", interval=(-8.0, 8.0))
  >>> err < 0.03
  True
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf
from jaxtyping import Array, Bool, Float

from jaxtrust.models.hooks import MASK_VALUE
from jaxtrust.safety.actapprox._base import Technique

POLYNOMIALS = ("iron", "bolt", "bumblebee", "nexus")
SILU_GELU_RATIO = 1.702  # SiLU(x) ~ 1.702 * GELU(x / 1.702)

# A piece is (lo, hi, kind, coeffs, basis): kind "zero" | "identity" | "poly"; for "poly",
# value = half_x * 0.5 * x + sum_k coeffs[k] * b(x)^powers[k], b = |x| or x.
_GELU_PIECES = {
    "bolt": (
        (-math.inf, -2.7, "zero", None),
        (
            -2.7,
            2.7,
            "poly",
            dict(
                half_x=True,
                abs=True,
                powers=(0, 1, 2, 3, 4),
                coeffs=(
                    0.001620808531841547,
                    -0.03798164612714154,
                    0.5410550166368381,
                    -0.18352506127082727,
                    0.020848611754127593,
                ),
            ),
        ),
        (2.7, math.inf, "identity", None),
    ),
    "bumblebee": (
        (-math.inf, -5.0, "zero", None),
        (
            -5.0,
            -1.97,
            "poly",
            dict(
                half_x=False,
                abs=False,
                powers=(0, 1, 2, 3),
                coeffs=(
                    -0.5054031199708174,
                    -0.42226581151983866,
                    -0.11807612951181953,
                    -0.011034134030615728,
                ),
            ),
        ),
        (
            -1.97,
            3.0,
            "poly",
            dict(
                half_x=True,
                abs=False,
                powers=(0, 2, 4, 6),
                coeffs=(
                    0.008526321541038084,
                    0.3603292692789629,
                    -0.037688200365904236,
                    0.0018067462606141187,
                ),
            ),
        ),
        (3.0, math.inf, "identity", None),
    ),
    "nexus": (
        (-math.inf, -3.5, "zero", None),
        (
            -3.5,
            3.5,
            "poly",
            dict(
                half_x=True,
                abs=False,
                powers=(0, 2, 4, 6, 8, 10, 12),
                coeffs=(
                    2.25775755e-4,
                    0.396880960,
                    -0.0637042698,
                    8.38841647e-3,
                    -7.17830961e-4,
                    3.49617829e-5,
                    -7.26059653e-7,
                ),
            ),
        ),
        (3.5, math.inf, "identity", None),
    ),
}

# Max |approx - exact| on [-8, 8] with exact region selection, measured here (tests check that
# each bound holds and is tight). The SiLU errors are dominated by the identity tail just past
# the last breakpoint (SiLU approaches x more slowly than GELU).
STATED_MAX_ERROR = {
    ("iron", "gelu"): 0.025,
    ("iron", "silu"): 0.045,
    ("bolt", "gelu"): 0.012,
    ("bolt", "silu"): 0.05,
    ("bumblebee", "gelu"): 0.04,
    ("bumblebee", "silu"): 0.06,
    ("nexus", "gelu"): 0.001,
    ("nexus", "silu"): 0.018,
}
DEFAULT_EXP = {"iron": (6, 13.0), "bolt": (6, 13.0), "bumblebee": (6, 13.0), "nexus": (7, 128.0)}


def exact_activation(kind: str, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """Exact GELU (erf form) or SiLU."""
    if kind == "gelu":
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if kind == "silu":
        return jax.nn.silu(x)
    raise ValueError(f"activation must be 'gelu' or 'silu', got {kind!r}")


def activation_kind(config_activation: str) -> str:
    """Which target function a model's activation name maps to ("gelu" or "silu")."""
    if config_activation == "silu":
        return "silu"
    if config_activation.startswith("gelu"):
        return "gelu"
    raise ValueError(
        f"polynomial approximations replace GELU or SiLU; the model uses {config_activation!r}"
    )


def _basis(x: np.ndarray, spec: dict) -> np.ndarray:
    b = np.abs(x) if spec["abs"] else x
    return np.stack([b**p for p in spec["powers"]], axis=-1)


@functools.cache
def pieces(name: str, kind: str) -> tuple:
    """The piecewise definition of technique ``name`` for target ``kind`` (see module docstring)."""
    gelu = _GELU_PIECES[name]
    if kind == "gelu":
        return gelu
    out = []
    for lo, hi, piece_kind, spec in gelu:
        lo, hi = lo * SILU_GELU_RATIO, hi * SILU_GELU_RATIO
        if piece_kind != "poly":
            out.append((lo, hi, piece_kind, None))
            continue
        x = np.linspace(lo, hi, 4001)
        target = x / (1.0 + np.exp(-x))  # NumPy float64: also called while tracing
        if spec["half_x"]:
            target = target - 0.5 * x
        coeffs, *_ = np.linalg.lstsq(_basis(x, spec), target, rcond=None)
        out.append((lo, hi, "poly", dict(spec, coeffs=tuple(float(c) for c in coeffs))))
    return tuple(out)


def _poly(x: jax.Array, spec: dict) -> jax.Array:
    b = jnp.abs(x) if spec["abs"] else x
    y = jnp.zeros_like(x)
    for p, c in zip(spec["powers"], spec["coeffs"], strict=True):
        y = y + c * b**p
    return y + 0.5 * x if spec["half_x"] else y


def composite_sign(x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """Cheon et al.'s composite sign ``f4(f4(g4(g4(x))))`` on [-1, 1] (odd, degree 9 each)."""

    def f4(t):
        return (35 * t**9 - 180 * t**7 + 378 * t**5 - 420 * t**3 + 315 * t) / 2**7

    def g4(t):
        return (46623 * t**9 - 113492 * t**7 + 97015 * t**5 - 34974 * t**3 + 5850 * t) / 2**10

    return f4(f4(g4(g4(x))))


def piecewise(
    x: jax.Array, piece_list: tuple, *, selection: str = "exact", sign_range: float = 16.0
) -> jax.Array:
    """Evaluate a piecewise polynomial, selecting regions exactly or with the composite sign."""
    x32 = x.astype(jnp.float32)
    out = jnp.zeros_like(x32)
    for lo, hi, kind, spec in piece_list:
        if kind == "zero":
            continue
        if kind == "identity":
            value = x32
        else:  # polynomials are evaluated on their own interval (no overflow far outside it)
            value = _poly(jnp.clip(x32, lo, hi), spec)
        if selection == "exact":
            inside = (x32 >= lo) & (x32 < hi)
            out = out + jnp.where(inside, value, 0.0)
        else:

            def step(edge):
                if math.isinf(edge):
                    return jnp.ones_like(x32) if edge < 0 else jnp.zeros_like(x32)
                return 0.5 * (1.0 + composite_sign(jnp.clip((x32 - edge) / sign_range, -1.0, 1.0)))

            out = out + (step(lo) - step(hi)) * value
    return out.astype(x.dtype)


def _fixed(x: jax.Array, frac_bits: int) -> jax.Array:
    scale = 2.0**frac_bits
    return jnp.round(x * scale) / scale


def iron_sigmoid(u: jax.Array, *, exp_squarings: int, frac_bits: int) -> jax.Array:
    """Fixed-point sigmoid with ``e^{-|u|} ~ (1 - |u|/2^r)^(2^r)`` (Iron stand-in)."""
    a = _fixed(jnp.abs(u), frac_bits)
    n = 2.0**exp_squarings
    e = jnp.clip(1.0 - a / n, 0.0, 1.0)
    for _ in range(exp_squarings):
        e = _fixed(e * e, frac_bits)
    s_pos = _fixed(1.0 / (1.0 + e), frac_bits)  # sigmoid(|u|)
    return jnp.where(u >= 0, s_pos, 1.0 - s_pos)


def iron_activation(kind: str, x: jax.Array, *, exp_squarings: int, frac_bits: int) -> jax.Array:
    x32 = _fixed(x.astype(jnp.float32), frac_bits)
    if kind == "silu":
        y = x32 * iron_sigmoid(x32, exp_squarings=exp_squarings, frac_bits=frac_bits)
    else:
        z = _fixed(math.sqrt(2.0 / math.pi) * (x32 + 0.044715 * x32**3), frac_bits)
        tanh = 2.0 * iron_sigmoid(2.0 * z, exp_squarings=exp_squarings, frac_bits=frac_bits) - 1.0
        y = 0.5 * x32 * (1.0 + tanh)
    return _fixed(y, frac_bits).astype(x.dtype)


def exp_approx(
    x: Float[Array, "*shape"], *, squarings: int, threshold: float
) -> Float[Array, "*shape"]:
    """``(1 + x/2^r)^(2^r)`` on ``[-threshold, 0]``, 0 below (x <= 0 assumed)."""
    base = 1.0 + jnp.maximum(x, -threshold) / 2.0**squarings
    e = base
    for _ in range(squarings):
        e = e * e
    return jnp.where(x >= -threshold, e, 0.0)


def softmax_approx(
    scores: Float[Array, "*batch keys"],
    mask: Bool[Array, "*mask_batch keys"],
    *,
    squarings: int,
    threshold: float,
) -> Float[Array, "*batch keys"]:
    """Masked softmax with the polynomial exp; a fully masked row is uniform, as the exact one."""
    s = jnp.where(mask, scores, MASK_VALUE)
    x = s - jnp.max(s, axis=-1, keepdims=True)
    e = jnp.where(mask, exp_approx(x, squarings=squarings, threshold=threshold), 0.0)
    total = jnp.sum(e, axis=-1, keepdims=True)
    uniform = jnp.full_like(e, 1.0 / e.shape[-1])
    return jnp.where(total > 0, e / jnp.where(total > 0, total, 1.0), uniform)


@dataclasses.dataclass(frozen=True)
class Polynomial(Technique):
    """A private-inference polynomialization of the MLP activation and (optionally) softmax.

    Args:
      name: "iron" | "bolt" | "bumblebee" | "nexus" (see the module docstring).
      activation: replace the MLP nonlinearity (GELU or SiLU, from the model config).
      softmax: replace exp in the attention softmax by ``(1 + x/2^r)^(2^r)``.
      exp_squarings / exp_threshold: r and T of the softmax exp; None = the technique default
        (``DEFAULT_EXP``).
      selection: region selection of the piecewise polynomials, "exact" (ideal comparison,
        default) or "composite" (Cheon et al.'s composite sign, as in NEXUS's FHE circuit).
      sign_range: inputs of the composite sign are divided by it (and clipped to [-1, 1]).
      iron_squarings / iron_frac_bits: the Iron stand-in's exp squarings and fixed-point bits.
      layers: half-open layer range, None = all layers.

    There is no continuous strength (``strength`` is None): each work is one fixed
    approximation, whose error is measured by :func:`approximation_error`.
    """

    family: ClassVar[str] = "polynomial"
    sites: ClassVar[tuple[str, ...]] = ()
    name: str = "nexus"  # type: ignore[misc]
    activation: bool = True
    softmax: bool = True
    exp_squarings: int | None = None
    exp_threshold: float | None = None
    selection: str = "exact"
    sign_range: float = 16.0
    iron_squarings: int = 4
    iron_frac_bits: int = 12

    def __post_init__(self):
        super().__post_init__()
        if self.name not in POLYNOMIALS:
            raise KeyError(f"unknown polynomial technique {self.name!r}; known: {POLYNOMIALS}")
        if self.selection not in ("exact", "composite"):
            raise ValueError(f"selection must be 'exact' or 'composite', got {self.selection!r}")
        squarings, threshold = DEFAULT_EXP[self.name]
        if self.exp_squarings is None:
            object.__setattr__(self, "exp_squarings", squarings)
        if self.exp_threshold is None:
            object.__setattr__(self, "exp_threshold", threshold)
        if not isinstance(self.exp_squarings, int) or not 1 <= self.exp_squarings <= 12:
            raise ValueError(f"exp_squarings must be an int in [1, 12], got {self.exp_squarings!r}")
        if not self.exp_threshold > 0 or self.exp_threshold > 2.0**self.exp_squarings:
            raise ValueError(
                f"exp_threshold must be in (0, 2^exp_squarings = {2**self.exp_squarings}], got "
                f"{self.exp_threshold!r}"
            )
        if not isinstance(self.iron_frac_bits, int) or not 4 <= self.iron_frac_bits <= 24:
            raise ValueError(
                f"iron_frac_bits must be an int in [4, 24], got {self.iron_frac_bits!r}"
            )
        if not self.sign_range > 0:
            raise ValueError(f"sign_range must be > 0, got {self.sign_range!r}")

    @property
    def is_identity(self) -> bool:
        return not (self.activation or self.softmax)

    def activation_fn(self, kind: str, x: jax.Array) -> jax.Array:
        """The approximated activation (target ``kind``: "gelu" or "silu")."""
        if self.name == "iron":
            return iron_activation(
                kind, x, exp_squarings=self.iron_squarings, frac_bits=self.iron_frac_bits
            )
        return piecewise(
            x, pieces(self.name, kind), selection=self.selection, sign_range=self.sign_range
        )

    def softmax_fn(self, scores: jax.Array, mask: jax.Array) -> jax.Array:
        return softmax_approx(
            scores, mask, squarings=self.exp_squarings, threshold=self.exp_threshold
        )


def polynomial_error(
    technique: Technique,
    *,
    activation: str = "gelu",
    function: str = "activation",
    interval: tuple[float, float] | None = None,
    num: int = 20001,
    reduce: str = "max",
) -> float:
    """Max or mean absolute error of a polynomial technique against the exact function.

    Args:
      technique: a :class:`Polynomial`.
      activation: "gelu" or "silu" (function="activation").
      function: "activation" (default interval [-8, 8]) or "exp" (the softmax exp, default
        interval [-16, 0]).
      interval: the evaluation range, ``num`` evenly spaced points.
      reduce: "max" or "mean".

    Returns:
      The error as a float.
    """
    if not isinstance(technique, Polynomial):
        raise TypeError(
            f"polynomial_error measures polynomial techniques, got {type(technique).__name__} "
            "(use quantization_error for quantizers)"
        )
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    if function == "activation":
        lo, hi = interval or (-8.0, 8.0)
        x = jnp.linspace(lo, hi, num, dtype=jnp.float32)
        err = jnp.abs(technique.activation_fn(activation, x) - exact_activation(activation, x))
    elif function == "exp":
        lo, hi = interval or (-16.0, 0.0)
        if hi > 0:
            raise ValueError(
                "the softmax exp is evaluated on x <= 0 (scores minus their max), got interval "
                f"{interval}"
            )
        x = jnp.linspace(lo, hi, num, dtype=jnp.float32)
        err = jnp.abs(
            exp_approx(x, squarings=technique.exp_squarings, threshold=technique.exp_threshold)
            - jnp.exp(x)
        )
    else:
        raise ValueError(f"function must be 'activation' or 'exp', got {function!r}")
    return float(jnp.max(err) if reduce == "max" else jnp.mean(err))
