"""A causal LM bound to approximation techniques: :class:`HookedLM`.

:func:`jaxtrust.models.generate` and :func:`jaxtrust.eval.generate_responses` compile the hooks
they are given as a static argument, so they take only hashable hooks, never a noise technique
with its PRNG key. :class:`HookedLM` moves the techniques *into the model*: the configurations
become part of its graph definition (one compiled prefill / decode / forward per setting,
shared by every model of one architecture), while the noise strengths and the key are ordinary
state. A whole noise sweep over one layer range therefore compiles once, and the wrapped model
goes wherever a :class:`~jaxtrust.models.CausalLM` goes (generation, perplexity, losses).

Reference:
  Zhang et al., `Activation Approximations Can Incur Safety Vulnerabilities Even in Aligned
  LLMs: Comprehensive Analysis and Defense <https://arxiv.org/abs/2502.00840>`_, USENIX
  Security 2025 (the audit runs every aligned model under every approximation this way).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtrust.models.config import LMConfig
from jaxtrust.safety.actapprox._base import Technique
from jaxtrust.safety.actapprox._hooks import approx_hooks

__all__ = ["HookedLM"]


class HookedLM(nnx.Module):
    r"""A causal LM that always runs under the hooks of fixed approximation techniques.

    ``HookedLM(model, techniques, key=key)(tokens, ...)`` equals
    ``model(tokens, ..., hooks=approx_hooks(techniques, model.config, rng=k))`` with
    :math:`k = \mathrm{key}` for a full forward and :math:`k = \mathrm{fold\_in}(\mathrm{key},
    \mathrm{cache.index})` with a KV cache, so every decoding step draws fresh noise while a
    re-run with the same key reproduces the same responses.

    Args:
      model: the :class:`~jaxtrust.models.CausalLM` to run approximated (shared, not copied).
      techniques: a :class:`~jaxtrust.safety.actapprox.Technique` or a sequence of them
        (calibrated where they need it; ``()`` is the exact model).
      key: a ``jax.random`` key, required when a noise technique is among ``techniques``.

    Attributes:
      lm: the wrapped model. config: its :class:`~jaxtrust.models.LMConfig`.
      techniques: the static configurations (noise strengths replaced by a placeholder).
      strengths: ``nnx.Variable`` of the noise strengths, in technique order.

    Raises:
      TypeError: ``model`` has no LMConfig, or a technique is not a Technique.
      ValueError: a technique does not fit the model (see
        :func:`~jaxtrust.safety.actapprox.approx_hooks`), or noise without ``key``; calling it
        with other ``hooks``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxtrust.models import CausalLM, LMConfig
      >>> from jaxtrust.safety.actapprox import technique
      >>> model = CausalLM(LMConfig.tiny(), rngs=nnx.Rngs(0))
      >>> noisy = HookedLM(model, technique("gaussian_noise", sigma=0.1), key=jax.random.key(0))
      >>> tokens = jnp.ones((1, 4), jnp.int32)
      >>> bool(jnp.any(noisy(tokens).logits != model(tokens).logits))
      True
    """

    def __init__(
        self,
        model: Any,
        techniques: Technique | Sequence[Technique] = (),
        *,
        key: jax.Array | None = None,
    ):
        config = getattr(model, "config", None)
        if not isinstance(config, LMConfig):
            raise TypeError(
                f"model must be a jaxtrust CausalLM (with an LMConfig .config), "
                f"got {type(model).__name__}"
            )
        if isinstance(techniques, Technique):
            techniques = (techniques,)
        # Validates every technique against the model (layers, calibration, activation).
        active = approx_hooks(tuple(techniques), config, rng=jax.random.key(0)).techniques
        noise = [t.name for t in active if t.needs_rng]
        if noise and key is None:
            raise ValueError(f"HookedLM: noise techniques {noise} need key= (a jax.random key)")
        self.lm = model
        self.config = config
        static, strengths = [], []
        for t in techniques:
            if t.needs_rng:
                strengths.append(getattr(t, t.strength_field))
                # a placeholder: the real strength is state, traced at call time
                t = dataclasses.replace(t, **{t.strength_field: 1.0})
            static.append(t)
        self.techniques = tuple(static)
        self.noisy = any(t.needs_rng for t in self.techniques)
        self.strengths = nnx.Variable(jnp.asarray(strengths, jnp.float32))
        raw = jnp.zeros((2,), jnp.uint32) if key is None else _key_data(key)
        self.key = nnx.Variable(raw)

    def __call__(self, tokens, *, cache=None, hooks=None, **kwargs):
        """The wrapped model's forward under the techniques (same arguments and outputs)."""
        if hooks is not None:  # generate() passes hooks=None; anything else would be dropped
            raise ValueError("HookedLM applies its own techniques; pass no other hooks")
        if not self.techniques:
            return self.lm(tokens, cache=cache, **kwargs)
        rng = None
        techniques = list(self.techniques)
        if self.noisy:
            rng = jax.random.wrap_key_data(self.key[...])
            if cache is not None:
                rng = jax.random.fold_in(rng, cache.index)
            strengths = iter(self.strengths[...])
            for j, t in enumerate(techniques):
                if t.needs_rng:
                    techniques[j] = dataclasses.replace(t, **{t.strength_field: next(strengths)})
        hooks = approx_hooks(tuple(techniques), self.config, rng=rng)
        return self.lm(tokens, cache=cache, hooks=hooks, **kwargs)


def _key_data(key: jax.Array) -> jax.Array:
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise TypeError(f"key must be a jax.random key, got {key.dtype}{list(key.shape)}")
    return key
