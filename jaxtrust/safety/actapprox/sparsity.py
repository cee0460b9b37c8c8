"""Sparsification: TEAL and CATS magnitude thresholding of hidden states.

* **TEAL** (Liu et al., "Training-Free Activation Sparsity in Large Language Models", ICLR
  2025, arXiv 2408.14690): the input of every linear layer (q/k/v, o_proj, gate/up, down_proj
  inputs: ``LINEAR_INPUT_SITES``) is thresholded, ``x_i -> x_i [ |x_i| > t ]``, with one
  threshold per layer and site chosen on calibration data so that a fraction ``sparsity`` of
  the entries is zeroed (the empirical ``sparsity``-quantile of ``|x|``). *Faithful* to TEAL's
  uniform-sparsity variant; TEAL's greedy per-layer sparsity allocation is not reproduced.
* **CATS** (Lee et al., "CATS: Contextually-Aware Thresholding for Sparsity in Large Language
  Models", COLM 2024): the output of the MLP nonlinearity ``act(gate_proj(x))`` is
  thresholded, with one threshold per layer at the ``sparsity``-quantile of its magnitude.
  *Faithful* to CATS's thresholding (the custom sparse kernel is irrelevant for accuracy).

``sparsity`` lies in [0, 1); 0 is the identity. Thresholds come from
:func:`~jaxtrust.safety.actapprox.calibrate`; the thresholds of a given sparsity are calibrated on
the exact model.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from jaxtrust.safety.actapprox._base import (
    LINEAR_INPUT_SITES,
    FrozenArray,
    Technique,
    check_probability,
)


def threshold(x: jax.Array, t) -> jax.Array:
    """Zero the entries with ``|x| <= t``."""
    return jnp.where(jnp.abs(x) > t, x, jnp.zeros_like(x))


@dataclasses.dataclass(frozen=True)
class _Sparsity(Technique):
    family: ClassVar[str] = "sparsification"
    needs_calibration: ClassVar[bool] = True
    strength_field: ClassVar[str] = "sparsity"
    sparsity: float = 0.0
    thresholds: FrozenArray | None = None

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "sparsity", check_probability(self.sparsity, "sparsity"))

    @property
    def strength(self) -> float:
        return self.sparsity

    @property
    def is_identity(self) -> bool:
        return self.sparsity == 0.0

    @property
    def is_calibrated(self) -> bool:
        return self.thresholds is not None

    def check_model(self, config) -> None:
        super().check_model(config)
        expected = (config.num_layers, len(self.sites))
        if self.thresholds is not None and self.thresholds.shape != expected:
            raise ValueError(
                f"{self.name}: thresholds have shape {self.thresholds.shape}, the model needs "
                f"{expected}; calibrate on this model"
            )

    def apply(self, site, x, layer, key):
        t = self.thresholds.jax()[layer, self.sites.index(site)]
        return threshold(x, t.astype(x.dtype))


@dataclasses.dataclass(frozen=True)
class Teal(_Sparsity):
    """TEAL: per-layer, per-site magnitude thresholds on every linear layer's input.

    Args:
      sparsity: target fraction of zeroed entries, in [0, 1).
      layers: half-open layer range, None = all layers.
      thresholds: ``[layers, 4]`` (``LINEAR_INPUT_SITES`` order), filled by ``calibrate``.

    Example:
      >>> Teal(sparsity=0.5).strength
      0.5
    """

    name: ClassVar[str] = "teal"
    sites: ClassVar[tuple[str, ...]] = LINEAR_INPUT_SITES


@dataclasses.dataclass(frozen=True)
class Cats(_Sparsity):
    """CATS: per-layer magnitude thresholds on the MLP activation output.

    Args:
      sparsity: target fraction of zeroed entries, in [0, 1).
      layers: half-open layer range, None = all layers.
      thresholds: ``[layers, 1]``, filled by ``calibrate``.
    """

    name: ClassVar[str] = "cats"
    sites: ClassVar[tuple[str, ...]] = ("activation",)
