"""Fine-tune a copy of a model on an in-memory pool: the loop every method shares.

:func:`finetune` is :func:`jaxtrust.training.fit` over :func:`epoch_batches` of a pool, with a
train step built by :func:`make_train_step` and memoised by :func:`memoize` when the caller
names the recipe (``step_key``). The input model is never modified (no buffer donation), so
one aligned model can be fine-tuned by many methods in turn.

Arrays that every batch must carry (a safety example whose gradient an optax transform takes
through ``extra_args_fn``) go in ``extra_batch``: they travel inside the batch rather than being
closed over, so one compiled step serves every seed and attack.

Example:
  >>> import jax.numpy as jnp, numpy as np, optax
  >>> from flax import nnx
  >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
  >>> pool = {"x": np.ones((8, 2), np.float32), "y": np.zeros((8, 1), np.float32)}
  >>> loss_fn = lambda m, b, key: (jnp.mean((m(b["x"]) - b["y"]) ** 2), {})
  >>> result = finetune(model, pool, optax.sgd(0.1), steps=5, batch_size=4, seed=0,
  ...                   loss_fn=loss_fn)
  >>> len(result.history), result.history[-1]["loss"] < result.history[0]["loss"]
  (5, True)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import optax
from flax import nnx

from jaxtrust.training.adapters import lm_loss_fn
from jaxtrust.training.batches import epoch_batches
from jaxtrust.training.checkpoint import Checkpointer
from jaxtrust.training.loop import fit
from jaxtrust.training.memo import memoize
from jaxtrust.training.step import init_train_state, make_train_step, merge_model

__all__ = ["FinetuneResult", "finetune"]


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
      model: the fine-tuned module (a new one; the input is untouched).
      history: one dict per step run (``step``, ``loss``, ``grad_norm``, aux metrics and
        ``eval_*`` entries on evaluation steps).
      seconds: wall time of the loop.
    """

    model: Any
    history: list[dict[str, float]]
    seconds: float

    @property
    def losses(self) -> list[float]:
        """The training loss of every step."""
        return [float(h["loss"]) for h in self.history]


def finetune(
    model: nnx.Module,
    pool: Mapping[str, Any],
    tx: optax.GradientTransformation,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    data_seed: int | Sequence[int] | None = None,
    loss_fn: Callable = lm_loss_fn,
    extra_args_fn: Callable | None = None,
    extra_batch: Mapping[str, Any] | Callable[[int], Mapping[str, Any]] | None = None,
    step_key: Hashable | None = None,
    train_step: Callable | None = None,
    eval_fn: Callable[[nnx.Module], Mapping[str, float]] | None = None,
    eval_every: int = 100,
    checkpointer: Checkpointer | None = None,
    checkpoint_every: int = 100,
    progress: bool = False,
    log_fn: Callable[[int, dict[str, float]], None] | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of ``model`` for ``steps`` steps on shuffled epochs of ``pool``.

    Args:
      model: any Flax NNX module (not modified).
      pool: arrays with a shared first axis (e.g. ``Batch.as_dict()`` of the training set).
      tx: the optax transformation.
      steps: number of optimiser steps (>= 0).
      batch_size: rows per step.
      seed: seed of the train state's per-step key (passed to ``loss_fn``).
      data_seed: seed of the epoch permutations (default ``seed``).
      loss_fn: ``loss_fn(model, batch, key) -> (loss, aux)``; default the LM loss on
        ``tokens``/``attention_mask``/``loss_mask``.
      extra_args_fn: ``(state, batch) -> dict`` of extra arguments of ``tx.update``.
      extra_batch: arrays added unchanged to every batch (e.g. ``safety_tokens``), or
        ``extra_batch(step) -> dict`` for arrays that only some steps carry.
      step_key: hashable name of the recipe (``tx`` hyperparameters, ``loss_fn``,
        ``extra_args_fn``); with it the compiled step is memoised per ``(graph, step_key)``.
        Without it a new step is built (and compiled) for this call.
      train_step: a prebuilt ``step(state, batch) -> (state, metrics)`` for the graph of
        ``model`` and ``tx`` (e.g. one that dispatches between two compiled steps); then
        ``loss_fn``, ``extra_args_fn`` and ``step_key`` are unused.
      eval_fn: ``eval_fn(model) -> dict`` run every ``eval_every`` steps and after the last;
        its values enter the history with an ``eval_`` prefix (trajectories).
      eval_every: evaluation period.
      checkpointer: resume from and save to this :class:`Checkpointer`.
      checkpoint_every: save period.
      progress: show a progress bar.
      log_fn: ``log_fn(step, record)`` after every step.

    Returns:
      A :class:`FinetuneResult`.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    start = time.perf_counter()
    if steps == 0:
        return FinetuneResult(model, [], 0.0)
    graphdef, state = init_train_state(model, tx, seed=seed)

    def build():
        return make_train_step(graphdef, loss_fn, tx, donate=False, extra_args_fn=extra_args_fn)

    if train_step is None:
        if step_key is None:
            train_step = build()
        else:
            train_step = memoize("finetune", (graphdef, step_key), build)
    batches = epoch_batches(pool, batch_size, seed=seed if data_seed is None else data_seed)
    if callable(extra_batch):
        extra_of = extra_batch
    else:
        fixed = {} if extra_batch is None else {k: np.asarray(v) for k, v in extra_batch.items()}
        extra_of = lambda step: fixed  # noqa: E731

    def batches_fn(step: int):
        extra = extra_of(step)
        clash = sorted(set(extra) & set(pool))
        if clash:
            raise ValueError(f"extra_batch keys {clash} are also pool keys; rename them")
        return {**batches(step), **extra}

    wrapped_eval = None
    if eval_fn is not None:
        wrapped_eval = lambda g, s: dict(eval_fn(merge_model(g, s)))  # noqa: E731
    state, history = fit(
        graphdef,
        state,
        train_step,
        batches_fn,
        num_steps=steps,
        checkpointer=checkpointer,
        checkpoint_every=checkpoint_every,
        eval_fn=wrapped_eval,
        eval_every=eval_every,
        progress=progress,
        log_fn=log_fn,
    )
    return FinetuneResult(merge_model(graphdef, state), history, time.perf_counter() - start)
