# ruff: noqa: F722
"""A small vision-language generator: ViT encoder, MLP projector, causal LM with a prefix mask.

For a question with ``k`` (retrieved) images, every image is encoded by the ViT into its class
token plus its patch tokens average-pooled ``pool x pool`` (``T = 1 + (g / pool)^2`` tokens for
a ``g x g`` patch grid), projected by a two-layer GELU MLP into the LM's embedding space
(LLaVA-1.5's projector), and the ``k * T`` image embeddings are laid before the question's
token embeddings. The LM attends bidirectionally over the image tokens and the question (the
prefix-LM mask of PaliGemma) and causally over the answer, which is what it is trained to
produce (next-token loss on answer tokens only).

The vision tower may be shared with a retriever's image tower and kept frozen (as LLaVA keeps
its CLIP tower): then image features are computed once (:func:`image_features`) and training
runs on them (``batch["features"]``); with images in the batch (``batch["images"]``) pixel
gradients flow through the whole model, which the adversarial baselines use. Any
:class:`~jaxtrust.models.CausalLM` works as the LM, including SmolLM2-135M-Instruct
(:func:`jaxtrust.models.load_pretrained` of ``asset_path("smollm2")``).

References:
  Liu et al., *Visual Instruction Tuning* (LLaVA), NeurIPS 2023, and *Improved Baselines with
  Visual Instruction Tuning* (LLaVA-1.5), CVPR 2024. Beyer et al., *PaliGemma*, 2024.

Example:
  >>> import numpy as np
  >>> from flax import nnx
  >>> from jaxtrust.models import EncoderConfig, LMConfig, ViTConfig
  >>> enc = EncoderConfig(dim=16, num_layers=1, num_heads=2, mlp_dim=32)
  >>> cfg = VLMConfig(vision=ViTConfig(input_shape=(16, 16), patch=4, channels=3,
  ...                 num_classes=0, encoder=enc), lm=LMConfig.tiny(vocab_size=30), pool=2)
  >>> vlm = VisionLanguageModel(cfg, rngs=nnx.Rngs(0))
  >>> vlm.tokens_per_image
  5
  >>> logits = vlm(np.ones((2, 4), np.int32), np.ones((2, 4), bool),
  ...              images=np.zeros((2, 3, 16, 16, 3), np.float32))
  >>> logits.shape
  (2, 4, 30)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, ArrayLike, Bool, Float, Int, Real

from jaxtrust.data.batching import collate
from jaxtrust.eval.responses import special_ids
from jaxtrust.models.config import LMConfig
from jaxtrust.models.generation import generate_from_embeds
from jaxtrust.models.hooks import apply_activation
from jaxtrust.models.layers import Linear
from jaxtrust.models.transformer import CausalLM
from jaxtrust.models.vit import ViT, ViTConfig
from jaxtrust.multimodal.retriever import bucket_rows
from jaxtrust.training.losses import lm_loss

__all__ = [
    "VLMConfig",
    "VisionLanguageModel",
    "answer",
    "encode_qa",
    "image_features",
    "vlm_loss_fn",
]


@dataclasses.dataclass(frozen=True)
class VLMConfig:
    """Architecture of a :class:`VisionLanguageModel`.

    Attributes:
      vision: the ViT (2-D images, RGB).
      lm: the causal LM's config (ignored when a loaded LM is passed to the constructor).
      pool: average-pooling factor of the patch-token grid (must divide it).
      projector_hidden: hidden width of the projector MLP (0: the LM's width).
    """

    vision: ViTConfig
    lm: LMConfig
    pool: int = 2
    projector_hidden: int = 0

    def __post_init__(self):
        if len(self.vision.input_shape) != 2 or self.vision.channels != 3:
            raise ValueError("vision must be a ViT over RGB images (2-D input_shape, channels=3)")
        grid = self.vision.input_shape[0] // self.vision.patch
        if self.vision.input_shape[0] != self.vision.input_shape[1]:
            raise ValueError("vision input must be square")
        if not isinstance(self.pool, int) or self.pool < 1 or grid % self.pool:
            raise ValueError(f"pool must be a positive divisor of the patch grid {grid}")

    @property
    def tokens_per_image(self) -> int:
        g = self.vision.input_shape[0] // self.vision.patch // self.pool
        return 1 + g * g

    @property
    def image_size(self) -> int:
        return self.vision.input_shape[0]


class Projector(nnx.Module):
    """``Linear -> GELU -> Linear`` from vision width to LM width (LLaVA-1.5)."""

    def __init__(self, din: int, hidden: int, dout: int, *, rngs: nnx.Rngs):
        self.fc1 = Linear(din, hidden, bias=True, rngs=rngs)
        self.fc2 = Linear(hidden, dout, bias=True, rngs=rngs)

    def __call__(self, x):
        return self.fc2(apply_activation("gelu", self.fc1(x)))


class VisionLanguageModel(nnx.Module):
    """ViT + projector + causal LM; see the module docstring.

    Args:
      config: a :class:`VLMConfig`.
      rngs: initialisation of what is not passed in.
      vision: an existing ViT of ``config.vision``'s shape (e.g. a copy of a retriever's image
        tower); default a new one.
      lm: an existing causal LM (e.g. SmolLM2); default a new ``CausalLM(config.lm)``.
    """

    def __init__(
        self,
        config: VLMConfig,
        *,
        rngs: nnx.Rngs,
        vision: ViT | None = None,
        lm: CausalLM | None = None,
    ):
        if not isinstance(config, VLMConfig):
            raise TypeError(f"config must be a VLMConfig, got {type(config).__name__}")
        if vision is not None and (
            vision.config.input_shape != config.vision.input_shape
            or vision.config.patch != config.vision.patch
            or vision.config.encoder != config.vision.encoder
        ):
            raise ValueError("vision does not match config.vision (input_shape, patch, encoder)")
        if lm is not None:
            config = dataclasses.replace(config, lm=lm.config)
        self.config = config
        self.vision = vision if vision is not None else ViT(config.vision, rngs=rngs)
        self.lm = lm if lm is not None else CausalLM(config.lm, rngs=rngs)
        dv, dl = config.vision.encoder.dim, config.lm.hidden_size
        self.projector = Projector(dv, config.projector_hidden or dl, dl, rngs=rngs)

    @property
    def tokens_per_image(self) -> int:
        return self.config.tokens_per_image

    def vision_features(self, images: Float[ArrayLike, "n h w 3"]) -> Float[Array, "n t dv"]:
        """Class token + pooled patch tokens of each image, ``[n, T, vision_dim]``."""
        c = self.config
        tokens = self.vision.features(jnp.asarray(images, jnp.float32), tokens=True)
        n, _, d = tokens.shape
        g = c.vision.input_shape[0] // c.vision.patch
        p = c.pool
        grid = tokens[:, 1:].reshape(n, g // p, p, g // p, p, d)
        pooled = jnp.mean(grid, axis=(2, 4)).reshape(n, (g // p) ** 2, d)
        return jnp.concatenate([tokens[:, :1], pooled], axis=1)

    def image_embeds(
        self,
        *,
        images: Real[ArrayLike, "b k h w 3"] | None = None,
        features: Float[ArrayLike, "b k t dv"] | None = None,
    ) -> Float[Array, "b kt dim"]:
        """``[b, k * T, lm_dim]`` projected image tokens of ``k`` images per row."""
        if (images is None) == (features is None):
            raise ValueError("pass exactly one of images [b, k, h, w, 3] or features [b, k, T, d]")
        if images is not None:
            images = jnp.asarray(images)
            if images.dtype == jnp.uint8:
                images = images.astype(jnp.float32) / 255.0
            if images.ndim != 5:
                raise ValueError(f"images must have shape [b, k, h, w, 3], got {images.shape}")
            b, k = images.shape[:2]
            features = self.vision_features(images.reshape(b * k, *images.shape[2:]))
            features = features.reshape(b, k, *features.shape[1:])
        features = jnp.asarray(features, jnp.float32)
        if features.ndim != 4 or features.shape[2] != self.tokens_per_image:
            raise ValueError(
                f"features must have shape [b, k, {self.tokens_per_image}, dv], "
                f"got {features.shape}"
            )
        b, k, t, d = features.shape
        return self.projector(features.reshape(b, k * t, d)).astype(self.lm.dtype)

    def __call__(
        self,
        tokens: Int[ArrayLike, "b s"],
        attention_mask: Bool[ArrayLike, "b s"],
        *,
        images: Real[ArrayLike, "b k h w 3"] | None = None,
        features: Float[ArrayLike, "b k t dv"] | None = None,
        prompt_mask: Bool[ArrayLike, "b s"] | None = None,
    ) -> Float[Array, "b s vocab"]:
        """Next-token logits at the text positions ``[b, s, vocab]`` (image tokens first).

        Args:
          tokens: right-padded ``[question, answer, padding]`` token ids.
          attention_mask: True on real tokens.
          images / features: ``k`` images (or their :meth:`vision_features`) per row.
          prompt_mask: True on the question tokens, which join the image tokens in the
            bidirectional prefix (default: images only).
        """
        tokens = jnp.asarray(tokens)
        mask = jnp.asarray(attention_mask).astype(bool)
        img = self.image_embeds(images=images, features=features)
        b, p = img.shape[:2]
        if tokens.shape[0] != b:
            raise ValueError(f"tokens have {tokens.shape[0]} rows, the images {b}")
        text = self.lm.embed(tokens).astype(img.dtype)
        embeds = jnp.concatenate([img, text], axis=1)
        full_mask = jnp.concatenate([jnp.ones((b, p), bool), mask], axis=1)
        text_prefix = jnp.zeros_like(mask) if prompt_mask is None else jnp.asarray(prompt_mask)
        prefix = jnp.concatenate([jnp.ones((b, p), bool), text_prefix.astype(bool) & mask], axis=1)
        logits = self.lm(None, inputs_embeds=embeds, attention_mask=full_mask, prefix_mask=prefix)
        return logits.logits[:, p:]


def vlm_loss_fn(model: VisionLanguageModel, batch: Mapping[str, Any], key=None):
    """Answer-token cross-entropy of a batch ``{"images" | "features", "tokens",
    "attention_mask", "loss_mask"}``; the question (``attention & loss_mask == 0``) is in the
    bidirectional prefix. ``loss_fn(model, batch, key)`` for
    :func:`jaxtrust.training.finetune`."""
    del key
    tokens = jnp.asarray(batch["tokens"])
    mask = jnp.asarray(batch["attention_mask"]).astype(bool)
    loss_mask = jnp.asarray(batch["loss_mask"])
    prompt = mask & (loss_mask == 0)
    logits = model(
        tokens,
        mask,
        images=batch.get("images"),
        features=batch.get("features"),
        prompt_mask=prompt,
    )
    return lm_loss(logits, tokens, loss_mask)


def _is_word_tokenizer(tokenizer: Any) -> bool:
    return hasattr(tokenizer, "eos_id") and hasattr(tokenizer, "sep_id")


def encode_prompt(tokenizer: Any, question: str) -> list[int]:
    """Token ids of a question prompt: ``question <sep>`` for a word tokenizer,
    ``"question: ...\\nanswer:"`` for a ``transformers`` tokenizer."""
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    if _is_word_tokenizer(tokenizer):
        return tokenizer.encode(question) + [tokenizer.sep_id]
    return tokenizer.encode(f"question: {question}\nanswer:", add_special_tokens=False)


def encode_qa(
    tokenizer: Any,
    questions: Sequence[str],
    answers: Sequence[str],
    *,
    seq_len: int,
) -> dict[str, np.ndarray]:
    """The training batch ``{"tokens", "attention_mask", "loss_mask"}`` of question-answer pairs
    (answer + end-of-sequence supervised), padded to ``seq_len``
    (:func:`jaxtrust.data.collate`).

    Raises:
      ValueError: lengths differ, an answer is empty, or a pair is longer than ``seq_len``.
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    eos, pad = special_ids(tokenizer)
    prompts, responses = [], []
    for q, a in zip(questions, answers, strict=True):
        if not isinstance(a, str) or not a.strip():
            raise ValueError(f"every answer must be a non-empty string, got {a!r} for {q!r}")
        prompts.append(encode_prompt(tokenizer, q))
        ids = (
            tokenizer.encode(a)
            if _is_word_tokenizer(tokenizer)
            else tokenizer.encode(" " + a, add_special_tokens=False)
        )
        responses.append(ids + [eos])
    return collate(prompts, responses, pad_id=pad, seq_len=seq_len).as_dict()


@partial(jax.jit, static_argnames=("graphdef",))
def _features(graphdef, state, images):
    images = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images
    return nnx.merge(graphdef, state).vision_features(images)


def image_features(
    model: VisionLanguageModel, images: ArrayLike, *, batch_size: int = 256
) -> np.ndarray:
    """:meth:`VisionLanguageModel.vision_features` of ``images`` ``[n, h, w, 3]`` (uint8 or
    float), chunked with one compiled shape, as float32 NumPy ``[n, T, vision_dim]``."""
    images = np.asarray(images)
    size = model.config.image_size
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must have shape [n, {size}, {size}, 3], got {images.shape}")
    if len(images) == 0:
        raise ValueError("images is empty")
    graphdef, state = nnx.split(model)
    rows = min(batch_size, bucket_rows(len(images)))
    out = []
    for lo in range(0, len(images), rows):
        chunk = images[lo : lo + rows]
        full = np.concatenate([chunk, np.repeat(chunk[-1:], rows - len(chunk), 0)])
        out.append(np.asarray(_features(graphdef, state, jnp.asarray(full)))[: len(chunk)])
    return np.concatenate(out)


@partial(jax.jit, static_argnames=("graphdef",))
def _prefill_inputs(graphdef, state, images, features, tokens):
    model = nnx.merge(graphdef, state)
    img = model.image_embeds(images=images, features=features)
    text = model.lm.embed(tokens).astype(img.dtype)
    return jnp.concatenate([img, text], axis=1)


def answer(
    model: VisionLanguageModel,
    tokenizer: Any,
    questions: Sequence[str],
    *,
    images: ArrayLike | None = None,
    features: ArrayLike | None = None,
    max_new_tokens: int = 8,
    batch_size: int = 128,
    temperature: float = 0.0,
    key: jax.Array | None = None,
) -> list[str]:
    """Answers of ``model`` to ``questions``, each with its ``k`` images.

    Rows are laid out ``[k * T image tokens][left padding][question]`` (the prefix is the images
    and the question), decoded greedily (or sampled at ``temperature`` with ``key``) by
    :func:`jaxtrust.models.generate_from_embeds` in fixed-size chunks, so a whole evaluation set
    compiles one prefill and one decode program.

    Args:
      model: the :class:`VisionLanguageModel`.
      tokenizer: a :class:`~jaxtrust.data.WordTokenizer` or a ``transformers`` tokenizer.
      questions: the questions (plain text).
      images: ``[n, k, h, w, 3]`` (uint8 or float) or features ``[n, k, T, d]``.
      max_new_tokens: answer length limit.
      batch_size: rows per chunk.
      temperature, key: sampling.

    Returns:
      One decoded answer per question (special tokens removed, cut at end-of-sequence).
    """
    if isinstance(questions, str) or not isinstance(questions, Sequence):
        raise TypeError("questions must be a sequence of strings")
    n = len(questions)
    if n == 0:
        raise ValueError("questions is empty")
    if (images is None) == (features is None):
        raise ValueError("pass exactly one of images or features")
    visual = np.asarray(images if images is not None else features)
    if visual.shape[0] != n:
        raise ValueError(f"{n} questions but {visual.shape[0]} rows of images/features")
    eos, pad = special_ids(tokenizer)
    prompts = [encode_prompt(tokenizer, q) for q in questions]
    width = -(-max(len(p) for p in prompts) // 8) * 8
    rows = min(batch_size, bucket_rows(n))
    graphdef, state = nnx.split(model)
    p_tokens = visual.shape[1] * model.tokens_per_image
    texts: list[str] = []
    for i, lo in enumerate(range(0, n, rows)):
        chunk = list(range(lo, min(lo + rows, n)))
        idx = chunk + [chunk[-1]] * (rows - len(chunk))
        tokens = np.full((rows, width), pad, np.int32)
        text_mask = np.zeros((rows, width), bool)
        for r, j in enumerate(idx):
            tokens[r, width - len(prompts[j]) :] = prompts[j]
            text_mask[r, width - len(prompts[j]) :] = True
        vis = jnp.asarray(visual[idx])
        embeds = _prefill_inputs(
            graphdef,
            state,
            vis if images is not None else None,
            vis if features is not None else None,
            jnp.asarray(tokens),
        )
        mask = np.concatenate([np.ones((rows, p_tokens), bool), text_mask], axis=1)
        out = generate_from_embeds(
            model.lm,
            embeds,
            jnp.asarray(mask),
            prefix_mask=jnp.asarray(mask),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            key=None if key is None else jax.random.fold_in(key, i),
            stop_tokens=(eos,),
            pad_id=pad,
        )
        toks, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        for r in range(len(chunk)):
            ids = toks[r, : int(lengths[r])].tolist()
            if _is_word_tokenizer(tokenizer):
                texts.append(tokenizer.decode(ids))
            else:
                texts.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return texts
