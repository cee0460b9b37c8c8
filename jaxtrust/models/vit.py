# ruff: noqa: F722
"""A small Vision Transformer over 1-D signals or 2-D images (Flax NNX).

The input is cut into non-overlapping patches (``patch`` samples of a ``[batch, length,
channels]`` signal, or ``patch x patch`` pixels of a ``[batch, height, width, channels]``
image), each flattened and linearly embedded; a learned class token and learned positions are
added; a :class:`~jaxtrust.models.encoder.TransformerEncoder` runs over the tokens, and the
class token's final state (or the mean over patches) feeds a linear head. The structural masks
``head_mask [layers, heads]`` and ``ffn_mask [layers, mlp_dim]`` pass through to the encoder.

Parameter paths: ``patch_embed/{kernel,bias}``, ``cls``, ``pos``, ``encoder/layers/...`` (see
:mod:`jaxtrust.models.encoder`), ``head/{kernel,bias}``.

Reference: Dosovitskiy et al., *An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale*, ICLR 2021.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> vit = ViT(ViTConfig(input_shape=(40,), patch=4, num_classes=10), rngs=nnx.Rngs(0))
  >>> vit(jnp.zeros((2, 40))).shape
  (2, 10)
  >>> img = ViT(ViTConfig(input_shape=(8, 8), patch=2, num_classes=10), rngs=nnx.Rngs(0))
  >>> img(jnp.zeros((2, 8, 8))).shape
  (2, 10)
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, ArrayLike, Float

from jaxtrust.models.encoder import EncoderConfig, TransformerEncoder
from jaxtrust.models.layers import Linear

__all__ = ["ViT", "ViTConfig", "patchify"]


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Shape and size of a :class:`ViT`.

    Attributes:
      input_shape: ``(length,)`` for signals or ``(height, width)`` for images (spatial axes).
      patch: patch size along every spatial axis (must divide each).
      channels: input channels (a missing trailing channel axis means 1).
      num_classes: classifier outputs (0: no head; ``__call__`` returns features).
      encoder: the Transformer body.
      pool: ``"cls"`` (class token) or ``"mean"`` (mean over patch tokens).
    """

    input_shape: tuple[int, ...] = (40,)
    patch: int = 4
    channels: int = 1
    num_classes: int = 10
    encoder: EncoderConfig = EncoderConfig()
    pool: str = "cls"

    def __post_init__(self):
        if len(self.input_shape) not in (1, 2) or any(
            not isinstance(n, int) or n < 1 for n in self.input_shape
        ):
            raise ValueError(
                f"input_shape must be (length,) or (height, width) of positive ints, "
                f"got {self.input_shape!r}"
            )
        if not isinstance(self.patch, int) or self.patch < 1:
            raise ValueError(f"patch must be a positive int, got {self.patch!r}")
        for n in self.input_shape:
            if n % self.patch:
                raise ValueError(f"patch={self.patch} must divide every axis of {self.input_shape}")
        if self.encoder.causal:
            raise ValueError("a ViT's encoder must be bidirectional (causal=False)")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {self.pool!r}")
        if self.channels < 1 or self.num_classes < 0:
            raise ValueError("channels must be >= 1 and num_classes >= 0")

    @property
    def num_patches(self) -> int:
        return math.prod(n // self.patch for n in self.input_shape)

    @property
    def patch_dim(self) -> int:
        return self.patch ** len(self.input_shape) * self.channels


def patchify(x: Float[Array, "batch ..."], patch: int, spatial: int) -> Float[Array, "batch n p"]:
    """Cut ``[batch, *spatial_axes, channels]`` into ``[batch, patches, patch_dim]`` (row-major
    patch order, each patch flattened as ``(*within-patch offsets, channel)``)."""
    b = x.shape[0]
    c = x.shape[-1]
    if spatial == 1:
        length = x.shape[1]
        return x.reshape(b, length // patch, patch * c)
    h, w = x.shape[1], x.shape[2]
    x = x.reshape(b, h // patch, patch, w // patch, patch, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


class ViT(nnx.Module):
    """Vision Transformer classifier; see the module docstring."""

    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        if not isinstance(config, ViTConfig):
            raise TypeError(f"config must be a ViTConfig, got {type(config).__name__}")
        self.config = config
        d = config.encoder.dim
        init = nnx.initializers.normal(0.02)
        self.patch_embed = Linear(config.patch_dim, d, bias=True, rngs=rngs, dtype=dtype)
        self.cls = nnx.Param(init(rngs.params(), (1, 1, d)))
        self.pos = nnx.Param(init(rngs.params(), (1, config.num_patches + 1, d)))
        self.encoder = TransformerEncoder(config.encoder, rngs=rngs, dtype=dtype)
        self.head = (
            Linear(d, config.num_classes, bias=True, rngs=rngs, dtype=dtype)
            if config.num_classes
            else None
        )

    def _check(self, x) -> jnp.ndarray:
        c = self.config
        x = jnp.asarray(x)
        spatial = len(c.input_shape)
        if x.ndim == spatial + 1 and c.channels == 1:
            x = x[..., None]
        expected = (*c.input_shape, c.channels)
        if x.ndim != spatial + 2 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"x must have shape [batch, {', '.join(map(str, expected))}] "
                f"(or without the channel axis when channels=1), got {tuple(x.shape)}"
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"x must be a floating array, got dtype {x.dtype}")
        return x

    def features(
        self,
        x: Float[ArrayLike, "batch ..."],
        *,
        head_mask: Float[ArrayLike, "layers heads"] | None = None,
        ffn_mask: Float[ArrayLike, "layers mlp"] | None = None,
        tokens: bool = False,
    ) -> Float[Array, "batch dim"] | Float[Array, "batch n dim"]:
        """Pooled features ``[batch, dim]`` (or every token's state with ``tokens=True``)."""
        x = self._check(x)
        patches = patchify(x, self.config.patch, len(self.config.input_shape))
        h = self.patch_embed(patches)
        cls = jnp.broadcast_to(self.cls[...], (h.shape[0], 1, h.shape[-1])).astype(h.dtype)
        h = jnp.concatenate([cls, h], axis=1) + self.pos[...].astype(h.dtype)
        h = self.encoder(h, head_mask=head_mask, ffn_mask=ffn_mask)
        if tokens:
            return h
        return h[:, 0] if self.config.pool == "cls" else jnp.mean(h[:, 1:], axis=1)

    def __call__(
        self,
        x: Float[ArrayLike, "batch ..."],
        *,
        head_mask: Float[ArrayLike, "layers heads"] | None = None,
        ffn_mask: Float[ArrayLike, "layers mlp"] | None = None,
    ) -> Float[Array, "batch out"]:
        """Class logits ``[batch, num_classes]`` (features when ``num_classes == 0``)."""
        f = self.features(x, head_mask=head_mask, ffn_mask=ffn_mask)
        return f if self.head is None else self.head(f)
