"""A resumable training loop around a jitted train step.

:func:`fit` runs ``train_step`` for ``num_steps`` steps on ``batches_fn(step)``. Because the
data is indexed by the global step and the state (including its PRNG key) is checkpointed
whole, a run killed at any point and restarted with the same arguments continues from the
latest checkpoint and ends in the same parameters as an uninterrupted run.

Example:
  >>> import jax.numpy as jnp, optax
  >>> from flax import nnx
  >>> from jaxtrust.training.step import init_train_state, make_train_step
  >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
  >>> loss_fn = lambda m, b, rng: (jnp.mean((m(b["x"]) - 1.0) ** 2), {})
  >>> tx = optax.sgd(0.1)
  >>> graphdef, state = init_train_state(model, tx)
  >>> step = make_train_step(graphdef, loss_fn, tx)
  >>> batches = lambda i: {"x": jnp.ones((4, 2))}
  >>> state, history = fit(graphdef, state, step, batches, num_steps=5, progress=False)
  >>> len(history), history[-1]["loss"] < history[0]["loss"]
  (5, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxtrust.training.checkpoint import Checkpointer, abstract_like
from jaxtrust.training.checks import host_errors
from jaxtrust.training.step import TrainState

__all__ = ["fit"]


def _to_python(metrics: dict) -> dict[str, float]:
    host = jax.device_get(metrics)
    return {k: float(np.asarray(v)) for k, v in host.items()}


def fit(
    graphdef: Any,
    state: TrainState,
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict]],
    batches_fn: Callable[[int], Any],
    *,
    num_steps: int,
    checkpointer: Checkpointer | None = None,
    checkpoint_every: int = 100,
    eval_fn: Callable[[Any, TrainState], dict[str, float]] | None = None,
    eval_every: int = 100,
    progress: bool = True,
    log_fn: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[TrainState, list[dict[str, float]]]:
    """Train until ``state.step == num_steps``, resuming from ``checkpointer`` when possible.

    Each iteration ``i`` (the state's global step before the update) calls
    ``state, metrics = train_step(state, batches_fn(i))``. With a checkpointer, the latest
    checkpoint (if any) replaces ``state`` before the first step, a checkpoint is written after
    every ``checkpoint_every``-th step and after the last one, and all saves are waited for
    before returning.

    Args:
      graphdef: the model graph (passed to ``eval_fn``).
      state: initial :class:`TrainState` (also the structure template for restoring).
      train_step: from :func:`jaxtrust.training.step.make_train_step`.
      batches_fn: ``batches_fn(step) -> batch``; must be deterministic in ``step`` for exact
        resumption.
      num_steps: total number of optimizer steps of the run (not of this call).
      checkpointer: optional :class:`Checkpointer`.
      checkpoint_every: save period in steps.
      eval_fn: optional ``eval_fn(graphdef, state) -> dict``; its results are merged, with an
        ``eval_`` prefix, into the history entry of every ``eval_every``-th step and the last.
      eval_every: evaluation period in steps.
      progress: show a tqdm progress bar.
      log_fn: optional ``log_fn(step, metrics)`` called after each step (``step`` = number of
        completed steps).

    Returns:
      ``(state, history)``; history holds one dict per step with ``step`` (completed steps)
      and the step's metrics as Python floats. With a checkpointer, the history of the steps
      run before a restart is saved in each checkpoint's metadata and restored with it, so a
      resumed (or already finished) run returns the whole history, not only this call's steps.
    """
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    if checkpoint_every < 1 or eval_every < 1:
        raise ValueError(
            f"checkpoint_every and eval_every must be >= 1, got {checkpoint_every}, {eval_every}"
        )
    history: list[dict[str, float]] = []
    if checkpointer is not None and checkpointer.latest_step() is not None:
        state = checkpointer.restore(target=abstract_like(state))
        saved = checkpointer.metadata().get("history", [])
        history = [dict(h) for h in saved if h.get("step", 0) <= int(jax.device_get(state.step))]
    start = int(jax.device_get(state.step))
    if start > num_steps:
        raise ValueError(f"state is already at step {start} > num_steps={num_steps}")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, initial=start, desc="train", dynamic_ncols=True)
    try:
        for step in range(start, num_steps):
            with host_errors():  # a failed in-step check raises its own message first
                state, metrics = train_step(state, batches_fn(step))
                done = step + 1
                record = {"step": float(done), **_to_python(metrics)}
            if eval_fn is not None and (done % eval_every == 0 or done == num_steps):
                record.update({f"eval_{k}": float(v) for k, v in eval_fn(graphdef, state).items()})
            history.append(record)
            if checkpointer is not None and (done % checkpoint_every == 0 or done == num_steps):
                checkpointer.save(
                    done, state, metadata={"step": done, "history": history}, force=True
                )
            if log_fn is not None:
                log_fn(done, record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4g}")
    finally:
        if bar is not None:
            bar.close()
        if checkpointer is not None:
            checkpointer.wait()
    return state, history
