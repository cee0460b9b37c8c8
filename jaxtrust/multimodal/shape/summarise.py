"""SHAPE's summariser, as an explicit consensus merge of the answers on augmented views.

In SHAPE an LLM summarises the model's answers on several augmented views into one more
holistic text, the winner. A sub-million-parameter model cannot summarise, so this stand-in
does what such a summary should do, in the open: it reads the objects each answer mentions
(``"<color> <shape>"`` phrases, or a bare shape word), keeps an object when at least
``min_votes`` answers mention it (agreement across views filters one-view hallucinations;
mentions collected across views raise recall over any single answer), gives it the colour most
answers give it, and writes the kept objects as a list caption. The original text's objects
(``anchor``, the supervised caption) may be given as trusted evidence: they are always kept.

Example:
  >>> answers = ["a red star and a blue ring .", "a red star , a blue ring and a cyan cross .",
  ...            "a red star and a green cross .", "a blue ring ."]
  >>> summarise(answers, colors=("red", "blue", "green", "cyan"), shapes=("star", "ring",
  ...           "cross"), min_votes=2)
  'a red star , a blue ring and a cyan cross .'

References:
  Chen et al., *SHAPE: Self-Improved Visual Preference Alignment by Iteratively Generating
  Holistic Winner*, 2025 (the summariser it stands in for).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

__all__ = ["caption_of", "consensus", "mentions", "summarise"]


def mentions(
    text: str, *, colors: Sequence[str], shapes: Sequence[str]
) -> list[tuple[str | None, str]]:
    """The objects ``text`` mentions, in order, once each: ``(color or None, shape)``.

    Args:
      text: space-separated words (the world's tokenisation).
      colors, shapes: the colour and shape words.

    Returns:
      One ``(color, shape)`` per distinct shape word, the colour being the word before it when
      that is a colour.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    colors, shapes = set(colors), set(shapes)
    words = text.split()
    out: list[tuple[str | None, str]] = []
    seen: set[str] = set()
    for i, w in enumerate(words):
        if w in shapes and w not in seen:
            seen.add(w)
            out.append((words[i - 1] if i > 0 and words[i - 1] in colors else None, w))
    return out


def consensus(
    answers: Sequence[str],
    *,
    colors: Sequence[str],
    shapes: Sequence[str],
    min_votes: int = 2,
    anchor: str | None = None,
) -> list[tuple[str | None, str]]:
    """The objects of the merge (see the module docstring), in order of first mention
    (the anchor's objects first).

    Args:
      answers: the answers on the views (at least one).
      colors, shapes: the colour and shape words.
      min_votes: answers that must mention an object for it to be kept (>= 1).
      anchor: trusted text whose objects are always kept (their colour is the anchor's).

    Returns:
      ``[(color or None, shape), ...]``.
    """
    if isinstance(answers, str) or not isinstance(answers, Sequence) or not answers:
        raise ValueError("answers must be a non-empty sequence of strings")
    if not isinstance(min_votes, int) or min_votes < 1:
        raise ValueError(f"min_votes must be a positive int, got {min_votes!r}")
    votes: Counter[str] = Counter()
    color_votes: dict[str, Counter[str]] = {}
    order: list[str] = []
    trusted: dict[str, str | None] = {}
    if anchor is not None:
        if not anchor.strip():
            raise ValueError("anchor is an empty caption")
        for color, shape in mentions(anchor, colors=colors, shapes=shapes):
            trusted[shape] = color
            order.append(shape)
    for text in answers:
        for color, shape in mentions(text, colors=colors, shapes=shapes):
            votes[shape] += 1
            if color is not None:
                color_votes.setdefault(shape, Counter())[color] += 1
            if shape not in order:
                order.append(shape)
    out = []
    for shape in order:
        if shape in trusted and trusted[shape] is not None:
            out.append((trusted[shape], shape))
        elif shape in trusted or votes[shape] >= min_votes:
            counts = color_votes.get(shape)
            color = None
            if counts:
                color = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
            out.append((color, shape))
    return out


def caption_of(objects: Sequence[tuple[str | None, str]]) -> str:
    """``"a red star , a blue ring and a cyan cross ."`` (the world's list-caption form)."""
    if not objects:
        raise ValueError("objects is empty: nothing to caption")
    names = [f"a {c} {s}" if c else f"a {s}" for c, s in objects]
    if len(names) == 1:
        return f"{names[0]} ."
    return " , ".join(names[:-1]) + f" and {names[-1]} ."


def summarise(
    answers: Sequence[str],
    *,
    colors: Sequence[str],
    shapes: Sequence[str],
    min_votes: int = 2,
    anchor: str | None = None,
) -> str:
    """The holistic winner: :func:`caption_of` the :func:`consensus` objects; when nothing is
    kept, the anchor itself (or, without one, the first answer).

    Args and returns: as :func:`consensus`, the caption text.
    """
    objects = consensus(answers, colors=colors, shapes=shapes, min_votes=min_votes, anchor=anchor)
    if objects:
        return caption_of(objects)
    fallback = anchor if anchor is not None else answers[0]
    if not fallback.strip():
        raise ValueError("every answer is empty and there is no anchor")
    return fallback
