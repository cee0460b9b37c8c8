"""Hallucination probes: POPE-style yes/no object questions and CHAIR-style caption scores.

* :func:`pope_probes`: for every image one positive question (a present object) and, per split,
  one negative (an absent object): ``random`` (uniform), ``popular`` (the most frequent object
  of the training data) or ``adversarial`` (the object that co-occurs most with the present
  ones in the training data). :func:`pope_scores`: accuracy, precision, recall, F1 (``yes`` is
  the positive class) and the yes-ratio.
* :func:`chair`: of the objects a caption mentions, the fraction absent from the image
  (CHAIR_i, per mention; CHAIR_s, per caption with any), and object recall (present objects
  mentioned over present objects).

Everything takes object-name lists and counts, never a world object.

Example:
  >>> probes = pope_probes([["star", "ring"]], shapes=("star", "ring", "cross", "circle"),
  ...                      frequency=np.array([5, 5, 1, 9]),
  ...                      cooccurrence=np.array([[0, 2, 8, 1], [2, 0, 1, 1], [8, 1, 0, 0],
  ...                                             [1, 1, 0, 0]]), seed=0)
  >>> probes["popular"].shapes[1], probes["adversarial"].shapes[1]
  ('circle', 'cross')
  >>> chair(["a red star and a blue cross ."], [["star", "ring"]], shapes=("star", "ring",
  ...       "cross"))["chair_i"]
  0.5

References:
  Li et al., *Evaluating Object Hallucination in Large Vision-Language Models* (POPE), EMNLP
  2023. Rohrbach et al., *Object Hallucination in Image Captioning* (CHAIR), EMNLP 2018.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["POPE_SPLITS", "Probes", "chair", "pope_probes", "pope_scores"]

POPE_SPLITS: tuple[str, ...] = ("random", "popular", "adversarial")


@dataclasses.dataclass(frozen=True)
class Probes:
    """Yes/no probes: the image row, the object asked about and the true answer (1 = yes)."""

    rows: np.ndarray
    shapes: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def pope_probes(
    present: Sequence[Sequence[str]],
    *,
    shapes: Sequence[str],
    frequency: np.ndarray,
    cooccurrence: np.ndarray,
    seed: int,
) -> dict[str, Probes]:
    """Balanced probes of every split: per image a positive and one negative of the split.

    Args:
      present: per image, the objects (shape words) in it; each image needs an absent object.
      shapes: every object word (the order of ``frequency`` / ``cooccurrence``).
      frequency: ``[S]`` training-set count of each object.
      cooccurrence: ``[S, S]`` training-set count of images holding both objects.
      seed: seed of the random choices (positives are shared by the splits).

    Returns:
      ``{split: Probes}`` with ``2 * len(present)`` probes each.
    """
    shapes = list(shapes)
    s = len(shapes)
    frequency = np.asarray(frequency, np.float64)
    cooccurrence = np.asarray(cooccurrence, np.float64)
    if frequency.shape != (s,) or cooccurrence.shape != (s, s):
        raise ValueError(
            f"frequency must have shape [{s}] and cooccurrence [{s}, {s}], got "
            f"{frequency.shape} and {cooccurrence.shape}"
        )
    if len(present) == 0:
        raise ValueError("present is empty")
    index = {name: i for i, name in enumerate(shapes)}
    rng = np.random.default_rng(seed)
    rows, pos = [], []
    neg: dict[str, list[str]] = {k: [] for k in POPE_SPLITS}
    for r, objs in enumerate(present):
        unknown = [o for o in objs if o not in index]
        if unknown:
            raise ValueError(f"present[{r}] has unknown objects {unknown}; known: {shapes}")
        absent = [x for x in shapes if x not in set(objs)]
        if not objs or not absent:
            raise ValueError(f"present[{r}] must hold at least one object and miss another")
        rows.append(r)
        pos.append(str(rng.choice(list(objs))))
        noise = rng.uniform(0, 1e-3, len(absent))  # random tie-breaks
        neg["random"].append(str(rng.choice(absent)))
        pop = np.array([frequency[index[a]] for a in absent]) + noise
        neg["popular"].append(absent[int(np.argmax(pop))])
        co = np.array([sum(cooccurrence[index[a], index[o]] for o in objs) for a in absent])
        neg["adversarial"].append(absent[int(np.argmax(co + noise))])
    out = {}
    r = np.asarray(rows)
    for split in POPE_SPLITS:
        out[split] = Probes(
            np.concatenate([r, r]),
            pos + neg[split],
            np.concatenate([np.ones(len(r), np.int32), np.zeros(len(r), np.int32)]),
        )
    return out


def pope_scores(said_yes: Sequence[bool] | np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio of yes/no answers (``yes`` positive)."""
    y = np.asarray(said_yes, bool)
    t = np.asarray(labels).astype(bool)
    if y.shape != t.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(
            f"said_yes and labels must be equal non-empty vectors, got {y.shape}, {t.shape}"
        )
    tp = float(np.sum(y & t))
    precision = tp / max(1.0, float(np.sum(y)))
    recall = tp / max(1.0, float(np.sum(t)))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": float(np.mean(y == t)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": float(np.mean(y)),
    }


def chair(
    captions: Sequence[str], present: Sequence[Sequence[str]], *, shapes: Sequence[str]
) -> dict[str, float]:
    """CHAIR_i, CHAIR_s and object recall of captions (objects are shape words).

    Returns:
      ``{"chair_i", "chair_s", "recall", "mentions"}`` (``mentions``: objects per caption).
    """
    if isinstance(captions, str) or len(captions) != len(present) or not captions:
        raise ValueError("need one caption per image (non-empty)")
    vocab = set(shapes)
    mentioned = halluc = hit = total = with_halluc = 0
    for text, objs in zip(captions, present, strict=True):
        said = {w for w in text.split() if w in vocab}
        bad = said - set(objs)
        mentioned += len(said)
        halluc += len(bad)
        with_halluc += bool(bad)
        hit += len(said & set(objs))
        total += len(set(objs))
    return {
        "chair_i": halluc / max(1, mentioned),
        "chair_s": with_halluc / len(captions),
        "recall": hit / max(1, total),
        "mentions": mentioned / len(captions),
    }
