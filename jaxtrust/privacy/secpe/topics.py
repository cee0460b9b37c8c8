"""A generated 8-class topic task where prompts differ and the soft vote can matter.

The reproduction of SecPE needs what the 2-class sentiment task could not give: many classes (the
encrypted argmax is over k = 8 values), single prompts of unequal quality, and inputs that are
not trivially separable. Sentences are generated from a small naive-Bayes world:

* a topic ``y`` is drawn uniformly from :data:`TOPICS` (8 classes);
* each of :data:`CUES_PER_SENTENCE` cue slots takes a word of topic ``y`` with probability
  ``1 - confusion``, else a word of another topic (a distractor);
* cue words sit in a frame of label-neutral :data:`FILLERS` ("my friend said the guitar and ...").

The label depends only on the cue words, so replacing fillers never changes it: a substitution
attack restricted to fillers (cue words protected) is label-preserving by construction. Because
distractors occur, even the Bayes rule errs sometimes. All words are English, so the same
generator serves the in-house word-level model and SmolLM2 (the full preset); the split
between training and held-out test sentences is by seeded hashing of the cue-word multiset.

Example:
  >>> task = TopicTask(seed=0)
  >>> texts, labels = task.sample(4, split="test", seed=1)
  >>> len(texts), int(labels.max()) < len(TOPICS)
  (4, True)
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
from jaxtyping import Int

__all__ = [
    "CHAT_TEMPLATES",
    "CUES_PER_SENTENCE",
    "FILLERS",
    "TEMPLATES",
    "TOPICS",
    "TOPIC_WORDS",
    "TopicTask",
]

TOPICS: tuple[str, ...] = (
    "sport",
    "music",
    "food",
    "travel",
    "science",
    "money",
    "health",
    "weather",
)
TOPIC_WORDS: dict[str, tuple[str, ...]] = {
    "sport": ("football", "tennis", "goal", "coach", "match", "team"),
    "music": ("guitar", "song", "concert", "band", "piano", "album"),
    "food": ("pizza", "bread", "soup", "cheese", "dinner", "recipe"),
    "travel": ("flight", "hotel", "beach", "train", "passport", "museum"),
    "science": ("atom", "laboratory", "planet", "experiment", "theory", "physics"),
    "money": ("bank", "price", "salary", "market", "loan", "budget"),
    "health": ("doctor", "fever", "medicine", "hospital", "vaccine", "sleep"),
    "weather": ("rain", "storm", "snow", "wind", "cloud", "sunshine"),
}
FILLERS: tuple[str, ...] = (
    "the",
    "a",
    "my",
    "our",
    "friend",
    "neighbour",
    "teacher",
    "said",
    "wrote",
    "mentioned",
    "about",
    "and",
    "with",
    "then",
    "today",
    "yesterday",
    "again",
    "really",
    "new",
    "old",
    "big",
    "small",
    "nice",
    "strange",
)
CUES_PER_SENTENCE = 3
SPLITS: tuple[str, ...] = ("train", "val", "test")
FRAMES: tuple[str, ...] = (
    "{s} said the {c0} and the {c1} were {a} {t} with the {c2}",
    "{t} {s} wrote about a {a} {c0} then the {c1} and the {c2}",
    "the {c0} {t} and {s} mentioned the {a} {c1} with a {c2}",
)
SUBJECTS: tuple[str, ...] = ("my friend", "our teacher", "my neighbour", "a friend")
ADJECTIVES: tuple[str, ...] = ("new", "old", "big", "small", "nice", "strange")
TIMES: tuple[str, ...] = ("today", "yesterday", "again", "really")
# Six templates of the in-house model (<bos> template <sep> label); it is trained in the first
# ones only (see testbeds.inhouse_testbed), the others are new prompts to it.
TEMPLATES: tuple[str, ...] = (
    "topic of : {text} ?",
    "{text} . what is this about ?",
    "classify : {text} . topic ?",
    "{text} . the subject is",
    "question : which topic fits {text} ?",
    "read {text} and name the topic",
)
CHAT_TEMPLATES: tuple[str, ...] = (
    "Which topic is this sentence about: sport, music, food, travel, science, money, health or "
    "weather? Answer with one word.\nSentence: {text}",
    "{text}\nName the topic of the sentence above in one word (sport, music, food, travel, "
    "science, money, health, weather).",
    "Classify the topic of the following text. Topics: sport, music, food, travel, science, "
    "money, health, weather. Reply with the topic only.\nText: {text}",
    "Text: {text}\nTopic (one of sport, music, food, travel, science, money, health, weather):",
)


@dataclasses.dataclass(frozen=True)
class TopicTask:
    """The generated topic sentences, with a seeded train/test split.

    Attributes:
      seed: chooses which cue combinations are held out for test.
      confusion: probability that a cue slot takes a word of another topic.
      test_fraction: share of cue combinations held out.
    """

    seed: int = 0
    confusion: float = 0.3
    test_fraction: float = 0.3

    def __post_init__(self):
        if not isinstance(self.seed, int | np.integer) or isinstance(self.seed, bool):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")
        if not 0.0 <= self.confusion < 1.0:
            raise ValueError(f"confusion must be in [0, 1), got {self.confusion}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

    @property
    def num_classes(self) -> int:
        return len(TOPICS)

    @property
    def label_words(self) -> tuple[str, ...]:
        return TOPICS

    @property
    def words(self) -> tuple[str, ...]:
        """Every word of every sentence, template and label (the in-house vocabulary)."""
        out: list[str] = []
        for text in (*FRAMES, *SUBJECTS, *TEMPLATES):
            out += [w for w in text.replace("{text}", " ").split() if not w.startswith("{")]
        out += [*ADJECTIVES, *TIMES, *FILLERS, *TOPICS]
        for group in TOPIC_WORDS.values():
            out += group
        return tuple(dict.fromkeys(out))

    @property
    def cue_words(self) -> tuple[str, ...]:
        return tuple(w for group in TOPIC_WORDS.values() for w in group)

    def split_of(self, cues: tuple[str, ...]) -> str:
        """``"train"``, ``"val"`` or ``"test"``: held-out cue combinations are split in half
        between validation (choosing the best single prompt) and test (reporting)."""
        digest = hashlib.sha256(f"{self.seed}|{'|'.join(sorted(cues))}".encode()).digest()
        u = int.from_bytes(digest[:4], "little") / 2**32
        if u >= self.test_fraction:
            return "train"
        return "val" if u < self.test_fraction / 2 else "test"

    def sample(
        self, n: int, *, split: str = "train", seed: int = 0
    ) -> tuple[list[str], Int[np.ndarray, " n"]]:
        """``n`` sentences of ``split`` and their topics.

        Args:
          n: number of sentences (>= 0).
          split: ``"train"``, ``"val"`` or ``"test"`` (disjoint sets of cue combinations).
          seed: the draw (deterministic in ``(task.seed, split, seed)``).

        Returns:
          ``(texts, labels)`` with labels in ``[0, 8)``, balanced up to rounding.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        rng = np.random.default_rng([self.seed, seed, SPLITS.index(split), 53])
        texts: list[str] = []
        labels: list[int] = []
        k = len(TOPICS)
        while len(texts) < n:
            y = len(texts) % k
            cues = []
            for _ in range(CUES_PER_SENTENCE):
                topic = y
                if rng.random() < self.confusion:
                    topic = int((y + rng.integers(1, k)) % k)
                cues.append(str(rng.choice(TOPIC_WORDS[TOPICS[topic]])))
            if self.split_of(tuple(cues)) != split:
                continue
            frame = FRAMES[int(rng.integers(len(FRAMES)))]
            texts.append(
                frame.format(
                    s=SUBJECTS[int(rng.integers(len(SUBJECTS)))],
                    a=ADJECTIVES[int(rng.integers(len(ADJECTIVES)))],
                    t=TIMES[int(rng.integers(len(TIMES)))],
                    c0=cues[0],
                    c1=cues[1],
                    c2=cues[2],
                )
            )
            labels.append(y)
        order = rng.permutation(n)
        return [texts[i] for i in order], np.asarray(labels, np.int64)[order]
