"""Quantization: fake-quantizers and the SmoothQuant / OmniQuant activation quantization (W16).

Weights stay in floating point (W16); only the inputs of the linear layers (the four
``LINEAR_INPUT_SITES`` of each block) are quantized and dequantized ("fake quantization"),
which is numerically what a W16A8 / W16A4 kernel computes.

* **SmoothQuant** (Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization
  for Large Language Models", ICML 2023). Per input channel j of a linear layer,
  ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` (alpha = 0.5) from calibration data;
  ``X W = (X diag(s)^-1)(diag(s) W)``, and the smoothed activation ``X diag(s)^-1`` is
  quantized per token, symmetric. With 16-bit weights, ``Q(X / s) * s`` is exactly what the
  smoothed W16 layer computes. *Faithful* for the per-token dynamic activation quantizer; by
  default (as in the paper) the smoothing is applied where a preceding norm can absorb it (the
  q/k/v and gate/up inputs) and the o_proj / down_proj inputs are quantized unsmoothed;
  ``smooth_all=True`` smooths them too. Attention BMM inputs (SmoothQuant-O3) are not quantized.
* **OmniQuant** (Shao et al., "OmniQuant: Omnidirectionally Calibrated Quantization for Large
  Language Models", ICLR 2024). At W16 its learnable weight clipping has nothing to clip; what
  acts on activations is the learnable equivalent transformation (LET: per-channel scale s and
  shift delta, ``Q((X - delta) / s) * s + delta``) and learnable clipping of the quantization
  range. *Closest faithful variant:* LET plus learnable per-token range clipping
  (``gamma max, beta min``, sigmoid-parametrised, init sigmoid(4) as OmniQuant's LWC), trained
  with Adam and a straight-through estimator to minimise the reconstruction error of each
  linear layer's output on calibration activations (OmniQuant reconstructs whole blocks;
  here each linear layer separately). s is initialised by SmoothQuant's rule, delta by the
  channel mid-range. Asymmetric per-token quantization (OmniQuant's activation quantizer).

Bits: integers in [2, 16]; 16 means the activations stay in floating point (A16 in the
papers' WxAy notation), so ``bits=16`` is the identity.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jaxtrust.safety.actapprox._base import (
    LINEAR_INPUT_SITES,
    FrozenArray,
    Technique,
    check_probability,
)

GRANULARITIES = ("per_token", "per_channel", "per_tensor")
MIN_BITS, MAX_BITS = 2, 16


def check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise ValueError(f"bits must be in [{MIN_BITS}, {MAX_BITS}] (16 = unquantized), got {bits}")
    return int(bits)


def _round(x: jax.Array, ste: bool) -> jax.Array:
    r = jnp.round(x)
    return x + jax.lax.stop_gradient(r - x) if ste else r


def _reduce_axes(x: jax.Array, granularity: str) -> tuple[int, ...]:
    if granularity == "per_token":
        return (x.ndim - 1,)
    if granularity == "per_channel":
        return tuple(range(x.ndim - 1))
    if granularity == "per_tensor":
        return tuple(range(x.ndim))
    raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")


def fake_quantize(
    x: Float[Array, "*batch dim"],
    bits: int,
    *,
    granularity: str = "per_token",
    symmetric: bool = True,
    clip_max: ArrayLike = 1.0,
    clip_min: ArrayLike = 1.0,
    ste: bool = False,
) -> Float[Array, "*batch dim"]:
    """Quantize and dequantize ``x`` (features on the last axis) to ``bits`` bits.

    Symmetric: ``step = clip_max * max|x| / (2^(b-1) - 1)``, ``q = clip(round(x / step),
    -(2^(b-1) - 1), 2^(b-1) - 1)``, returns ``q * step``. Asymmetric: range
    ``[clip_min * min(x), clip_max * max(x)]`` (min clipped at <= 0, max at >= 0),
    ``step = range / (2^b - 1)``, ``zero = round(-lo / step)``, ``q = clip(round(x / step) + zero,
    0, 2^b - 1)``, returns ``(q - zero) * step``. The range is taken per token (over the last
    axis), per channel (over all other axes) or per tensor. ``ste=True`` rounds with a
    straight-through gradient. ``bits=16`` returns ``x`` unchanged.

    Example:
      >>> float(fake_quantize(jnp.array([0.3, -1.0]), 2)[0])
      0.0
    """
    bits = check_bits(bits)
    if bits >= MAX_BITS:
        return x
    axes = _reduce_axes(x, granularity)
    x32 = x.astype(jnp.float32)
    if symmetric:
        qmax = 2.0 ** (bits - 1) - 1
        amax = jnp.max(jnp.abs(x32), axis=axes, keepdims=True) * clip_max
        step = jnp.where(amax > 0, amax / qmax, 1.0)
        q = jnp.clip(_round(x32 / step, ste), -qmax, qmax)
        return (q * step).astype(x.dtype)
    levels = 2.0**bits - 1
    hi = jnp.maximum(jnp.max(x32, axis=axes, keepdims=True), 0.0) * clip_max
    lo = jnp.minimum(jnp.min(x32, axis=axes, keepdims=True), 0.0) * clip_min
    step = jnp.where(hi > lo, (hi - lo) / levels, 1.0)
    zero = jax.lax.stop_gradient(jnp.round(-lo / step))
    q = jnp.clip(_round(x32 / step, ste) + zero, 0.0, levels)
    return ((q - zero) * step).astype(x.dtype)


def smoothing_scales(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's ``s = max|X|^alpha / max|W|^(1-alpha)`` per input channel (1 if undefined)."""
    a = np.maximum(np.asarray(act_absmax, np.float64), 1e-5)
    w = np.maximum(np.asarray(weight_absmax, np.float64), 1e-5)
    s = a**alpha / w ** (1.0 - alpha)
    return np.where(np.isfinite(s) & (s > 0), s, 1.0).astype(np.float32)


def _site_index(site: str) -> int:
    return LINEAR_INPUT_SITES.index(site)


@dataclasses.dataclass(frozen=True)
class SmoothQuant(Technique):
    """SmoothQuant W16A{bits}: per-channel smoothing + per-token symmetric activation quantization.

    Args:
      bits: activation bits in [2, 16] (16 = unquantized); 8 and 4 are the paper's settings.
      alpha: migration strength in [0, 1] (0.5 as in the paper).
      smooth_all: also smooth the o_proj / down_proj inputs (absorbable at W16).
      layers: half-open layer range, None = all layers.
      scales: per-site smoothing scales ``[layers, dim]`` (``LINEAR_INPUT_SITES`` order, None
        for unsmoothed sites), filled by :func:`~jaxtrust.safety.actapprox.calibrate`.
    """

    family: ClassVar[str] = "quantization"
    name: ClassVar[str] = "smoothquant"
    sites: ClassVar[tuple[str, ...]] = LINEAR_INPUT_SITES
    needs_calibration: ClassVar[bool] = True
    strength_field: ClassVar[str] = "bits"
    bits: int = 8
    alpha: float = 0.5
    smooth_all: bool = False
    scales: tuple[FrozenArray | None, ...] | None = None

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "bits", check_bits(self.bits))
        object.__setattr__(
            self, "alpha", check_probability(self.alpha, "alpha", upper_inclusive=True)
        )

    @property
    def strength(self) -> float:
        return float(self.bits)

    @property
    def is_identity(self) -> bool:
        return self.bits >= MAX_BITS

    @property
    def smoothed_sites(self) -> tuple[str, ...]:
        return LINEAR_INPUT_SITES if self.smooth_all else ("attn_input", "mlp_input")

    @property
    def is_calibrated(self) -> bool:
        return self.scales is not None

    def apply(self, site, x, layer, key):
        s = None if self.scales is None else self.scales[_site_index(site)]
        if s is None:
            return fake_quantize(x, self.bits, symmetric=True)
        scale = s.jax()[layer].astype(x.dtype)
        scale = scale.reshape((1,) * (x.ndim - 1) + scale.shape)
        return fake_quantize(x / scale, self.bits, symmetric=True) * scale

    def check_model(self, config) -> None:
        super().check_model(config)
        _check_site_arrays(self, self.scales, config, ("scales",))


@dataclasses.dataclass(frozen=True)
class OmniQuant(Technique):
    """OmniQuant-style W16A{bits}: learned equivalent transformation + learned range clipping.

    Args:
      bits: activation bits in [2, 16] (16 = unquantized).
      steps / learning_rate / rows: Adam steps, learning rate and calibration tokens per layer
        of the per-layer reconstruction (see the module docstring). The fit costs about
        ``steps x rows x dim x min(dim, out)`` multiply-adds per linear layer (the loss runs
        through a factor F with F F^T = W W^T); on SmolLM2-135M the defaults take minutes on
        2 CPU cores.
      layers: half-open layer range, None = all layers.
      params: per site ``(scales [layers, dim], shifts [layers, dim], clip [layers, 2])``
        (clip = (gamma, beta) for max and min), filled by
        :func:`~jaxtrust.safety.actapprox.calibrate`.
    """

    family: ClassVar[str] = "quantization"
    name: ClassVar[str] = "omniquant"
    sites: ClassVar[tuple[str, ...]] = LINEAR_INPUT_SITES
    needs_calibration: ClassVar[bool] = True
    strength_field: ClassVar[str] = "bits"
    bits: int = 8
    steps: int = 50
    learning_rate: float = 5e-3
    rows: int = 128
    params: tuple[tuple[FrozenArray, FrozenArray, FrozenArray], ...] | None = None

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "bits", check_bits(self.bits))
        for name in ("steps", "rows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "steps" else 1):
                raise ValueError(
                    f"{name} must be a {'non-negative' if name == 'steps' else 'positive'} int, "
                    f"got {v!r}"
                )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")

    @property
    def strength(self) -> float:
        return float(self.bits)

    @property
    def is_identity(self) -> bool:
        return self.bits >= MAX_BITS

    @property
    def is_calibrated(self) -> bool:
        return self.params is not None

    def apply(self, site, x, layer, key):
        scales, shifts, clip = (a.jax()[layer] for a in self.params[_site_index(site)])
        return let_quantize(x, self.bits, scales, shifts, clip[0], clip[1])

    def check_model(self, config) -> None:
        super().check_model(config)
        if self.params is not None:
            _check_site_arrays(self, tuple(p[0] for p in self.params), config, ("params",))


def let_quantize(
    x: Float[Array, "*batch dim"],
    bits: int,
    scales: Float[Array, " dim"],
    shifts: Float[Array, " dim"],
    gamma,
    beta,
    *,
    ste: bool = False,
) -> Float[Array, "*batch dim"]:
    """OmniQuant's LET activation path ``Q((x - delta) / s) * s + delta`` (asymmetric per token)."""
    lead = (1,) * (x.ndim - 1)
    s = scales.reshape(lead + scales.shape).astype(jnp.float32)
    d = shifts.reshape(lead + shifts.shape).astype(jnp.float32)
    q = fake_quantize(
        (x.astype(jnp.float32) - d) / s,
        bits,
        symmetric=False,
        clip_max=gamma,
        clip_min=beta,
        ste=ste,
    )
    return (q * s + d).astype(x.dtype)


def site_dims(config) -> dict[str, int]:
    return {
        "attn_input": config.hidden_size,
        "attn_context": config.num_heads * config.head_dim,
        "mlp_input": config.hidden_size,
        "mlp_hidden": config.intermediate_size,
    }


def _check_site_arrays(technique, arrays, config, what) -> None:
    if arrays is None:
        return
    dims = site_dims(config)
    for site, arr in zip(LINEAR_INPUT_SITES, arrays, strict=True):
        if arr is not None and arr.shape != (config.num_layers, dims[site]):
            raise ValueError(
                f"{technique.name}: calibrated {what[0]} for {site} have shape {arr.shape}, the "
                f"model needs ({config.num_layers}, {dims[site]}); calibrate on this model"
            )


def outlier_activations(
    shape: tuple[int, int] = (512, 256),
    outliers: tuple[int, float] = (4, 20.0),
    seed: int = 0,
) -> np.ndarray:
    """``[tokens, dim]`` N(0, 1) activations whose first ``outliers[0]`` channels are scaled by
    ``outliers[1]``: the LLM activation pattern SmoothQuant targets.

    Example:
      >>> outlier_activations((8, 16)).shape
      (8, 16)
    """
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x[:, : outliers[0]] *= outliers[1]
    return x


def quantization_error(
    technique: Technique,
    activations: Float[ArrayLike, "*batch dim"] | None = None,
    *,
    reduce: str = "mean",
) -> float:
    """Relative error ``|Q(x) - x| / mean|x|`` of a quantization technique's uncalibrated
    quantizer (SmoothQuant: symmetric, OmniQuant: asymmetric, per token), max or mean over the
    entries of ``activations`` (default :func:`outlier_activations`).

    Example:
      >>> quantization_error(SmoothQuant(bits=8)) < quantization_error(SmoothQuant(bits=4))
      True
    """
    if not isinstance(technique, (SmoothQuant, OmniQuant)):
        raise TypeError(
            f"quantization_error measures quantization techniques, got {type(technique).__name__}"
        )
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    x = outlier_activations() if activations is None else np.asarray(activations, np.float32)
    xq = fake_quantize(jnp.asarray(x), technique.bits, symmetric=isinstance(technique, SmoothQuant))
    err = np.abs(np.asarray(xq) - x) / np.mean(np.abs(x))
    return float(err.max() if reduce == "max" else err.mean())
