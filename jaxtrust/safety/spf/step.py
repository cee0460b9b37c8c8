"""Wiring SPF into a train step: the safety gradient as an extra argument of ``tx.update``.

SPF (and the random-subspace control and full PCGrad) take ``safety_grads=`` in ``update``.
The safety example travels inside the batch under ``safety_*`` keys, so one compiled step serves
every attack and seed, and its gradient is taken at the current parameters inside the step:

* :func:`safety_extra_args` — the ``extra_args_fn`` of :func:`jaxtrust.training.make_train_step`.
* :func:`refresh_dispatch` — two compiled steps, with and without the safety gradient, chosen
  by whether the batch carries the example: steps where the basis is not due then pay neither
  a safety backward pass nor a params-sized zero tree (``spf`` keeps its basis when
  ``safety_grads`` is ``None``).

Example::

    from jaxtrust.safety.spf import spf
    from jaxtrust.safety.spf.step import safety_extra_args
    from jaxtrust.training import finetune

    tx = optax.chain(spf(4, stacked=True), optax.adamw(1e-4))
    graphdef = nnx.split(model, nnx.Param, ...)[0]
    result = finetune(model, pool, tx, steps=100, batch_size=8, seed=0,
                      extra_args_fn=safety_extra_args(graphdef),
                      extra_batch={f"safety_{k}": v for k, v in refusal.items()})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import optax
from flax import nnx

from jaxtrust.training import lm_batch_loss, lm_loss_fn, make_train_step

__all__ = ["PREFIX", "refresh_dispatch", "safety_batch", "safety_extra_args"]

PREFIX = "safety_"


def safety_batch(example: Mapping[str, Any], prefix: str = PREFIX) -> dict[str, Any]:
    """``{"tokens": ...}`` -> ``{"safety_tokens": ...}``: the example as extra batch keys."""
    return {f"{prefix}{k}": v for k, v in example.items()}


def safety_extra_args(
    graphdef: nnx.GraphDef,
    *,
    loss: Callable = lm_batch_loss,
    prefix: str = PREFIX,
) -> Callable[[Any, Mapping[str, Any]], dict[str, Any]]:
    """``extra_args_fn(state, batch) -> {"safety_grads": grad}``.

    Args:
      graphdef: the model graph of the train state.
      loss: ``loss(model, batch) -> (scalar, aux)`` of the safety example (default: the LM
        loss of :func:`jaxtrust.training.lm_batch_loss`).
      prefix: key prefix of the safety example inside the batch.

    Returns:
      the function; it raises ``KeyError`` when a batch carries no safety example.
    """

    def extra_args_fn(state, batch):
        example = {k[len(prefix) :]: v for k, v in batch.items() if k.startswith(prefix)}
        if not example:
            raise KeyError(
                f"the batch carries no safety example (keys starting with {prefix!r}); pass it "
                "with finetune(extra_batch=safety_batch(example))"
            )

        def safety_loss(params):
            return loss(nnx.merge(graphdef, params, state.rest), example)[0]

        return {"safety_grads": jax.grad(safety_loss)(state.params)}

    return extra_args_fn


def refresh_dispatch(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    *,
    loss_fn: Callable = lm_loss_fn,
    safety_loss: Callable = lm_batch_loss,
    prefix: str = PREFIX,
    donate: bool = False,
) -> Callable:
    """A train step that runs the safety backward pass only on batches carrying the example.

    Args:
      graphdef: the model graph.
      tx: a chain containing :func:`~jaxtrust.safety.spf.spf` with ``refresh_every`` set.
      loss_fn: the training loss ``(model, batch, key) -> (loss, aux)``.
      safety_loss: the safety example's loss ``(model, batch) -> (loss, aux)``.
      prefix: key prefix of the safety example.
      donate: donate the input state's buffers.

    Returns:
      ``step(state, batch) -> (state, metrics)``; feed the example (``safety_batch``) on the
      steps where the basis is due and omit it on the others.
    """
    with_safety = make_train_step(
        graphdef,
        loss_fn,
        tx,
        donate=donate,
        extra_args_fn=safety_extra_args(graphdef, loss=safety_loss, prefix=prefix),
    )
    without = make_train_step(graphdef, loss_fn, tx, donate=donate)

    def step(state, batch):
        carries = any(k.startswith(prefix) for k in batch)
        return (with_safety if carries else without)(state, batch)

    return step
