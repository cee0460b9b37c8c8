"""Transformations a watermark image may suffer before it enters a knowledge base.

Each transform maps a float ``[h, w, 3]`` image in ``[0, 1]`` to one of the same size (the
service's preprocessing resizes whatever it gets to the retriever's input, as CLIP's processor
does in AQUA's pipeline). AQUA's ``robustness/`` scripts use rescale x1.5, rotate 45 degrees
(``expand=True``, white fill), Gaussian noise, and "all" = rescale, rotate, Gaussian blur of
radius 2 on 600x300 cards; blur radii here are in pixels of the (smaller) image. JPEG
compression and random crops are added.

Randomness (noise, crop position) comes from ``seed``.

Example:
  >>> import numpy as np
  >>> img = np.ones((64, 64, 3), np.float32)
  >>> sorted(TRANSFORMS)[:3]
  ['all', 'blur', 'crop']
  >>> apply_transform("rotate", img, seed=0).shape
  (64, 64, 3)
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from jaxtrust.multimodal.render import check_images, from_array, to_array

__all__ = [
    "TRANSFORMS",
    "apply_transform",
    "blur",
    "crop",
    "gaussian_noise",
    "jpeg",
    "rescale",
    "rotate",
]


def _size(image: np.ndarray) -> int:
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must have shape [size, size, 3], got {image.shape}")
    check_images(image[None], size=image.shape[0], name="image")
    return int(image.shape[0])


def rescale(image: np.ndarray, *, factor: float = 1.5, seed: int = 0) -> np.ndarray:
    """Resize by ``factor`` (bicubic), then back to the original size (bilinear)."""
    del seed
    size = _size(image)
    big = from_array(image).resize((round(size * factor),) * 2, Image.BICUBIC)
    return to_array(big.resize((size, size), Image.BILINEAR))


def rotate(image: np.ndarray, *, degrees: float = 45.0, seed: int = 0) -> np.ndarray:
    """Rotate with ``expand=True`` and white fill, then resize to the original size."""
    del seed
    size = _size(image)
    out = from_array(image).rotate(degrees, resample=Image.BILINEAR, expand=True, fillcolor="white")
    return to_array(out.resize((size, size), Image.BILINEAR))


def gaussian_noise(image: np.ndarray, *, sigma: float = 0.05, seed: int = 0) -> np.ndarray:
    """Add i.i.d. Gaussian noise of standard deviation ``sigma`` and clip to ``[0, 1]``."""
    _size(image)
    rng = np.random.default_rng(seed)
    noisy = np.asarray(image, np.float32) + rng.normal(0.0, sigma, np.shape(image))
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def blur(image: np.ndarray, *, radius: float = 1.0, seed: int = 0) -> np.ndarray:
    """Gaussian blur of ``radius`` pixels."""
    del seed
    _size(image)
    return to_array(from_array(image).filter(ImageFilter.GaussianBlur(radius)))


def jpeg(image: np.ndarray, *, quality: int = 50, seed: int = 0) -> np.ndarray:
    """JPEG round trip at ``quality``."""
    del seed
    _size(image)
    buffer = io.BytesIO()
    from_array(image).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return to_array(decoded.convert("RGB"))


def crop(image: np.ndarray, *, fraction: float = 0.8, seed: int = 0) -> np.ndarray:
    """A random square crop of side ``fraction * size``, resized back to the original size."""
    size = _size(image)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    side = max(1, round(size * fraction))
    x, y = (int(rng.integers(0, size - side + 1)) for _ in range(2))
    out = from_array(image).crop((x, y, x + side, y + side))
    return to_array(out.resize((size, size), Image.BILINEAR))


def _all(image: np.ndarray, *, seed: int = 0) -> np.ndarray:
    return blur(rotate(rescale(image, seed=seed), seed=seed), radius=1.0, seed=seed)


TRANSFORMS: dict[str, Callable[..., np.ndarray]] = {
    "rescale": rescale,
    "rotate": rotate,
    "noise": gaussian_noise,
    "blur": blur,
    "jpeg": jpeg,
    "crop": crop,
    "all": _all,
}


def apply_transform(name: str, image: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """The transform ``name`` (a key of :data:`TRANSFORMS`) of ``image``.

    Raises:
      KeyError: unknown name. ValueError / TypeError: not a float RGB image in ``[0, 1]``.
    """
    if name not in TRANSFORMS:
        raise KeyError(f"unknown transform {name!r}; known: {sorted(TRANSFORMS)}")
    return TRANSFORMS[name](image, seed=seed)
