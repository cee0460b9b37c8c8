"""Shared pieces of the approximation techniques: the technique base class, layer ranges and
a hashable wrapper for calibrated arrays.

A technique acts on named *sites* of the forward pass (see :mod:`jaxtrust.models.hooks`):

==============  ===============================================================
site            value
==============  ===============================================================
attn_input      output of the attention RMSNorm/LayerNorm = input of q/k/v_proj
attn_context    merged attention heads = input of o_proj
mlp_input       output of the MLP norm = input of gate/up_proj
mlp_gate        pre-activation gate projection (Llama family)
mlp_up          up projection
activation      output of the MLP nonlinearity
mlp_hidden      FFN hidden vector = input of down_proj
==============  ===============================================================

``LINEAR_INPUT_SITES`` are the inputs of every linear layer of a block (what activation
quantization and TEAL act on).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

SITES = (
    "attn_input",
    "attn_context",
    "mlp_input",
    "mlp_gate",
    "mlp_up",
    "activation",
    "mlp_hidden",
)
LINEAR_INPUT_SITES = ("attn_input", "attn_context", "mlp_input", "mlp_hidden")
FAMILIES = ("polynomial", "sparsification", "quantization", "noise")


class FrozenArray:
    """A read-only NumPy array that hashes and compares by content.

    Calibrated data (thresholds, smoothing scales) lives in technique objects, which must stay
    hashable so that a hooks object built from them can be a static argument of ``jax.jit``.
    Inside a trace the array becomes a constant.
    """

    __slots__ = ("array", "_digest")

    def __init__(self, array):
        a = np.array(array, dtype=np.float32, copy=True)
        a.setflags(write=False)
        self.array = a
        self._digest = hashlib.sha1(a.tobytes() + repr(a.shape).encode()).hexdigest()

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def __hash__(self) -> int:
        return hash(self._digest)

    def __eq__(self, other) -> bool:
        return isinstance(other, FrozenArray) and self._digest == other._digest

    def __repr__(self) -> str:
        return f"FrozenArray(shape={self.array.shape}, sha1={self._digest[:8]})"

    def jax(self) -> jax.Array:
        return jnp.asarray(self.array)


def frozen(array) -> FrozenArray | None:
    return None if array is None else FrozenArray(array)


def validate_layers(layers, name: str = "layers") -> tuple[int, int] | None:
    """Check a half-open layer range ``(start, stop)`` (or None = all layers)."""
    if layers is None:
        return None
    if not (
        isinstance(layers, tuple)
        and len(layers) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in layers)
    ):
        raise TypeError(
            f"{name} must be a (start, stop) tuple of ints (half-open) or None, got {layers!r}"
        )
    start, stop = int(layers[0]), int(layers[1])
    if not 0 <= start < stop:
        raise ValueError(f"{name} must satisfy 0 <= start < stop, got {layers!r}")
    return (start, stop)


def in_layers(layers: tuple[int, int] | None, layer) -> jax.Array | bool:
    """Whether ``layer`` (traced int under ``lax.scan``, or a Python int) lies in the range."""
    if layers is None:
        return True
    return (layer >= layers[0]) & (layer < layers[1])


def select_layers(
    layers: tuple[int, int] | None, layer, new: jax.Array, old: jax.Array
) -> jax.Array:
    """``new`` inside the layer range, ``old`` elsewhere (one compiled program for all layers)."""
    if layers is None:
        return new.astype(old.dtype)
    return jnp.where(in_layers(layers, layer), new.astype(old.dtype), old)


def check_probability(value, name: str, *, upper_inclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(
            f"{name} must be a number in [0, 1{']' if upper_inclusive else ')'}, got {value!r}"
        )
    value = float(value)
    ok = 0.0 <= value <= 1.0 if upper_inclusive else 0.0 <= value < 1.0
    if not ok:
        raise ValueError(f"{name} must be in [0, 1{']' if upper_inclusive else ')'}, got {value}")
    return value


def check_nonnegative(value, name: str, *, allow_array: bool = False):
    """A finite number >= 0; with ``allow_array``, a scalar jax array (possibly traced) passes
    unchecked, so a strength can be swept inside one compiled function."""
    if allow_array and isinstance(value, jax.Array):
        if value.shape != ():
            raise ValueError(f"{name} must be a scalar, got shape {value.shape}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a non-negative number, got {value!r}")
    value = float(value)
    if not (value >= 0.0 and np.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


@dataclasses.dataclass(frozen=True)
class Technique:
    """Base class of every approximation technique (a frozen, hashable configuration).

    Subclasses set ``family`` and ``name`` and implement :meth:`apply` for the sites they act
    on (``sites``). The hooks (:func:`jaxtrust.safety.actapprox.approx_hooks`) call
    :meth:`transform`, which restricts the effect to ``layers``. ``strength_field`` names the
    field that sets the strength (``sparsity``, ``bits``, ``sigma``, ``scale``; None for the
    fixed polynomial approximations).

    Attributes:
      layers: half-open layer range ``(start, stop)`` the technique acts on; None = all layers.
    """

    family: ClassVar[str] = ""
    name: ClassVar[str] = ""
    sites: ClassVar[tuple[str, ...]] = ()
    needs_rng: ClassVar[bool] = False
    needs_calibration: ClassVar[bool] = False
    strength_field: ClassVar[str | None] = None

    layers: tuple[int, int] | None = None

    def __post_init__(self):
        object.__setattr__(self, "layers", validate_layers(self.layers))

    @property
    def strength(self) -> float | None:
        """The technique's strength parameter (sigma, sparsity, bits...), None if it has none."""
        return None

    @property
    def is_identity(self) -> bool:
        """True when the setting changes nothing (zero strength); the hooks then skip it."""
        return False

    @property
    def is_calibrated(self) -> bool:
        return True

    def acts_on(self, site: str) -> bool:
        return site in self.sites and not self.is_identity

    def apply(self, site: str, x: jax.Array, layer, key: jax.Array | None) -> jax.Array:
        """The approximated value at ``site`` for ``layer`` (``transform`` applies the range)."""
        raise NotImplementedError

    def transform(self, site: str, x: jax.Array, layer, key: jax.Array | None = None) -> jax.Array:
        if not self.acts_on(site):
            return x
        return select_layers(self.layers, layer, self.apply(site, x, layer, key), x)

    def check_model(self, config) -> None:
        """Raise if the technique does not fit a model (layer range, calibrated shapes)."""
        if self.layers is not None and self.layers[1] > config.num_layers:
            raise ValueError(
                f"{self.name}: layers={self.layers} reaches beyond the model's "
                f"{config.num_layers} layers (stop must be <= {config.num_layers})"
            )
        if self.needs_calibration and not self.is_identity and not self.is_calibrated:
            raise ValueError(
                f"{self.name} needs calibration data: call jaxtrust.safety.actapprox."
                "calibrate(techniques, model, tokens, attention_mask) first"
            )
