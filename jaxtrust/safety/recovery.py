"""One-shot safety recovery: re-align a fine-tuned model with a single refusal example.

The one-shot paper (see ``shared/methods/spf.md`` section 2.2) fine-tunes the attacked model on
ONE (harmful prompt, refusal) pair for a few epochs, and reports that refusal comes back with
little utility loss and within a few steps. Here the example is a fixed-shape batch of one row
(``tokens``, ``attention_mask``, ``loss_mask`` with the prompt masked out), trained with plain
Adam for ``steps`` full-batch steps in one compiled ``lax.scan``.

Selection from a pool (optional; the paper's own rule is not published): ``select="max_loss"``
(default) picks the candidate with the largest refusal loss on the attacked model, the refusal
the attack erased most, whose gradient is the most informative; ``"min_loss"`` the one already
closest; ``"first"`` takes the pool's first row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxtrust.training import lm_loss


@dataclasses.dataclass
class RecoveryResult:
    """What :func:`recover` returns.

    Attributes:
      model: the recovered model (a new module; the input is untouched).
      losses: refusal loss before each step (``steps`` values) and after the last one.
      steps_to_converge: first step count after which the loss is below ``tol`` (``None`` if
        never).
      chosen: index of the example used within the pool (0 without a pool).
      pool_losses: the candidates' losses on the attacked model (when a pool was given).
    """

    model: Any
    losses: list[float]
    steps_to_converge: int | None
    chosen: int
    pool_losses: list[float] | None = None


def _example_loss(model, batch) -> jax.Array:
    logits = model(batch["tokens"], attention_mask=batch["attention_mask"]).logits
    return lm_loss(logits, batch["tokens"], batch["loss_mask"])[0]


def _check_batch(batch: Mapping[str, Any], name: str) -> dict[str, jax.Array]:
    missing = {"tokens", "attention_mask", "loss_mask"} - set(batch)
    if missing:
        raise KeyError(
            f"{name} lacks {sorted(missing)}; expected tokens, attention_mask, loss_mask of shape [n, seq]"
        )
    arrays = {k: jnp.asarray(batch[k]) for k in ("tokens", "attention_mask", "loss_mask")}
    shape = arrays["tokens"].shape
    if len(shape) != 2 or shape[0] < 1:
        raise ValueError(f"{name}['tokens'] must have shape [n >= 1, seq], got {shape}")
    for k, v in arrays.items():
        if v.shape != shape:
            raise ValueError(f"{name}[{k!r}] must have shape {shape}, got {v.shape}")
    if not bool(jnp.all(jnp.sum(arrays["loss_mask"], axis=1) > 0)):
        raise ValueError(f"{name}: every row needs at least one supervised (loss_mask) token")
    return arrays


_RECOVERY_PROGRAMS: dict[tuple, Callable] = {}


def recover(
    model: nnx.Module,
    safety_example: Mapping[str, Any],
    *,
    steps: int = 10,
    learning_rate: float = 3e-4,
    select: str = "max_loss",
    tol: float = 0.05,
) -> RecoveryResult:
    r"""Fine-tune ``model`` on one refusal example (chosen from a pool when several are given).

    .. math:: \theta_{t+1} = \theta_t - \eta\,\mathrm{Adam}(\nabla_\theta
              \mathcal{L}_{\text{refusal}}(\theta_t; x_s, y_s)), \quad t < \text{steps}

    Args:
      model: the attacked :class:`~jaxtrust.models.CausalLM` (not modified).
      safety_example: ``{"tokens", "attention_mask", "loss_mask"}`` arrays ``[n, seq]`` (e.g.
        ``world.batch(...)._asdict()``); with ``n > 1`` they are a pool and one row is chosen by
        ``select``.
      steps: full-batch steps on the single example (>= 1); "a few epochs" in the paper.
      learning_rate: Adam step size.
      select: "max_loss" | "min_loss" | "first" (see the module docstring).
      tol: convergence threshold on the example's loss, for ``steps_to_converge``.

    Returns:
      a :class:`RecoveryResult`.

    Example::

      ex = world.batch(world.refusal_examples(world.requests(1, category="forbidden")))
      result = recover(attacked, ex._asdict(), steps=10, learning_rate=3e-4)
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if select not in ("max_loss", "min_loss", "first"):
        raise ValueError(f"select must be 'max_loss', 'min_loss' or 'first', got {select!r}")
    pool = _check_batch(safety_example, "safety_example")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    pool_losses = None
    chosen = 0
    if pool["tokens"].shape[0] > 1:
        per_row = jax.jit(
            lambda p, b: jax.vmap(
                lambda row: _example_loss(
                    nnx.merge(graphdef, p, rest), jax.tree.map(lambda x: x[None], row)
                )
            )(b)
        )(params, pool)
        pool_losses = [float(x) for x in per_row]
        if select == "max_loss":
            chosen = int(np.argmax(pool_losses))
        elif select == "min_loss":
            chosen = int(np.argmin(pool_losses))
    example = {k: v[chosen : chosen + 1] for k, v in pool.items()}

    key = (graphdef, steps, float(learning_rate), example["tokens"].shape)
    if key not in _RECOVERY_PROGRAMS:
        tx = optax.adam(learning_rate)

        def loss_of(p, r, batch):
            return _example_loss(nnx.merge(graphdef, p, r), batch)

        @jax.jit
        def run(p, r, batch):
            def body(carry, _):
                p, opt_state = carry
                loss, grads = jax.value_and_grad(loss_of)(p, r, batch)
                updates, opt_state = tx.update(grads, opt_state, p)
                return (optax.apply_updates(p, updates), opt_state), loss

            (p, _), losses = jax.lax.scan(body, (p, tx.init(p)), None, length=steps)
            return p, jnp.concatenate([losses, loss_of(p, r, batch)[None]])

        _RECOVERY_PROGRAMS[key] = run
    new_params, losses = _RECOVERY_PROGRAMS[key](params, rest, example)
    losses = [float(x) for x in losses]
    converged = next((i for i, value in enumerate(losses) if value < tol), None)
    return RecoveryResult(
        nnx.merge(graphdef, new_params, rest), losses, converged, chosen, pool_losses
    )
