"""A small, clearly labelled English sentiment set for real (BPE) chat models, generated in code.

Used by the full preset of ``jaxtrust reproduce secpe`` with SmolLM2-135M-Instruct: no dataset is
downloaded. Sentences are ``frame.format(subject=..., adjective=...)`` over fixed word lists:
every sentence carries exactly one unambiguous sentiment adjective, no negation, so its label is
the adjective's polarity (positive = class 0, negative = class 1, the order of
:data:`LABEL_WORDS`).

* :data:`SUBJECTS` (10) x (:data:`POSITIVE_ADJECTIVES` + :data:`NEGATIVE_ADJECTIVES`) (8 + 8) x
  :data:`FRAMES` (3) = 480 sentences, exactly balanced.
* :data:`TEMPLATES`: 4 instruction prompts (the user turn of a chat), each with one ``{text}``.
* :data:`LABEL_WORDS`: the verbalizer, ``("positive", "Positive")`` and ``("negative",
  "Negative")``, the first token of the assistant's answer.
* For robustness: :data:`FILLER_WORDS` are label-neutral substitutes (subjects, intensifiers,
  function words) and :data:`SENTIMENT_WORDS` the words an attack must never edit, so a
  substitution attack cannot change the true label.

Example:
  >>> data = SentimentSet(seed=0)
  >>> texts, labels = data.sample(4, split="test")
  >>> len(texts), sorted(set(labels.tolist())) == [0, 1]
  (4, True)
  >>> len(data.sentences("all"))
  480
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from functools import cached_property

import numpy as np
from jaxtyping import Int

__all__ = [
    "FILLER_WORDS",
    "FRAMES",
    "LABEL_WORDS",
    "NEGATIVE_ADJECTIVES",
    "POSITIVE_ADJECTIVES",
    "SENTIMENT_WORDS",
    "SUBJECTS",
    "SentimentSet",
    "TEMPLATES",
    "word_token_ids",
]

SUBJECTS: tuple[str, ...] = (
    "the movie",
    "the food",
    "the hotel",
    "the service",
    "the book",
    "the concert",
    "the game",
    "the staff",
    "the trip",
    "the album",
)
POSITIVE_ADJECTIVES: tuple[str, ...] = (
    "wonderful",
    "excellent",
    "great",
    "delightful",
    "fantastic",
    "amazing",
    "lovely",
    "superb",
)
NEGATIVE_ADJECTIVES: tuple[str, ...] = (
    "terrible",
    "awful",
    "horrible",
    "dreadful",
    "disappointing",
    "boring",
    "bad",
    "poor",
)
FRAMES: tuple[str, ...] = (
    "{subject} was {adjective}.",
    "I thought {subject} was really {adjective}.",
    "Honestly, {subject} was {adjective}.",
)
TEMPLATES: tuple[str, ...] = (
    "Is the sentiment of this review positive or negative? Answer with one word.\nReview: {text}",
    "Review: {text}\nWas this review positive or negative? Reply with one word.",
    "Classify the sentiment of the following sentence as positive or negative.\nSentence: {text}",
    "{text}\nIs the sentiment of the text above positive or negative? One word.",
)
LABEL_WORDS: tuple[tuple[str, ...], ...] = (("positive", "Positive"), ("negative", "Negative"))
# Label-neutral substitutes: swapping any of them into a sentence keeps its polarity.
FILLER_WORDS: tuple[str, ...] = (
    "movie",
    "food",
    "hotel",
    "service",
    "book",
    "concert",
    "game",
    "staff",
    "trip",
    "album",
    "the",
    "a",
    "this",
    "that",
    "it",
    "was",
    "is",
    "really",
    "quite",
    "very",
    "so",
    "also",
    "just",
    "still",
    "today",
    "again",
    "honestly",
    "overall",
    "I",
    "we",
    "thought",
    "felt",
)
NEGATIONS: tuple[str, ...] = ("not", "never", "no", "n't", "hardly", "barely")
SENTIMENT_WORDS: tuple[str, ...] = POSITIVE_ADJECTIVES + NEGATIVE_ADJECTIVES + NEGATIONS


def word_token_ids(
    tokenize: Callable[[str], Sequence[int]], words: Sequence[str], *, single_only: bool = True
) -> list[int]:
    """Token ids of ``words`` as they occur inside a sentence (``" word"``, ``"word"``,
    ``" Word"``).

    With ``single_only`` (substitutes) only forms that are one token are kept; otherwise
    (protected words) every token of every form is returned, so no piece of the word is edited.
    """
    ids: set[int] = set()
    for word in words:
        for form in {word, " " + word, " " + word.capitalize(), word.capitalize()}:
            toks = list(tokenize(form))
            if single_only and len(toks) != 1:
                continue
            ids.update(int(t) for t in toks)
    return sorted(ids)


@dataclasses.dataclass(frozen=True)
class SentimentSet:
    """The generated sentiment sentences with a seeded train/test split.

    Attributes:
      seed: chooses the split (every call is deterministic in ``(seed, call seed)``).
      test_fraction: share of sentences in the test split.
    """

    seed: int = 0
    test_fraction: float = 0.5

    def __post_init__(self):
        if not isinstance(self.seed, int | np.integer):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

    @property
    def label_words(self) -> tuple[tuple[str, ...], ...]:
        return LABEL_WORDS

    @property
    def templates(self) -> tuple[str, ...]:
        return TEMPLATES

    @cached_property
    def _all(self) -> tuple[tuple[str, int], ...]:
        out = []
        for frame, subject, (adjectives, label) in itertools.product(
            FRAMES, SUBJECTS, ((POSITIVE_ADJECTIVES, 0), (NEGATIVE_ADJECTIVES, 1))
        ):
            for adjective in adjectives:
                text = frame.format(subject=subject, adjective=adjective)
                out.append((text[0].upper() + text[1:], label))
        return tuple(out)

    @cached_property
    def _split(self) -> dict[str, tuple[tuple[str, int], ...]]:
        # Stratified: each label is split separately, so both splits stay balanced.
        rng = np.random.default_rng([self.seed, 31])
        test, train = [], []
        for label in (0, 1):
            pool = [s for s in self._all if s[1] == label]
            order = rng.permutation(len(pool))
            n_test = int(round(self.test_fraction * len(pool)))
            test += [pool[i] for i in order[:n_test]]
            train += [pool[i] for i in order[n_test:]]
        return {"train": tuple(train), "test": tuple(test), "all": self._all}

    def sentences(self, split: str = "test") -> tuple[tuple[str, int], ...]:
        """``(text, label)`` pairs of ``split`` ("train", "test" or "all"), in a fixed order."""
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        return self._split[split]

    def sample(
        self, n: int, *, split: str = "test", seed: int = 0
    ) -> tuple[list[str], Int[np.ndarray, " n"]]:
        """``n`` distinct sentences of ``split``, balanced (``n // 2`` per label, the odd one
        positive), in a seeded order.

        Raises:
          ValueError: ``n`` is negative or larger than the split.
        """
        pool = self.sentences(split)
        by_label = [[s for s in pool if s[1] == c] for c in (0, 1)]
        if not 0 <= n <= 2 * min(len(b) for b in by_label):
            raise ValueError(
                f"n must be in [0, {2 * min(len(b) for b in by_label)}] for split {split!r}, got "
                f"{n}"
            )
        rng = np.random.default_rng([self.seed, seed, 37])
        counts = ((n + 1) // 2, n // 2)
        chosen = []
        for c in (0, 1):
            idx = rng.permutation(len(by_label[c]))[: counts[c]]
            chosen += [by_label[c][i] for i in idx]
        chosen = [chosen[i] for i in rng.permutation(len(chosen))]
        return [t for t, _ in chosen], np.array([y for _, y in chosen], np.int64)
