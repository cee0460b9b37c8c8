# ruff: noqa: F722
"""AQUA's optimised baseline: an adversarial image that the probes retrieve and that makes the
generator emit the secret answer, found by pixel gradients through retriever and generator.

With the image :math:`x = \\mathrm{clip}(x_0 + \\epsilon \\tanh w, 0, 1)` (an
:math:`L_\\infty` ball of radius :math:`\\epsilon` around a natural image :math:`x_0`), probe
embeddings :math:`t_p` from the retriever's text tower and the answer :math:`y`:

.. math::
   \\mathcal{L}(w) = -\\lambda \\frac1P\\sum_p \\langle \\hat v(x), \\hat t_p \\rangle
   + \\frac1P \\sum_p \\mathrm{NLL}\\big(y \\mid [x, c_1, \\dots, c_{k-1}], p\\big),

where :math:`\\hat v` is the retriever's image embedding and the NLL is the generator's
answer loss with :math:`x` in the first image slot and ``k - 1`` context images :math:`c`. The
whole optimisation is one compiled :func:`jaxtrust.training.scan_optimize` with Adam on
:math:`w`. This is a white-box attack on the exact retriever and generator of the suspect
service (AQUA builds one such image per generator, after VisualAdv); it is the strongest
version of the baseline, not a realistic owner.

References:
  Qi et al., *Visual Adversarial Examples Jailbreak Aligned Large Language Models*, AAAI 2024
  (VisualAdv). Chen, Lou, Wang, AQUA, ICLR 2026.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxtrust.multimodal.aqua.watermarks import Watermark
from jaxtrust.multimodal.render import check_images
from jaxtrust.multimodal.retriever import Retriever, embed_texts, tokenize_texts
from jaxtrust.multimodal.vlm import VisionLanguageModel, encode_qa, vlm_loss_fn
from jaxtrust.training.inner import scan_optimize

__all__ = ["AdversarialResult", "adversarial_watermark"]


class AdversarialResult(NamedTuple):
    """The optimised watermark and the loss trajectory ``[steps + 1]``."""

    watermark: Watermark
    losses: np.ndarray


@partial(jax.jit, static_argnames=("r_graph", "g_graph", "steps", "lr"))
def _optimise(r_graph, r_state, g_graph, g_state, x0, eps, weight, text_emb, batch, ctx, steps, lr):
    retriever = nnx.merge(r_graph, r_state)
    generator = nnx.merge(g_graph, g_state)

    def image(w):
        return jnp.clip(x0 + eps * jnp.tanh(w), 0.0, 1.0)

    def loss_fn(w):
        x = image(w)[None]
        v = retriever.embed_images(x)  # [1, e]
        sim = jnp.mean(text_emb @ v[0])
        feats = generator.vision_features(x)  # [1, T, d]
        p = batch["tokens"].shape[0]
        slot0 = jnp.broadcast_to(feats[:, None], (p, 1, *feats.shape[1:]))
        features = jnp.concatenate([slot0, ctx], axis=1) if ctx.shape[1] else slot0
        nll, _ = vlm_loss_fn(generator, {**batch, "features": features})
        return nll - weight * sim

    w0 = jnp.zeros_like(x0)
    w, losses = scan_optimize(loss_fn, w0, optax.adam(lr), steps)
    return image(w), losses


def adversarial_watermark(
    retriever: Retriever,
    generator: VisionLanguageModel,
    *,
    query_tokenizer: Any,
    answer_tokenizer: Any,
    base_image: np.ndarray,
    probes: Sequence[str],
    answer: str,
    context_features: np.ndarray | None = None,
    epsilon: float = 32 / 255,
    retrieval_weight: float = 10.0,
    steps: int = 200,
    learning_rate: float = 0.05,
    max_query_len: int = 48,
    seq_len: int = 32,
    eval_probes: Sequence[str] | None = None,
) -> AdversarialResult:
    """Optimise ``base_image`` into a watermark for ``probes`` -> ``answer``.

    Args:
      retriever, generator: the suspect service's models (white box).
      query_tokenizer, answer_tokenizer: their tokenizers.
      base_image: ``[h, w, 3]`` float natural image :math:`x_0`.
      probes: the probe queries optimised for (all are also the watermark's probes unless
        ``eval_probes`` is given).
      answer: the target answer.
      context_features: ``[k - 1, T, d]`` generator features of the other images the generator
        sees beside the watermark (default none: the watermark alone).
      epsilon: :math:`L_\\infty` radius (``1.0``: unconstrained).
      retrieval_weight: :math:`\\lambda`.
      steps, learning_rate: Adam on :math:`w`.
      max_query_len, seq_len: token lengths of retriever queries and generator rows.
      eval_probes: the watermark's probe set (default ``probes``).

    Returns:
      An :class:`AdversarialResult`.
    """
    size = retriever.config.image_size
    x0 = check_images(np.asarray(base_image)[None], size=size, name="base_image")[0]
    if not probes:
        raise ValueError("probes is empty")
    if not 0.0 < epsilon <= 1.0:
        raise ValueError(f"epsilon must be in (0, 1], got {epsilon}")
    text_emb = embed_texts(
        retriever, tokenize_texts(query_tokenizer, list(probes), max_len=max_query_len)
    )
    batch = encode_qa(answer_tokenizer, list(probes), [answer] * len(probes), seq_len=seq_len)
    t, d = generator.tokens_per_image, generator.config.vision.encoder.dim
    ctx = np.zeros((0, t, d), np.float32) if context_features is None else context_features
    ctx = np.asarray(ctx, np.float32)
    if ctx.ndim != 3 or ctx.shape[1:] != (t, d):
        raise ValueError(f"context_features must have shape [k - 1, {t}, {d}], got {ctx.shape}")
    ctx = np.broadcast_to(ctx[None], (len(probes), *ctx.shape))
    r_graph, r_state = nnx.split(retriever)
    g_graph, g_state = nnx.split(generator)
    image, losses = _optimise(
        r_graph,
        r_state,
        g_graph,
        g_state,
        jnp.asarray(x0),
        jnp.float32(epsilon),
        jnp.float32(retrieval_weight),
        jnp.asarray(text_emb),
        {k: jnp.asarray(v) for k, v in batch.items()},
        jnp.asarray(ctx),
        int(steps),
        float(learning_rate),
    )
    wm = Watermark(
        "adversarial",
        np.asarray(image, np.float32),
        tuple(eval_probes if eval_probes is not None else probes),
        answer,
        (("epsilon", f"{epsilon:.4g}"),),
    )
    return AdversarialResult(wm, np.asarray(losses))
