# ruff: noqa: F722
r"""Sequence-level membership signals of a causal LM: loss, zlib ratio, Min-K%, Min-K%++.

:func:`token_statistics` runs the model once over a pool and keeps, for every predicted
token :math:`x_t`, its log-probability :math:`\ell_t = \log p(x_t \mid x_{<t})` and the mean
and standard deviation of the log-probability under the model's own next-token distribution,
:math:`\mu_t = \sum_v p_v \log p_v`, :math:`\sigma_t^2 = \sum_v p_v (\log p_v)^2 - \mu_t^2`.
:func:`lm_membership_scores` turns them into per-sequence scores, each oriented so that
**larger means "more likely a member"**:

* ``loss``: :math:`\frac1T \sum_t \ell_t` (Yeom et al., CSF 2018);
* ``zlib``: :math:`\frac{\sum_t \ell_t}{|\mathrm{zlib}(x)|}`, the negated ratio of the
  sequence's log-perplexity to its zlib-compressed length in bytes (Carlini et al., *Extracting
  Training Data from Large Language Models*, USENIX Security 2021);
* ``min_k``: the mean of the lowest :math:`k` fraction of the :math:`\ell_t` (Shi et al.,
  *Detecting Pretraining Data from Large Language Models*, ICLR 2024);
* ``min_k_pp``: the same over :math:`(\ell_t - \mu_t) / \sigma_t` (Zhang et al., *Min-K%++:
  Improved Baseline for Detecting Pre-Training Data from Large Language Models*, 2024).

:func:`lm_features` stacks them (several :math:`k`) into the feature matrix that Dataset
Inference (Maini et al., 2024) combines linearly.

Example:
  >>> import numpy as np
  >>> stats = TokenStats(np.log(np.array([[0.5, 0.1]])), np.zeros((1, 2)), np.ones((1, 2)),
  ...                    np.ones((1, 2), bool))
  >>> round(float(lm_membership_scores(stats, "min_k", k=0.5)[0]), 4)
  -2.3026
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Float

from jaxtrust.training.adapters import BATCH_KEYS
from jaxtrust.training.batches import pool_size
from jaxtrust.training.losses import token_logprobs
from jaxtrust.training.memo import memoize

__all__ = ["LM_SCORES", "TokenStats", "lm_features", "lm_membership_scores", "token_statistics"]

LM_SCORES = ("loss", "zlib", "min_k", "min_k_pp")


class TokenStats(NamedTuple):
    """Per-token statistics of a pool under one model (NumPy, ``[n, seq - 1]`` each).

    Attributes:
      logp: :math:`\\ell_t`, log-probability of the target token at each position.
      mu: expected log-probability under the model's next-token distribution.
      sigma: its standard deviation.
      mask: True where the position is a scored target (the pool's ``loss_mask[:, 1:]``).
    """

    logp: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray


def _stats_program(graphdef):
    def build():
        @jax.jit
        def run(state, tokens, attention_mask):
            model = nnx.merge(graphdef, state)
            logits = model(tokens, attention_mask=attention_mask).logits
            picked, log_probs = token_logprobs(logits, tokens)
            p = jnp.exp(log_probs)
            mu = jnp.sum(p * log_probs, -1)
            var = jnp.sum(p * jnp.square(log_probs), -1) - jnp.square(mu)
            return picked, mu, jnp.sqrt(jnp.maximum(var, 1e-12))

        return run

    return memoize("privacy.mia.lm_stats", graphdef, build)


def token_statistics(
    model: nnx.Module, pool: Mapping[str, Any], *, batch_size: int = 64
) -> TokenStats:
    """Run ``model`` over every row of ``pool`` and keep the per-token statistics.

    Args:
      model: a causal LM (:class:`~jaxtrust.models.CausalLM`).
      pool: ``{"tokens", "attention_mask", "loss_mask"}`` arrays ``[n, seq]``; the loss mask
        marks the scored tokens (e.g. the whole passage, not its padding).
      batch_size: rows per forward (the last chunk is padded with copies: one compilation).

    Returns:
      :class:`TokenStats`.

    Raises:
      TypeError: ``model`` is not an NNX module. KeyError: a pool key is missing.
      ValueError: bad ``batch_size`` or an empty pool.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    missing = [k for k in BATCH_KEYS if k not in pool]
    if missing:
        raise KeyError(f"pool lacks {missing}; expected keys {BATCH_KEYS}")
    n = pool_size({k: pool[k] for k in BATCH_KEYS})
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    graphdef, state = nnx.split(model)
    run = _stats_program(graphdef)
    tokens = np.asarray(pool["tokens"], np.int32)
    attn = np.asarray(pool["attention_mask"], bool)
    outs: list[list[np.ndarray]] = [[], [], []]
    for lo in range(0, n, batch_size):
        t, a = tokens[lo : lo + batch_size], attn[lo : lo + batch_size]
        real = t.shape[0]
        if real < batch_size:
            t = np.concatenate([t, np.repeat(t[-1:], batch_size - real, 0)])
            a = np.concatenate([a, np.repeat(a[-1:], batch_size - real, 0)])
        for acc, value in zip(outs, run(state, jnp.asarray(t), jnp.asarray(a)), strict=True):
            acc.append(np.asarray(value)[:real])
    logp, mu, sigma = (np.concatenate(o).astype(np.float64) for o in outs)
    mask = np.asarray(pool["loss_mask"])[:, 1:] > 0
    return TokenStats(logp, mu, sigma, mask)


def _lowest_fraction_mean(values: np.ndarray, mask: np.ndarray, k: float) -> np.ndarray:
    out = np.empty(values.shape[0])
    for i, (v, m) in enumerate(zip(values, mask, strict=True)):
        kept = np.sort(v[m])
        out[i] = kept[: max(1, int(np.ceil(k * kept.size)))].mean()
    return out


def lm_membership_scores(
    stats: TokenStats,
    kind: str = "loss",
    *,
    k: float = 0.2,
    texts: Sequence[str] | None = None,
) -> Float[np.ndarray, " n"]:
    """Per-sequence membership score of kind ``kind`` (larger = more likely a member).

    Args:
      stats: from :func:`token_statistics`.
      kind: one of :data:`LM_SCORES`.
      k: the fraction of lowest-scoring tokens for ``min_k`` / ``min_k_pp`` (in (0, 1]).
      texts: the sequences' texts, required by ``zlib`` (their UTF-8 zlib length).

    Returns:
      ``[n]`` float64 scores.

    Raises:
      KeyError: unknown ``kind``. ValueError: ``k`` outside (0, 1], ``texts`` missing or of
      the wrong length, or a row without scored tokens.
    """
    if kind not in LM_SCORES:
        raise KeyError(f"unknown LM score kind {kind!r}; known: {LM_SCORES}")
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must be in (0, 1], got {k!r}")
    mask = np.asarray(stats.mask, bool)
    counts = mask.sum(1)
    if np.any(counts == 0):
        raise ValueError(f"rows {np.flatnonzero(counts == 0)[:5].tolist()} have no scored tokens")
    logp = np.asarray(stats.logp, np.float64)
    if kind == "loss":
        return np.where(mask, logp, 0.0).sum(1) / counts
    if kind == "zlib":
        if texts is None or len(texts) != logp.shape[0]:
            got = None if texts is None else len(texts)
            raise ValueError(f"zlib needs texts, one per row ({logp.shape[0]}), got {got}")
        size = np.array([len(zlib.compress(t.encode("utf-8"))) for t in texts], np.float64)
        return np.where(mask, logp, 0.0).sum(1) / size
    if kind == "min_k":
        return _lowest_fraction_mean(logp, mask, k)
    z = (logp - np.asarray(stats.mu)) / np.asarray(stats.sigma)
    return _lowest_fraction_mean(z, mask, k)


def lm_features(
    stats: TokenStats,
    texts: Sequence[str],
    *,
    ks: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
) -> Float[np.ndarray, "n features"]:
    """The Dataset-Inference feature matrix: loss, zlib, then Min-K% and Min-K%++ at each k.

    Args:
      stats: from :func:`token_statistics`.
      texts: the rows' texts (for ``zlib``).
      ks: fractions for Min-K% / Min-K%++.

    Returns:
      ``[n, 2 + 2 * len(ks)]`` float64, each column oriented "larger = member".

    Reference: Maini, Jia, Papernot, Dziedzic, *LLM Dataset Inference: Did you train on my
    dataset?* (NeurIPS 2024).
    """
    cols = [lm_membership_scores(stats, "loss"), lm_membership_scores(stats, "zlib", texts=texts)]
    for k in ks:
        cols.append(lm_membership_scores(stats, "min_k", k=k))
    for k in ks:
        cols.append(lm_membership_scores(stats, "min_k_pp", k=k))
    return np.stack(cols, axis=1)
