"""A word-level tokenizer for generated worlds.

Generated worlds have a closed vocabulary, so a word-level tokenizer is exact (no unknown
words at evaluation time unless a held-out split introduces them on purpose) and keeps models
tiny. It is serialisable as plain JSON, so a cached model and its tokenizer travel together.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from jaxtyping import ArrayLike, Int

PAD, BOS, EOS, SEP, UNK = "<pad>", "<bos>", "<eos>", "<sep>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, SEP, UNK)


class WordTokenizer:
    """Whitespace word tokenizer over a fixed vocabulary.

    Ids 0..4 are the special tokens ``<pad> <bos> <eos> <sep> <unk>``; the words follow in the
    order given (duplicates ignored).

    Example:
      >>> tok = WordTokenizer(["two", "plus", "three"])
      >>> tok.encode("two plus three")
      [5, 6, 7]
      >>> tok.decode([5, 6, 7, 2])
      'two plus three'
    """

    def __init__(self, words: Iterable[str]):
        vocab: list[str] = list(SPECIAL_TOKENS)
        seen = set(vocab)
        for word in words:
            if not isinstance(word, str) or not word or any(c.isspace() for c in word):
                raise ValueError(
                    f"words must be non-empty strings without whitespace, got {word!r}"
                )
            if word not in seen:
                seen.add(word)
                vocab.append(word)
        self.vocab: tuple[str, ...] = tuple(vocab)
        self._index = {w: i for i, w in enumerate(self.vocab)}

    pad_id, bos_id, eos_id, sep_id, unk_id = 0, 1, 2, 3, 4

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, *, allow_unknown: bool = False) -> list[int]:
        """Ids of the whitespace-separated words of ``text``.

        Raises:
          KeyError: a word is not in the vocabulary and ``allow_unknown`` is False.
        """
        ids = []
        for word in text.split():
            idx = self._index.get(word)
            if idx is None:
                if not allow_unknown:
                    raise KeyError(f"word {word!r} is not in the vocabulary (text={text!r})")
                idx = self.unk_id
            ids.append(idx)
        return ids

    def decode(
        self,
        ids: Sequence[int] | Int[ArrayLike, " n"],
        *,
        stop_at_eos: bool = True,
        skip_special: bool = True,
    ) -> str:
        words = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
            if stop_at_eos and i == self.eos_id:
                break
            if skip_special and i < len(SPECIAL_TOKENS):
                continue
            words.append(self.vocab[i])
        return " ".join(words)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps({"type": "word", "vocab": list(self.vocab)}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordTokenizer:
        data = json.loads(Path(path).read_text())
        if (
            data.get("type") != "word"
            or tuple(data["vocab"][: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS
        ):
            raise ValueError(f"{path} is not a jaxtrust word tokenizer file")
        return cls(data["vocab"][len(SPECIAL_TOKENS) :])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordTokenizer) and other.vocab == self.vocab

    def __hash__(self) -> int:
        return hash(self.vocab)
