"""AQUA's watermark images and their probe queries, generated from the owner's secret key.

A :class:`Watermark` is an image the data owner slips into its contribution to a shared
knowledge base, a set of secret probe queries, and the answer a RAG service that uses the
image would give (and a clean one would not). Two AQUA families and the naive baseline:

* :func:`acronym_watermark` (``AQUA_acronym``): a text card with a random three-letter acronym
  over a made-up full name whose initials it abbreviates (``QZX / Quilla Zorn Xeno``). Probes
  ask for the full name behind the acronym in paraphrases; the answer is the full name. Names
  are drawn from a vocabulary of made-up words (AQUA's released cards use real celebrities,
  which a clean VLM may already know; fictitious names avoid that false-positive source).
* :func:`spatial_watermark` (``AQUA_spatial``): a scene with an object that never occurs in the
  base (an attribute-shape combination absent from it) in a spatial relation with another
  object; probes ask what is ``<relation>`` the unusual object; the answer is the other one.
  AQUA renders such unusual interactions with a text-to-image model; here the scene renderer
  of :mod:`jaxtrust.multimodal.render` draws them.
* :func:`naive_canary` (AQUA's ``naive`` baseline): an *ordinary* scene made of objects that
  do occur in the base, probed the same way; similar content in the base makes its answer
  guessable by a clean system.

Generation is a deterministic function of the key: the same key gives the same image, probes
and answer. The key is a ``jax.random`` key whose bits seed a host-side generator (images are
rendered on the host with Pillow).

Reference:
  Chen, Lou, Wang, *Safeguarding Multimodal Knowledge Copyright in the RAG-as-a-Service
  Environment*, ICLR 2026 (arXiv:2506.10030).

Example:
  >>> import jax
  >>> names = {c: (c + "ala", c + "orn") for c in "abcdefghijklmnopqrstuvwxyz"}
  >>> wm = acronym_watermark(jax.random.key(0), names_by_initial=names,
  ...                        templates=("who is {a} ?",))
  >>> wm.kind, wm.image.shape, len(wm.answer.split())
  ('acronym', (64, 64, 3), 3)
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Iterable, Mapping, Sequence

import jax
import numpy as np

from jaxtrust.multimodal.render import COLORS, SHAPES, SceneObject, render_card, render_scene

__all__ = [
    "KINDS",
    "Watermark",
    "acronym_watermark",
    "host_rng",
    "naive_canary",
    "spatial_watermark",
]

KINDS = ("acronym", "spatial", "naive", "adversarial")
_OFFSETS = {"above": (-1, 0), "below": (1, 0), "left of": (0, -1), "right of": (0, 1)}


@dataclasses.dataclass(frozen=True)
class Watermark:
    """A watermark image, its secret probe queries and their expected answer.

    Attributes:
      kind: one of :data:`KINDS`.
      image: ``[h, w, 3]`` float32 in ``[0, 1]``.
      probes: the probe queries (paraphrases of one question).
      answer: the expected answer (a probe succeeds if the output contains it).
      secret: the key-derived content, for reports (acronym, objects, relation).
    """

    kind: str
    image: np.ndarray
    probes: tuple[str, ...]
    answer: str
    secret: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not self.probes or any(not isinstance(p, str) or not p.strip() for p in self.probes):
            raise ValueError("a watermark needs at least one non-empty probe query")
        if not isinstance(self.answer, str) or not self.answer.strip():
            raise ValueError("a watermark needs a non-empty expected answer")


def host_rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded by the bits of a ``jax.random`` key (typed or raw uint32)."""
    try:
        data = jax.random.key_data(key)
    except (TypeError, ValueError):
        data = key
    bits = np.asarray(data).astype(np.uint32).ravel()
    if bits.size == 0:
        raise ValueError("key has no bits")
    return np.random.default_rng([int(b) for b in bits])


def _check_templates(templates: Sequence[str], fields: Iterable[str]) -> tuple[str, ...]:
    if isinstance(templates, str) or not templates:
        raise ValueError("templates must be a non-empty sequence of format strings")
    for t in templates:
        for f in fields:
            if "{" + f + "}" not in t:
                raise ValueError(f"template {t!r} lacks the field {{{f}}}")
    return tuple(templates)


def acronym_watermark(
    key: jax.Array,
    *,
    names_by_initial: Mapping[str, Sequence[str]],
    templates: Sequence[str],
    exclude: Iterable[str] = (),
    letters: int = 3,
    size: int = 64,
) -> Watermark:
    """An acronym card: a random acronym (not in ``exclude``) and a made-up name.

    Args:
      key: the owner's secret ``jax.random`` key.
      names_by_initial: made-up name words for every lower-case initial letter.
      templates: probe templates with the field ``{a}`` (the acronym, spelled ``"q z x"``).
      exclude: acronyms (``"qzx"``) already in use in the base.
      letters: acronym length.
      size: card side in pixels.

    Returns:
      A :class:`Watermark` (``answer``: the full name, lower case).
    """
    templates = _check_templates(templates, ("a",))
    missing = [c for c in string.ascii_lowercase if not names_by_initial.get(c)]
    if missing:
        raise ValueError(f"names_by_initial has no names for the initials {missing}")
    rng = host_rng(key)
    used = set(exclude)
    for _ in range(10_000):
        acronym = [str(c) for c in rng.choice(list(string.ascii_lowercase), letters)]
        if "".join(acronym) not in used:
            break
    else:
        raise ValueError("every acronym tried is in exclude")
    name = [str(rng.choice(list(names_by_initial[c]))) for c in acronym]
    image = render_card("".join(acronym).upper(), [w.capitalize() for w in name], size=size)
    spelled = " ".join(acronym)
    return Watermark(
        "acronym",
        image,
        tuple(t.format(a=spelled) for t in templates),
        " ".join(name),
        (("acronym", "".join(acronym)), ("name", " ".join(name))),
    )


def _pair_scene(rng, anchor, target, relation, grid, size, kind, templates, extra=()):
    dr, dc = _OFFSETS[relation]
    for _ in range(1000):
        r, c = int(rng.integers(grid)), int(rng.integers(grid))
        # the target sits `relation` the anchor: target cell = anchor cell + offset
        tr, tc = r + dr, c + dc
        if 0 <= tr < grid and 0 <= tc < grid:
            break
    objects = [SceneObject(anchor[1], anchor[0], r, c), SceneObject(target[1], target[0], tr, tc)]
    image = render_scene(objects, size=size, grid=grid)
    phrase = f"{anchor[0]} {anchor[1]}"
    probes = tuple(t.format(rel=relation, x=phrase) for t in templates)
    secret = (("anchor", phrase), ("relation", relation), *extra)
    return Watermark(kind, image, probes, f"{target[0]} {target[1]}", secret)


def spatial_watermark(
    key: jax.Array,
    *,
    base_objects: Iterable[tuple[str, str]],
    templates: Sequence[str],
    relations: Sequence[str] = ("above", "below", "left of", "right of"),
    size: int = 64,
    grid: int = 3,
) -> Watermark:
    """A scene whose anchor object (a ``(color, shape)``) never occurs in the base, with a
    second object in a random relation to it.

    Args:
      key: the owner's secret key.
      base_objects: the ``(color, shape)`` objects that occur in the knowledge base.
      templates: probe templates with the fields ``{rel}`` and ``{x}`` (the anchor phrase).
      relations: relations to draw from.
      size, grid: rendering.

    Returns:
      A :class:`Watermark` whose answer is the other object's phrase (``"red cross"``).

    Raises:
      ValueError: every object occurs in the base (no unusual anchor exists).
    """
    templates = _check_templates(templates, ("rel", "x"))
    present = {tuple(o) for o in base_objects}
    absent = [(c, s) for s in SHAPES for c in COLORS if (c, s) not in present]
    if not absent:
        raise ValueError("every (color, shape) occurs in base_objects: no unusual anchor left")
    rng = host_rng(key)
    anchor = absent[int(rng.integers(len(absent)))]
    shapes = [s for s in SHAPES if s != anchor[1]]
    target = (str(rng.choice(list(COLORS))), str(rng.choice(shapes)))
    relation = str(rng.choice(list(relations)))
    return _pair_scene(rng, anchor, target, relation, grid, size, "spatial", templates)


def naive_canary(
    key: jax.Array,
    *,
    base_objects: Iterable[tuple[str, str]],
    templates: Sequence[str],
    relations: Sequence[str] = ("above", "below", "left of", "right of"),
    size: int = 64,
    grid: int = 3,
) -> Watermark:
    """An ordinary scene of two objects that both occur in the base, probed like
    :func:`spatial_watermark` (AQUA's naive natural-image canary)."""
    templates = _check_templates(templates, ("rel", "x"))
    present = sorted({tuple(o) for o in base_objects})
    if len(present) < 2:
        raise ValueError("base_objects needs at least two objects")
    rng = host_rng(key)
    while True:
        i, j = rng.choice(len(present), 2, replace=False)
        anchor, target = present[int(i)], present[int(j)]
        if anchor[1] != target[1]:
            break
    relation = str(rng.choice(list(relations)))
    return _pair_scene(rng, anchor, target, relation, grid, size, "naive", templates)
