# ruff: noqa: F722
"""A BERT encoder (post-LayerNorm) in Flax NNX, loaded from Hugging Face safetensors without
torch, and the sentence encoder of ``all-MiniLM-L6-v2`` on top of it.

BERT differs from :class:`~jaxtrust.models.encoder.TransformerEncoder` (pre-norm) in where the
norms sit: each sub-layer is ``x = LayerNorm(x + sublayer(x))``, and the embeddings
(word + absolute position + token type) are normed before the first block. Layers are stacked
along a leading axis and run with ``lax.scan``, like every jaxtrust transformer.

Parameter paths::

    word_embed, pos_embed, type_embed        [vocab|positions|types, dim]
    embed_norm/{scale,bias}                  [dim]
    layers/attn/{q,k,v,o}_proj/{kernel,bias} [layers, dim, dim], [layers, dim]
    layers/attn_norm/{scale,bias}            [layers, dim]
    layers/mlp/{up,down}_proj/{kernel,bias}  [layers, dim, mlp], [layers, mlp, dim]
    layers/mlp_norm/{scale,bias}             [layers, dim]

The sentence embedding of ``sentence-transformers/all-MiniLM-L6-v2`` is the mean of the last
hidden states over real tokens, L2-normalised:
:math:`e = \\bar h / \\lVert \\bar h \\rVert`, :math:`\\bar h = \\sum_t m_t h_t / \\sum_t m_t`.

References:
  Devlin et al., *BERT: Pre-training of Deep Bidirectional Transformers for Language
  Understanding*, NAACL 2019. Wang et al., *MiniLM: Deep Self-Attention Distillation for
  Task-Agnostic Compression of Pre-Trained Transformers*, NeurIPS 2020. Reimers & Gurevych,
  *Sentence-BERT*, EMNLP 2019.

Example::

    from jaxtrust.data.assets import asset_path
    encoder = SentenceEncoder.load(asset_path("minilm"))
    emb = encoder.encode(["a red circle left of a blue square"])   # [1, 384], unit norm
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from jaxtrust.models.encoder import layer_norm
from jaxtrust.models.hooks import apply_activation
from jaxtrust.models.layers import Linear, Norm

__all__ = ["Bert", "BertConfig", "SentenceEncoder", "load_bert", "mean_pool"]


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Shape of a :class:`Bert` (the fields of a Hugging Face BERT ``config.json``)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    activation: str = "gelu"

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads})"
            )

    @classmethod
    def from_hf(cls, config: dict | str | os.PathLike) -> BertConfig:
        """From a BERT ``config.json`` (dict, file, or the directory holding it)."""
        if not isinstance(config, dict):
            path = Path(config)
            path = path / "config.json" if path.is_dir() else path
            if not path.is_file():
                raise FileNotFoundError(f"config: no config.json at {path}")
            config = json.loads(path.read_text())
        if config.get("model_type", "bert") != "bert":
            raise ValueError(f"expected a BERT config, got model_type={config.get('model_type')!r}")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=int(config["num_attention_heads"]),
            intermediate_size=int(config["intermediate_size"]),
            max_position_embeddings=int(config.get("max_position_embeddings", 512)),
            type_vocab_size=int(config.get("type_vocab_size", 2)),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
            activation=str(config.get("hidden_act", "gelu")),
        )


class _Attention(nnx.Module):
    def __init__(self, c: BertConfig, *, stack, rngs):
        d = c.hidden_size
        self.q_proj = Linear(d, d, bias=True, stack=stack, rngs=rngs)
        self.k_proj = Linear(d, d, bias=True, stack=stack, rngs=rngs)
        self.v_proj = Linear(d, d, bias=True, stack=stack, rngs=rngs)
        self.o_proj = Linear(d, d, bias=True, stack=stack, rngs=rngs)


class _MLP(nnx.Module):
    def __init__(self, c: BertConfig, *, stack, rngs):
        self.up_proj = Linear(c.hidden_size, c.intermediate_size, bias=True, stack=stack, rngs=rngs)
        self.down_proj = Linear(
            c.intermediate_size, c.hidden_size, bias=True, stack=stack, rngs=rngs
        )


class _Block(nnx.Module):
    def __init__(self, c: BertConfig, *, stack, rngs):
        self.attn = _Attention(c, stack=stack, rngs=rngs)
        self.attn_norm = Norm(c.hidden_size, layer_norm=True, stack=stack)
        self.mlp = _MLP(c, stack=stack, rngs=rngs)
        self.mlp_norm = Norm(c.hidden_size, layer_norm=True, stack=stack)


class Bert(nnx.Module):
    """BERT encoder body (no pooler, no MLM head); see the module docstring.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> c = BertConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
      ...                intermediate_size=32, max_position_embeddings=16)
      >>> Bert(c, rngs=nnx.Rngs(0))(jnp.ones((2, 5), jnp.int32)).shape
      (2, 5, 16)
    """

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, BertConfig):
            raise TypeError(f"config must be a BertConfig, got {type(config).__name__}")
        self.config = config
        init = nnx.initializers.normal(0.02)
        d = config.hidden_size
        self.word_embed = nnx.Param(init(rngs.params(), (config.vocab_size, d)))
        self.pos_embed = nnx.Param(init(rngs.params(), (config.max_position_embeddings, d)))
        self.type_embed = nnx.Param(init(rngs.params(), (config.type_vocab_size, d)))
        self.embed_norm = Norm(d, layer_norm=True)
        self.layers = _Block(config, stack=(config.num_layers,), rngs=rngs)

    def __call__(
        self,
        tokens: Int[ArrayLike, "batch seq"],
        *,
        attention_mask: Bool[ArrayLike, "batch seq"] | Int[ArrayLike, "batch seq"] | None = None,
        token_type_ids: Int[ArrayLike, "batch seq"] | None = None,
    ) -> Float[Array, "batch seq dim"]:
        """Last hidden states ``[batch, seq, hidden]``.

        Args:
          tokens: WordPiece ids (``[CLS] ... [SEP]``, as the tokenizer makes them).
          attention_mask: 1/True on real tokens (keys of padding are ignored).
          token_type_ids: segment ids (default 0).
        """
        c = self.config
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"tokens must be a [batch, seq] int array, got {tokens.dtype}{tokens.shape}"
            )
        b, s = tokens.shape
        if s > c.max_position_embeddings:
            raise ValueError(
                f"sequence length {s} exceeds max_position_embeddings={c.max_position_embeddings}"
            )
        mask = jnp.ones((b, s), bool) if attention_mask is None else jnp.asarray(attention_mask)
        if mask.shape != (b, s):
            raise ValueError(f"attention_mask must have shape {(b, s)}, got {mask.shape}")
        types = jnp.zeros((b, s), jnp.int32) if token_type_ids is None else token_type_ids
        x = (
            self.word_embed[...][tokens]
            + self.pos_embed[...][:s][None]
            + self.type_embed[...][jnp.asarray(types)]
        )
        eps = c.layer_norm_eps
        x = layer_norm(x, self.embed_norm.scale[...], self.embed_norm.bias[...], eps)
        keep = mask.astype(bool)[:, None, None, :]  # [b, 1, 1, keys]
        nh, hd = c.num_heads, c.hidden_size // c.num_heads
        graphdef, layer_state = nnx.split(self.layers)

        def body(x, state):
            blk = nnx.merge(graphdef, state)
            q = blk.attn.q_proj(x).reshape(b, s, nh, hd)
            k = blk.attn.k_proj(x).reshape(b, s, nh, hd)
            v = blk.attn.v_proj(x).reshape(b, s, nh, hd)
            scores = jnp.einsum("bshd,bthd->bhst", q, k) / math.sqrt(hd)
            probs = jax.nn.softmax(jnp.where(keep, scores, -1e30), axis=-1)
            ctx = jnp.einsum("bhst,bthd->bshd", probs, v).reshape(b, s, c.hidden_size)
            n = blk.attn_norm
            x = layer_norm(x + blk.attn.o_proj(ctx), n.scale[...], n.bias[...], eps)
            h = apply_activation(c.activation, blk.mlp.up_proj(x))
            n = blk.mlp_norm
            x = layer_norm(x + blk.mlp.down_proj(h), n.scale[...], n.bias[...], eps)
            return x, None

        x, _ = jax.lax.scan(body, x, layer_state)
        return x


def mean_pool(
    hidden: Float[ArrayLike, "batch seq dim"],
    attention_mask: Bool[ArrayLike, "batch seq"] | Int[ArrayLike, "batch seq"],
    *,
    normalize: bool = True,
) -> Float[Array, "batch dim"]:
    r"""Mean of ``hidden`` over real tokens, optionally L2-normalised (sentence-transformers'
    ``Pooling(mean)`` + ``Normalize``): :math:`\bar h = \sum_t m_t h_t / \max(\sum_t m_t, 10^{-9})`.
    """
    hidden = jnp.asarray(hidden)
    w = jnp.asarray(attention_mask).astype(hidden.dtype)[..., None]
    pooled = jnp.sum(hidden * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1e-9)
    if normalize:
        pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled


def load_bert(directory: str | os.PathLike) -> Bert:
    """A :class:`Bert` with the weights of a Hugging Face BERT ``model.safetensors``.

    Reads ``config.json`` and ``model.safetensors`` with ``safetensors.numpy`` (no torch, no
    unpickling). Linear weights are stored ``[out, in]`` by PyTorch and transposed here.

    Args:
      directory: folder with ``config.json`` and ``model.safetensors`` (e.g.
        ``asset_path("minilm")``).

    Returns:
      The loaded encoder.

    Raises:
      FileNotFoundError: a file is missing. ValueError: a tensor is missing or misshapen.
    """
    from safetensors.numpy import load_file

    directory = Path(directory)
    weights_path = directory / "model.safetensors"
    if not weights_path.is_file():
        raise FileNotFoundError(f"no model.safetensors in {directory}")
    config = BertConfig.from_hf(directory)
    raw = load_file(str(weights_path))
    # some checkpoints prefix every name with "bert."
    tensors = {k.removeprefix("bert."): v for k, v in raw.items()}

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in tensors:
            raise ValueError(f"{weights_path}: missing tensor {name!r}")
        value = np.asarray(tensors[name], np.float32)
        if value.shape != shape:
            raise ValueError(f"{weights_path}: {name} has shape {value.shape}, expected {shape}")
        return value

    d, f, n = config.hidden_size, config.intermediate_size, config.num_layers

    def stacked(pattern: str, shape: tuple[int, ...], transpose: bool = False) -> np.ndarray:
        layers = [get(f"encoder.layer.{i}.{pattern}", shape) for i in range(n)]
        return np.stack([w.T if transpose else w for w in layers])

    model = Bert(config, rngs=nnx.Rngs(0))
    model.word_embed[...] = get("embeddings.word_embeddings.weight", (config.vocab_size, d))
    model.pos_embed[...] = get(
        "embeddings.position_embeddings.weight", (config.max_position_embeddings, d)
    )
    model.type_embed[...] = get(
        "embeddings.token_type_embeddings.weight", (config.type_vocab_size, d)
    )
    model.embed_norm.scale[...] = get("embeddings.LayerNorm.weight", (d,))
    model.embed_norm.bias[...] = get("embeddings.LayerNorm.bias", (d,))
    attn, mlp = model.layers.attn, model.layers.mlp
    for proj, name in ((attn.q_proj, "query"), (attn.k_proj, "key"), (attn.v_proj, "value")):
        proj.kernel[...] = stacked(f"attention.self.{name}.weight", (d, d), transpose=True)
        proj.bias[...] = stacked(f"attention.self.{name}.bias", (d,))
    attn.o_proj.kernel[...] = stacked("attention.output.dense.weight", (d, d), transpose=True)
    attn.o_proj.bias[...] = stacked("attention.output.dense.bias", (d,))
    model.layers.attn_norm.scale[...] = stacked("attention.output.LayerNorm.weight", (d,))
    model.layers.attn_norm.bias[...] = stacked("attention.output.LayerNorm.bias", (d,))
    mlp.up_proj.kernel[...] = stacked("intermediate.dense.weight", (f, d), transpose=True)
    mlp.up_proj.bias[...] = stacked("intermediate.dense.bias", (f,))
    mlp.down_proj.kernel[...] = stacked("output.dense.weight", (d, f), transpose=True)
    mlp.down_proj.bias[...] = stacked("output.dense.bias", (d,))
    model.layers.mlp_norm.scale[...] = stacked("output.LayerNorm.weight", (d,))
    model.layers.mlp_norm.bias[...] = stacked("output.LayerNorm.bias", (d,))
    return model


@partial(jax.jit, static_argnames=("graphdef",))
def _encode(graphdef, state, tokens, mask):
    model = nnx.merge(graphdef, state)
    return mean_pool(model(tokens, attention_mask=mask), mask)


@dataclasses.dataclass(frozen=True)
class SentenceEncoder:
    """A BERT body and its WordPiece tokenizer, embedding texts as unit vectors.

    Attributes:
      model: the :class:`Bert`.
      tokenizer: a ``transformers`` fast tokenizer (:func:`jaxtrust.models.load_tokenizer`).
      max_length: truncation length in tokens (256 for all-MiniLM-L6-v2).
    """

    model: Bert
    tokenizer: Any
    max_length: int = 256

    @classmethod
    def load(cls, directory: str | os.PathLike, *, max_length: int = 256) -> SentenceEncoder:
        """The encoder in ``directory`` (``config.json``, ``model.safetensors``, tokenizer)."""
        from jaxtrust.models.tokenizer import load_tokenizer

        return cls(load_bert(directory), load_tokenizer(directory), max_length)

    def tokenize(self, texts: Sequence[str], *, pad_to: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, mask)`` int32/bool ``[n, seq]``, right-padded to a multiple of ``pad_to``."""
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError("texts must be a sequence of strings")
        if not texts:
            raise ValueError("texts is empty")
        rows = [
            self.tokenizer.encode(t, truncation=True, max_length=self.max_length) for t in texts
        ]
        width = -(-max(len(r) for r in rows) // pad_to) * pad_to
        ids = np.zeros((len(rows), width), np.int32)
        mask = np.zeros((len(rows), width), bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = True
        return ids, mask

    def encode(self, texts: Sequence[str], *, batch_size: int = 128) -> np.ndarray:
        """Unit-norm sentence embeddings ``[n, hidden]`` (float32 NumPy)."""
        ids, mask = self.tokenize(texts)
        graphdef, state = nnx.split(self.model)
        out = [
            np.asarray(_encode(graphdef, state, ids[i : i + batch_size], mask[i : i + batch_size]))
            for i in range(0, len(ids), batch_size)
        ]
        return np.concatenate(out)
