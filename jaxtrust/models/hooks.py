"""Intervention points inside the causal LM.

The activation-approximation audit (polynomial GELU/SiLU/softmax, sparsification, quantization,
noise), unlearning masks and probing all need to act *inside* a forward pass without editing
model code. :class:`ModelHooks` names those sites; the model calls each hook with the value and
the traced layer index (layers run under ``lax.scan``, so an override acting on a layer range
uses ``jnp.where(lo <= layer < hi, new, x)``). Subclasses must stay frozen dataclasses (hashable)
so a hooks object can be a static argument of ``jax.jit``.

Sites, in the order a block calls them::

    norm(x, scale, bias, layer, kind, eps)
        kind: "attn_norm" | "mlp_norm" | "final_norm" | "q_norm" | "k_norm"
    softmax(scores, mask, layer)        attention probabilities from masked fp32 scores
    attn_context(x, layer)              merged attention heads = input of o_proj
    attn_output(x, layer)               attention output after o_proj
    mlp_gate(x, layer), mlp_up(x, layer)  pre-activation gate / up projections
    activation(x, layer)                the MLP nonlinearity
    mlp_hidden(x, layer)                FFN hidden vector = input of the down projection
    residual(x, layer)                  the block's output
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

MASK_VALUE = -1e30  # finite, so a fully masked (padding) row gives a uniform row, not NaN


def expand_to(v: jax.Array, ndim: int) -> jax.Array:
    """Give a trailing-axis vector ``v`` leading singleton axes (explicit, rank-promotion safe)."""
    return v.reshape((1,) * (ndim - v.ndim) + v.shape)


def apply_activation(name: str, x: jax.Array) -> jax.Array:
    """The named activation function, with Hugging Face's meaning of each name."""
    if name == "silu":
        return jax.nn.silu(x)
    if name == "gelu":
        return jax.nn.gelu(x, approximate=False)
    if name in ("gelu_tanh", "gelu_new", "gelu_pytorch_tanh"):
        return jax.nn.gelu(x, approximate=True)
    if name == "relu":
        return jax.nn.relu(x)
    raise ValueError(f"unknown activation {name!r}")


@dataclasses.dataclass(frozen=True)
class ModelHooks:
    """Identity hooks (the exact model). Override methods in a frozen dataclass subclass."""

    activation_name: str = "silu"  # set by the model from its config when hooks=None

    def norm(
        self,
        x: Float[Array, "... dim"],
        scale: Array,
        bias: Array | None,
        layer: Int[Array, ""] | int,
        kind: str,
        eps: float,
    ) -> Array:
        x32 = x.astype(jnp.float32)
        if bias is None:  # RMSNorm
            y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
            return expand_to(scale.astype(x.dtype), x.ndim) * y.astype(x.dtype)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + eps)
        return (
            y * expand_to(scale.astype(jnp.float32), x.ndim)
            + expand_to(bias.astype(jnp.float32), x.ndim)
        ).astype(x.dtype)

    def softmax(
        self,
        scores: Float[Array, "... q k"],
        mask: Bool[Array, "... q k"],
        layer: Int[Array, ""] | int,
    ) -> Array:
        return jax.nn.softmax(jnp.where(mask, scores, MASK_VALUE), axis=-1)

    def activation(self, x: Array, layer: Int[Array, ""] | int) -> Array:
        return apply_activation(self.activation_name, x)

    def mlp_gate(self, x: Array, layer: Int[Array, ""] | int) -> Array:
        return x

    def mlp_up(self, x: Array, layer: Int[Array, ""] | int) -> Array:
        return x

    def mlp_hidden(self, x: Array, layer: Int[Array, ""] | int) -> Array:
        return x

    def attn_context(self, x: Array, layer: Int[Array, ""] | int) -> Array:
        return x

    def attn_output(self, x: Array, layer: Int[Array, ""] | int) -> Array:
        return x

    def residual(self, x: Array, layer: Int[Array, ""] | int) -> Array:
        return x
