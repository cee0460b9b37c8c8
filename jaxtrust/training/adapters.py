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

from jaxtrust.training.losses import lm_loss

__all__ = ["BATCH_KEYS", "check_batch", "lm_batch_loss", "lm_loss_fn"]

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
