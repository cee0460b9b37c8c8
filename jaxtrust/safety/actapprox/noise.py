"""The paper's noise proxies of activation-approximation error (Zhang et al., USENIX Security 2025).

The paper models every approximation as an additive activation error: Gaussian
``eps_up ~ N(0, sigma^2)`` on the FFN up/gate activation and Laplace
``eps_down ~ Lap(0, b)`` on the down-projection input, and sweeps sigma (its Table maps each
of the seven techniques to a (sigma, b) pair). The authors' released QuadA evaluation code
(github.com/Kevin-Zh-CS/QuadA) adds the Gaussian noise to the MLP activation output
``act_fn(gate_proj(x))`` ("FFN") or to the RMSNorm output ("LN"), in every layer.

``sigma`` / ``scale`` may be a scalar jax array, also a traced one: a noise sweep then runs in
one compiled function (the hooks holding the key are built inside it anyway)::

    @jax.jit
    def noisy_logits(state, tokens, sigma, key):
        hooks = approx_hooks(GaussianNoise(sigma=sigma), config, rng=key)
        return nnx.merge(graphdef, state)(tokens, hooks=hooks).logits

With a KV cache every call (prefill, each decoding step) draws from the same key; fold the
step into the key for fresh noise per step.

Faithful: the noise distributions, their sites, and per-layer-range selection. The noise is
i.i.d. per element; each layer draws from ``fold_in(key, layer)``, so layers get independent
noise from one key inside a scanned forward.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from jaxtrust.safety.actapprox._base import Technique, check_nonnegative

NOISE_SITES = (
    "activation",
    "mlp_gate",
    "mlp_up",
    "mlp_input",
    "attn_input",
    "norm",
    "mlp_hidden",
    "attn_context",
)
"""Where a noise technique may add its noise: the hook sites, plus "norm" for both block norms."""


def _sites_of(site: str) -> tuple[str, ...]:
    return ("attn_input", "mlp_input") if site == "norm" else (site,)


@dataclasses.dataclass(frozen=True)
class _Noise(Technique):
    """Additive noise of strength ``getattr(self, strength_field)`` at ``site``."""

    family: ClassVar[str] = "noise"
    needs_rng: ClassVar[bool] = True
    site: str = "activation"

    def __post_init__(self):
        super().__post_init__()
        if self.site not in NOISE_SITES:
            raise ValueError(f"{self.name}: site must be one of {NOISE_SITES}, got {self.site!r}")
        field = self.strength_field
        value = check_nonnegative(getattr(self, field), field, allow_array=True)
        object.__setattr__(self, field, value)

    @property
    def strength(self) -> float | jax.Array:
        return getattr(self, self.strength_field)

    @property
    def is_identity(self) -> bool:
        # A traced strength may be zero at run time; it stays in the hooks (one program).
        return not isinstance(self.strength, jax.Array) and self.strength == 0.0

    def acts_on(self, site: str) -> bool:
        return site in _sites_of(self.site) and not self.is_identity

    def _sample(self, key: jax.Array, shape, dtype) -> jax.Array:
        raise NotImplementedError

    def apply(self, site, x, layer, key):
        if key is None:
            raise ValueError(f"{self.name} needs a PRNG key: pass rng= to approx_hooks")
        return x + (self.strength * self._sample(key, x.shape, jnp.float32)).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class GaussianNoise(_Noise):
    """Additive ``N(0, sigma^2)`` noise, by default on the FFN activation ``act(gate_proj(x))``.

    Args:
      sigma: standard deviation (>= 0; 0 is the identity; a scalar jax array may be traced).
      site: "activation" (QuadA's "FFN" mode, default), "mlp_gate", "mlp_up", "norm" (QuadA's
        "LN" mode: both norm outputs), "mlp_input", "attn_input", "mlp_hidden", "attn_context".
      layers: half-open layer range, None = all layers (early vs late layer ablations; QuadA's
        training perturbation is ``layers=(0, tau)``).

    Example:
      >>> GaussianNoise(sigma=0.05, layers=(0, 2)).strength
      0.05
    """

    name: ClassVar[str] = "gaussian_noise"
    strength_field: ClassVar[str] = "sigma"
    sigma: float | jax.Array = 0.0

    def _sample(self, key, shape, dtype):
        return jax.random.normal(key, shape, dtype)


@dataclasses.dataclass(frozen=True)
class LaplaceNoise(_Noise):
    """Additive ``Lap(0, scale)`` noise, by default on the down-projection input.

    Args:
      scale: Laplace scale b (std = sqrt(2) b; >= 0, 0 is the identity).
      site: as :class:`GaussianNoise`; default "mlp_hidden" (the paper's eps_down).
      layers: half-open layer range, None = all layers.

    Example:
      >>> LaplaceNoise(scale=0.1).site
      'mlp_hidden'
    """

    name: ClassVar[str] = "laplace_noise"
    strength_field: ClassVar[str] = "scale"
    scale: float | jax.Array = 0.0
    site: str = "mlp_hidden"

    def _sample(self, key, shape, dtype):
        return jax.random.laplace(key, shape, dtype)
