# ruff: noqa: F722
"""Visual augmentations for SHAPE's views: crops, colour jitter, noise, blur, cutout. No flips.

SHAPE (Chen et al., 2025) builds its holistic winner from the model's answers on several
augmented views of one image. The views must keep what the text is about: a horizontal flip
would swap "left of" and "right of" (and a vertical one "above" and "below"), so no flip, no
rotation and no hue shift (colour words are part of the answers) are used here. What is used:

* ``crop``: a random crop of ``[0.7, 0.95]`` of the side, resized back (bilinear) — objects
  shift and may leave the view, their order is kept;
* ``color``: brightness, contrast and saturation factors in ``[0.75, 1.25]`` (no hue change);
* ``noise``: additive Gaussian noise, :math:`\\sigma \\in [0.03, 0.08]`, clipped to ``[0, 1]``;
* ``blur``: a Gaussian blur of radius ``[0.4, 0.9]`` pixels;
* ``cutout``: a white square of ``[0.2, 0.35]`` of the side (the background colour), which may
  hide an object.

Every parameter is drawn from ``np.random.default_rng([seed, view, i])``, so views are
deterministic given the seed and independent across images and views.

Example:
  >>> imgs = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
  >>> views = augment_views(imgs, views=3, seed=0)
  >>> views.shape, bool(np.allclose(views, augment_views(imgs, views=3, seed=0)))
  ((2, 3, 16, 16, 3), True)

References:
  Chen et al., *SHAPE: Self-Improved Visual Preference Alignment by Iteratively Generating
  Holistic Winner*, 2025. Zhu et al., *Self-Supervised Visual Preference Alignment* (SeVa), 2024.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Float
from PIL import Image, ImageEnhance, ImageFilter

__all__ = ["AUGMENTATIONS", "augment", "augment_views"]

AUGMENTATIONS: tuple[str, ...] = ("crop", "color", "noise", "blur", "cutout")


def _pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8))


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, np.float32) / 255.0


def _one(x: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[:2]
    if kind == "crop":
        side = rng.uniform(0.7, 0.95)
        ch, cw = max(2, int(round(side * h))), max(2, int(round(side * w)))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return _arr(_pil(x[top : top + ch, left : left + cw]).resize((w, h), Image.BILINEAR))
    if kind == "color":
        img = _pil(x)
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enhance(img).enhance(float(rng.uniform(0.75, 1.25)))
        return _arr(img)
    if kind == "noise":
        sigma = rng.uniform(0.03, 0.08)
        return np.clip(x + rng.normal(0.0, sigma, x.shape), 0.0, 1.0).astype(np.float32)
    if kind == "blur":
        radius = float(rng.uniform(0.4, 0.9))
        return _arr(_pil(x).filter(ImageFilter.GaussianBlur(radius)))
    if kind == "cutout":
        side = max(1, int(round(rng.uniform(0.2, 0.35) * h)))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out = x.copy()
        out[top : top + side, left : left + side] = 1.0
        return out
    raise KeyError(f"unknown augmentation {kind!r}; known: {AUGMENTATIONS}")


def _check(images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"images must be a non-empty [n, h, w, 3] array, got {images.shape}")
    return images.astype(np.float32)


def augment(
    images: Float[np.ndarray, "n h w 3"], kind: str, *, seed: int, view: int = 0
) -> Float[np.ndarray, "n h w 3"]:
    """One augmentation ``kind`` (of :data:`AUGMENTATIONS`) of every image.

    Args:
      images: ``[n, h, w, 3]`` in ``[0, 1]`` (or uint8).
      kind: the augmentation's name.
      seed: seed of the parameters; ``view`` indexes independent draws for one seed.

    Returns:
      ``[n, h, w, 3]`` float32 in ``[0, 1]``.

    Raises:
      KeyError: unknown ``kind``. ValueError: ``images`` of the wrong shape or empty.
    """
    if kind not in AUGMENTATIONS:
        raise KeyError(f"unknown augmentation {kind!r}; known: {AUGMENTATIONS}")
    images = _check(images)
    return np.stack(
        [_one(x, kind, np.random.default_rng([seed, view, i])) for i, x in enumerate(images)]
    )


def augment_views(
    images: Float[np.ndarray, "n h w 3"],
    *,
    views: int,
    seed: int,
    kinds: Sequence[str] = AUGMENTATIONS,
) -> Float[np.ndarray, "n v h w 3"]:
    """``views`` augmented views of every image: view ``v`` applies ``kinds[v % len(kinds)]``.

    Args:
      images: ``[n, h, w, 3]``.
      views: views per image (>= 1).
      seed: seed of every parameter (deterministic).
      kinds: the augmentations to cycle through.

    Returns:
      ``[n, views, h, w, 3]`` float32.
    """
    if not isinstance(views, int) or views < 1:
        raise ValueError(f"views must be a positive int, got {views!r}")
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError("kinds is empty")
    for k in kinds:
        if k not in AUGMENTATIONS:
            raise KeyError(f"unknown augmentation {k!r}; known: {AUGMENTATIONS}")
    images = _check(images)
    out = [augment(images, kinds[v % len(kinds)], seed=seed, view=v) for v in range(views)]
    return np.stack(out, axis=1)
