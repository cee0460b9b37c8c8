"""Masked negative log-likelihood and perplexity: one definition for the library.

With target weights :math:`m_{b,t}` (``loss_mask``, indexed by the *predicted* token, as in
:func:`jaxtrust.training.lm_loss`),

.. math::
   \\mathrm{NLL}_b = -\\sum_{t \\ge 1} m_{b,t} \\log p_\\theta(x_{b,t} \\mid x_{b,<t}), \\qquad
   \\mathrm{PPL} = \\exp\\Big(\\sum_b \\mathrm{NLL}_b \\Big/ \\sum_{b,t} m_{b,t}\\Big).

Example:
  >>> import numpy as np
  >>> from flax import nnx
  >>> from jaxtrust.models import CausalLM, LMConfig
  >>> model = CausalLM(LMConfig.tiny(vocab_size=13), rngs=nnx.Rngs(0))
  >>> pool = {"tokens": np.array([[1, 2, 3, 4]]), "attention_mask": np.ones((1, 4), bool),
  ...         "loss_mask": np.ones((1, 4), np.float32)}
  >>> 1.0 < perplexity(model, pool) < 100.0
  True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from jaxtrust.training.adapters import BATCH_KEYS
from jaxtrust.training.batches import pool_size
from jaxtrust.training.losses import token_logprobs
from jaxtrust.training.memo import memoize

__all__ = ["lm_metrics", "perplexity", "row_nll", "sequence_nll"]


def _nll_program(graphdef: nnx.GraphDef, hooks: Any):
    @jax.jit
    def nll(state, tokens, attention_mask, loss_mask):
        model = nnx.merge(graphdef, state)
        kwargs = {} if hooks is None else {"hooks": hooks}
        logits = model(tokens, attention_mask=attention_mask, **kwargs).logits
        picked, log_probs = token_logprobs(logits, tokens)
        weights = loss_mask[:, 1:].astype(jnp.float32)
        correct = (jnp.argmax(log_probs, axis=-1) == tokens[:, 1:]).astype(jnp.float32)
        return (
            -jnp.sum(picked * weights, axis=1),
            jnp.sum(weights, axis=1),
            jnp.sum(correct * weights, axis=1),
        )

    return nll


def sequence_nll(
    model: Any, batch: Mapping[str, Any], *, hooks: Any = None
) -> tuple[Float[Array, " batch"], Float[Array, " batch"]]:
    """Summed target-token NLL and target count of every row of ``batch``.

    Args:
      model: a causal LM (:class:`~jaxtrust.models.CausalLM`).
      batch: ``{"tokens", "attention_mask", "loss_mask"}`` of shape ``[batch, seq]``.
      hooks: optional hashable :class:`~jaxtrust.models.ModelHooks`.

    Returns:
      ``(nll [batch], num_targets [batch])`` in float32.
    """
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(f"batch lacks {missing}; expected keys {BATCH_KEYS}")
    nll, count, _ = _run(model, batch, hooks)
    return nll, count


def _run(model, batch, hooks):
    graphdef, state = nnx.split(model)
    program = memoize("eval.sequence_nll", (graphdef, hooks), lambda: _nll_program(graphdef, hooks))
    return program(
        state,
        jnp.asarray(batch["tokens"]),
        jnp.asarray(batch["attention_mask"]),
        jnp.asarray(batch["loss_mask"]),
    )


def row_nll(
    model: Any, pool: Mapping[str, Any], *, batch_size: int = 64, hooks: Any = None
) -> dict[str, np.ndarray]:
    """Per-row summed target NLL, target count and greedy hits over every row of ``pool``.

    The pool is scored in chunks of ``batch_size`` rows (the last chunk padded with copies, so
    every chunk has one shape and one compilation).

    Args:
      model: a causal LM.
      pool: ``{"tokens", "attention_mask", "loss_mask"}`` arrays ``[n, seq]``.
      batch_size: rows per forward.
      hooks: optional hashable :class:`~jaxtrust.models.ModelHooks`.

    Returns:
      ``{"nll", "num_targets", "correct"}``, each ``[n]`` float32 NumPy (``-nll`` is the
      sequence log-probability of the targets).
    """
    n = pool_size({k: pool[k] for k in BATCH_KEYS if k in pool})
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    host = {k: np.asarray(pool[k]) for k in BATCH_KEYS}
    size = min(batch_size, n)
    parts: list[tuple[np.ndarray, ...]] = []
    for lo in range(0, n, size):
        chunk = {k: v[lo : lo + size] for k, v in host.items()}
        real = len(chunk["tokens"])
        if real < size:
            chunk = {k: np.concatenate([v, v[:1].repeat(size - real, 0)]) for k, v in chunk.items()}
        out = _run(model, chunk, hooks)
        parts.append(tuple(np.asarray(x)[:real] for x in out))
    nll, num, hits = (np.concatenate(x) for x in zip(*parts, strict=True))
    return {"nll": nll, "num_targets": num, "correct": hits}


def lm_metrics(
    model: Any, pool: Mapping[str, Any], *, batch_size: int = 64, hooks: Any = None
) -> dict[str, float]:
    """Token-weighted LM metrics of ``model`` over every row of ``pool``.

    The pool is scored in chunks of ``batch_size`` rows (the last chunk padded with rows of
    zero weight, so every chunk has one shape).

    Args:
      model: a causal LM.
      pool: ``{"tokens", "attention_mask", "loss_mask"}`` arrays ``[n, seq]``.
      batch_size: rows per forward.
      hooks: optional hashable :class:`~jaxtrust.models.ModelHooks`.

    Returns:
      ``{"loss", "accuracy", "perplexity", "num_tokens"}``: mean target-token NLL, greedy
      next-token accuracy, ``exp(loss)``, and the total target weight.

    Raises:
      ValueError: the pool has no target token.
    """
    rows = row_nll(model, pool, batch_size=batch_size, hooks=hooks)
    total = float(rows["nll"].sum())
    count = float(rows["num_targets"].sum())
    correct = float(rows["correct"].sum())
    if count == 0:
        raise ValueError("pool has no target tokens (loss_mask is zero everywhere past t=0)")
    loss = total / count
    return {
        "loss": loss,
        "accuracy": correct / count,
        "perplexity": float(math.exp(loss)),
        "num_tokens": count,
    }


def perplexity(
    model: Any, pool: Mapping[str, Any], *, batch_size: int = 64, hooks: Any = None
) -> float:
    """Token-weighted perplexity of ``model`` over every row of ``pool``: the
    ``"perplexity"`` of :func:`lm_metrics` (same arguments)."""
    return lm_metrics(model, pool, batch_size=batch_size, hooks=hooks)["perplexity"]
