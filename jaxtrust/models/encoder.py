# ruff: noqa: F722
"""A pre-norm Transformer encoder (bidirectional or causal) and a text classifier on it.

The encoder is the shared body of the non-LM models: the Vision Transformer
(:mod:`jaxtrust.models.vit`), the text classifier below, patch-based forecasters and image
towers. Like the causal LM it stacks its layers along a leading axis and runs them with
``lax.scan``, and it takes the same structural masks the methods edit:

* ``head_mask`` ``[layers, heads]`` multiplies each head's attention output before the output
  projection;
* ``ffn_mask`` ``[layers, mlp_dim]`` multiplies the FFN hidden units before the down projection.

Parameter paths::

    layers/attn_norm/{scale,bias}     [layers, dim]
    layers/attn/{q,k,v}_proj/kernel   [layers, dim, dim]   (+ bias [layers, dim])
    layers/attn/o_proj/kernel         [layers, dim, dim]
    layers/mlp_norm/{scale,bias}      [layers, dim]
    layers/mlp/up_proj/kernel         [layers, dim, mlp_dim]
    layers/mlp/down_proj/kernel       [layers, mlp_dim, dim]
    final_norm/{scale,bias}           [dim]

Reference: Vaswani et al., *Attention Is All You Need*, NeurIPS 2017 (pre-norm placement as in
Xiong et al., *On Layer Normalization in the Transformer Architecture*, ICML 2020).

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> enc = TransformerEncoder(EncoderConfig(dim=16, num_layers=2, num_heads=2, mlp_dim=32),
  ...                          rngs=nnx.Rngs(0))
  >>> enc(jnp.ones((3, 5, 16))).shape
  (3, 5, 16)
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from jaxtrust.models.hooks import apply_activation, expand_to
from jaxtrust.models.layers import Linear, Norm

__all__ = ["EncoderConfig", "TextClassifier", "TransformerEncoder", "layer_norm"]


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Size and variant of a :class:`TransformerEncoder`.

    Attributes:
      dim: model width (divisible by ``num_heads``).
      num_layers: number of blocks.
      num_heads: attention heads per block.
      mlp_dim: FFN hidden width.
      causal: each position attends only to itself and earlier positions.
      activation: FFN activation (a name :func:`jaxtrust.models.hooks.apply_activation` knows).
      norm_eps: LayerNorm epsilon.
      qkv_bias: biases on the q/k/v/o and FFN projections.
    """

    dim: int = 64
    num_layers: int = 2
    num_heads: int = 4
    mlp_dim: int = 128
    causal: bool = False
    activation: str = "gelu"
    norm_eps: float = 1e-6
    qkv_bias: bool = True

    def __post_init__(self):
        for name in ("dim", "num_layers", "num_heads", "mlp_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array | None, eps: float) -> jax.Array:
    """LayerNorm over the last axis, computed in float32."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps) * expand_to(scale.astype(jnp.float32), x.ndim)
    if bias is not None:
        y = y + expand_to(bias.astype(jnp.float32), x.ndim)
    return y.astype(x.dtype)


class _Attention(nnx.Module):
    def __init__(self, c: EncoderConfig, *, stack, rngs, dtype, param_dtype):
        kw = dict(bias=c.qkv_bias, stack=stack, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.q_proj = Linear(c.dim, c.dim, **kw)
        self.k_proj = Linear(c.dim, c.dim, **kw)
        self.v_proj = Linear(c.dim, c.dim, **kw)
        self.o_proj = Linear(c.dim, c.dim, std=0.02 / math.sqrt(2 * c.num_layers), **kw)


class _MLP(nnx.Module):
    def __init__(self, c: EncoderConfig, *, stack, rngs, dtype, param_dtype):
        kw = dict(bias=c.qkv_bias, stack=stack, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.up_proj = Linear(c.dim, c.mlp_dim, **kw)
        self.down_proj = Linear(c.mlp_dim, c.dim, std=0.02 / math.sqrt(2 * c.num_layers), **kw)


class _Block(nnx.Module):
    def __init__(self, c: EncoderConfig, *, stack, rngs, dtype, param_dtype):
        self.attn_norm = Norm(c.dim, layer_norm=True, stack=stack, param_dtype=param_dtype)
        self.attn = _Attention(c, stack=stack, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.mlp_norm = Norm(c.dim, layer_norm=True, stack=stack, param_dtype=param_dtype)
        self.mlp = _MLP(c, stack=stack, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


class TransformerEncoder(nnx.Module):
    """Stacked pre-norm Transformer blocks over input embeddings ``[batch, seq, dim]``."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        if not isinstance(config, EncoderConfig):
            raise TypeError(f"config must be an EncoderConfig, got {type(config).__name__}")
        self.config = config
        self.dtype = dtype
        self.layers = _Block(
            config, stack=(config.num_layers,), rngs=rngs, dtype=dtype, param_dtype=param_dtype
        )
        self.final_norm = Norm(config.dim, layer_norm=True, param_dtype=param_dtype)

    def __call__(
        self,
        x: Float[ArrayLike, "batch seq dim"],
        *,
        attention_mask: Bool[ArrayLike, "batch seq"] | None = None,
        head_mask: Float[ArrayLike, "layers heads"] | None = None,
        ffn_mask: Float[ArrayLike, "layers mlp"] | None = None,
        output_hidden_states: bool = False,
    ) -> Float[Array, "batch seq dim"] | tuple[Float[Array, "batch seq dim"], Array]:
        """Encode ``x``.

        Args:
          x: input embeddings.
          attention_mask: True on real positions (keys of padded positions are ignored).
          head_mask: per-layer, per-head multipliers of the attention output.
          ffn_mask: per-layer multipliers of the FFN hidden units.
          output_hidden_states: also return ``[layers + 1, batch, seq, dim]`` (the input and
            each block's output, before the final norm).

        Returns:
          the final-normed hidden states (and the hidden states of every layer on request).
        """
        c = self.config
        x = jnp.asarray(x)
        if x.ndim != 3 or x.shape[-1] != c.dim:
            raise ValueError(f"x must have shape [batch, seq, {c.dim}], got {tuple(x.shape)}")
        b, s, _ = x.shape
        for name, value, shape in (
            ("attention_mask", attention_mask, (b, s)),
            ("head_mask", head_mask, (c.num_layers, c.num_heads)),
            ("ffn_mask", ffn_mask, (c.num_layers, c.mlp_dim)),
        ):
            if value is not None and tuple(jnp.shape(value)) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(jnp.shape(value))}")
        mask = jnp.ones((b, s), bool) if attention_mask is None else jnp.asarray(attention_mask)
        allowed = mask[:, None, :].astype(bool)  # [b, 1(query), keys]
        if c.causal:
            allowed = allowed & (jnp.arange(s)[None, :] <= jnp.arange(s)[:, None])[None]
        graphdef, layer_state = nnx.split(self.layers)
        xs = dict(state=layer_state, head_mask=head_mask, ffn_mask=ffn_mask)
        h_dim, nh = c.head_dim, c.num_heads
        dtype = self.dtype

        def body(x, xs):
            block = nnx.merge(graphdef, xs["state"])
            h = layer_norm(x, block.attn_norm.scale[...], block.attn_norm.bias[...], c.norm_eps)
            q = block.attn.q_proj(h).reshape(b, s, nh, h_dim)
            k = block.attn.k_proj(h).reshape(b, s, nh, h_dim)
            v = block.attn.v_proj(h).reshape(b, s, nh, h_dim)
            scores = jnp.einsum("bshd,bthd->bhst", q, k, preferred_element_type=jnp.float32)
            scores = jnp.where(allowed[:, None], scores / math.sqrt(h_dim), -1e30)
            probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
            out = jnp.einsum("bhst,bthd->bshd", probs, v)
            if xs["head_mask"] is not None:
                out = out * xs["head_mask"].astype(out.dtype)[None, None, :, None]
            x = x + block.attn.o_proj(out.reshape(b, s, c.dim))
            h = layer_norm(x, block.mlp_norm.scale[...], block.mlp_norm.bias[...], c.norm_eps)
            hidden = apply_activation(c.activation, block.mlp.up_proj(h))
            if xs["ffn_mask"] is not None:
                hidden = hidden * expand_to(xs["ffn_mask"].astype(hidden.dtype), hidden.ndim)
            x = x + block.mlp.down_proj(hidden)
            return x, x

        x = x.astype(dtype)
        out, per_layer = jax.lax.scan(body, x, xs)
        final = layer_norm(out, self.final_norm.scale[...], self.final_norm.bias[...], c.norm_eps)
        if output_hidden_states:
            return final, jnp.concatenate([x[None], per_layer], axis=0)
        return final


class TextClassifier(nnx.Module):
    """Token embeddings + learned positions + :class:`TransformerEncoder` + mean pooling over
    real tokens + a linear head.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> clf = TextClassifier(vocab_size=20, num_classes=3, max_len=8,
      ...                      config=EncoderConfig(dim=16, num_heads=2, mlp_dim=32),
      ...                      rngs=nnx.Rngs(0))
      >>> clf(jnp.ones((2, 8), jnp.int32)).shape
      (2, 3)
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        config: EncoderConfig,
        rngs: nnx.Rngs,
    ):
        for name, value in (
            ("vocab_size", vocab_size),
            ("num_classes", num_classes),
            ("max_len", max_len),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if config.causal:
            raise ValueError("a TextClassifier's encoder must be bidirectional (causal=False)")
        self.num_classes = num_classes
        self.max_len = max_len
        init = nnx.initializers.normal(0.02)
        self.embed = nnx.Embed(vocab_size, config.dim, embedding_init=init, rngs=rngs)
        self.pos = nnx.Param(init(rngs.params(), (max_len, config.dim)))
        self.encoder = TransformerEncoder(config, rngs=rngs)
        self.head = Linear(config.dim, num_classes, bias=True, rngs=rngs)

    def features(
        self,
        tokens: Int[ArrayLike, "batch seq"],
        *,
        attention_mask: Bool[ArrayLike, "batch seq"] | None = None,
        head_mask: Float[ArrayLike, "layers heads"] | None = None,
        ffn_mask: Float[ArrayLike, "layers mlp"] | None = None,
    ) -> Float[Array, "batch dim"]:
        """Mean-pooled encoder output over real tokens."""
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens must be a [batch, seq] int array, got {tokens.shape}")
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds max_len={self.max_len}")
        mask = (
            jnp.ones(tokens.shape, bool) if attention_mask is None else jnp.asarray(attention_mask)
        )
        x = self.embed(tokens) + self.pos[: tokens.shape[1]][None]
        h = self.encoder(x, attention_mask=mask, head_mask=head_mask, ffn_mask=ffn_mask)
        w = mask.astype(h.dtype)[..., None]
        return jnp.sum(h * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)

    def __call__(self, tokens, *, attention_mask=None, head_mask=None, ffn_mask=None):
        """Class logits ``[batch, num_classes]``."""
        return self.head(
            self.features(
                tokens, attention_mask=attention_mask, head_mask=head_mask, ffn_mask=ffn_mask
            )
        )
