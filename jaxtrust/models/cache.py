"""A fixed-shape key/value cache, so that decoding compiles once and never re-traces."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

if TYPE_CHECKING:
    from jaxtrust.models.config import LMConfig


class KVCache(NamedTuple):
    """Keys and values of every layer for ``slots`` positions (a pytree).

    All rows of the batch write the same slot at each step (``index``); left-padded prompts
    mark their padding slots invalid in ``valid``, so they are never attended to.
    """

    k: Float[Array, "layers batch slots kv_heads head_dim"]
    v: Float[Array, "layers batch slots kv_heads head_dim"]
    valid: Bool[Array, "batch slots"]
    index: Int[Array, ""]

    @classmethod
    def init(cls, config: LMConfig, batch: int, max_len: int, dtype=jnp.float32) -> KVCache:
        if batch <= 0 or max_len <= 0:
            raise ValueError(
                f"batch and max_len must be positive, got batch={batch}, max_len={max_len}"
            )
        shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
        return cls(
            jnp.zeros(shape, dtype),
            jnp.zeros(shape, dtype),
            jnp.zeros((batch, max_len), bool),
            jnp.zeros((), jnp.int32),
        )

    @property
    def max_len(self) -> int:
        return self.k.shape[2]
