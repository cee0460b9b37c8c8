"""Prompt ensembling over any jaxtrust causal LM (the plaintext half of SecPE), and its robustness.

SecPE (Zhang, Chen, Feng, Lou, Song, Liu, Yang: *SecPE: Secure Prompt Ensembling for Private and
Robust Large Language Models*, ECAI 2024, arXiv:2502.00847) classifies an input ``x`` with ``m``
prompt templates ``t_1 .. t_m`` and a *verbalizer* (label words per class). Prompt ``j`` gives a
class-score vector ``s_j(x) in R^k`` read off the LM's next-token distribution at the answer
position; the ensemble is the soft vote

    y*(x) = sum_j s_j(x),        prediction = argmax_c y*(x)_c   (ties: lowest index, like numpy)

and only the sum and the argmax run under FHE (:mod:`jaxtrust.fhe`, Concrete, in its own
environment). This module computes the plaintext side in JAX: the per-prompt scores of every
(prompt, input) pair in one batched, jitted forward pass, the soft vote and argmax, the final
hidden state at the answer position (the input of the encrypted verbalizer), and adversarial
robustness of single prompts vs the ensemble.

Class scores (``score=``; which scores SecPE sums is not stated, the figure shows a plain sum):

* ``"logprob"`` (default): ``s_c = log sum_{w in words(c)} p(w | prompt)``, the log-probability
  of the class under the LM's full next-token distribution. Prompts are then on one scale, and
  the soft vote is a product of experts; this is why it is the default.
* ``"logit"``: ``s_c = mean_{w in words(c)} z_w``, the mean raw logit of the class's words. It is
  *linear* in the final (normed) hidden state ``h``: ``s = W h`` with ``W_c = mean_w E_w`` (the
  tied embedding rows or the LM-head columns; :func:`verbalizer_weights`), so the whole
  verbalizer can run as one encrypted linear layer.

Robustness (:func:`attack`): greedy token substitutions in the *input text* (shared by all
prompts), budget ``b`` substitutions at distinct positions. Each step ranks substitutions
``(position t, token v)`` by the first-order (HotFlip; Ebrahimi et al., ACL 2018) estimate of the
change of the margin ``M = y*_true - y*_rival``, ``(E_v - E_cur) . dM/de_t`` (``dM/de_t`` summed
over the positions of ``t`` in every attacked prompt), verifies the best ``c`` per position with
exact forward passes and keeps the one that lowers the margin most (``c=None``: all allowed
tokens, exhaustive search). The attacked objective is one prompt's scores (a single-prompt
attack) or the soft vote (an attack on the ensemble). Label-preserving constraints come from the
caller: ``protected_tokens`` are never edited (sentiment words, negations) and substitutes come
only from ``allowed_tokens``.

Example::

    from jaxtrust.zoo import aligned_model
    from jaxtrust.fhe.ensemble import PromptEnsemble, prompt_scores, ensemble_argmax
    zoo = aligned_model(seed=0)
    ens = PromptEnsemble.for_world(zoo.world)
    scores = prompt_scores(zoo.model, ens, ["the movie was very good"])   # [1, m, 2]
    ensemble_argmax(scores)                                                 # array([0])
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Float, Int

__all__ = [
    "SCORE_MODES",
    "AttackResult",
    "EncodedTexts",
    "PromptEnsemble",
    "Verbalizer",
    "attack",
    "ensemble_argmax",
    "prompt_predictions",
    "prompt_scores",
    "robust_accuracy",
    "soft_vote",
    "verbalizer_weights",
]

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
                        f"label word {word!r} (class {c}) is not in the tokenizer's vocabulary: {err}"
                    ) from err
                if len(toks) != 1:
                    raise ValueError(
                        f"label word {word!r} (class {c}) must be a single token, got {len(toks)} tokens {toks}"
                    )
                if toks[0] in owner and owner[toks[0]] != c:
                    raise ValueError(
                        f"label word {word!r} (class {c}) has the same token as a word of class {owner[toks[0]]}"
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
    """Input texts as token ids, shared by every prompt: ``ids [n, T]`` (padded), ``lengths [n]``."""

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
                    f"templates[{j}] must contain the input placeholder {TEXT_PLACEHOLDER!r} exactly once, got {template!r}"
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
    def for_world(
        cls, world, templates: Sequence[str] | None = None, *, score: str = "logprob"
    ) -> PromptEnsemble:
        """The :class:`~jaxtrust.data.SafetyWorld` classification task: ``<bos> prompt <sep>``,
        then the label word; default templates: the training and held-out ones."""
        from jaxtrust.data.safety_world import (
            CLASSIFICATION_HELDOUT_TEMPLATES,
            CLASSIFICATION_TEMPLATES,
        )

        tok = world.tokenizer
        templates = (
            tuple(CLASSIFICATION_TEMPLATES + CLASSIFICATION_HELDOUT_TEMPLATES)
            if templates is None
            else tuple(templates)
        )
        verbalizer = Verbalizer.from_words(world.label_words, tok.encode)
        return cls(
            templates,
            verbalizer,
            tok.encode,
            prefix_ids=(tok.bos_id,),
            suffix_ids=(tok.sep_id,),
            pad_id=tok.pad_id,
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
        from jaxtrust.models.tokenizer import format_chat

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


# ---------------------------------------------------------------------------- jitted scoring
class _ShiftedEmbed(nnx.Module):
    """The model's embedding plus a per-position offset ``delta`` (HotFlip's gradient point).

    It keeps the original table as ``embedding`` so a tied LM head still reads it.
    """

    def __init__(self, embed: nnx.Embed, delta: jax.Array):
        self.embedding = embed.embedding
        self.delta = nnx.Variable(delta)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        table = self.embedding[...]
        return jnp.take(table, tokens, axis=0) + self.delta[...].astype(table.dtype)


def _final_hidden(model, hidden: jax.Array) -> jax.Array:
    from jaxtrust.models.hooks import ModelHooks

    norm = model.final_norm
    bias = None if norm.bias is None else norm.bias[...]
    return ModelHooks().norm(
        hidden, norm.scale[...], bias, model.config.num_layers, "final_norm", model.config.norm_eps
    )


def _class_scores(
    logits: jax.Array, class_ids: jax.Array, class_mask: jax.Array, score: str
) -> jax.Array:
    """``[B, V]`` next-token logits -> ``[B, k]`` class scores (see the module docstring)."""
    if score == "logprob":
        logp = jax.nn.log_softmax(logits, axis=-1)
        word = jnp.take(logp, class_ids.reshape(-1), axis=1).reshape(
            logits.shape[0], *class_ids.shape
        )
        word = jnp.where(class_mask[None], word, -jnp.inf)
        return jax.scipy.special.logsumexp(word, axis=-1)
    word = jnp.take(logits, class_ids.reshape(-1), axis=1).reshape(
        logits.shape[0], *class_ids.shape
    )
    counts = jnp.sum(class_mask, axis=-1).astype(logits.dtype)
    return jnp.sum(jnp.where(class_mask[None], word, 0.0), axis=-1) / counts[None, :]


def _forward(
    graphdef, state, tokens, mask, class_ids, class_mask, delta, score: str, with_hidden: bool
):
    model = nnx.merge(graphdef, state)
    if delta is not None:
        model.embed = _ShiftedEmbed(model.embed, delta)
    out = model(
        tokens, attention_mask=mask, output_hidden_states=with_hidden, last_logits_only=True
    )
    scores = _class_scores(out.logits[:, -1], class_ids, class_mask, score)
    hidden = _final_hidden(model, out.hidden_states[-1][:, -1]) if with_hidden else None
    return scores, hidden


@functools.partial(jax.jit, static_argnames=("graphdef", "score", "with_hidden"))
def _score_rows(
    graphdef, state, tokens, mask, class_ids, class_mask, *, score: str, with_hidden: bool
):
    return _forward(graphdef, state, tokens, mask, class_ids, class_mask, None, score, with_hidden)


@functools.partial(jax.jit, static_argnames=("graphdef", "score"))
def _margin_embedding_grad(
    graphdef,
    state,
    tokens,
    mask,
    class_ids,
    class_mask,
    true_class,
    rival_class,
    weight,
    *,
    score: str,
):
    """d/d(input embeddings) of ``sum_rows weight * (s[true] - s[rival])``: ``[B, L, dim]``."""

    def objective(delta):
        scores, _ = _forward(
            graphdef, state, tokens, mask, class_ids, class_mask, delta, score, False
        )
        rows = jnp.arange(tokens.shape[0])
        return jnp.sum(weight * (scores[rows, true_class] - scores[rows, rival_class]))

    dim = nnx.merge(graphdef, state).config.hidden_size
    return jax.grad(objective)(jnp.zeros((*tokens.shape, dim), jnp.float32))


def _bucket(x: int, step: int = 8) -> int:
    return max(step, -(-x // step) * step)


def _check_model(model, ensemble: PromptEnsemble) -> None:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "vocab_size") or not callable(model):
        raise TypeError(f"model must be a jaxtrust CausalLM, got {type(model).__name__}")
    if not isinstance(ensemble, PromptEnsemble):
        raise TypeError(f"ensemble must be a PromptEnsemble, got {type(ensemble).__name__}")
    largest = max(max(g) for g in ensemble.verbalizer.token_ids)
    if largest >= config.vocab_size:
        raise ValueError(
            f"label token id {largest} is outside the model's vocabulary of {config.vocab_size}"
        )


def _run_rows(
    model,
    ensemble: PromptEnsemble,
    tokens: np.ndarray,
    mask: np.ndarray,
    *,
    batch_size: int,
    with_hidden: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class scores (and final hidden states) of ``[R, L]`` rows, in fixed-shape chunks."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    graphdef, state = nnx.split(model)
    class_ids, class_mask = ensemble.verbalizer.id_matrix()
    rows, length = tokens.shape
    seq = _bucket(length)
    chunk = min(batch_size, _bucket(rows))
    total = -(-rows // chunk) * chunk
    padded_tokens = np.full((total, seq), ensemble.pad_id, np.int32)
    padded_mask = np.zeros((total, seq), bool)
    padded_tokens[:rows, seq - length :] = tokens
    padded_mask[:rows, seq - length :] = mask
    padded_tokens[rows:] = padded_tokens[0]  # copies of a real row: no all-padding rows
    padded_mask[rows:] = padded_mask[0]
    scores, hiddens = [], []
    for start in range(0, total, chunk):
        s, h = _score_rows(
            graphdef,
            state,
            jnp.asarray(padded_tokens[start : start + chunk]),
            jnp.asarray(padded_mask[start : start + chunk]),
            jnp.asarray(class_ids),
            jnp.asarray(class_mask),
            score=ensemble.score,
            with_hidden=with_hidden,
        )
        scores.append(np.asarray(s))
        if with_hidden:
            hiddens.append(np.asarray(h))
    out_scores = np.concatenate(scores)[:rows]
    return out_scores, (np.concatenate(hiddens)[:rows] if with_hidden else None)


def _scores_of(
    model,
    ensemble: PromptEnsemble,
    text_ids: np.ndarray,
    lengths: np.ndarray,
    prompts: Sequence[int],
    *,
    batch_size: int,
    with_hidden: bool = False,
):
    tokens, mask, _ = ensemble.assemble(text_ids, lengths, prompts)
    p, n, length = tokens.shape
    scores, hidden = _run_rows(
        model,
        ensemble,
        tokens.reshape(p * n, length),
        mask.reshape(p * n, length),
        batch_size=batch_size,
        with_hidden=with_hidden,
    )
    scores = scores.reshape(p, n, -1).transpose(1, 0, 2)
    if hidden is not None:
        hidden = hidden.reshape(p, n, -1).transpose(1, 0, 2)
    return scores, hidden


# ---------------------------------------------------------------------------- public scoring API
def prompt_scores(
    model,
    ensemble: PromptEnsemble,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    return_hidden: bool = False,
) -> Float[np.ndarray, "n m k"] | tuple[Float[np.ndarray, "n m k"], Float[np.ndarray, "n m dim"]]:
    """Per-prompt class scores of every input: one jitted forward over all ``m x n`` prompt rows.

    ``scores[i, j, c]`` is class ``c``'s score (``ensemble.score``) at the answer position of
    template ``j`` filled with ``texts[i]``.

    Args:
      model: a jaxtrust :class:`~jaxtrust.models.CausalLM`.
      ensemble: templates, verbalizer and tokenizer.
      texts: the ``n`` inputs.
      batch_size: rows per forward chunk (fixed shapes: one compilation).
      return_hidden: also return the final-normed hidden state at the answer position
        (``[n, m, dim]``; ``scores = hidden @ W.T`` for ``score="logit"``, see
        :func:`verbalizer_weights`).

    Returns:
      ``scores [n, m, k]`` (float32), and ``hidden [n, m, dim]`` when asked.

    Example::

      scores = prompt_scores(model, PromptEnsemble.for_world(world), ["the song was fun"])
    """
    _check_model(model, ensemble)
    encoded = ensemble.encode_texts(texts)
    scores, hidden = _scores_of(
        model,
        ensemble,
        encoded.ids,
        encoded.lengths,
        range(ensemble.num_prompts),
        batch_size=batch_size,
        with_hidden=return_hidden,
    )
    return (scores, hidden) if return_hidden else scores


def verbalizer_weights(model, ensemble: PromptEnsemble) -> Float[np.ndarray, "k dim"]:
    """The verbalizer as a linear map of the final-normed answer hidden state ``h``:
    ``s_c = W_c . h`` with ``W_c = mean_{w in words(c)} E_w`` (tied embedding rows, or LM-head
    columns). Exact for ``score="logit"``; this is the layer the encrypted verbalizer computes."""
    _check_model(model, ensemble)
    if model.lm_head is None:
        table = np.asarray(model.embed.embedding[...], np.float32)  # [vocab, dim]
    else:
        table = np.asarray(model.lm_head.kernel[...], np.float32).T
    return np.stack(
        [table[list(group)].mean(axis=0) for group in ensemble.verbalizer.token_ids]
    ).astype(np.float32)


def _check_scores(scores) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 3 or scores.shape[1] < 1 or scores.shape[2] < 2:
        raise ValueError(
            f"scores must have shape [n, m, k] with m >= 1 and k >= 2, got {scores.shape}"
        )
    if not np.issubdtype(scores.dtype, np.number):
        raise TypeError(f"scores must be numeric, got {scores.dtype}")
    return scores


def soft_vote(scores: Float[np.ndarray, "n m k"]) -> Float[np.ndarray, "n k"]:
    """SecPE's soft vote: ``y*[i] = sum_j scores[i, j]``."""
    return _check_scores(scores).sum(axis=1)


def ensemble_argmax(scores: Float[np.ndarray, "n m k"]) -> Int[np.ndarray, " n"]:
    """``argmax_c sum_j scores[i, j, c]``; ties go to the lowest class index (numpy's rule, the
    rule the encrypted argmax reproduces)."""
    return np.argmax(soft_vote(scores), axis=-1)


def prompt_predictions(scores: Float[np.ndarray, "n m k"]) -> Int[np.ndarray, "n m"]:
    """Each prompt's own prediction (lowest index on ties)."""
    return np.argmax(_check_scores(scores), axis=-1)


def _check_labels(labels, n: int, k: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be an integer array of shape ({n},), got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(
            f"labels must be class indices in [0, {k}), got range [{labels.min()}, {labels.max()}]"
        )
    return labels


# ---------------------------------------------------------------------------- robustness
@dataclasses.dataclass(frozen=True)
class AttackResult:
    """Outcome of :func:`attack` on ``n`` inputs.

    Attributes:
      text_ids: ``[n, T]`` adversarial input ids (clean ids where nothing was substituted).
      lengths: ``[n]`` input lengths (substitutions keep them).
      clean_correct / robust_correct: ``[n]`` the attacked objective's prediction is right
        before / after the attack.
      substitutions: ``[n]`` number of tokens changed.
      clean_margin / robust_margin: ``[n]`` margin ``y_true - max_{c != true} y_c``.
      target: the attacked prompts (``"ensemble"`` or a template index).
    """

    text_ids: np.ndarray
    lengths: np.ndarray
    clean_correct: np.ndarray
    robust_correct: np.ndarray
    substitutions: np.ndarray
    clean_margin: np.ndarray
    robust_margin: np.ndarray
    target: Any

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.mean())

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust_correct.mean())


def _margin(agg: np.ndarray, labels: np.ndarray) -> np.ndarray:
    rows = np.arange(agg.shape[0])
    others = agg.copy()
    others[rows, labels] = -np.inf
    return agg[rows, labels] - others.max(axis=-1)


def _correct(agg: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.argmax(agg, axis=-1) == labels


def attack(
    model,
    ensemble: PromptEnsemble,
    texts: Sequence[str],
    labels: Int[np.ndarray, " n"],
    *,
    target: str | int = "ensemble",
    budget: int = 2,
    allowed_tokens: Sequence[int] | None = None,
    protected_tokens: Sequence[int] = (),
    candidates_per_position: int | None = 8,
    batch_size: int = 256,
) -> AttackResult:
    """Greedy adversarial token substitutions in the inputs (module docstring: HotFlip + search).

    Args:
      model: a jaxtrust causal LM.
      ensemble: the prompts.
      texts: ``n`` inputs; labels: their classes ``[n]``.
      target: ``"ensemble"`` (attack the soft vote of every prompt) or a template index (attack
        that prompt alone).
      budget: at most this many substituted tokens per input (distinct positions).
      allowed_tokens: substitute token ids (default: every id of the model's vocabulary that is
        not protected, not a label token and not ``pad_id``). The caller makes them
        label-preserving.
      protected_tokens: input tokens that are never substituted (and never substitutes).
      candidates_per_position: substitutions per position verified exactly, chosen by the
        first-order estimate; ``None`` verifies every allowed token (exhaustive search).
      batch_size: rows per forward chunk.

    Returns:
      an :class:`AttackResult`; inputs the target already misclassifies are left unchanged.

    Raises:
      ValueError: bad ``target``, ``budget``, ``labels``, ``candidates_per_position`` or token ids.
    """
    _check_model(model, ensemble)
    k = ensemble.num_classes
    encoded = ensemble.encode_texts(texts)
    n, width = encoded.ids.shape
    labels = _check_labels(labels, n, k)
    if target == "ensemble":
        prompts = list(range(ensemble.num_prompts))
    elif (
        isinstance(target, int | np.integer)
        and not isinstance(target, bool)
        and 0 <= target < ensemble.num_prompts
    ):
        prompts = [int(target)]
    else:
        raise ValueError(
            f"target must be 'ensemble' or a template index in [0, {ensemble.num_prompts}), got {target!r}"
        )
    if not isinstance(budget, int | np.integer) or budget < 0:
        raise ValueError(f"budget must be a non-negative int, got {budget!r}")
    if candidates_per_position is not None and (
        not isinstance(candidates_per_position, int | np.integer) or candidates_per_position < 1
    ):
        raise ValueError(
            f"candidates_per_position must be a positive int or None, got {candidates_per_position!r}"
        )
    vocab = model.config.vocab_size
    protected = np.asarray(sorted({int(t) for t in protected_tokens}), np.int64)
    label_ids = {t for g in ensemble.verbalizer.token_ids for t in g}
    if allowed_tokens is None:
        allowed = np.array(
            [t for t in range(vocab) if t not in label_ids and t != ensemble.pad_id], np.int64
        )
    else:
        allowed = np.asarray(sorted({int(t) for t in allowed_tokens}), np.int64)
        if allowed.size and (allowed.min() < 0 or allowed.max() >= vocab):
            raise ValueError(
                f"allowed_tokens must be token ids in [0, {vocab}), got range [{allowed.min()}, {allowed.max()}]"
            )
    allowed = allowed[~np.isin(allowed, protected)]
    if allowed.size == 0:
        raise ValueError("no substitute tokens: allowed_tokens minus protected_tokens is empty")

    ids = encoded.ids.copy()
    lengths = encoded.lengths
    editable = encoded.valid & ~np.isin(ids, protected)
    scores, _ = _scores_of(model, ensemble, ids, lengths, prompts, batch_size=batch_size)
    agg = scores.sum(axis=1)
    clean_correct = _correct(agg, labels)
    clean_margin = _margin(agg, labels)
    margin = clean_margin.copy()
    active = clean_correct & editable.any(axis=1)
    substitutions = np.zeros(n, np.int32)
    table = np.asarray(model.embed.embedding[...], np.float32)
    graphdef, state = nnx.split(model)
    class_ids, class_mask = ensemble.verbalizer.id_matrix()

    for _ in range(int(budget)):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        sub_ids, sub_len = ids[idx], lengths[idx]
        # Candidate (position, token) pairs per attacked input.
        if candidates_per_position is None or candidates_per_position >= allowed.size:
            per_pos = np.broadcast_to(allowed, (idx.size, width, allowed.size))
        else:
            rival = np.argmax(
                np.where(np.arange(k)[None, :] == labels[idx, None], -np.inf, agg[idx]), axis=-1
            )
            grads = _text_gradients(
                graphdef,
                state,
                ensemble,
                sub_ids,
                sub_len,
                prompts,
                labels[idx],
                rival,
                class_ids,
                class_mask,
                batch_size,
            )
            estimate = (
                grads @ table[allowed].T - np.sum(grads * table[sub_ids], axis=-1)[..., None]
            )  # [a, T, A]
            estimate = np.where(allowed[None, None, :] == sub_ids[..., None], np.inf, estimate)
            top = np.argsort(estimate, axis=-1, kind="stable")[..., :candidates_per_position]
            per_pos = allowed[top]
        cand_rows, cand_owner = [], []
        for a, i in enumerate(idx):
            for t in np.flatnonzero(editable[i]):
                for v in per_pos[a, t]:
                    if v == ids[i, t]:
                        continue
                    row = ids[i].copy()
                    row[t] = v
                    cand_rows.append(row)
                    cand_owner.append((i, t))
        if not cand_rows:
            break
        cand_ids = np.stack(cand_rows)
        owners = np.array([o[0] for o in cand_owner])
        cand_scores, _ = _scores_of(
            model, ensemble, cand_ids, lengths[owners], prompts, batch_size=batch_size
        )
        cand_agg = cand_scores.sum(axis=1)
        cand_margin = _margin(cand_agg, labels[owners])
        for i in idx:
            mine = np.flatnonzero(owners == i)
            best = mine[np.argmin(cand_margin[mine])]
            if (
                cand_margin[best] < margin[i]
                or not _correct(cand_agg[best : best + 1], labels[i : i + 1])[0]
            ):
                ids[i] = cand_ids[best]
                editable[i, cand_owner[best][1]] = False
                margin[i] = cand_margin[best]
                agg[i] = cand_agg[best]
                substitutions[i] += 1
            else:
                active[i] = False  # no substitution helps: a local optimum
        active &= _correct(agg, labels) & editable.any(axis=1)

    return AttackResult(
        ids,
        lengths,
        clean_correct,
        _correct(agg, labels),
        substitutions,
        clean_margin,
        _margin(agg, labels),
        target,
    )


def _text_gradients(
    graphdef,
    state,
    ensemble,
    text_ids,
    lengths,
    prompts,
    labels,
    rival,
    class_ids,
    class_mask,
    batch_size,
) -> np.ndarray:
    """``dM/de_t`` for every input token: ``[n, T, dim]``, summed over the attacked prompts."""
    tokens, mask, text_pos = ensemble.assemble(text_ids, lengths, prompts)
    p, n, length = tokens.shape
    rows_tokens = tokens.reshape(p * n, length)
    rows_mask = mask.reshape(p * n, length)
    true_rows = np.tile(labels, p).astype(np.int32)
    rival_rows = np.tile(rival, p).astype(np.int32)
    seq = _bucket(length)
    chunk = min(batch_size, _bucket(p * n))
    total = -(-(p * n) // chunk) * chunk
    pt = np.full((total, seq), ensemble.pad_id, np.int32)
    pm = np.zeros((total, seq), bool)
    pt[: p * n, seq - length :] = rows_tokens
    pm[: p * n, seq - length :] = rows_mask
    pt[p * n :], pm[p * n :] = pt[0], pm[0]
    weight = np.zeros(total, np.float32)
    weight[: p * n] = 1.0
    tr = np.zeros(total, np.int32)
    rr = np.zeros(total, np.int32)
    tr[: p * n], rr[: p * n] = true_rows, rival_rows
    grads = []
    for s in range(0, total, chunk):
        sl = slice(s, s + chunk)
        g = _margin_embedding_grad(
            graphdef,
            state,
            jnp.asarray(pt[sl]),
            jnp.asarray(pm[sl]),
            jnp.asarray(class_ids),
            jnp.asarray(class_mask),
            jnp.asarray(tr[sl]),
            jnp.asarray(rr[sl]),
            jnp.asarray(weight[sl]),
            score=ensemble.score,
        )
        grads.append(np.asarray(g))
    grads = np.concatenate(grads)[: p * n, seq - length :].reshape(p, n, length, -1)
    out = np.zeros((n, text_ids.shape[1], grads.shape[-1]), np.float32)
    for a in range(p):
        for i in range(n):
            valid = text_pos[a, i] >= 0
            out[i, valid] += grads[a, i, text_pos[a, i, valid]]
    return out


def robust_accuracy(
    model,
    ensemble: PromptEnsemble,
    texts: Sequence[str],
    labels: Int[np.ndarray, " n"],
    **attack_kwargs,
) -> dict[str, Any]:
    """Clean and robust accuracy of every single prompt (each attacked on its own) and of the
    ensemble (its soft vote attacked), with the same budget.

    Returns:
      ``{"clean": {"single": [m], "ensemble"}, "robust": {"single": [m], "ensemble"},
      "results": {"single": [AttackResult], "ensemble": AttackResult}}``.
    """
    singles = [
        attack(model, ensemble, texts, labels, target=j, **attack_kwargs)
        for j in range(ensemble.num_prompts)
    ]
    joint = attack(model, ensemble, texts, labels, target="ensemble", **attack_kwargs)
    return {
        "clean": {"single": [r.clean_accuracy for r in singles], "ensemble": joint.clean_accuracy},
        "robust": {
            "single": [r.robust_accuracy for r in singles],
            "ensemble": joint.robust_accuracy,
        },
        "results": {"single": singles, "ensemble": joint},
    }
