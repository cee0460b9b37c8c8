"""Building blocks of the causal LM: stacked linear layers, norms and rotary embeddings.

Parameters of repeated layers are *stacked*: a layer's kernel has a leading ``layers`` axis and
the transformer runs the layers with ``lax.scan``, so compile time does not grow with depth.
Inside the scan body each module is re-built from one layer's slice, so the same module code
serves the stacked and the per-layer shapes.
"""

# ruff: noqa: F722
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from jaxtrust.models.config import LMConfig
from jaxtrust.models.hooks import expand_to


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float, dtype) -> jax.Array:
    return (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)


class Linear(nnx.Module):
    """``y = x @ kernel + bias`` with ``kernel: [*stack, in, out]`` (stack = (layers,) or ())."""

    def __init__(
        self,
        din: int,
        dout: int,
        *,
        bias: bool,
        stack: tuple[int, ...] = (),
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        std: float = 0.02,
    ):
        self.kernel = nnx.Param(_normal(rngs, (*stack, din, dout), std, param_dtype))
        self.bias = nnx.Param(jnp.zeros((*stack, dout), param_dtype)) if bias else None
        self.dtype = dtype

    def __call__(self, x: Float[Array, "... din"]) -> Float[Array, "... dout"]:
        # A 2-D matmul (rows = every leading position) keeps the backward's weight-gradient a
        # plain [in, rows] x [rows, out] product, which XLA:CPU runs much faster than a dot
        # contracting several batch axes.
        kernel = self.kernel[...].astype(self.dtype)
        y = (x.astype(self.dtype).reshape(-1, x.shape[-1]) @ kernel).reshape(
            *x.shape[:-1], kernel.shape[-1]
        )
        if self.bias is not None:
            y = y + expand_to(self.bias[...].astype(self.dtype), y.ndim)
        return y


class Norm(nnx.Module):
    """RMSNorm (``scale`` only) or LayerNorm (``scale`` and ``bias``); applied through the hooks."""

    def __init__(
        self, dim: int, *, layer_norm: bool, stack: tuple[int, ...] = (), param_dtype=jnp.float32
    ):
        self.scale = nnx.Param(jnp.ones((*stack, dim), param_dtype))
        self.bias = nnx.Param(jnp.zeros((*stack, dim), param_dtype)) if layer_norm else None


def rope_inv_freq(config: LMConfig) -> np.ndarray:
    """Inverse frequencies of the rotary embedding, with the config's scaling (NumPy, static).

    ``default``: ``theta^(-2i/d)`` for ``i < d/2`` (d = rotary dimension); ``linear``: divided
    by ``factor``; ``llama3``: Llama 3.1's smooth interpolation between the low- and
    high-frequency bands (Meta, 2024).
    """
    dim = config.rotary_dim
    inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    scaling = config.rope_scaling_dict
    kind = config.rope_type
    if kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        old_len = scaling.get("original_max_position_embeddings", 8192)
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv_freq = np.where(medium, smoothed, scaled)
    return inv_freq.astype(np.float32)


def apply_rope(
    x: Float[Array, "batch seq heads head_dim"],
    positions: Int[Array, "batch seq"],
    inv_freq: np.ndarray,
) -> Array:
    """Rotate the first ``2 * len(inv_freq)`` features (Hugging Face ``rotate_half`` layout)."""
    rot = 2 * inv_freq.shape[0]
    angles = (
        positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
    )  # [b, s, rot/2]
    cos = jnp.concatenate([jnp.cos(angles)] * 2, axis=-1)[:, :, None, :]
    sin = jnp.concatenate([jnp.sin(angles)] * 2, axis=-1)[:, :, None, :]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    x32 = x_rot.astype(jnp.float32)
    half = rot // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    out = (x32 * cos + rotated * sin).astype(x.dtype)
    return jnp.concatenate([out, x_pass], axis=-1) if x_pass.shape[-1] else out
