"""A generated world of arithmetic word problems with exact-match scoring.

It is the utility task of the in-house worlds: small enough to learn in minutes on 2 CPU
cores, hard enough that a model must compute rather than memorise (operand pairs of the test
split never occur in training), and with *held-out templates* so that evaluation also measures
generalisation over surface forms.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxtrust.data.vocab import WordTokenizer

# (template, operation). A template's slots are {a} and {b}; every template ends in "?" or ".".
TRAIN_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("what is {a} plus {b} ?", "add"),
    ("add {a} and {b} .", "add"),
    ("i have {a} apples and get {b} more . how many apples ?", "add"),
    ("what is {a} minus {b} ?", "sub"),
    ("take {b} from {a} .", "sub"),
    ("i have {a} coins and spend {b} . how many coins ?", "sub"),
)
HELDOUT_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("compute {a} plus {b} please .", "add"),
    ("compute {a} minus {b} please .", "sub"),
)


class Example(NamedTuple):
    """A prompt and its reference response (both plain text over the world's vocabulary)."""

    prompt: str
    response: str
    kind: str


@dataclasses.dataclass(frozen=True)
class ArithmeticWorld:
    """Addition and subtraction word problems over the integers ``0..max_operand``.

    Subtraction problems are generated with ``a >= b`` so answers stay non-negative. The
    operand pairs are split once (by ``seed``) into train and test pairs; ``split="test"`` draws
    test pairs, ``split="heldout"`` draws test pairs rendered with held-out templates.

    Example:
      >>> world = ArithmeticWorld(max_operand=9, seed=0)
      >>> ex = world.sample(1, split="train", seed=1)[0]
      >>> world.answer(ex.prompt) == int(ex.response)
      True
    """

    max_operand: int = 20
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self):
        if not 2 <= self.max_operand <= 200:
            raise ValueError(f"max_operand must be in [2, 200], got {self.max_operand}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

    @property
    def words(self) -> list[str]:
        words = [str(i) for i in range(2 * self.max_operand + 1)]
        for template, _ in TRAIN_TEMPLATES + HELDOUT_TEMPLATES:
            words += [w for w in template.split() if not w.startswith("{")]
        return words

    @property
    def tokenizer(self) -> WordTokenizer:
        return WordTokenizer(self.words)

    def _pairs(self, split: str) -> np.ndarray:
        # Unordered pairs, so that neither "a plus b" nor "b plus a" of a test pair is ever seen
        # in training.
        n = self.max_operand + 1
        pairs = np.array([(a, b) for a in range(n) for b in range(a, n)], dtype=np.int64)
        order = np.random.default_rng(self.seed).permutation(len(pairs))
        n_test = max(1, int(round(self.test_fraction * len(pairs))))
        return pairs[order[n_test:]] if split == "train" else pairs[order[:n_test]]

    def sample(self, n: int, *, split: str = "train", seed: int = 0) -> list[Example]:
        """``n`` problems from ``split`` ("train", "test" or "heldout"), deterministic in
        ``seed``."""
        if split not in ("train", "test", "heldout"):
            raise ValueError(f"split must be 'train', 'test' or 'heldout', got {split!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = np.random.default_rng([self.seed, seed, ("train", "test", "heldout").index(split)])
        pairs = self._pairs(split)
        templates = HELDOUT_TEMPLATES if split == "heldout" else TRAIN_TEMPLATES
        out = []
        for _ in range(n):
            a, b = pairs[rng.integers(len(pairs))]
            template, op = templates[rng.integers(len(templates))]
            if op == "sub" or rng.random() < 0.5:
                a, b = b, a  # pairs are stored a <= b; subtraction keeps answers non-negative
            answer = a + b if op == "add" else a - b
            out.append(Example(template.format(a=a, b=b), str(answer), op))
        return out

    def answer(self, prompt: str) -> int:
        """The correct answer of a prompt produced by this world (used to check generators)."""
        for template, op in TRAIN_TEMPLATES + HELDOUT_TEMPLATES:
            escaped = (
                re.escape(template)
                .replace(r"\{a\}", r"(?P<a>\d+)")
                .replace(r"\{b\}", r"(?P<b>\d+)")
            )
            pattern = "^" + escaped + "$"
            match = re.match(pattern, prompt)
            if match:
                a, b = int(match["a"]), int(match["b"])
                return a + b if op == "add" else a - b
        raise ValueError(f"prompt {prompt!r} does not match any template of this world")

    @staticmethod
    def exact_match(predictions: Sequence[str], examples: Sequence[Example]) -> float:
        """Fraction of predictions whose first word equals the reference answer."""
        if len(predictions) != len(examples):
            raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
        if not examples:
            raise ValueError("examples is empty")
        hits = [
            (p.split() or [""])[0] == ex.response
            for p, ex in zip(predictions, examples, strict=True)
        ]
        return float(np.mean(hits))
