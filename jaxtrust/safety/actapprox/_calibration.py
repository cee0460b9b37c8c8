"""Calibration: record activations of the exact model and fill the data-dependent parts of
techniques (TEAL/CATS thresholds, SmoothQuant scales, OmniQuant LET parameters)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import ArrayLike, Bool, Int

from jaxtrust.models.hooks import ModelHooks
from jaxtrust.safety.actapprox._base import LINEAR_INPUT_SITES, SITES, FrozenArray, Technique
from jaxtrust.safety.actapprox.quantization import (
    OmniQuant,
    SmoothQuant,
    let_quantize,
    smoothing_scales,
)
from jaxtrust.safety.actapprox.sparsity import Cats, Teal

_NORM_SITES = {"attn_norm": "attn_input", "mlp_norm": "mlp_input"}


@dataclasses.dataclass(frozen=True)
class _RecordingHooks(ModelHooks):
    """Exact hooks sending the values at ``sites`` to a host recorder (jax.debug.callback)."""

    sites: tuple[str, ...] = ()
    recorder: Any = dataclasses.field(default=None, compare=False, hash=False)

    def _record(self, site, x, layer):
        if site in self.sites:
            jax.debug.callback(self.recorder, SITES.index(site), layer, x)
        return x

    def norm(self, x, scale, bias, layer, kind, eps):
        y = super().norm(x, scale, bias, layer, kind, eps)
        site = _NORM_SITES.get(kind)
        return y if site is None else self._record(site, y, layer)

    def activation(self, x, layer):
        return self._record("activation", super().activation(x, layer), layer)

    def mlp_gate(self, x, layer):
        return self._record("mlp_gate", x, layer)

    def mlp_up(self, x, layer):
        return self._record("mlp_up", x, layer)

    def mlp_hidden(self, x, layer):
        return self._record("mlp_hidden", x, layer)

    def attn_context(self, x, layer):
        return self._record("attn_context", x, layer)


@dataclasses.dataclass
class ActivationRecord:
    """Activations of the exact model at the recorded sites (real tokens only).

    Attributes:
      rows: site -> ``[layers, rows, dim]`` float32, the same random subset of real tokens at
        every layer and site.
      absmax: site -> ``[layers, dim]`` per-channel max ``|x|`` over all real tokens.
      quantiles: site -> ``[layers, len(levels)]`` quantiles of ``|x|`` over all real entries.
      levels: the quantile levels.
    """

    rows: dict[str, np.ndarray]
    absmax: dict[str, np.ndarray]
    quantiles: dict[str, np.ndarray]
    levels: tuple[float, ...]


def record_activations(
    model,
    tokens: Int[ArrayLike, "batch seq"],
    attention_mask: Bool[ArrayLike, "batch seq"] | None = None,
    *,
    sites: Sequence[str] = LINEAR_INPUT_SITES,
    max_rows: int = 256,
    levels: Sequence[float] = (),
    max_quantile_entries: int = 1 << 22,
    seed: int = 0,
) -> ActivationRecord:
    """Run the exact model once and record the activations at ``sites``.

    Args:
      model: a :class:`~jaxtrust.models.CausalLM`.
      tokens: ``[batch, seq]`` int calibration tokens; attention_mask: ``[batch, seq]`` bool.
      sites: which sites (``jaxtrust.safety.actapprox.SITES``).
      max_rows: size of the token subsample kept per layer and site.
      levels: quantile levels of ``|x|`` to compute over all real entries (TEAL/CATS thresholds);
        beyond ``max_quantile_entries`` entries per layer and site, over a uniform subsample
        of that size (quantile error ~1e-3 in probability).
      seed: seed of the token subsample.
    """
    unknown = [s for s in sites if s not in SITES]
    if unknown:
        raise ValueError(f"unknown sites {unknown}; known: {SITES}")
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [batch, seq], got shape {tokens.shape}")
    mask = (
        np.ones(tokens.shape, bool) if attention_mask is None else np.asarray(attention_mask, bool)
    )
    if mask.shape != tokens.shape:
        raise ValueError(f"attention_mask must have shape {tokens.shape}, got {mask.shape}")
    n_real = int(mask.sum())
    if n_real == 0:
        raise ValueError("attention_mask selects no tokens")
    chosen = np.sort(
        np.random.default_rng(seed).choice(n_real, size=min(max_rows, n_real), replace=False)
    )
    num_layers = model.config.num_layers
    levels = tuple(float(v) for v in levels)
    rows: dict[str, list] = {s: [None] * num_layers for s in sites}
    absmax: dict[str, list] = {s: [None] * num_layers for s in sites}
    quantiles: dict[str, list] = {s: [None] * num_layers for s in sites}

    def recorder(site_index, layer, x):
        site, layer = SITES[int(site_index)], int(layer)
        real = np.asarray(x, np.float32)[mask]  # [n_real, dim]
        rows[site][layer] = real[chosen]
        absmax[site][layer] = np.abs(real).max(axis=0)
        if levels:
            magnitudes = np.abs(real).ravel()
            if magnitudes.size > max_quantile_entries:  # quantiles of a large uniform subsample
                pick = np.random.default_rng(seed + 1).choice(
                    magnitudes.size, max_quantile_entries, replace=False
                )
                magnitudes = magnitudes[pick]
            quantiles[site][layer] = np.quantile(magnitudes, levels)

    hooks = _RecordingHooks(
        activation_name=model.config.activation, sites=tuple(sites), recorder=recorder
    )
    # last_logits_only: the vocabulary projection of every token is not needed here
    out = model(tokens, attention_mask=jnp.asarray(mask), hooks=hooks, last_logits_only=True)
    jax.block_until_ready(out.logits)
    jax.effects_barrier()
    missing = [s for s in sites if any(v is None for v in rows[s])]
    if missing:
        raise ValueError(
            f"the model has no values at sites {missing} (e.g. mlp_gate on a GPT-NeoX model)"
        )
    stack = lambda d: {s: np.stack(v) for s, v in d.items()}  # noqa: E731
    return ActivationRecord(stack(rows), stack(absmax), stack(quantiles) if levels else {}, levels)


def _weights(model) -> dict[str, np.ndarray]:
    """Per site, the ``[layers, in, out]`` kernel(s) the site's value multiplies (concatenated)."""
    attn, mlp = model.layers.attn, model.layers.mlp
    k = lambda lin: np.asarray(lin.kernel[...], np.float32)  # noqa: E731
    up = [k(mlp.up_proj)] if mlp.gate_proj is None else [k(mlp.gate_proj), k(mlp.up_proj)]
    return {
        "attn_input": np.concatenate([k(attn.q_proj), k(attn.k_proj), k(attn.v_proj)], axis=-1),
        "attn_context": k(attn.o_proj),
        "mlp_input": np.concatenate(up, axis=-1),
        "mlp_hidden": k(mlp.down_proj),
    }


def _let_loss(p, x, w, y, bits: int, ste: bool = True):
    """Relative reconstruction error of one linear layer's output under OmniQuant's LET path."""
    clip = jax.nn.sigmoid(p["clip"])
    xq = let_quantize(x, bits, jnp.exp(p["log_s"]), p["shift"], clip[0], clip[1], ste=ste)
    return jnp.mean(jnp.square(xq @ w - y)) / (jnp.mean(jnp.square(y)) + 1e-12)


@functools.partial(jax.jit, static_argnames=("bits", "steps", "learning_rate"))
def _fit_let_layers(init, x, w, *, bits: int, steps: int, learning_rate: float):
    tx = optax.adam(learning_rate)

    def fit_one(p0, xl, wl):
        yl = xl @ wl

        def step(carry, _):
            p, state = carry
            g = jax.grad(_let_loss)(p, xl, wl, yl, bits)
            updates, state = tx.update(g, state, p)
            return (optax.apply_updates(p, updates), state), None

        (p, _), _ = jax.lax.scan(step, (p0, tx.init(p0)), None, length=steps)
        # keep the initialisation where training did not help (rounding makes the loss rough)
        better = _let_loss(p, xl, wl, yl, bits, ste=False) < _let_loss(
            p0, xl, wl, yl, bits, ste=False
        )
        return jax.tree.map(lambda a, b: jnp.where(better, a, b), p, p0)

    return jax.vmap(fit_one)(init, x, w)


def _output_factor(w: np.ndarray) -> np.ndarray:
    """A factor F with ``F F^T = W W^T`` and at most ``dim`` columns: ``|E W| = |E F|`` for every
    error E, so the reconstruction loss costs rows x dim x min(dim, out) per step."""
    if w.shape[-1] <= w.shape[-2]:
        return w
    gram = np.einsum("ldo,leo->lde", w.astype(np.float64), w.astype(np.float64))
    eigvals, eigvecs = np.linalg.eigh(gram)
    return (eigvecs * np.sqrt(np.maximum(eigvals, 0.0))[:, None, :]).astype(np.float32)


def _fit_let(x: np.ndarray, w: np.ndarray, bits: int, steps: int, learning_rate: float):
    """OmniQuant LET + clipping for all layers of one site: x [L, rows, dim], w [L, dim, out].

    Init as OmniQuant: shift = channel mid-range, scale = SmoothQuant's rule (alpha 0.5) on
    the centred activations, clipping logits 4 (sigmoid(4) = 0.98)."""
    x = np.asarray(x, np.float32)
    w = np.asarray(w, np.float32)
    shift0 = 0.5 * (x.max(axis=1) + x.min(axis=1))  # [L, dim]
    centred_absmax = np.abs(x - shift0[:, None, :]).max(axis=1)
    log_s0 = np.log(smoothing_scales(centred_absmax, np.abs(w).max(axis=-1), 0.5))
    init = dict(
        log_s=jnp.asarray(log_s0),
        shift=jnp.asarray(shift0),
        clip=jnp.full((x.shape[0], 2), 4.0, jnp.float32),
    )
    p = _fit_let_layers(
        init,
        jnp.asarray(x),
        jnp.asarray(_output_factor(w)),
        bits=bits,
        steps=steps,
        learning_rate=float(learning_rate),
    )
    return (
        FrozenArray(np.exp(np.asarray(p["log_s"]))),
        FrozenArray(np.asarray(p["shift"])),
        FrozenArray(np.asarray(jax.nn.sigmoid(p["clip"]))),
    )


def calibrate(
    techniques: Technique | Sequence[Technique],
    model,
    tokens: Int[ArrayLike, "batch seq"],
    attention_mask: Bool[ArrayLike, "batch seq"] | None = None,
    *,
    max_rows: int = 256,
    seed: int = 0,
) -> tuple[Technique, ...]:
    """Fill the data-dependent parts of ``techniques`` from calibration text on the exact model.

    TEAL/CATS: the ``sparsity``-quantile of ``|x|`` per layer (and site) over all real calibration
    entries. SmoothQuant: ``s = max|X|^alpha / max|W|^(1 - alpha)`` per layer and channel.
    OmniQuant: LET scales/shifts and clipping fitted per layer (see
    :mod:`~jaxtrust.safety.actapprox.quantization`). Other techniques are returned unchanged.

    Args:
      techniques: one technique or a sequence.
      model: the :class:`~jaxtrust.models.CausalLM` the hooks will run on.
      tokens: ``[batch, seq]`` int calibration tokens; attention_mask: ``[batch, seq]`` bool.
      max_rows: tokens kept per layer for OmniQuant's reconstruction (and its ``rows``).
      seed: seed of the token subsample.

    Returns:
      The techniques, in order, calibrated.

    Example::

      teal, sq = calibrate([technique("teal", sparsity=0.5), technique("smoothquant", bits=4)],
                           model, batch["tokens"], batch["attention_mask"])
    """
    single = isinstance(techniques, Technique)
    techniques = (techniques,) if single else tuple(techniques)
    for t in techniques:
        if not isinstance(t, Technique):
            raise TypeError(f"techniques must be Technique objects, got {t!r}")
    todo = [t for t in techniques if t.needs_calibration and not t.is_identity]
    if not todo:
        return techniques
    sites: set[str] = set()
    levels: set[float] = set()
    rows = max_rows
    for t in todo:
        if isinstance(t, (Teal, Cats)):
            sites.update(t.sites)
            levels.add(t.sparsity)
        else:
            sites.update(LINEAR_INPUT_SITES)
        if isinstance(t, OmniQuant):
            rows = max(rows, t.rows)
    record = record_activations(
        model,
        tokens,
        attention_mask,
        sites=tuple(s for s in SITES if s in sites),
        max_rows=rows,
        levels=sorted(levels),
        seed=seed,
    )
    weights = _weights(model) if any(isinstance(t, (SmoothQuant, OmniQuant)) for t in todo) else {}
    out = []
    for t in techniques:
        if t not in todo:
            out.append(t)
        elif isinstance(t, (Teal, Cats)):
            j = record.levels.index(t.sparsity)
            thresholds = np.stack([record.quantiles[s][:, j] for s in t.sites], axis=1)
            out.append(dataclasses.replace(t, thresholds=FrozenArray(thresholds)))
        elif isinstance(t, SmoothQuant):
            scales = tuple(
                FrozenArray(
                    smoothing_scales(record.absmax[s], np.abs(weights[s]).max(axis=-1), t.alpha)
                )
                if s in t.smoothed_sites
                else None
                for s in LINEAR_INPUT_SITES
            )
            out.append(dataclasses.replace(t, scales=scales))
        elif isinstance(t, OmniQuant):
            params = tuple(
                _fit_let(record.rows[s][:, : t.rows], weights[s], t.bits, t.steps, t.learning_rate)
                for s in LINEAR_INPUT_SITES
            )
            out.append(dataclasses.replace(t, params=params))
        else:  # pragma: no cover - every calibrated technique is handled above
            raise TypeError(f"no calibration rule for {type(t).__name__}")
    return tuple(out)
