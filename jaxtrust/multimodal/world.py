"""The scene world: a generated multimodal data set of object scenes and name cards.

Two kinds of items, both rendered with Pillow (:mod:`jaxtrust.multimodal.render`):

* a :class:`Scene`: 2-4 objects (a shape in a colour) in adjacent cells of a 3x3 grid, with its
  spatial relations (``above``, ``below``, ``left of``, ``right of`` between 4-neighbours), a
  caption and question-answer pairs (what is <rel> the <object>?, what color is the <shape>?,
  is there a <shape>?, describe the image);
* a :class:`Card`: a made-up person's three-letter acronym in large type over their made-up
  three-word name (``QZX / Quilla Zorn Xeno``), with "who is q z x ?"-style questions. The
  names are random syllable words (fictitious by construction, never real people).

The world has *natural statistics* for the knowledge bases it samples (``typical=True``): each
shape comes in a few typical colours and appears next to a few typical partner shapes, so some
colour-shape objects and some object pairs never occur in a typical base. Broad samples
(``typical=False``) draw every combination and are what the substrate models are trained on,
as a pretrained CLIP / VLM has seen far more than one service's base.

A world is data for experiments: methods take its arrays, strings and tokenizer, never the
world object. Text is lower-case, space-separated words (punctuation as separate words), the
vocabulary of :attr:`SceneWorld.tokenizer`.

Example:
  >>> world = SceneWorld(SceneWorldConfig(), seed=0)
  >>> items = world.items(4, seed=1)
  >>> world.render_items(items, seed=1).shape
  (4, 64, 64, 3)
  >>> q, a = world.questions(items[0])[0]
  >>> world.tokenizer.decode(world.tokenizer.encode(q)) == q
  True
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence

import numpy as np

from jaxtrust.data.vocab import WordTokenizer
from jaxtrust.multimodal.render import COLORS, SHAPES, SceneObject, render_card, render_scene

__all__ = [
    "CARD_TEMPLATES",
    "RELATIONS",
    "RELATION_TEMPLATES",
    "Card",
    "Scene",
    "SceneWorld",
    "SceneWorldConfig",
]

RELATIONS: tuple[str, ...] = ("above", "below", "left of", "right of")
_OFFSETS = {"above": (-1, 0), "below": (1, 0), "left of": (0, -1), "right of": (0, 1)}

# Probe-style paraphrases (AQUA's acronym probes, adapted to this world's vocabulary).
CARD_TEMPLATES: tuple[str, ...] = (
    "who is {a} ?",
    "who is {a} ? answer the name related to {a} .",
    "what is the full name of {a} ?",
    "background : {a} is a person . what is the full name of {a} ?",
    "{a} {a} {a} output the full name of {a} .",
    "tell me the full name behind {a} .",
    "what does {a} stand for ?",
    "give the name of the person called {a} .",
    "expand the name {a} .",
    "which person is {a} ?",
)
# Relation paraphrases ({rel} is a relation word, {x} an object phrase such as "red star").
RELATION_TEMPLATES: tuple[str, ...] = (
    "what is {rel} the {x} ?",
    "which object is {rel} the {x} ?",
    "what sits {rel} the {x} ?",
    "name the object {rel} the {x} .",
    "the {x} has what {rel} it ?",
    "what can be seen {rel} the {x} ?",
    "which shape is placed {rel} the {x} ?",
    "tell me what is {rel} the {x} .",
    "what object is directly {rel} the {x} ?",
    "{rel} the {x} there is what ?",
)
COLOR_TEMPLATES: tuple[str, ...] = ("what color is the {s} ?", "which color does the {s} have ?")
EXIST_TEMPLATES: tuple[str, ...] = ("is there a {s} in the image ?", "is there a {s} ?")
DESCRIBE_TEMPLATES: tuple[str, ...] = ("describe the image .", "what is in the image ?")

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_ENDINGS = ("", "n", "r", "l", "s", "th", "x", "ra", "la", "wen", "ric")


@dataclasses.dataclass(frozen=True)
class SceneWorldConfig:
    """Size and statistics of a :class:`SceneWorld`.

    Attributes:
      image_size: side of every image in pixels.
      grid: cells per side of a scene.
      min_objects, max_objects: objects per scene.
      names_per_letter: made-up name words per initial letter (26 letters).
      typical_colors: colours a shape takes in a typical base.
      typical_partners: partner shapes a shape appears with in a typical base.
      jitter: position / size noise of rendered objects (cell fraction).
    """

    image_size: int = 64
    grid: int = 3
    min_objects: int = 2
    max_objects: int = 3
    names_per_letter: int = 6
    typical_colors: int = 3
    typical_partners: int = 3
    jitter: float = 0.08

    def __post_init__(self):
        if not 2 <= self.min_objects <= self.max_objects <= min(len(SHAPES), self.grid**2):
            raise ValueError(
                f"need 2 <= min_objects <= max_objects <= {min(len(SHAPES), self.grid**2)}, "
                f"got {self.min_objects}, {self.max_objects}"
            )
        if not 1 <= self.typical_colors <= len(COLORS):
            raise ValueError(f"typical_colors must be in [1, {len(COLORS)}]")
        if not 1 <= self.typical_partners < len(SHAPES):
            raise ValueError(f"typical_partners must be in [1, {len(SHAPES) - 1}]")
        if self.names_per_letter < 1 or self.image_size < 16:
            raise ValueError("names_per_letter must be >= 1 and image_size >= 16")


@dataclasses.dataclass(frozen=True)
class Scene:
    """Objects in grid cells (distinct shapes, so "the star" names one object)."""

    objects: tuple[SceneObject, ...]

    def find(self, shape: str) -> SceneObject | None:
        return next((o for o in self.objects if o.shape == shape), None)

    def neighbour(self, obj: SceneObject, relation: str) -> SceneObject | None:
        """The object that is ``relation`` ``obj`` (e.g. directly above it), if any."""
        dr, dc = _OFFSETS[relation]
        return next(
            (o for o in self.objects if (o.row, o.col) == (obj.row + dr, obj.col + dc)), None
        )

    def relations(self) -> list[tuple[SceneObject, str, SceneObject]]:
        """Every ``(a, relation, b)`` with ``a`` directly ``relation`` ``b``."""
        out = []
        for b in self.objects:
            for rel in RELATIONS:
                a = self.neighbour(b, rel)
                if a is not None:
                    out.append((a, rel, b))
        return out

    @property
    def caption(self) -> str:
        """All objects (reading order) and the above / left-of relations between them."""
        objs = sorted(self.objects, key=lambda o: (o.row, o.col))
        names = [f"a {o.phrase}" for o in objs]
        text = " , ".join(names[:-1]) + f" and {names[-1]} ."
        rels = [(a, r, b) for a, r, b in self.relations() if r in ("above", "left of")]
        rels.sort(key=lambda t: ((t[0].row, t[0].col), (t[2].row, t[2].col)))
        for a, r, b in rels:
            text += f" the {a.phrase} is {r} the {b.phrase} ."
        return text


@dataclasses.dataclass(frozen=True)
class Card:
    """A made-up person: acronym letters (lower case) and the name words they abbreviate."""

    acronym: tuple[str, ...]
    name: tuple[str, ...]

    @property
    def title(self) -> str:
        return "".join(self.acronym).upper()

    @property
    def lines(self) -> list[str]:
        return [w.capitalize() for w in self.name]

    @property
    def spelled(self) -> str:
        """The acronym as words of the vocabulary (``"q z x"``)."""
        return " ".join(self.acronym)

    @property
    def full_name(self) -> str:
        return " ".join(self.name)

    @property
    def caption(self) -> str:
        return f"a card of {self.spelled} : {self.full_name} ."


Item = Scene | Card


class SceneWorld:
    """Generator of scenes, cards, captions and question-answer pairs (see the module docs).

    Args:
      config: a :class:`SceneWorldConfig`.
      seed: seed of the world's fixed tables (name words, typical colours and partners).
    """

    def __init__(self, config: SceneWorldConfig = SceneWorldConfig(), *, seed: int = 0):
        if not isinstance(config, SceneWorldConfig):
            raise TypeError(f"config must be a SceneWorldConfig, got {type(config).__name__}")
        self.config = config
        self.seed = seed
        rng = np.random.default_rng([seed, 7321])
        self.names_by_initial: dict[str, tuple[str, ...]] = {}
        seen: set[str] = set()
        for letter in string.ascii_lowercase:
            words = []
            while len(words) < config.names_per_letter:
                w = letter + "".join(
                    rng.choice(list(_VOWELS if j % 2 == 0 else _CONSONANTS))
                    for j in range(int(rng.integers(2, 4)))
                )
                w += str(rng.choice(_ENDINGS))
                if w not in seen and len(w) >= 3:
                    seen.add(w)
                    words.append(w)
            self.names_by_initial[letter] = tuple(words)
        colors = list(COLORS)
        self.typical_colors: dict[str, tuple[str, ...]] = {
            s: tuple(sorted(rng.choice(colors, config.typical_colors, replace=False).tolist()))
            for s in SHAPES
        }
        self.partners: dict[str, tuple[str, ...]] = {}
        for s in SHAPES:
            others = [t for t in SHAPES if t != s]
            self.partners[s] = tuple(
                sorted(rng.choice(others, config.typical_partners, replace=False).tolist())
            )
        self.tokenizer = WordTokenizer(self._words())

    # ------------------------------------------------------------------ vocabulary
    def _words(self) -> list[str]:
        words: list[str] = list(string.ascii_lowercase)
        for group in self.names_by_initial.values():
            words += list(group)
        words += list(SHAPES) + list(COLORS) + ["yes", "no", "a", "and", "is", "the", ","]
        words += ["card", "of", ":", "."]
        for rel in RELATIONS:
            words += rel.split()
        templates = (
            CARD_TEMPLATES + RELATION_TEMPLATES + COLOR_TEMPLATES + EXIST_TEMPLATES
        ) + DESCRIBE_TEMPLATES
        for t in templates:
            for token in t.split():
                if not token.startswith("{"):
                    words.append(token)
        return list(dict.fromkeys(words))

    @property
    def name_words(self) -> list[str]:
        return [w for group in self.names_by_initial.values() for w in group]

    # ------------------------------------------------------------------ sampling
    def scene(self, rng: np.random.Generator, *, typical: bool = False) -> Scene:
        """A random scene; ``typical``: only typical colours and partner shapes."""
        c = self.config
        n = int(rng.integers(c.min_objects, c.max_objects + 1))
        first = str(rng.choice(SHAPES))
        if typical:
            pool = list(self.partners[first])
            n = min(n, len(pool) + 1)
            shapes = [first] + rng.choice(pool, n - 1, replace=False).tolist()
        else:
            others = [s for s in SHAPES if s != first]
            shapes = [first] + rng.choice(others, n - 1, replace=False).tolist()
        cells = [(int(rng.integers(c.grid)), int(rng.integers(c.grid)))]
        while len(cells) < n:
            r, col = cells[int(rng.integers(len(cells)))]
            dr, dc = _OFFSETS[str(rng.choice(RELATIONS))]
            cell = (r + dr, col + dc)
            if 0 <= cell[0] < c.grid and 0 <= cell[1] < c.grid and cell not in cells:
                cells.append(cell)
        objects = []
        for shape, (r, col) in zip(shapes, cells, strict=True):
            palette = self.typical_colors[shape] if typical else tuple(COLORS)
            objects.append(SceneObject(shape, str(rng.choice(palette)), r, col))
        return Scene(tuple(objects))

    def card(self, rng: np.random.Generator, *, exclude: Sequence[str] = ()) -> Card:
        """A made-up person whose acronym (``"qzx"``) is not in ``exclude``."""
        excluded = set(exclude)
        for _ in range(10_000):
            letters = tuple(str(x) for x in rng.choice(list(string.ascii_lowercase), 3))
            if "".join(letters) not in excluded:
                name = tuple(str(rng.choice(self.names_by_initial[x])) for x in letters)
                return Card(letters, name)
        raise ValueError("could not find an acronym outside exclude")

    def items(
        self,
        n: int,
        *,
        seed: int,
        card_fraction: float = 0.3,
        typical: bool = False,
        exclude_acronyms: Sequence[str] = (),
    ) -> list[Item]:
        """``n`` items, a ``card_fraction`` of them cards (distinct acronyms), the rest scenes."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if not 0.0 <= card_fraction <= 1.0:
            raise ValueError(f"card_fraction must be in [0, 1], got {card_fraction}")
        rng = np.random.default_rng([self.seed, seed, 11])
        used = set(exclude_acronyms)
        out: list[Item] = []
        for _ in range(n):
            if rng.random() < card_fraction:
                card = self.card(rng, exclude=sorted(used))
                used.add("".join(card.acronym))
                out.append(card)
            else:
                out.append(self.scene(rng, typical=typical))
        return out

    # ------------------------------------------------------------------ rendering and text
    def render(self, item: Item, rng: np.random.Generator | None = None) -> np.ndarray:
        """``[size, size, 3]`` float32 image of ``item`` (object jitter drawn from ``rng``)."""
        c = self.config
        if isinstance(item, Card):
            return render_card(item.title, item.lines, size=c.image_size)
        jitter = None
        if rng is not None and c.jitter > 0:
            jitter = [tuple(rng.uniform(-c.jitter, c.jitter, 3)) for _ in item.objects]
        return render_scene(item.objects, size=c.image_size, grid=c.grid, jitter=jitter)

    def render_items(self, items: Sequence[Item], *, seed: int) -> np.ndarray:
        """``[n, size, size, 3]`` images of ``items``."""
        rng = np.random.default_rng([self.seed, seed, 13])
        return np.stack([self.render(it, rng) for it in items])

    @staticmethod
    def caption(item: Item) -> str:
        return item.caption

    def questions(self, item: Item, *, kinds: Sequence[str] = ("relation", "color", "card")):
        """Every ``(question, answer)`` pair of ``item`` of the given kinds.

        Kinds: ``"card"`` (all :data:`CARD_TEMPLATES`), ``"relation"`` (all
        :data:`RELATION_TEMPLATES` for every relation of the scene; answer ``"<color> <shape>"``),
        ``"color"``, ``"exist"`` (yes for every shape present, no for every absent one),
        ``"describe"`` (answer: the caption).
        """
        out: list[tuple[str, str]] = []
        if isinstance(item, Card):
            if "card" in kinds:
                out += [(t.format(a=item.spelled), item.full_name) for t in CARD_TEMPLATES]
            return out
        if "relation" in kinds:
            for a, rel, b in item.relations():
                out += [(t.format(rel=rel, x=b.phrase), a.phrase) for t in RELATION_TEMPLATES]
        if "color" in kinds:
            for o in item.objects:
                out += [(t.format(s=o.shape), o.color) for t in COLOR_TEMPLATES]
        if "exist" in kinds:
            present = {o.shape for o in item.objects}
            for s in SHAPES:
                answer = "yes" if s in present else "no"
                out += [(t.format(s=s), answer) for t in EXIST_TEMPLATES]
        if "describe" in kinds:
            out += [(t, item.caption) for t in DESCRIBE_TEMPLATES]
        return out

    def objects_in(self, items: Sequence[Item]) -> set[tuple[str, str]]:
        """The ``(color, shape)`` objects that occur in ``items``."""
        return {(o.color, o.shape) for it in items if isinstance(it, Scene) for o in it.objects}
