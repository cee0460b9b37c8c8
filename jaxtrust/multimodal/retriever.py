# ruff: noqa: F722
"""A contrastive image-text retriever (two towers) and its training.

* Image tower: a :class:`~jaxtrust.models.ViT` whose head is the projection to the joint
  space (``num_classes = embed_dim``).
* Text tower, one of

  - ``"word"``: an in-house :class:`~jaxtrust.models.TextClassifier` over word ids (mean-pooled
    encoder, linear head = projection), trained from scratch;
  - ``"minilm"``: the real ``all-MiniLM-L6-v2`` sentence encoder (:class:`~jaxtrust.models.
    bert.Bert`, loaded from its safetensors) with a trained linear projection; the BERT body
    stays frozen by default (the locked-text variant of LiT), so its sentence embeddings can be
    computed once and the projection trained on them.

Both towers end L2-normalised; a query is scored against an image by the inner product
:math:`\\langle \\hat t, \\hat v \\rangle`, which is what :mod:`jaxtrust.multimodal.index`
searches. Training uses :func:`jaxtrust.training.contrastive.clip_loss` (learned
temperature, CLIP's init :math:`\\log(1/0.07)`) or :func:`~jaxtrust.training.contrastive.
siglip_loss` (:math:`\\tau = \\log 10, \\beta = -10`), through :func:`jaxtrust.training.finetune`.

References:
  Radford et al., *CLIP*, ICML 2021; Zhai et al., *SigLIP*, ICCV 2023; Zhai et al., *LiT:
  Zero-Shot Transfer with Locked-image text Tuning*, CVPR 2022.

Example:
  >>> import numpy as np
  >>> from flax import nnx
  >>> from jaxtrust.models import ViTConfig, EncoderConfig
  >>> enc = EncoderConfig(dim=16, num_layers=1, num_heads=2, mlp_dim=32)
  >>> cfg = RetrieverConfig(image=ViTConfig(input_shape=(16, 16), patch=8, channels=3,
  ...                       encoder=enc), text_encoder=enc, vocab_size=20, max_len=8,
  ...                       embed_dim=8)
  >>> r = Retriever(cfg, rngs=nnx.Rngs(0))
  >>> r.embed_images(np.zeros((2, 16, 16, 3), np.float32)).shape
  (2, 8)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, ArrayLike, Float

from jaxtrust.models.bert import Bert, BertConfig, mean_pool
from jaxtrust.models.encoder import EncoderConfig, TextClassifier
from jaxtrust.models.layers import Linear
from jaxtrust.models.vit import ViT, ViTConfig
from jaxtrust.training.contrastive import clip_loss, normalize, siglip_loss
from jaxtrust.training.finetune import FinetuneResult, finetune
from jaxtrust.training.recipes import adamw_cosine, freeze

__all__ = [
    "Retriever",
    "RetrieverConfig",
    "embed_images",
    "bucket_rows",
    "embed_texts",
    "retriever_loss",
    "tokenize_texts",
    "train_retriever",
]

TEXT_KINDS = ("word", "minilm")
LOSSES = ("clip", "siglip")


@dataclasses.dataclass(frozen=True)
class RetrieverConfig:
    """Architecture of a :class:`Retriever`.

    Attributes:
      image: the image tower (its ``num_classes`` is replaced by ``embed_dim``).
      text: ``"word"`` (in-house encoder) or ``"minilm"`` (BERT body + projection).
      text_encoder: the in-house text encoder (``text="word"``).
      vocab_size, max_len: word vocabulary and maximum query length (``text="word"``).
      bert: the BERT body's shape (``text="minilm"``; MiniLM-L6's by default).
      embed_dim: joint embedding width.
      loss: ``"clip"`` or ``"siglip"``.
    """

    image: ViTConfig = ViTConfig(input_shape=(64, 64), patch=8, channels=3)
    text: str = "word"
    text_encoder: EncoderConfig = EncoderConfig()
    vocab_size: int = 256
    max_len: int = 32
    bert: BertConfig = BertConfig()
    embed_dim: int = 128
    loss: str = "clip"

    def __post_init__(self):
        if self.text not in TEXT_KINDS:
            raise ValueError(f"text must be one of {TEXT_KINDS}, got {self.text!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {self.embed_dim}")
        if len(self.image.input_shape) != 2:
            raise ValueError("the image tower needs a 2-D input_shape (height, width)")
        object.__setattr__(
            self, "image", dataclasses.replace(self.image, num_classes=self.embed_dim)
        )

    @property
    def image_size(self) -> int:
        return self.image.input_shape[0]


class MiniLMTextTower(nnx.Module):
    """A BERT body, mean pooling and a linear projection to the joint space."""

    def __init__(self, bert: Bert, embed_dim: int, *, rngs: nnx.Rngs):
        self.bert = bert
        self.proj = Linear(bert.config.hidden_size, embed_dim, bias=True, rngs=rngs)

    def features(self, tokens, attention_mask) -> jax.Array:
        """The sentence embedding the frozen encoder gives (mean-pooled, unit norm)."""
        return mean_pool(self.bert(tokens, attention_mask=attention_mask), attention_mask)

    def __call__(self, tokens, attention_mask) -> jax.Array:
        return self.proj(self.features(tokens, attention_mask))


class Retriever(nnx.Module):
    """Two-tower image-text retriever; see the module docstring.

    Args:
      config: a :class:`RetrieverConfig`.
      rngs: parameter initialisation.
      bert: for ``text="minilm"``, the loaded body (:func:`jaxtrust.models.bert.load_bert`);
        default a randomly initialised one of ``config.bert``'s shape.
    """

    def __init__(self, config: RetrieverConfig, *, rngs: nnx.Rngs, bert: Bert | None = None):
        if not isinstance(config, RetrieverConfig):
            raise TypeError(f"config must be a RetrieverConfig, got {type(config).__name__}")
        self.config = config
        self.image_tower = ViT(config.image, rngs=rngs)
        if config.text == "word":
            if config.text_encoder.causal:
                raise ValueError("the text encoder must be bidirectional")
            self.text_tower = TextClassifier(
                vocab_size=config.vocab_size,
                num_classes=config.embed_dim,
                max_len=config.max_len,
                config=config.text_encoder,
                rngs=rngs,
            )
        else:
            bert = bert if bert is not None else Bert(config.bert, rngs=rngs)
            self.text_tower = MiniLMTextTower(bert, config.embed_dim, rngs=rngs)
        init_scale, init_bias = (
            (math.log(1 / 0.07), 0.0)
            if config.loss == "clip"
            else (
                math.log(10.0),
                -10.0,
            )
        )
        self.logit_scale = nnx.Param(jnp.asarray(init_scale, jnp.float32))
        self.logit_bias = nnx.Param(jnp.asarray(init_bias, jnp.float32))

    def embed_images(self, images: Float[ArrayLike, "n h w 3"]) -> Float[Array, "n dim"]:
        """Unit-norm image embeddings (images float in ``[0, 1]``)."""
        return normalize(self.image_tower(jnp.asarray(images, jnp.float32)))

    def embed_texts(self, text: Mapping[str, Any]) -> Float[Array, "n dim"]:
        """Unit-norm text embeddings from ``{"tokens", "text_mask"}`` (or, for a frozen MiniLM
        tower, precomputed ``{"text_features"}``)."""
        if not isinstance(text, Mapping):
            raise TypeError(f"text must be a mapping of arrays, got {type(text).__name__}")
        if "text_features" in text:
            if self.config.text != "minilm":
                raise ValueError("text_features are only for text='minilm' retrievers")
            return normalize(self.text_tower.proj(jnp.asarray(text["text_features"])))
        if "tokens" not in text or "text_mask" not in text:
            raise KeyError("text needs 'tokens' and 'text_mask' (or 'text_features')")
        tokens = jnp.asarray(text["tokens"])
        mask = jnp.asarray(text["text_mask"]).astype(bool)
        if self.config.text == "word":
            return normalize(self.text_tower(tokens, attention_mask=mask))
        return normalize(self.text_tower(tokens, mask))


def retriever_loss(model: Retriever, batch: Mapping[str, Any], key=None):
    """Contrastive loss of a batch ``{"images" (uint8 or float), text inputs, "groups"}``.

    ``loss_fn(model, batch, key)`` for :func:`jaxtrust.training.finetune`.
    """
    del key
    images = jnp.asarray(batch["images"])
    if images.dtype == jnp.uint8:
        images = images.astype(jnp.float32) / 255.0
    v = model.embed_images(images)
    t = model.embed_texts(batch)
    groups = batch.get("groups")
    if model.config.loss == "clip":
        return clip_loss(v, t, logit_scale=model.logit_scale[...], groups=groups)
    return siglip_loss(
        v, t, logit_scale=model.logit_scale[...], logit_bias=model.logit_bias[...], groups=groups
    )


def train_retriever(
    model: Retriever,
    pool: Mapping[str, np.ndarray],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    warmup_steps: int = 50,
    weight_decay: float = 0.01,
    eval_fn=None,
    eval_every: int = 100,
) -> FinetuneResult:
    """Train ``model`` contrastively on ``pool`` with AdamW + warmup-cosine.

    Args:
      model: the retriever (not modified; the result holds the trained copy).
      pool: ``{"images": uint8 [n, h, w, 3], "tokens", "text_mask"}`` (or ``"text_features"``
        for a frozen MiniLM tower) and optional ``"groups"`` [n] (rows of one image share an
        id). A MiniLM body is frozen whatever the inputs.
      steps, batch_size, learning_rate, seed, warmup_steps, weight_decay: the recipe.
      eval_fn, eval_every: trajectories (see :func:`jaxtrust.training.finetune`).

    Returns:
      The :class:`~jaxtrust.training.FinetuneResult`.
    """
    if "images" not in pool:
        raise KeyError("pool needs 'images'")
    tx = adamw_cosine(learning_rate, steps, warmup_steps=warmup_steps, weight_decay=weight_decay)
    if model.config.text == "minilm":
        tx = freeze(tx, r"^text_tower/bert/")
    return finetune(
        model,
        pool,
        tx,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        loss_fn=retriever_loss,
        step_key=("retriever", model.config, learning_rate, steps, warmup_steps, weight_decay),
        eval_fn=eval_fn,
        eval_every=eval_every,
    )


@partial(jax.jit, static_argnames=("graphdef",))
def _embed_images(graphdef, state, images):
    model = nnx.merge(graphdef, state)
    images = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images
    return model.embed_images(images)


@partial(jax.jit, static_argnames=("graphdef",))
def _embed_texts(graphdef, state, text):
    return nnx.merge(graphdef, state).embed_texts(text)


def _chunks(n: int, batch_size: int):
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return range(0, n, batch_size)


def bucket_rows(n: int) -> int:
    """The padded row count of a batch of ``n`` rows: the next power of two (at least 8), so
    batches of many sizes share a few compiled programs."""
    return max(8, 1 << (int(n) - 1).bit_length())


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    if len(x) == rows:
        return x
    return np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)])


def embed_images(model: Retriever, images: ArrayLike, *, batch_size: int = 256) -> np.ndarray:
    """Unit-norm embeddings of ``images`` (uint8 or float ``[n, h, w, 3]``), in fixed-size
    chunks (one compilation), as float32 NumPy."""
    images = np.asarray(images)
    size = model.config.image_size
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must have shape [n, {size}, {size}, 3], got {images.shape}")
    if len(images) == 0:
        raise ValueError("images is empty")
    graphdef, state = nnx.split(model)
    out = []
    for lo in _chunks(len(images), batch_size):
        chunk = images[lo : lo + batch_size]
        full = _pad_rows(chunk, min(batch_size, bucket_rows(len(images))))
        out.append(np.asarray(_embed_images(graphdef, state, jnp.asarray(full)))[: len(chunk)])
    return np.concatenate(out)


def embed_texts(
    model: Retriever, text: Mapping[str, np.ndarray], *, batch_size: int = 512
) -> np.ndarray:
    """Unit-norm embeddings of a text batch (``{"tokens", "text_mask"}`` or
    ``{"text_features"}``), chunked, as float32 NumPy."""
    arrays = {k: np.asarray(v) for k, v in text.items()}
    if not arrays:
        raise ValueError("text is empty")
    n = len(next(iter(arrays.values())))
    if n == 0:
        raise ValueError("text has no rows")
    graphdef, state = nnx.split(model)
    out = []
    for lo in _chunks(n, batch_size):
        chunk = {k: v[lo : lo + batch_size] for k, v in arrays.items()}
        rows = len(next(iter(chunk.values())))
        full = {
            k: jnp.asarray(_pad_rows(v, min(batch_size, bucket_rows(n)))) for k, v in chunk.items()
        }
        out.append(np.asarray(_embed_texts(graphdef, state, full))[:rows])
    return np.concatenate(out)


def tokenize_texts(tokenizer: Any, texts, *, max_len: int) -> dict[str, np.ndarray]:
    """``{"tokens" int32, "text_mask" bool}`` ``[n, max_len]`` (right-padded with 0) of
    ``texts``, for a :class:`~jaxtrust.data.WordTokenizer` or a ``transformers`` tokenizer
    (whose ``encode`` adds ``[CLS]``/``[SEP]`` itself).

    Raises:
      TypeError: ``texts`` is not a sequence of strings. ValueError: empty, or a text longer
      than ``max_len`` tokens.
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a sequence of strings")
    if len(texts) == 0:
        raise ValueError("texts is empty")
    rows = [tokenizer.encode(t) for t in texts]
    longest = max(len(r) for r in rows)
    if longest > max_len:
        raise ValueError(f"a text has {longest} tokens, more than max_len={max_len}")
    tokens = np.zeros((len(rows), max_len), np.int32)
    mask = np.zeros((len(rows), max_len), bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
        mask[i, : len(r)] = True
    return {"tokens": tokens, "text_mask": mask}
