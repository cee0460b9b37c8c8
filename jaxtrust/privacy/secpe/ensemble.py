"""Prompt ensembling over any jaxtrust causal LM: per-prompt class scores, the soft vote, argmax.

SecPE (Zhang, Chen, Feng, Lou, Song, Liu, Yang: *SecPE: Secure Prompt Ensembling for Private and
Robust Large Language Models*, ECAI 2024, arXiv:2502.00847) classifies an input ``x`` with ``m``
prompt templates and a verbalizer (:mod:`jaxtrust.privacy.secpe.prompts`). Prompt ``j`` gives a
class-score vector ``s_j(x) in R^k`` read off the LM's next-token distribution at the answer
position; the ensemble is the soft vote

    y*(x) = sum_j s_j(x),        prediction = argmax_c y*(x)_c   (ties: lowest index, like numpy)

and only the sum and the argmax run under FHE (:mod:`jaxtrust.fhe`, in its own environment). This
module computes the plaintext side in JAX: the per-prompt scores of every (prompt, input) pair in
one batched, jitted forward pass, the soft vote and argmax, and the final hidden state at the
answer position (the input of the encrypted verbalizer).

Class scores (``score=``; which scores SecPE sums is not stated, its figure shows a plain sum):

* ``"logprob"`` (default): ``s_c = log sum_{w in words(c)} p(w | prompt)``, the log-probability
  of the class under the LM's full next-token distribution. Prompts are then on one scale, and
  the soft vote is a product of experts; this is why it is the default.
* ``"logit"``: ``s_c = mean_{w in words(c)} z_w``, the mean raw logit of the class's words. It is
  *linear* in the final (normed) hidden state ``h``: ``s = W h`` with ``W_c = mean_w E_w`` (the
  tied embedding rows or the LM-head columns; :func:`verbalizer_weights`), so the whole
  verbalizer can run as one encrypted linear layer.

Example::

    ens = PromptEnsemble.for_word_tokenizer(tok, templates, label_words)
    scores = prompt_scores(model, ens, ["the movie was very good"])   # [1, m, k]
    ensemble_argmax(scores)                                             # array([0])
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Float, Int

from jaxtrust.models.hooks import ModelHooks
from jaxtrust.privacy.secpe.prompts import PromptEnsemble

__all__ = [
    "ensemble_argmax",
    "prompt_predictions",
    "prompt_scores",
    "soft_vote",
    "verbalizer_weights",
]


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


def pad_rows(
    tokens: np.ndarray, mask: np.ndarray, pad_id: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Left-pad ``[R, L]`` rows to a bucketed width and a whole number of fixed-size chunks.

    Rows after the real ones are copies of row 0 (no all-padding rows, whose attention would be
    empty), so every chunk has one shape and the set compiles once.

    Returns:
      ``(tokens [T, S], mask [T, S], chunk)`` with ``T`` a multiple of ``chunk`` and ``S >= L``.
    """
    rows, length = tokens.shape
    seq = _bucket(length)
    chunk = min(batch_size, _bucket(rows))
    total = -(-rows // chunk) * chunk
    padded_tokens = np.full((total, seq), pad_id, np.int32)
    padded_mask = np.zeros((total, seq), bool)
    padded_tokens[:rows, seq - length :] = tokens
    padded_mask[:rows, seq - length :] = mask
    padded_tokens[rows:], padded_mask[rows:] = padded_tokens[0], padded_mask[0]
    return padded_tokens, padded_mask, chunk


def check_model(model, ensemble: PromptEnsemble) -> None:
    """TypeError unless ``model`` is a jaxtrust causal LM and ``ensemble`` a PromptEnsemble;
    ValueError when a label token lies outside the model's vocabulary."""
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
    rows = tokens.shape[0]
    padded_tokens, padded_mask, chunk = pad_rows(tokens, mask, ensemble.pad_id, batch_size)
    total = padded_tokens.shape[0]
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


def scores_of(
    model,
    ensemble: PromptEnsemble,
    text_ids: np.ndarray,
    lengths: np.ndarray,
    prompts: Sequence[int],
    *,
    batch_size: int,
    with_hidden: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores ``[n, p, k]`` (and hidden states ``[n, p, dim]``) of the texts under the prompts
    with indices ``prompts``."""
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
    check_model(model, ensemble)
    encoded = ensemble.encode_texts(texts)
    scores, hidden = scores_of(
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
    ``s_c = W_c^T h`` with ``W_c = mean_{w in words(c)} E_w`` (tied embedding rows, or LM-head
    columns). Exact for ``score="logit"``; this is the layer the encrypted verbalizer computes."""
    check_model(model, ensemble)
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


def check_labels(labels, n: int, k: int) -> np.ndarray:
    """ValueError unless ``labels`` is an int array [n] of class indices in ``[0, k)``."""
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
