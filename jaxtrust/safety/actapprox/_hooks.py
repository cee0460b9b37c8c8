"""Compose techniques into one :class:`~jaxtrust.models.ModelHooks` object."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax

from jaxtrust.models.config import LMConfig
from jaxtrust.models.hooks import ModelHooks
from jaxtrust.safety.actapprox._base import SITES, Technique, select_layers
from jaxtrust.safety.actapprox.polynomial import Polynomial, activation_kind

_NORM_SITES = {"attn_norm": "attn_input", "mlp_norm": "mlp_input"}


@dataclasses.dataclass(frozen=True)
class ApproxHooks(ModelHooks):
    """Hooks applying ``techniques`` in order at every site they act on.

    Polynomial techniques replace the activation / softmax function (a later one wins inside
    its layer range); the other techniques transform the value at their sites. ``rng`` feeds
    the noise techniques: technique i, layer l and site k draw from
    ``fold_in(fold_in(fold_in(rng, i), l), k)``. Build it with :func:`approx_hooks`.
    """

    techniques: tuple[Technique, ...] = ()
    rng: Any = None

    def _key(self, index: int, layer, site: str):
        if self.rng is None:
            return None
        key = jax.random.fold_in(jax.random.fold_in(self.rng, index), layer)
        return jax.random.fold_in(key, SITES.index(site))

    def _site(self, site: str, x, layer):
        for i, t in enumerate(self.techniques):
            if t.acts_on(site):
                x = t.transform(site, x, layer, self._key(i, layer, site) if t.needs_rng else None)
        return x

    def norm(self, x, scale, bias, layer, kind, eps):
        y = super().norm(x, scale, bias, layer, kind, eps)
        site = _NORM_SITES.get(kind)
        return y if site is None else self._site(site, y, layer)

    def softmax(self, scores, mask, layer):
        probs = super().softmax(scores, mask, layer)
        for t in self.techniques:
            if isinstance(t, Polynomial) and t.softmax:
                probs = select_layers(t.layers, layer, t.softmax_fn(scores, mask), probs)
        return probs

    def activation(self, x, layer):
        y = super().activation(x, layer)
        for t in self.techniques:
            if isinstance(t, Polynomial) and t.activation:
                y = select_layers(
                    t.layers, layer, t.activation_fn(activation_kind(self.activation_name), x), y
                )
        return self._site("activation", y, layer)

    def mlp_gate(self, x, layer):
        return self._site("mlp_gate", x, layer)

    def mlp_up(self, x, layer):
        return self._site("mlp_up", x, layer)

    def mlp_hidden(self, x, layer):
        return self._site("mlp_hidden", x, layer)

    def attn_context(self, x, layer):
        return self._site("attn_context", x, layer)


def approx_hooks(
    techniques: Technique | Sequence[Technique], config: LMConfig, *, rng: jax.Array | None = None
) -> ModelHooks:
    """One hooks object applying ``techniques`` (in order) to a model with ``config``.

    Zero-strength techniques (sigma=0, sparsity=0, bits=16, ...) are dropped, so they are
    bit-exact identities. Without active noise techniques the result is hashable (a valid
    static argument of ``jax.jit``) and ``rng`` is not kept; with noise, ``rng`` may be a traced
    key (build the hooks inside the jitted function then).

    Args:
      techniques: one technique or a sequence of them (see :func:`technique`).
      config: the model's :class:`~jaxtrust.models.LMConfig` (layer count, activation, widths).
      rng: PRNG key, required when a noise technique is active.

    Returns:
      An :class:`ApproxHooks` to pass as ``model(tokens, hooks=...)``.

    Raises:
      TypeError: not a technique / config. ValueError: layer range beyond the model,
      uncalibrated technique, calibration of another model, missing rng, polynomial on a
      model whose activation is not GELU/SiLU.

    Example:
      >>> from jaxtrust.models import LMConfig
      >>> from jaxtrust.safety.actapprox import technique
      >>> hooks = approx_hooks(technique("nexus", layers=(0, 1)), LMConfig.tiny())
      >>> hash(hooks) == hash(approx_hooks(technique("nexus", layers=(0, 1)), LMConfig.tiny()))
      True
    """
    if isinstance(techniques, Technique):
        techniques = (techniques,)
    if isinstance(techniques, (str, bytes)) or not isinstance(techniques, Sequence):
        raise TypeError(
            f"techniques must be a Technique or a sequence of them, got {type(techniques).__name__}"
        )
    if not isinstance(config, LMConfig):
        raise TypeError(f"config must be an LMConfig, got {type(config).__name__}")
    for t in techniques:
        if not isinstance(t, Technique):
            raise TypeError(
                "techniques must be Technique objects (see jaxtrust.safety.actapprox.technique), "
                f"got {t!r}"
            )
        t.check_model(config)
        if isinstance(t, Polynomial) and t.activation:
            activation_kind(config.activation)  # raises for activations without a polynomial
    active = tuple(t for t in techniques if not t.is_identity)
    needs_rng = any(t.needs_rng for t in active)
    if needs_rng and rng is None:
        names = [t.name for t in active if t.needs_rng]
        raise ValueError(f"noise techniques {names} need rng= (a jax.random key)")
    return ApproxHooks(
        activation_name=config.activation, techniques=active, rng=rng if needs_rng else None
    )
