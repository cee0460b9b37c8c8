"""The one adapter from a batch dict to the causal-LM loss.

Every method that fine-tunes or scores a :class:`~jaxtrust.models.CausalLM` on prompt/response
batches (``tokens``, ``attention_mask``, ``loss_mask``: the layout of
:meth:`jaxtrust.data.Batch.as_dict`) goes through :func:`lm_batch_loss`, so the forward call
and the masking convention are written once.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from jaxtrust.models import CausalLM, LMConfig
  >>> model = CausalLM(LMConfig.tiny(vocab_size=11), rngs=nnx.Rngs(0))
  >>> batch = {"tokens": jnp.array([[1, 2, 3, 4]]), "attention_mask": jnp.ones((1, 4), bool),
  ...          "loss_mask": jnp.array([[0.0, 0.0, 1.0, 1.0]])}
  >>> loss, aux = lm_batch_loss(model, batch)
  >>> float(aux["num_tokens"])
  2.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxtrust.training.losses import lm_loss, sequence_logprobs

__all__ = ["BATCH_KEYS", "check_batch", "lm_batch_loss", "lm_loss_fn", "lm_marginal_loss"]

BATCH_KEYS = ("tokens", "attention_mask", "loss_mask")


def check_batch(batch: Any, name: str = "batch") -> None:
    """Raise unless ``batch`` is a mapping holding every key of :data:`BATCH_KEYS`.

    Args:
      batch: the candidate batch.
      name: the argument's name, for the messages.

    Raises:
      TypeError: not a mapping. KeyError: a key is missing (the message lists them).

    Example:
      >>> check_batch({"tokens": 0, "attention_mask": 0, "loss_mask": 0}, "pairs")  # passes
    """
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"{name} must be a mapping with keys {BATCH_KEYS} (e.g. Batch.as_dict()), "
            f"got {type(batch).__name__}"
        )
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(f"{name} lacks {missing}; expected keys {BATCH_KEYS} of shape [batch, seq]")


def lm_batch_loss(
    model: Any, batch: Mapping[str, Any], *, hooks: Any = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Masked next-token loss of ``model`` on a prompt/response batch.

    Args:
      model: a causal LM called as ``model(tokens, attention_mask=..., hooks=...)`` returning
        an object with ``.logits``.
      batch: ``{"tokens", "attention_mask", "loss_mask"}``, each ``[batch, seq]``; extra keys
        are ignored.
      hooks: optional :class:`~jaxtrust.models.ModelHooks` for the forward.

    Returns:
      ``(loss, aux)`` as :func:`jaxtrust.training.lm_loss` returns them.
    """
    check_batch(batch)
    kwargs = {} if hooks is None else {"hooks": hooks}
    tokens = jnp.asarray(batch["tokens"])
    logits = model(tokens, attention_mask=jnp.asarray(batch["attention_mask"]), **kwargs).logits
    return lm_loss(logits, tokens, jnp.asarray(batch["loss_mask"]))


def lm_loss_fn(
    model: Any, batch: Mapping[str, Any], key: jax.Array | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """:func:`lm_batch_loss` with the ``loss_fn(model, batch, key)`` signature of
    :func:`jaxtrust.training.make_train_step` (the key is unused: the forward is deterministic).
    """
    del key
    return lm_batch_loss(model, batch)


def lm_marginal_loss(
    model: Any, batch: Mapping[str, Any], *, group: int
) -> tuple[jax.Array, dict[str, jax.Array]]:
    r"""Negative log of the total probability of a *set* of acceptable responses.

    The batch holds ``group`` consecutive rows per prompt, one acceptable response each (e.g.
    every refusal wording of a request). With :math:`\log\pi(y \mid x)` the summed
    target-token log-probability of a row,

    .. math:: \mathcal{L} = -\frac1P \sum_{p=1}^{P} \log \sum_{j=1}^{G}
              \pi(y_{p,j} \mid x_p),

    so the loss does not ask *which* wording the model uses, only whether it uses one of them.

    Args:
      model: a causal LM.
      batch: ``{"tokens", "attention_mask", "loss_mask"}`` with ``P * group`` rows.
      group: rows per prompt (static).

    Returns:
      ``(loss, {"loss", "num_prompts"})``.
    """
    check_batch(batch)
    tokens = jnp.asarray(batch["tokens"])
    if not isinstance(group, int) or group < 1 or tokens.shape[0] % group:
        raise ValueError(
            f"group must be a positive int dividing the batch's {tokens.shape[0]} rows, "
            f"got {group!r}"
        )
    logits = model(tokens, attention_mask=jnp.asarray(batch["attention_mask"])).logits
    logp = sequence_logprobs(logits, tokens, jnp.asarray(batch["loss_mask"]))
    per_prompt = jax.nn.logsumexp(logp.reshape(-1, group), axis=1)
    loss = -jnp.mean(per_prompt)
    return loss, {"loss": loss, "num_prompts": jnp.asarray(per_prompt.shape[0], jnp.float32)}
