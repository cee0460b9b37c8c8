# ruff: noqa: F722
"""Pillow rendering of the multimodal substrate's images: object scenes and text cards.

Everything is drawn on a white square canvas and returned as float32 RGB arrays in ``[0, 1]``
(``[height, width, 3]``), the layout every model here takes (``[batch, h, w, 3]``).

* :func:`render_scene` draws objects (one of :data:`SHAPES`, in one of :data:`COLORS`) in the
  cells of a ``grid x grid`` layout; "above" / "left of" relations are read off the cells.
* :func:`render_card` draws a title in a large font and a few lines of text under it with
  Pillow's built-in FreeType font (``ImageFont.load_default(size=...)``, no system fonts).
* :func:`to_array` / :func:`check_images` convert and validate images (size, mode, range).

Example:
  >>> img = render_scene([SceneObject("star", "red", 0, 1), SceneObject("circle", "blue", 1, 1)])
  >>> img.shape, img.dtype, float(img.max()) <= 1.0
  ((64, 64, 3), dtype('float32'), True)
  >>> render_card("QZX", ["Quilla", "Zorn", "Xeno"]).shape
  (64, 64, 3)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from jaxtyping import Float
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "COLORS",
    "SHAPES",
    "SceneObject",
    "check_images",
    "from_array",
    "render_card",
    "render_scene",
    "to_array",
]

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "star",
    "cross",
    "ring",
    "hexagon",
)
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 220),
    "yellow": (225, 195, 25),
    "purple": (140, 60, 185),
    "orange": (240, 125, 25),
    "cyan": (30, 185, 200),
}


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """An object of a scene: its shape, colour and grid cell (row 0 is the top)."""

    shape: str
    color: str
    row: int
    col: int

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.color not in COLORS:
            raise ValueError(f"color must be one of {tuple(COLORS)}, got {self.color!r}")

    @property
    def phrase(self) -> str:
        """``"red star"``."""
        return f"{self.color} {self.shape}"


def _polygon(cx: float, cy: float, r: float, n: int, phase: float) -> list[tuple[float, float]]:
    return [
        (
            cx + r * math.cos(phase + 2 * math.pi * i / n),
            cy + r * math.sin(phase + 2 * math.pi * i / n),
        )
        for i in range(n)
    ]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill):
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        s = 0.85 * r
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy + 0.15 * r, 1.1 * r, 3, -math.pi / 2), fill=fill)
    elif shape == "diamond":
        draw.polygon(_polygon(cx, cy, 1.05 * r, 4, -math.pi / 2), fill=fill)
    elif shape == "hexagon":
        draw.polygon(_polygon(cx, cy, r, 6, 0.0), fill=fill)
    elif shape == "star":
        pts = []
        for i in range(10):
            rad = r * (1.1 if i % 2 == 0 else 0.45)
            a = -math.pi / 2 + math.pi * i / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        draw.polygon(pts, fill=fill)
    elif shape == "cross":
        w = 0.32 * r
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    elif shape == "ring":
        width = max(2, round(0.35 * r))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=width)
    else:  # guarded by SceneObject
        raise ValueError(f"unknown shape {shape!r}")


def render_scene(
    objects: Sequence[SceneObject],
    *,
    size: int = 64,
    grid: int = 3,
    jitter: Sequence[tuple[float, float, float]] | None = None,
) -> Float[np.ndarray, "h w 3"]:
    """Draw ``objects`` in the cells of a ``grid x grid`` layout on a white canvas.

    Args:
      objects: the objects (distinct cells; rows and cols in ``[0, grid)``).
      size: canvas side in pixels.
      grid: cells per side.
      jitter: optional ``(dx, dy, dscale)`` per object, in cell fractions (position noise and
        relative size change), so two renders of one scene need not be pixel-identical.

    Returns:
      ``[size, size, 3]`` float32 RGB in ``[0, 1]``.
    """
    if not objects:
        raise ValueError("objects is empty: a scene needs at least one object")
    cells = [(o.row, o.col) for o in objects]
    if len(set(cells)) != len(cells):
        raise ValueError(f"objects must occupy distinct cells, got {cells}")
    if any(not (0 <= r < grid and 0 <= c < grid) for r, c in cells):
        raise ValueError(f"object cells must lie in [0, {grid}), got {cells}")
    if jitter is not None and len(jitter) != len(objects):
        raise ValueError(f"jitter needs one entry per object ({len(objects)}), got {len(jitter)}")
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    cell = size / grid
    for i, obj in enumerate(objects):
        dx, dy, ds = (0.0, 0.0, 0.0) if jitter is None else jitter[i]
        cx = (obj.col + 0.5 + dx) * cell
        cy = (obj.row + 0.5 + dy) * cell
        _draw_shape(draw, obj.shape, cx, cy, 0.36 * cell * (1.0 + ds), COLORS[obj.color])
    return to_array(image, size=size)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def render_card(
    title: str,
    lines: Sequence[str] = (),
    *,
    size: int = 64,
    title_size: int | None = None,
    line_size: int | None = None,
) -> Float[np.ndarray, "h w 3"]:
    """A text card: ``title`` in a large font, then each of ``lines`` below it, black on white.

    Font sizes default to ``size / 4.5`` (title) and ``size / 7`` (lines), which keeps a
    three-letter title and three names of up to 8 letters inside a 64-pixel card.

    Args:
      title: the large text (an acronym).
      lines: smaller lines under the title (the expanded name, one word a line).
      size: canvas side in pixels.
      title_size, line_size: font sizes in pixels.

    Returns:
      ``[size, size, 3]`` float32 RGB in ``[0, 1]``.
    """
    if not isinstance(title, str) or not title.strip():
        raise ValueError("title must be a non-empty string")
    title_size = title_size or max(6, round(size / 4.5))
    line_size = line_size or max(5, round(size / 7))
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    margin = max(2, size // 20)
    draw.text((margin, 0), title, font=_font(title_size), fill=(0, 0, 0))
    y = title_size + margin
    step = line_size + max(2, size // 16)
    for line in lines:
        draw.text((margin, y), line, font=_font(line_size), fill=(0, 0, 0))
        y += step
    return to_array(image, size=size)


def to_array(image: Image.Image, *, size: int | None = None) -> Float[np.ndarray, "h w 3"]:
    """An RGB ``PIL.Image`` as float32 ``[h, w, 3]`` in ``[0, 1]``.

    Raises:
      TypeError: not a PIL image. ValueError: mode is not RGB, or the size is not
      ``(size, size)`` when ``size`` is given.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
    if image.mode != "RGB":
        raise ValueError(f"image must have mode 'RGB', got {image.mode!r} (use .convert('RGB'))")
    if size is not None and image.size != (size, size):
        raise ValueError(f"image must be {size}x{size} pixels, got {image.size[0]}x{image.size[1]}")
    return np.asarray(image, np.float32) / 255.0


def from_array(array: Float[np.ndarray, "h w 3"]) -> Image.Image:
    """A float ``[h, w, 3]`` array in ``[0, 1]`` as an RGB ``PIL.Image`` (values clipped)."""
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"array must have shape [h, w, 3], got {array.shape}")
    return Image.fromarray(np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8), "RGB")


def check_images(images, *, size: int, name: str = "images") -> Float[np.ndarray, "n h w 3"]:
    """Validate a batch of images ``[n, size, size, 3]`` (float in ``[0, 1]``) and return it as
    a float32 NumPy array.

    Raises:
      TypeError: not an array of floats. ValueError: wrong rank, size, channel count (mode),
      values outside ``[0, 1]``, or an empty batch.
    """
    array = np.asarray(images)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(
            f"{name} must be a float array in [0, 1], got dtype {array.dtype} "
            "(divide uint8 images by 255)"
        )
    if array.ndim != 4:
        raise ValueError(f"{name} must have shape [n, {size}, {size}, 3], got {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if array.shape[1:3] != (size, size):
        raise ValueError(
            f"{name} must be {size}x{size} pixels, got {array.shape[1]}x{array.shape[2]} "
            "(resize them first)"
        )
    if array.shape[3] != 3:
        raise ValueError(
            f"{name} must be RGB (3 channels), got {array.shape[3]} channels "
            "(convert grayscale / RGBA images to RGB)"
        )
    if array.min() < 0.0 or array.max() > 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got [{array.min():.3g}, {array.max():.3g}]")
    return array.astype(np.float32, copy=False)
