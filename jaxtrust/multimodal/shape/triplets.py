# ruff: noqa: F722
"""SHAPE's preference data: holistic-winner triplets, and the SeVa / shuffled-loser baselines.

For a supervised pair ``(image, text)`` SHAPE makes a triplet ``(image, winner, loser)``:

1. ``views`` augmented views of the image (:func:`~jaxtrust.multimodal.shape.augment_views`,
   no flips), each answered by the current model (greedy) to ``view_prompt``;
2. the answers merged by the summariser (:func:`~jaxtrust.multimodal.shape.summarise`, a
   consensus merge standing in for SHAPE's LLM summariser) into the winner, with the original
   text's objects as trusted evidence (``include_original``);
3. the original (terse) text is the loser; both answer ``prompt`` about the *original* image.

Round ``r + 1`` rebuilds the winners with round ``r``'s policy, which is also its DPO reference
(:func:`jaxtrust.training.dpo_finetune` with ``reference=None``).

Baselines: :func:`seva_pairs` (SeVa: winner = the answer on the original image, loser = the
answer on an augmented view) and :func:`shuffle_losers` (the losers of other images).

Everything takes arrays, strings, a model and a tokenizer (never a world object). The DPO
forward of a :class:`~jaxtrust.multimodal.vlm.VisionLanguageModel` is :func:`vlm_logits`.

Example:
  >>> sorted(Triplets.__dataclass_fields__)
  ['images', 'losers', 'prompts', 'view_answers', 'winners']

References:
  Chen et al., *SHAPE: Self-Improved Visual Preference Alignment by Iteratively Generating
  Holistic Winner*, 2025. Zhu et al., *Self-Supervised Visual Preference Alignment* (SeVa),
  ACM MM 2024.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxtrust.multimodal.shape.augment import AUGMENTATIONS, augment, augment_views
from jaxtrust.multimodal.shape.summarise import summarise
from jaxtrust.multimodal.vlm import VisionLanguageModel, answer, encode_qa
from jaxtrust.training.dpo import preference_pool

__all__ = [
    "Triplets",
    "build_triplets",
    "preference_data",
    "seva_pairs",
    "shuffle_losers",
    "vlm_logits",
]


def vlm_logits(model: VisionLanguageModel, batch: Mapping[str, Any]) -> Float[Array, "b s v"]:
    """The ``logits_fn`` of :func:`jaxtrust.training.dpo_finetune` for a VLM: the question
    (attended, not supervised) joins the image tokens in the bidirectional prefix, as in
    :func:`~jaxtrust.multimodal.vlm.vlm_loss_fn`; ``batch`` carries ``images`` or
    ``features`` ``[b, k, ...]``."""
    tokens = jnp.asarray(batch["tokens"])
    mask = jnp.asarray(batch["attention_mask"]).astype(bool)
    prompt = mask & (jnp.asarray(batch["loss_mask"]) == 0)
    return model(
        tokens,
        mask,
        images=batch.get("images"),
        features=batch.get("features"),
        prompt_mask=prompt,
    )


@dataclasses.dataclass(frozen=True)
class Triplets:
    """Preference triplets: the images ``[n, h, w, 3]``, one prompt, winner and loser per row,
    the per-view answers the winner was merged from (empty lists for baselines), and ``rows``,
    the index of each triplet's image in the input it was built from."""

    images: np.ndarray
    prompts: list[str]
    winners: list[str]
    losers: list[str]
    view_answers: list[list[str]]
    rows: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.images)
        sizes = {len(self.prompts), len(self.winners), len(self.losers), len(self.view_answers)}
        if sizes != {n}:
            raise ValueError(
                f"images has {n} rows but prompts/winners/losers/view_answers have "
                f"{len(self.prompts)}/{len(self.winners)}/{len(self.losers)}/"
                f"{len(self.view_answers)}"
            )

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: Sequence[int] | np.ndarray) -> Triplets:
        idx = [int(i) for i in idx]
        return Triplets(
            self.images[idx],
            [self.prompts[i] for i in idx],
            [self.winners[i] for i in idx],
            [self.losers[i] for i in idx],
            [self.view_answers[i] for i in idx],
            None if self.rows is None else self.rows[idx],
        )


def _check_pairs(images, captions) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape [n, h, w, 3], got {images.shape}")
    if isinstance(captions, str) or len(captions) != len(images):
        raise ValueError(
            f"need one caption per image: {len(images)} images, captions {captions!r:.60}"
        )
    for i, c in enumerate(captions):
        if not isinstance(c, str) or not c.strip():
            raise ValueError(f"captions[{i}] is empty; every supervised caption must be text")
    if len(images) == 0:
        raise ValueError("images is empty")
    return images


def build_triplets(
    model: VisionLanguageModel,
    tokenizer: Any,
    images: Float[np.ndarray, "n h w 3"],
    captions: Sequence[str],
    *,
    colors: Sequence[str],
    shapes: Sequence[str],
    seed: int,
    views: int = 4,
    kinds: Sequence[str] = AUGMENTATIONS,
    prompt: str = "describe the image .",
    view_prompt: str | None = None,
    min_votes: int = 2,
    include_original: bool = True,
    max_new_tokens: int = 20,
) -> Triplets:
    """SHAPE triplets (see the module docstring) of supervised ``(image, caption)`` pairs.

    Args:
      model, tokenizer: the current policy.
      images: ``[n, h, w, 3]`` in ``[0, 1]``.
      captions: the supervised (terse) texts, the losers; non-empty.
      colors, shapes: the object words the summariser reads.
      seed: seed of the augmentations.
      views: augmented views per image.
      kinds: augmentations to cycle through.
      prompt: the question the winner and loser answer.
      view_prompt: the question asked on every view (default ``prompt``).
      min_votes: the summariser's agreement threshold.
      include_original: keep the caption's objects in the winner.
      max_new_tokens: answer length limit.

    Returns:
      :class:`Triplets`.

    Raises:
      ValueError: captions missing, empty, or not one per image.
    """
    images = _check_pairs(images, captions)
    n = len(images)
    aug = augment_views(images, views=views, seed=seed, kinds=kinds)
    flat = aug.reshape(n * views, 1, *images.shape[1:])
    outs = answer(
        model,
        tokenizer,
        [view_prompt or prompt] * (n * views),
        images=flat,
        max_new_tokens=max_new_tokens,
    )
    per_view = [outs[i * views : (i + 1) * views] for i in range(n)]
    winners = [
        summarise(
            a,
            colors=colors,
            shapes=shapes,
            min_votes=min_votes,
            anchor=captions[i] if include_original else None,
        )
        for i, a in enumerate(per_view)
    ]
    return Triplets(images, [prompt] * n, winners, list(captions), per_view, np.arange(n))


def seva_pairs(
    model: VisionLanguageModel,
    tokenizer: Any,
    images: Float[np.ndarray, "n h w 3"],
    *,
    seed: int,
    kind: str = "cutout",
    prompt: str = "describe the image .",
    max_new_tokens: int = 20,
) -> Triplets:
    """SeVa pairs: winner = the model's answer on the original image, loser = its answer on an
    augmented view (``kind``); rows whose two answers agree carry no preference and are
    dropped (SeVa filters them the same way).

    Returns:
      :class:`Triplets` (possibly fewer rows than ``images``; ValueError if none is left).
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty [n, h, w, 3] array, got {images.shape}")
    n = len(images)
    views = augment(images, kind, seed=seed)
    both = np.concatenate([images, views])[:, None]
    outs = answer(model, tokenizer, [prompt] * (2 * n), images=both, max_new_tokens=max_new_tokens)
    keep = [i for i in range(n) if outs[i] != outs[n + i] and outs[i] and outs[n + i]]
    if not keep:
        raise ValueError("every SeVa pair has identical answers; no preference to learn")
    return Triplets(
        images[keep],
        [prompt] * len(keep),
        [outs[i] for i in keep],
        [outs[n + i] for i in keep],
        [[] for _ in keep],
        np.asarray(keep),
    )


def shuffle_losers(triplets: Triplets, *, seed: int) -> Triplets:
    """The same winners with the losers of other rows (a random derangement): the control that
    asks whether the pairing matters."""
    n = len(triplets)
    if n < 2:
        raise ValueError("need at least 2 triplets to shuffle losers")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    perm = np.roll(perm, 1)[np.argsort(perm)]  # i -> next element of a random cycle: no fixed point
    return dataclasses.replace(triplets, losers=[triplets.losers[int(j)] for j in perm])


def preference_data(
    tokenizer: Any,
    triplets: Triplets,
    *,
    seq_len: int,
    features: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The :func:`jaxtrust.training.preference_pool` of ``triplets``, conditioned on their
    images (``images [n, 1, h, w, 3]``) or on given ``features [n, 1, T, d]``.

    Raises:
      ValueError: a winner or loser is empty, or longer than ``seq_len``.
    """
    chosen = encode_qa(tokenizer, triplets.prompts, triplets.winners, seq_len=seq_len)
    rejected = encode_qa(tokenizer, triplets.prompts, triplets.losers, seq_len=seq_len)
    shared = {"images": triplets.images[:, None]} if features is None else {"features": features}
    return preference_pool(chosen, rejected, shared)
