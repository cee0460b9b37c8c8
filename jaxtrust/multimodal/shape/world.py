"""A hallucination test bed on the scene world: terse captions and a co-occurrence bias.

:class:`BiasedSceneWorld` wraps :class:`~jaxtrust.multimodal.world.SceneWorld` (its renderer,
vocabulary and tokenizer; the default world is unchanged) with the statistics SHAPE's setting
needs:

* every shape has a fixed *partner* (the shapes are paired by a seeded permutation); in
  training scenes a shape's partner joins it with probability ``bias`` (a deliberate
  co-occurrence bias, like "boat" with "water"), so a model can learn to say the partner is
  there whenever the shape is;
* the supervised caption of a scene is *terse*: ``terse_objects`` of its objects (``"a red star
  ."``), and only a ``detail_fraction`` of scenes also come with the full list caption (asked as
  ``"what is in the image ?"``);
* evaluation scenes are drawn without the bias, so absent partners (the adversarial negatives of
  a POPE probe) are common.

References:
  Li et al., *Evaluating Object Hallucination in Large Vision-Language Models* (POPE: the
  co-occurrence statistics behind adversarial negatives), EMNLP 2023.

Example:
  >>> w = BiasedSceneWorld(BiasedWorldConfig(), seed=0)
  >>> scenes = w.scenes(3, seed=1, biased=True)
  >>> w.images(scenes, seed=1).shape
  (3, 32, 32, 3)
  >>> all(w.full_caption(s).endswith(" .") for s in scenes)
  True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxtrust.multimodal.render import COLORS, SHAPES, SceneObject
from jaxtrust.multimodal.shape.summarise import caption_of
from jaxtrust.multimodal.world import Scene, SceneWorld, SceneWorldConfig

__all__ = ["BiasedSceneWorld", "BiasedWorldConfig"]

_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


@dataclasses.dataclass(frozen=True)
class BiasedWorldConfig:
    """Attributes:
    image_size: image side. min_objects, max_objects: objects per scene.
    bias: probability that a present shape's partner is in a training scene.
    terse_objects: objects the terse caption mentions.
    detail_fraction: fraction of training scenes that also carry the full caption.
    jitter: object position / size noise.
    """

    image_size: int = 32
    min_objects: int = 2
    max_objects: int = 4
    bias: float = 0.9
    terse_objects: int = 1
    detail_fraction: float = 0.3
    jitter: float = 0.06

    def __post_init__(self):
        if not 0.0 <= self.bias <= 1.0 or not 0.0 <= self.detail_fraction <= 1.0:
            raise ValueError("bias and detail_fraction must be in [0, 1]")
        if not 1 <= self.terse_objects <= self.min_objects:
            raise ValueError(f"terse_objects must be in [1, min_objects], got {self.terse_objects}")
        if not 2 <= self.min_objects <= self.max_objects <= len(SHAPES) - 1:
            raise ValueError("need 2 <= min_objects <= max_objects < number of shapes")


class BiasedSceneWorld:
    """See the module docstring. Args: config; seed of the partner table and the base world."""

    def __init__(self, config: BiasedWorldConfig = BiasedWorldConfig(), *, seed: int = 0):
        if not isinstance(config, BiasedWorldConfig):
            raise TypeError(f"config must be a BiasedWorldConfig, got {type(config).__name__}")
        self.config = config
        self.base = SceneWorld(
            SceneWorldConfig(
                image_size=config.image_size,
                min_objects=config.min_objects,
                max_objects=config.max_objects,
                jitter=config.jitter,
            ),
            seed=seed,
        )
        order = np.random.default_rng([seed, 4242]).permutation(len(SHAPES))
        self.partner: dict[str, str] = {}
        for a, b in zip(order[0::2], order[1::2], strict=True):
            self.partner[SHAPES[a]] = SHAPES[b]
            self.partner[SHAPES[b]] = SHAPES[a]
        self.tokenizer = self.base.tokenizer
        self.shapes: tuple[str, ...] = tuple(SHAPES)
        self.colors: tuple[str, ...] = tuple(COLORS)
        self.seed = seed

    def scene(self, rng: np.random.Generator, *, biased: bool) -> Scene:
        """A scene of distinct shapes in adjacent cells; ``biased``: each drawn shape's partner
        follows it with probability ``config.bias`` (while there is room)."""
        c = self.config
        n = int(rng.integers(c.min_objects, c.max_objects + 1))
        shapes: list[str] = []
        while len(shapes) < n:
            s = str(rng.choice([x for x in SHAPES if x not in shapes]))
            shapes.append(s)
            mate = self.partner[s]
            if biased and len(shapes) < n and mate not in shapes and rng.random() < c.bias:
                shapes.append(mate)
        cells = [(int(rng.integers(3)), int(rng.integers(3)))]
        while len(cells) < n:
            r, col = cells[int(rng.integers(len(cells)))]
            dr, dc = _STEPS[int(rng.integers(4))]
            cell = (r + dr, col + dc)
            if 0 <= cell[0] < 3 and 0 <= cell[1] < 3 and cell not in cells:
                cells.append(cell)
        order = rng.permutation(n)
        return Scene(
            tuple(
                SceneObject(shapes[i], str(rng.choice(self.colors)), *cells[j])
                for j, i in enumerate(order)
            )
        )

    def scenes(self, n: int, *, seed: int, biased: bool) -> list[Scene]:
        """``n`` scenes, deterministic given ``(world seed, seed, biased)``."""
        rng = np.random.default_rng([self.seed, seed, 91, int(biased)])
        return [self.scene(rng, biased=biased) for _ in range(n)]

    def images(self, scenes: Sequence[Scene], *, seed: int) -> np.ndarray:
        """``[n, size, size, 3]`` float32 renders."""
        return self.base.render_items(list(scenes), seed=seed).astype(np.float32)

    @staticmethod
    def present(scene: Scene) -> list[str]:
        """The shape words of ``scene``'s objects."""
        return [o.shape for o in scene.objects]

    @staticmethod
    def full_caption(scene: Scene) -> str:
        """Every object, in reading order: ``"a red star , a blue ring and a cyan cross ."``."""
        objs = sorted(scene.objects, key=lambda o: (o.row, o.col))
        return caption_of([(o.color, o.shape) for o in objs])

    def terse_caption(self, scene: Scene, rng: np.random.Generator) -> str:
        """``config.terse_objects`` random objects of ``scene`` (the supervised terse text)."""
        k = self.config.terse_objects
        pick = sorted(rng.choice(len(scene.objects), k, replace=False).tolist())
        return caption_of([(scene.objects[i].color, scene.objects[i].shape) for i in pick])

    def statistics(self, scenes: Sequence[Scene]) -> tuple[np.ndarray, np.ndarray]:
        """``(frequency [S], cooccurrence [S, S])`` object counts of ``scenes``."""
        idx = {s: i for i, s in enumerate(SHAPES)}
        freq = np.zeros(len(SHAPES))
        co = np.zeros((len(SHAPES), len(SHAPES)))
        for sc in scenes:
            ids = [idx[o.shape] for o in sc.objects]
            freq[ids] += 1
            for a in ids:
                for b in ids:
                    if a != b:
                        co[a, b] += 1
        return freq, co
