# ruff: noqa: F722  (jaxtyping shape strings are not forward references)
r"""Direct Preference Optimisation as a fine-tuning recipe: pair pools, cached reference
log-probabilities, the DPO (+ optional SFT) loss for any model callable, one round of training.

A *preference pool* holds, per row, a winner and a loser response to the same prompt, each in
the prompt/response layout of :meth:`jaxtrust.data.Batch.as_dict` (``{prefix}_tokens``,
``{prefix}_attention_mask``, ``{prefix}_loss_mask`` with ``prefix`` in ``chosen`` /
``rejected``), plus any *shared* conditioning arrays (``images``, ``features``, ...) that both
responses see. :func:`preference_pool` builds and checks one.

The reference model's summed log-probabilities :math:`\log\pi_{ref}(y \mid x)` are computed
once per round (:func:`reference_logprobs`, a compiled chunked forward) and stored in the pool
(``ref_chosen_logps``, ``ref_rejected_logps``), so a training step runs only the policy: the
policy and reference forwards are not both paid at every step, and the reference need not stay
in memory. Iterated DPO (SHAPE, SeVa, self-rewarding loops) passes the previous round's policy
as the next round's reference.

The loss (:func:`make_dpo_loss`) is, with :math:`h = [\log\pi(y_w) - \log\pi_{ref}(y_w)] -
[\log\pi(y_l) - \log\pi_{ref}(y_l)]`,

.. math:: \mathcal{L} = -\log\sigma(\beta h) + \alpha \,
          \mathrm{NLL}_\pi(y_w \mid x),

the second term (token-averaged negative log-likelihood of the winner, LLaVA-NeXT's
``dpo_alpha`` / RPO) switched on by ``sft_weight`` :math:`\alpha > 0`.

Any model works: a ``logits_fn(model, batch) -> [b, s, V]`` maps a batch of one side
(``tokens``, ``attention_mask``, ``loss_mask`` plus the shared arrays) to next-token logits.
The default :func:`lm_logits` calls a causal LM; a vision-language model passes the image
features and its prefix mask in its own ``logits_fn``.

Example:
  >>> import numpy as np, optax
  >>> from flax import nnx
  >>> from jaxtrust.models import CausalLM, LMConfig
  >>> model = CausalLM(LMConfig.tiny(vocab_size=11), rngs=nnx.Rngs(0))
  >>> side = lambda t: {"tokens": np.array(t), "attention_mask": np.ones((2, 4), bool),
  ...                   "loss_mask": np.array([[0, 0, 1, 1]] * 2, np.float32)}
  >>> pool = preference_pool(side([[1, 2, 3, 4]] * 2), side([[1, 2, 5, 6]] * 2))
  >>> out = dpo_finetune(model, pool, optax.adam(1e-2), steps=3, batch_size=2, seed=0)
  >>> out.history[-1]["reward_margin"] > 0
  True

References:
  Rafailov et al., *Direct Preference Optimization: Your Language Model is Secretly a Reward
  Model*, NeurIPS 2023. Pang et al., *Iterative Reasoning Preference Optimization* (RPO: DPO
  plus NLL on the winner), 2024.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Float

from jaxtrust.training.adapters import BATCH_KEYS, check_batch
from jaxtrust.training.finetune import finetune
from jaxtrust.training.losses import dpo_loss, lm_loss, sequence_logprobs
from jaxtrust.training.memo import memoize

__all__ = [
    "DPOResult",
    "PAIR_KEYS",
    "REF_KEYS",
    "dpo_finetune",
    "lm_logits",
    "make_dpo_loss",
    "pair_logprobs",
    "preference_pool",
    "reference_logprobs",
]

SIDES = ("chosen", "rejected")
PAIR_KEYS: tuple[str, ...] = tuple(f"{s}_{k}" for s in SIDES for k in BATCH_KEYS)
REF_KEYS: tuple[str, ...] = ("ref_chosen_logps", "ref_rejected_logps")


def lm_logits(model: Any, batch: Mapping[str, Any]) -> Float[Array, "b s vocab"]:
    """Next-token logits of a causal LM on ``batch["tokens"]`` (the default ``logits_fn``).

    Args:
      model: called as ``model(tokens, attention_mask=...)``, returning ``.logits``.
      batch: ``{"tokens", "attention_mask", ...}``.

    Returns:
      ``[b, s, V]`` logits.
    """
    tokens = jnp.asarray(batch["tokens"])
    return model(tokens, attention_mask=jnp.asarray(batch["attention_mask"])).logits


def preference_pool(
    chosen: Mapping[str, Any],
    rejected: Mapping[str, Any],
    shared: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """One pool of preference pairs from a winner batch, a loser batch and shared inputs.

    Args:
      chosen: ``{"tokens", "attention_mask", "loss_mask"}`` ``[n, s]`` of the winners.
      rejected: the same for the losers (same ``n`` and ``s``; row ``i`` answers the prompt of
        ``chosen``'s row ``i``).
      shared: arrays with ``n`` rows both sides condition on (e.g. ``{"features": ...}``).

    Returns:
      ``{"chosen_tokens", ..., "rejected_loss_mask", **shared}`` as NumPy arrays.

    Raises:
      TypeError / KeyError: a side is not a batch mapping. ValueError: row counts or sequence
      lengths differ, a side is empty, or a shared key clashes with a pair key.

    Example:
      >>> side = {"tokens": np.ones((2, 3), int), "attention_mask": np.ones((2, 3), bool),
      ...         "loss_mask": np.ones((2, 3))}
      >>> sorted(preference_pool(side, side))[:2]
      ['chosen_attention_mask', 'chosen_loss_mask']
    """
    check_batch(chosen, "chosen")
    check_batch(rejected, "rejected")
    pool: dict[str, np.ndarray] = {}
    rows = None
    for side, batch in zip(SIDES, (chosen, rejected), strict=True):
        arrays = {k: np.asarray(batch[k]) for k in BATCH_KEYS}
        shapes = {k: v.shape for k, v in arrays.items()}
        if len({s for s in shapes.values()}) != 1 or arrays["tokens"].ndim != 2:
            raise ValueError(f"{side} arrays must all have shape [batch, seq], got {shapes}")
        n, s = arrays["tokens"].shape
        if n == 0:
            raise ValueError(f"{side} has no rows")
        if rows is None:
            rows = (n, s)
        elif (n, s) != rows:
            raise ValueError(
                f"chosen has {rows[0]} rows of length {rows[1]} but rejected has {n} rows of "
                f"length {s}; winners and losers must pair row by row at one sequence length"
            )
        pool.update({f"{side}_{k}": v for k, v in arrays.items()})
    for k, v in (shared or {}).items():
        if k in pool or k in REF_KEYS:
            raise ValueError(f"shared key {k!r} clashes with a pair key; rename it")
        v = np.asarray(v)
        if v.ndim == 0 or v.shape[0] != rows[0]:
            raise ValueError(f"shared[{k!r}] must have {rows[0]} rows, got shape {v.shape}")
        pool[k] = v
    return pool


def _check_pairs(batch: Mapping[str, Any]) -> None:
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must be a mapping of pair arrays, got {type(batch).__name__}")
    missing = [k for k in PAIR_KEYS if k not in batch]
    if missing:
        raise KeyError(f"batch lacks {missing}; build it with preference_pool(chosen, rejected)")


def _both_sides(batch: Mapping[str, Any]) -> dict[str, Any]:
    """Chosen rows then rejected rows, shared arrays repeated, as one batch of ``2n`` rows."""
    both = {k: jnp.concatenate([jnp.asarray(batch[f"{s}_{k}"]) for s in SIDES]) for k in BATCH_KEYS}
    for k, v in batch.items():
        if k not in PAIR_KEYS and k not in REF_KEYS:
            v = jnp.asarray(v)
            both[k] = jnp.concatenate([v, v])
    return both


def pair_logprobs(
    model: Any,
    batch: Mapping[str, Any],
    *,
    logits_fn: Callable[[Any, Mapping[str, Any]], Array] = lm_logits,
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    r"""Summed response log-probabilities :math:`\log\pi(y_w \mid x)`, :math:`\log\pi(y_l \mid
    x)` of every pair, in one forward over ``2n`` rows.

    Args:
      model: any model ``logits_fn`` understands.
      batch: a :func:`preference_pool` batch.
      logits_fn: ``logits_fn(model, side_batch) -> [rows, s, V]``.

    Returns:
      ``(chosen [n], rejected [n])`` float32.
    """
    _check_pairs(batch)
    both = _both_sides(batch)
    logits = logits_fn(model, both)
    logps = sequence_logprobs(logits, both["tokens"], both["loss_mask"])
    n = logps.shape[0] // 2
    return logps[:n], logps[n:]


def reference_logprobs(
    reference: nnx.Module,
    pool: Mapping[str, Any],
    *,
    logits_fn: Callable[[Any, Mapping[str, Any]], Array] = lm_logits,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """The reference model's log-probabilities of every pair, computed once.

    Rows are processed in chunks of one fixed size (the last padded by repetition), so a whole
    pool compiles one program; the program is memoised per ``(graph, logits_fn)``.

    Args:
      reference: the frozen reference (an NNX module).
      pool: a :func:`preference_pool` pool.
      logits_fn: as in :func:`pair_logprobs`.
      batch_size: rows per chunk.

    Returns:
      ``{"ref_chosen_logps": [n], "ref_rejected_logps": [n]}`` float32 NumPy arrays, to be
      merged into the pool.
    """
    if not isinstance(reference, nnx.Module):
        raise TypeError(f"reference must be a flax.nnx.Module, got {type(reference).__name__}")
    _check_pairs(pool)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    graphdef, state = nnx.split(reference)

    def build():
        @jax.jit
        def run(state, chunk):
            return pair_logprobs(nnx.merge(graphdef, state), chunk, logits_fn=logits_fn)

        return run

    run = memoize("dpo.reference", (graphdef, logits_fn), build)
    keys = [k for k in pool if k not in REF_KEYS]
    n = int(np.shape(pool["chosen_tokens"])[0])
    rows = min(batch_size, n)
    chosen, rejected = [], []
    for lo in range(0, n, rows):
        idx = np.arange(lo, min(lo + rows, n))
        full = np.concatenate([idx, np.repeat(idx[-1:], rows - len(idx))])
        c, r = run(state, {k: np.asarray(pool[k])[full] for k in keys})
        chosen.append(np.asarray(c)[: len(idx)])
        rejected.append(np.asarray(r)[: len(idx)])
    return {
        "ref_chosen_logps": np.concatenate(chosen).astype(np.float32),
        "ref_rejected_logps": np.concatenate(rejected).astype(np.float32),
    }


def make_dpo_loss(
    *,
    beta: float = 0.1,
    sft_weight: float = 0.0,
    label_smoothing: float = 0.0,
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid",
    logits_fn: Callable[[Any, Mapping[str, Any]], Array] = lm_logits,
) -> Callable:
    r"""``loss_fn(model, batch, key) -> (loss, aux)``: DPO against the cached reference
    log-probabilities in ``batch``, plus ``sft_weight`` times the winner's token-averaged NLL.

    Args:
      beta: DPO inverse temperature (> 0).
      sft_weight: weight :math:`\alpha \ge 0` of the NLL term on the winner (0: pure DPO).
      label_smoothing, loss_type: as in :func:`jaxtrust.training.dpo_loss`.
      logits_fn: as in :func:`pair_logprobs`.

    Returns:
      The loss function for :func:`jaxtrust.training.finetune`; its aux holds
      :func:`~jaxtrust.training.dpo_loss`'s metrics, ``dpo_loss``, ``sft_loss`` and the mean
      policy log-probabilities ``logp_chosen`` / ``logp_rejected``.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    if not sft_weight >= 0:
        raise ValueError(f"sft_weight must be >= 0, got {sft_weight!r}")

    def loss_fn(model, batch, key=None):
        del key
        _check_pairs(batch)
        missing = [k for k in REF_KEYS if k not in batch]
        if missing:
            raise KeyError(
                f"batch lacks {missing}: merge reference_logprobs(reference, pool) into the pool"
            )
        both = _both_sides(batch)
        logits = logits_fn(model, both)
        logps = sequence_logprobs(logits, both["tokens"], both["loss_mask"])
        n = logps.shape[0] // 2
        dpo, metrics = dpo_loss(
            logps[:n],
            logps[n:],
            jnp.asarray(batch["ref_chosen_logps"], jnp.float32),
            jnp.asarray(batch["ref_rejected_logps"], jnp.float32),
            beta=beta,
            label_smoothing=label_smoothing,
            loss_type=loss_type,
        )
        sft, _ = lm_loss(logits[:n], both["tokens"][:n], both["loss_mask"][:n])
        loss = dpo + sft_weight * sft if sft_weight else dpo
        aux = {
            **metrics,
            "loss": loss,
            "dpo_loss": dpo,
            "sft_loss": sft,
            "logp_chosen": jnp.mean(logps[:n]),
            "logp_rejected": jnp.mean(logps[n:]),
        }
        return loss, aux

    return loss_fn


@dataclasses.dataclass(frozen=True)
class DPOResult:
    """What :func:`dpo_finetune` returns.

    Attributes:
      model: the trained policy (a new module).
      history: per-step records (``loss``, ``reward_margin``, ``reward_accuracy``, ...).
      seconds: wall time of the training loop.
      reference_seconds: wall time of the one reference pass.
      reference: the cached ``{"ref_chosen_logps", "ref_rejected_logps"}``.
    """

    model: Any
    history: list[dict[str, float]]
    seconds: float
    reference_seconds: float
    reference: dict[str, np.ndarray]


def dpo_finetune(
    model: nnx.Module,
    pool: Mapping[str, Any],
    tx: optax.GradientTransformation,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    reference: nnx.Module | None = None,
    beta: float = 0.1,
    sft_weight: float = 0.0,
    label_smoothing: float = 0.0,
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid",
    logits_fn: Callable[[Any, Mapping[str, Any]], Array] = lm_logits,
    reference_batch_size: int = 64,
    step_key: Hashable | None = None,
    eval_fn: Callable[[nnx.Module], Mapping[str, float]] | None = None,
    eval_every: int = 100,
    log_fn: Callable[[int, dict[str, float]], None] | None = None,
) -> DPOResult:
    """One round of DPO: cache the reference log-probabilities, then fine-tune a copy of
    ``model`` on the pool with :func:`make_dpo_loss` through :func:`finetune`.

    Args:
      model: the policy's starting point (not modified).
      pool: a :func:`preference_pool` pool (``ref_*`` keys, if present, are recomputed).
      tx: the optax transformation.
      steps, batch_size, seed: as in :func:`finetune`.
      reference: the frozen reference; default ``model`` itself (the policy at the start of
        the round, i.e. the previous round in an iterated scheme).
      beta, sft_weight, label_smoothing, loss_type, logits_fn: the loss (:func:`make_dpo_loss`).
      reference_batch_size: rows per chunk of the reference pass.
      step_key: name of the recipe (``tx``'s hyperparameters); with it the compiled step is
        memoised together with the loss settings.
      eval_fn, eval_every, log_fn: as in :func:`finetune`.

    Returns:
      A :class:`DPOResult`.
    """
    _check_pairs(pool)
    start = time.perf_counter()
    ref = reference_logprobs(
        model if reference is None else reference,
        pool,
        logits_fn=logits_fn,
        batch_size=reference_batch_size,
    )
    ref_seconds = time.perf_counter() - start
    loss_fn = make_dpo_loss(
        beta=beta,
        sft_weight=sft_weight,
        label_smoothing=label_smoothing,
        loss_type=loss_type,
        logits_fn=logits_fn,
    )
    key = None
    if step_key is not None:
        key = ("dpo", beta, sft_weight, label_smoothing, loss_type, logits_fn, step_key)
    full = {**{k: v for k, v in pool.items() if k not in REF_KEYS}, **ref}
    result = finetune(
        model,
        full,
        tx,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        loss_fn=loss_fn,
        step_key=key,
        eval_fn=eval_fn,
        eval_every=eval_every,
        log_fn=log_fn,
    )
    return DPOResult(result.model, result.history, result.seconds, ref_seconds, ref)
