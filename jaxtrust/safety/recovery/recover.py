r"""One-shot safety recovery: re-align a fine-tuned model with a single refusal example.

The one-shot safety-patching paper fine-tunes the attacked model :math:`\theta^*` on ONE
(harmful prompt, refusal) pair for a few epochs and reports that refusal comes back within a few
steps at little utility cost. Here the example is a fixed-shape batch of one row (``tokens``,
``attention_mask``, ``loss_mask`` with the prompt masked out), trained with Adam for ``steps``
full-batch steps as one compiled :func:`jaxtrust.training.scan_optimize`.

Choosing the example from a pool (``select=``):

* ``"bilevel"`` — the paper's two-level rule, solved exactly for a single example: every
  candidate :math:`i` is patched (the inner problem, from :math:`\theta^*`) and scored by the
  upper objective

  .. math:: J(i) = \mathbb E_{x \in D_\text{harm}} \mathrm{KL}(\pi_{\theta_0} \,\|\,
            \pi_{\theta_i}) + \mathbb E_{x \in D_\text{task}} \mathrm{KL}(\pi_{\theta^*}
            \,\|\, \pi_{\theta_i}),

  the candidate that best restores the aligned model :math:`\theta_0` on harmful prompts while
  changing the attacked model least on task data wins. The KLs are token-level, teacher-forced
  on the given batches' target tokens (the paper relaxes the selection to continuous weights
  and solves it first-order; with one example out of a few dozen, exhaustive evaluation is
  exact and cheap). Needs ``aligned``, ``harmful`` and ``task``.
* ``"max_loss"`` — the candidate with the largest refusal loss on the attacked model (the
  refusal the attack erased most); ``"min_loss"`` — the one already closest; ``"first"``.

Reference: *Safety at One Shot: Patching Fine-Tuned LLMs with a Single Instance* (2025).

Example::

    from jaxtrust.safety.recovery import recover
    pool = world.batch(world.refusal_examples(world.requests(32, category="forbidden")))
    result = recover(attacked, pool, steps=10, learning_rate=3e-4, select="bilevel",
                     aligned=aligned, harmful=harmful_batch, task=task_batch)
    result.model, result.chosen
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxtrust.training import BATCH_KEYS, lm_batch_loss, memoize, scan_optimize

__all__ = ["SELECTIONS", "RecoveryResult", "recover", "token_kl"]

SELECTIONS = ("bilevel", "max_loss", "min_loss", "first")


@dataclasses.dataclass(frozen=True)
class RecoveryResult:
    """What :func:`recover` returns.

    Attributes:
      model: the recovered model (a new module; the input is untouched).
      losses: refusal loss before each step (``steps`` values) and after the last one.
      steps_to_converge: first step count after which the loss is below ``tol`` (``None`` if
        never).
      chosen: index of the example used within the pool (0 without a pool).
      pool_losses: the candidates' refusal losses on the attacked model (with a pool).
      pool_scores: the candidates' upper-level objective :math:`J(i)` (``select="bilevel"``).
    """

    model: Any
    losses: list[float]
    steps_to_converge: int | None
    chosen: int
    pool_losses: list[float] | None = None
    pool_scores: list[float] | None = None


def _as_batch(batch: Any, name: str) -> dict[str, jax.Array]:
    if hasattr(batch, "as_dict"):
        batch = batch.as_dict()
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"{name} must be a mapping with keys {BATCH_KEYS} or a jaxtrust Batch, "
            f"got {type(batch).__name__}"
        )
    missing = set(BATCH_KEYS) - set(batch)
    if missing:
        raise KeyError(
            f"{name} lacks {sorted(missing)}; expected tokens, attention_mask, loss_mask "
            "of shape [n, seq]"
        )
    arrays = {k: jnp.asarray(batch[k]) for k in BATCH_KEYS}
    shape = arrays["tokens"].shape
    if len(shape) != 2 or shape[0] < 1:
        raise ValueError(f"{name}['tokens'] must have shape [n >= 1, seq], got {shape}")
    for k, v in arrays.items():
        if v.shape != shape:
            raise ValueError(f"{name}[{k!r}] must have shape {shape}, got {v.shape}")
    if not bool(jnp.all(jnp.sum(arrays["loss_mask"], axis=1) > 0)):
        raise ValueError(f"{name}: every row needs at least one supervised (loss_mask) token")
    return arrays


def token_kl(reference: nnx.Module, model: nnx.Module, batch: Mapping[str, jax.Array]) -> jax.Array:
    r"""Mean over target tokens of :math:`\mathrm{KL}(\pi_\text{ref}(\cdot \mid x_{<t}) \,\|\,
    \pi_\text{model}(\cdot \mid x_{<t}))`, teacher-forced on ``batch``.

    Args:
      reference: the model whose next-token distributions are the target.
      model: the model compared with it.
      batch: ``{"tokens", "attention_mask", "loss_mask"}``; positions predicting a target token
        (``loss_mask[:, 1:]``) are averaged.

    Returns:
      a float32 scalar.
    """
    tokens, mask = batch["tokens"], batch["attention_mask"]
    ref = jax.nn.log_softmax(reference(tokens, attention_mask=mask).logits[:, :-1], axis=-1)
    cur = jax.nn.log_softmax(model(tokens, attention_mask=mask).logits[:, :-1], axis=-1)
    per = jnp.sum(jnp.exp(ref) * (ref - cur), axis=-1)
    w = batch["loss_mask"][:, 1:].astype(jnp.float32)
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)


def _patch_program(graphdef, steps: int, learning_rate: float):
    """``patch(params, rest, example) -> (params, losses)``: the inner problem, compiled once."""
    tx = optax.adam(learning_rate)

    def loss(p, rest, example):
        return lm_batch_loss(nnx.merge(graphdef, p, rest), example)[0]

    return jax.jit(lambda p, rest, example: scan_optimize(loss, p, tx, steps, rest, example))


def _bilevel_scores(graphdef, patch, params, rest, pool, aligned, harmful, task) -> list[float]:
    """Upper-level objective of every candidate, one candidate at a time under ``lax.map``
    (memory stays one patched copy, whatever the pool size)."""
    aligned_graph, aligned_state = nnx.split(aligned)

    @jax.jit
    def scores(params, rest, aligned_state, pool, harmful, task):
        attacked = nnx.merge(graphdef, params, rest)
        reference = nnx.merge(aligned_graph, aligned_state)

        def score(example):
            example = jax.tree.map(lambda x: x[None], example)
            patched, _ = patch(params, rest, example)
            candidate = nnx.merge(graphdef, patched, rest)
            return token_kl(reference, candidate, harmful) + token_kl(attacked, candidate, task)

        return jax.lax.map(score, pool)

    out = scores(params, rest, aligned_state, pool, harmful, task)
    return [float(x) for x in np.asarray(out)]


def recover(
    model: nnx.Module,
    safety_example: Any,
    *,
    steps: int = 10,
    learning_rate: float = 3e-4,
    select: str = "max_loss",
    tol: float = 0.05,
    aligned: nnx.Module | None = None,
    harmful: Any = None,
    task: Any = None,
) -> RecoveryResult:
    r"""Fine-tune ``model`` on one refusal example (chosen from a pool when several are given).

    .. math:: \theta_{t+1} = \theta_t - \eta\,\mathrm{Adam}(\nabla_\theta
              \mathcal{L}_{\text{refusal}}(\theta_t; x_s, y_s)), \quad t < \text{steps}

    Args:
      model: the attacked :class:`~jaxtrust.models.CausalLM` (not modified).
      safety_example: a :class:`~jaxtrust.data.Batch` or ``{"tokens", "attention_mask",
        "loss_mask"}`` arrays ``[n, seq]``; with ``n > 1`` they are a pool and one row is
        chosen by ``select``.
      steps: full-batch steps on the single example (>= 1); "a few epochs" in the paper.
      learning_rate: Adam step size.
      select: one of :data:`SELECTIONS` (see the module docstring).
      tol: convergence threshold on the example's loss, for ``steps_to_converge``.
      aligned: the aligned model :math:`\theta_0` (``select="bilevel"`` only).
      harmful: batch of harmful prompts with the aligned model's responses as targets
        (``select="bilevel"`` only).
      task: batch of task data with the attacked model's responses or references as targets
        (``select="bilevel"`` only).

    Returns:
      a :class:`RecoveryResult`.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
    pool = _as_batch(safety_example, "safety_example")
    if select == "bilevel":
        if aligned is None or harmful is None or task is None:
            raise ValueError('select="bilevel" needs aligned=, harmful= and task=')
        harmful = _as_batch(harmful, "harmful")
        task = _as_batch(task, "task")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    patch = memoize(
        "safety.recovery",
        (graphdef, steps, float(learning_rate)),
        lambda: _patch_program(graphdef, steps, float(learning_rate)),
    )

    pool_losses = pool_scores = None
    chosen = 0
    if pool["tokens"].shape[0] > 1:
        per_row = jax.jit(
            lambda p, b: jax.vmap(
                lambda row: lm_batch_loss(
                    nnx.merge(graphdef, p, rest), jax.tree.map(lambda x: x[None], row)
                )[0]
            )(b)
        )(params, pool)
        pool_losses = [float(x) for x in per_row]
        if select == "max_loss":
            chosen = int(np.argmax(pool_losses))
        elif select == "min_loss":
            chosen = int(np.argmin(pool_losses))
        elif select == "bilevel":
            pool_scores = _bilevel_scores(
                graphdef, patch, params, rest, pool, aligned, harmful, task
            )
            chosen = int(np.argmin(pool_scores))
    example = {k: v[chosen : chosen + 1] for k, v in pool.items()}
    new_params, losses = patch(params, rest, example)
    losses = [float(x) for x in losses]
    converged = next((i for i, value in enumerate(losses) if value < tol), None)
    return RecoveryResult(
        nnx.merge(graphdef, new_params, rest), losses, converged, chosen, pool_losses, pool_scores
    )
