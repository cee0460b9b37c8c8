"""Prompt templates and a verbalizer over one tokenizer: the inputs of a prompt ensemble.

SecPE (Zhang, Chen, Feng, Lou, Song, Liu, Yang: *SecPE: Secure Prompt Ensembling for Private and
Robust Large Language Models*, ECAI 2024, arXiv:2502.00847) classifies an input ``x`` with ``m``
prompt templates ``t_1 .. t_m`` and a *verbalizer*, label words per class (the PET recipe of
Schick and Schuetze, EACL 2021). :class:`PromptEnsemble` turns texts into the ``m x n`` left-padded
prompt rows one batched forward pass scores (:mod:`jaxtrust.privacy.secpe.ensemble`), with the
column of every input token in every row (what the substitution attack edits).

Example:
  >>> from jaxtrust.data import WordTokenizer
  >>> tok = WordTokenizer("the film was fun dull review sentiment ? : good bad".split())
  >>> ens = PromptEnsemble.for_word_tokenizer(tok, ["review : {text} sentiment ?"], ["good", "bad"])
  >>> ens.num_prompts, ens.num_classes
  (1, 2)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import cached_property

import numpy as np

from jaxtrust.models.tokenizer import format_chat

__all__ = ["SCORE_MODES", "TEXT_PLACEHOLDER", "EncodedTexts", "PromptEnsemble", "Verbalizer"]

SCORE_MODES: tuple[str, ...] = ("logprob", "logit")
TEXT_PLACEHOLDER = "{text}"


# ---------------------------------------------------------------------------- verbalizer
@dataclasses.dataclass(frozen=True)
class Verbalizer:
    """Label words per class and their (single) token ids.

    Attributes:
      label_words: ``label_words[c]`` are the words of class ``c`` (at least one each).
      token_ids: the token id of each word, same nesting.
    """

    label_words: tuple[tuple[str, ...], ...]
    token_ids: tuple[tuple[int, ...], ...]

    @classmethod
    def from_words(
        cls, label_words: Sequence[str | Sequence[str]], tokenize: Callable[[str], Sequence[int]]
    ) -> Verbalizer:
        """Tokenize the label words; each must be exactly one token.

        Args:
          label_words: per class a word or a sequence of words (``["positive", "negative"]`` or
            ``[("positive", "Positive"), ("negative", "Negative")]``).
          tokenize: text -> token ids, exactly as the word follows the prompt.

        Raises:
          ValueError: fewer than 2 classes, a class without words, a word that is not one token,
            or a token shared by two classes.
        """
        if (
            isinstance(label_words, str)
            or not isinstance(label_words, Sequence)
            or len(label_words) < 2
        ):
            raise ValueError(
                f"label_words must be a sequence of at least 2 classes, got {label_words!r}"
            )
        words: list[tuple[str, ...]] = []
        ids: list[tuple[int, ...]] = []
        owner: dict[int, int] = {}
        for c, entry in enumerate(label_words):
            group = (entry,) if isinstance(entry, str) else tuple(entry)
            if not group or not all(isinstance(w, str) and w for w in group):
                raise ValueError(
                    f"label_words[{c}] must be a non-empty word or sequence of words, got {entry!r}"
                )
            group_ids = []
            for word in group:
                try:
                    toks = list(tokenize(word))
                except KeyError as err:
                    raise ValueError(
                        f"label word {word!r} (class {c}) is not in the tokenizer's vocabulary: "
                        f"{err}"
                    ) from err
                if len(toks) != 1:
                    raise ValueError(
                        f"label word {word!r} (class {c}) must be a single token, got {len(toks)} "
                        f"tokens {toks}"
                    )
                if toks[0] in owner and owner[toks[0]] != c:
                    raise ValueError(
                        f"label word {word!r} (class {c}) has the same token as a word of class "
                        f"{owner[toks[0]]}"
                    )
                owner[toks[0]] = c
                group_ids.append(int(toks[0]))
            words.append(group)
            ids.append(tuple(group_ids))
        return cls(tuple(words), tuple(ids))

    @property
    def num_classes(self) -> int:
        return len(self.token_ids)

    def id_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [k, w], mask [k, w])``: token ids padded to the largest class (mask False)."""
        width = max(len(g) for g in self.token_ids)
        ids = np.zeros((self.num_classes, width), np.int32)
        mask = np.zeros((self.num_classes, width), bool)
        for c, group in enumerate(self.token_ids):
            ids[c, : len(group)] = group
            mask[c, : len(group)] = True
        return ids, mask


# ---------------------------------------------------------------------------- prompts
@dataclasses.dataclass(frozen=True)
class EncodedTexts:
    """Input texts as token ids, shared by every prompt.

    ``ids [n, T]`` (padded) and ``lengths [n]``."""

    ids: np.ndarray
    lengths: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return np.arange(self.ids.shape[1])[None, :] < self.lengths[:, None]


@dataclasses.dataclass(frozen=True, eq=False)
class PromptEnsemble:
    """``m`` prompt templates and a verbalizer over one tokenizer.

    A prompt row is ``prefix_ids + tokenize(wrap_before + before_j) + tokenize(text_lead + text)
    + tokenize(after_j + wrap_after) + suffix_ids`` where template ``j`` is
    ``before_j + "{text}" + after_j`` (trailing spaces of ``before_j`` are dropped: the text is
    always tokenized with ``text_lead``, so its tokens are the same in every prompt). The answer
    position is the last token; rows are left-padded so it is the last column.

    Attributes:
      templates: prompt templates with exactly one ``{text}`` placeholder each.
      verbalizer: label words per class.
      tokenize: text -> token ids (no special tokens added).
      prefix_ids / suffix_ids: special tokens around every prompt (``<bos>`` / ``<sep>``).
      wrap_before / wrap_after: text around every prompt (a chat template's user turn).
      text_lead: prepended to every input text before tokenizing (a space for BPE vocabularies).
      pad_id: padding token.
      score: ``"logprob"`` (default) or ``"logit"``, see the module docstring.

    Raises:
      ValueError: no templates, a template without exactly one ``{text}``, an unknown score.
    """

    templates: tuple[str, ...]
    verbalizer: Verbalizer
    tokenize: Callable[[str], Sequence[int]]
    prefix_ids: tuple[int, ...] = ()
    suffix_ids: tuple[int, ...] = ()
    wrap_before: str = ""
    wrap_after: str = ""
    text_lead: str = " "
    pad_id: int = 0
    score: str = "logprob"

    def __post_init__(self):
        if (
            isinstance(self.templates, str)
            or not isinstance(self.templates, Sequence)
            or not self.templates
        ):
            raise ValueError(
                f"templates must be a non-empty sequence of strings, got {self.templates!r}"
            )
        object.__setattr__(self, "templates", tuple(self.templates))
        for j, template in enumerate(self.templates):
            if not isinstance(template, str) or template.count(TEXT_PLACEHOLDER) != 1:
                raise ValueError(
                    f"templates[{j}] must contain the input placeholder {TEXT_PLACEHOLDER!r} "
                    f"exactly once, got {template!r}"
                )
        if self.score not in SCORE_MODES:
            raise ValueError(f"score must be one of {SCORE_MODES}, got {self.score!r}")
        if not isinstance(self.verbalizer, Verbalizer):
            raise TypeError(
                f"verbalizer must be a Verbalizer, got {type(self.verbalizer).__name__}"
            )
        object.__setattr__(self, "prefix_ids", tuple(int(i) for i in self.prefix_ids))
        object.__setattr__(self, "suffix_ids", tuple(int(i) for i in self.suffix_ids))

    @property
    def num_prompts(self) -> int:
        return len(self.templates)

    @property
    def num_classes(self) -> int:
        return self.verbalizer.num_classes

    @cached_property
    def pieces(self) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
        """Per template, the token ids before and after the input text."""
        out = []
        for template in self.templates:
            before, after = template.split(TEXT_PLACEHOLDER)
            before = before.rstrip(" ")
            ids_before = (
                self.prefix_ids + tuple(self.tokenize(self.wrap_before + before))
                if (self.wrap_before + before)
                else self.prefix_ids
            )
            ids_after = (
                tuple(self.tokenize(after + self.wrap_after)) if (after + self.wrap_after) else ()
            ) + self.suffix_ids
            out.append((tuple(int(i) for i in ids_before), tuple(int(i) for i in ids_after)))
        return tuple(out)

    def encode_texts(self, texts: Sequence[str]) -> EncodedTexts:
        """Token ids of the input texts (shared by every prompt)."""
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
            raise ValueError(
                f"texts must be a non-empty sequence of strings, got {type(texts).__name__}"
            )
        rows = []
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"texts[{i}] must be a non-empty string, got {text!r}")
            rows.append([int(t) for t in self.tokenize(self.text_lead + text)])
        lengths = np.array([len(r) for r in rows], np.int32)
        ids = np.full((len(rows), int(lengths.max())), self.pad_id, np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        return EncodedTexts(ids, lengths)

    def assemble(
        self,
        text_ids: np.ndarray,
        lengths: np.ndarray,
        prompts: Sequence[int] | None = None,
        *,
        seq_len: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Left-padded prompt rows for every (prompt, input).

        Args:
          text_ids: ``[n, T]`` input token ids; lengths: ``[n]``.
          prompts: template indices (default all).
          seq_len: pad to this length (default: the longest row).

        Returns:
          ``tokens [p, n, L]``, ``mask [p, n, L]`` (True on real tokens) and ``text_pos [p, n, T]``,
          the column of input token ``t`` in each row (``-1`` past the input's length).
        """
        prompts = list(range(self.num_prompts)) if prompts is None else list(prompts)
        n, width = text_ids.shape
        longest = max(len(self.pieces[j][0]) + len(self.pieces[j][1]) for j in prompts) + int(
            lengths.max()
        )
        seq_len = longest if seq_len is None else seq_len
        if seq_len < longest:
            raise ValueError(
                f"seq_len={seq_len} is shorter than the longest prompt ({longest} tokens)"
            )
        tokens = np.full((len(prompts), n, seq_len), self.pad_id, np.int32)
        mask = np.zeros((len(prompts), n, seq_len), bool)
        text_pos = np.full((len(prompts), n, width), -1, np.int32)
        for a, j in enumerate(prompts):
            before, after = self.pieces[j]
            for i in range(n):
                length = int(lengths[i])
                row = [*before, *text_ids[i, :length].tolist(), *after]
                start = seq_len - len(row)
                tokens[a, i, start:] = row
                mask[a, i, start:] = True
                text_pos[a, i, :length] = start + len(before) + np.arange(length)
        return tokens, mask, text_pos

    # ------------------------------------------------------------------ constructors
    @classmethod
    def for_word_tokenizer(
        cls,
        tokenizer,
        templates: Sequence[str],
        label_words: Sequence[str | Sequence[str]],
        *,
        score: str = "logprob",
    ) -> PromptEnsemble:
        """An in-house word-level model (:class:`~jaxtrust.data.WordTokenizer`): each prompt is
        ``<bos> prompt <sep>``, the label word is the next token.

        Args:
          tokenizer: a ``WordTokenizer`` (``encode``, ``bos_id``, ``sep_id``, ``pad_id``).
          templates: prompt templates with one ``{text}`` each.
          label_words: per class a word or words (one token each).
          score: ``"logprob"`` or ``"logit"``.
        """
        verbalizer = Verbalizer.from_words(label_words, tokenizer.encode)
        return cls(
            tuple(templates),
            verbalizer,
            tokenizer.encode,
            prefix_ids=(tokenizer.bos_id,),
            suffix_ids=(tokenizer.sep_id,),
            pad_id=tokenizer.pad_id,
            score=score,
        )

    @classmethod
    def for_chat(
        cls,
        tokenizer,
        templates: Sequence[str],
        label_words: Sequence[str | Sequence[str]],
        *,
        score: str = "logprob",
    ) -> PromptEnsemble:
        """A chat model (``transformers`` tokenizer with a chat template): each prompt is the
        user turn, the label word is the first token of the assistant's answer."""
        marker = "\u0000TEXT\u0000"
        chat = format_chat(tokenizer, marker)
        if chat.count(marker) != 1:
            raise ValueError(
                "the tokenizer's chat template does not keep the user message verbatim"
            )
        wrap_before, wrap_after = chat.split(marker)

        def tokenize(text: str) -> list[int]:
            return tokenizer.encode(text, add_special_tokens=False)

        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        verbalizer = Verbalizer.from_words(label_words, tokenize)
        return cls(
            tuple(templates),
            verbalizer,
            tokenize,
            wrap_before=wrap_before,
            wrap_after=wrap_after,
            pad_id=int(pad),
            score=score,
        )
