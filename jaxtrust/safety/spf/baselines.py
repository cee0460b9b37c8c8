"""Comparison methods for safety-preserving fine-tuning: the controls SPF must beat.

* :func:`random_subspace` — SPF's projection rule against a *random* rank-k subspace of the same
  size per matrix. If SPF keeps refusal only as well as this, the safety subspace is not what
  helps; any rank-k constraint would.
* :func:`pcgrad_full` — full-gradient PCGrad (Yu et al., NeurIPS 2020) against the whole safety
  gradient, no low rank: if ``<g, g_s> < 0`` then ``g <- g - <g, g_s> / ||g_s||^2 g_s`` (one
  scalar constraint over all selected parameters; SafeGrad-like).
* :func:`safe_lora_project` — Safe LoRA (Hsu et al., NeurIPS 2024), applied post hoc to a full
  fine-tuning delta: per weight matrix the "alignment matrix" ``V = W_aligned - W_base`` gives
  the projector ``C = V V^T / ||V||_F`` over the matrix's *output* space (the paper's exact
  form, written for torch's ``[out, in]`` weights), and a layer's fine-tuning delta ``dW`` is
  replaced by ``C dW`` when ``cos(C dW, dW) < threshold``. Flax kernels are ``[in, out]``, so
  here ``C = V^T V / ||V||_F`` acts on the right: ``dW C``. Chosen over Lisa because it
  needs no alignment data during fine-tuning (the user's setting of the SPF paper) and the zoo
  keeps the base model the alignment started from, which is exactly what Safe LoRA needs.

The two transforms take ``safety_grads=`` like :func:`jaxtrust.safety.spf`, so an experiment
swaps them in one ``optax.chain``.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxtrust.safety.spf.transform import (
    _flatten,
    _is_variable,
    _unwrap,
    path_name,
    rebuild_like,
    spf,
)


class RandomSubspaceState(NamedTuple):
    inner: Any


def random_subspace(
    rank: int = 4,
    *,
    seed: int = 0,
    mode: str = "conflict",
    include: str = r".*",
    exclude: str | None = None,
    stacked: bool | str = True,
) -> optax.GradientTransformationExtraArgs:
    """SPF's rule against a fixed random rank-``rank`` subspace per matrix (the control).

    The random subspace is the top-``rank`` singular basis of a Gaussian matrix drawn once from
    ``seed`` (a Haar-random pair of ``rank``-frames). The transform ignores the
    ``safety_grads`` it is given (accepted so that it is a drop-in replacement of
    :func:`~jaxtrust.safety.spf`) and removes ``min(c_i, 0) u_i v_i^T`` for the random atoms.

    Args:
      rank: directions per matrix, as in :func:`~jaxtrust.safety.spf`.
      seed: the random subspace.
      mode, include, exclude, stacked: as in :func:`~jaxtrust.safety.spf`.

    Returns:
      an ``optax.GradientTransformationExtraArgs``.

    Example::

      tx = optax.chain(random_subspace(4, seed=1), optax.adamw(1e-3))
    """
    inner = spf(
        rank,
        mode=mode,
        include=include,
        exclude=exclude,
        stacked=stacked,
        refresh_every=None,
        basis="svd",
    )

    def random_tree(updates):
        leaves, treedef = _flatten(updates)
        keys = jax.random.split(jax.random.key(seed), len(leaves))
        return jax.tree.unflatten(
            treedef,
            [
                jax.random.normal(k, jnp.shape(x), jnp.float32)
                for k, (_, x) in zip(keys, leaves, strict=True)
            ],
        )

    def init_fn(params):
        return RandomSubspaceState(inner.init(params))

    def update_fn(updates, state, params=None, **extra):
        del extra
        new_updates, inner_state = inner.update(
            updates, state.inner, params, safety_grads=random_tree(updates)
        )
        return new_updates, RandomSubspaceState(inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class PCGradState(NamedTuple):
    conflicts: jax.Array  # number of updates in which <g, g_s> < 0 was projected


def pcgrad_full(
    *, include: str = r".*", exclude: str | None = None, eps: float = 1e-12
) -> optax.GradientTransformationExtraArgs:
    r"""Full-gradient PCGrad against the safety gradient (no low rank).

    With ``g`` the incoming update and ``g_s`` the safety gradient, both restricted to the leaves
    whose path matches ``include`` and not ``exclude`` and flattened into one vector:

    .. math:: g' = g - \frac{\min(\langle g, g_s\rangle, 0)}{\|g_s\|^2} g_s

    so ``<g', g_s> >= 0`` afterwards. Leaves outside the selection pass through unchanged.

    Args:
      include, exclude: regexes on parameter paths (``re.search``).
      eps: guards ``||g_s||^2`` (a zero safety gradient leaves ``g`` unchanged).

    Returns:
      an ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``safety_grads=``;
      the state counts the updates that were projected.

    References:
      Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.
    """
    inc, exc = re.compile(include), (re.compile(exclude) if exclude else None)

    def selected(path: str, leaf) -> bool:
        return (
            jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)
            and bool(inc.search(path))
            and not (exc and exc.search(path))
        )

    def init_fn(params):
        del params
        return PCGradState(jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None, *, safety_grads=None, **extra):
        del params, extra
        if safety_grads is None:
            raise ValueError("pcgrad_full needs safety_grads= (a params-shaped pytree)")
        flat_u, treedef = _flatten(updates)
        flat_s, s_treedef = _flatten(safety_grads)
        if treedef != s_treedef or [p for p, _ in flat_u] != [p for p, _ in flat_s]:
            raise ValueError(
                "safety_grads must have the same tree structure as the updates (inside "
                "optax.masked or optax.multi_transform, pass mask_compatible_extra_args=True so "
                "that safety_grads is masked like the updates)"
            )
        dot = jnp.zeros((), jnp.float32)
        norm2 = jnp.zeros((), jnp.float32)
        chosen = []
        for (path, u), (_, s) in zip(flat_u, flat_s, strict=True):
            if jnp.shape(u) != jnp.shape(s):
                raise ValueError(
                    f"safety_grads[{path!r}] has shape {jnp.shape(s)}, expected {jnp.shape(u)}"
                )
            take = selected(path, u)
            chosen.append(take)
            if take:
                dot = dot + jnp.vdot(jnp.asarray(u, jnp.float32), jnp.asarray(s, jnp.float32)).real
                norm2 = (
                    norm2 + jnp.vdot(jnp.asarray(s, jnp.float32), jnp.asarray(s, jnp.float32)).real
                )
        coef = jnp.where((dot < 0) & (norm2 > eps), dot / jnp.maximum(norm2, eps), 0.0)
        out = [
            (u - (coef * jnp.asarray(s, jnp.float32)).astype(jnp.asarray(u).dtype)) if take else u
            for (_, u), (_, s), take in zip(flat_u, flat_s, chosen, strict=True)
        ]
        return rebuild_like(updates, out), PCGradState(
            state.conflicts + (coef < 0).astype(jnp.int32)
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _safe_lora_matrix(
    delta: jax.Array, alignment: jax.Array, threshold: float
) -> tuple[jax.Array, jax.Array]:
    # flax kernels are [in, out]: the output space of the layer is the kernel's column axis, so
    # torch's C = V V^T (on [out, in]) is V^T V here, applied on the right
    norm = jnp.linalg.norm(alignment)
    projector = alignment.T @ alignment / jnp.maximum(norm, 1e-12)
    projected = delta @ projector
    cos = jnp.vdot(projected, delta) / jnp.maximum(
        jnp.linalg.norm(projected) * jnp.linalg.norm(delta), 1e-12
    )
    return jnp.where(cos < threshold, projected, delta), cos


def safe_lora_project(
    finetuned: Any,
    aligned: Any,
    base: Any,
    *,
    threshold: float = 0.35,
    include: str = r"layers/.*(proj)/kernel$",
    stacked: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Safe LoRA's post-hoc projection of a fine-tuning delta onto the alignment subspace.

    For each selected kernel ``W`` (stacked ``[layers, in, out]`` leaves per layer): the
    alignment matrix ``V = W_aligned - W_base`` (``[in, out]``), the projector
    ``C = V^T V / ||V||_F`` over the output space (torch's ``V V^T`` for ``[out, in]``), the
    delta ``dW = W_finetuned - W_aligned``, and ``W <- W_aligned + dW C`` where
    ``cos(dW C, dW) < threshold`` (the layers whose
    fine-tuning update left the alignment subspace), else unchanged.

    Args:
      finetuned, aligned, base: param pytrees of the same structure (e.g. ``nnx.state(model,
        nnx.Param)`` of the three models, or pure dicts).
      threshold: the similarity threshold tau (the paper uses 0.35-0.5 on Llama-2).
      include: regex of kernel paths to project.
      stacked: leaves with ``ndim == 3`` carry a leading layer axis.

    Returns:
      ``(params, info)`` with ``info = {"projected": [(path, layer), ...],
      "cosine": {path: [...]}}``.

    References:
      Hsu et al., "Safe LoRA: the Silver Lining of Reducing Safety Risks when Finetuning Large
      Language Models", NeurIPS 2024.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    inc = re.compile(include)
    leaves_f, treedef = jax.tree_util.tree_flatten_with_path(finetuned, is_leaf=_is_variable)
    leaves_a = jax.tree.leaves(aligned, is_leaf=_is_variable)
    leaves_b = jax.tree.leaves(base, is_leaf=_is_variable)
    if not len(leaves_f) == len(leaves_a) == len(leaves_b):
        raise ValueError("finetuned, aligned and base must have the same tree structure")
    out, info = [], {"projected": [], "cosine": {}}
    for (path, f), a, b in zip(leaves_f, leaves_a, leaves_b, strict=True):
        name = path_name(path)
        f_arr, a_arr, b_arr = (jnp.asarray(_unwrap(x)) for x in (f, a, b))
        if f_arr.shape != a_arr.shape or a_arr.shape != b_arr.shape:
            raise ValueError(f"{name}: shapes differ: {f_arr.shape}, {a_arr.shape}, {b_arr.shape}")
        if not inc.search(name) or f_arr.ndim < 2:
            out.append(f_arr)
            continue
        delta, alignment = f_arr - a_arr, a_arr - b_arr
        if stacked and f_arr.ndim == 3:
            new_delta, cos = jax.vmap(lambda d, v: _safe_lora_matrix(d, v, threshold))(
                delta, alignment
            )
        else:
            new_delta, cos = _safe_lora_matrix(
                delta.reshape(-1, delta.shape[-1]),
                alignment.reshape(-1, alignment.shape[-1]),
                threshold,
            )
            new_delta, cos = new_delta.reshape(delta.shape), cos[None]
        info["cosine"][name] = [float(c) for c in cos]
        info["projected"] += [
            (name, i) for i, c in enumerate(info["cosine"][name]) if c < threshold
        ]
        out.append(a_arr + new_delta)
    return jax.tree.unflatten(treedef, out), info


def safe_lora(
    finetuned: Any,
    aligned: Any,
    base: Any,
    *,
    threshold: float = 0.35,
    include: str = r"layers/.*(proj)/kernel$",
) -> tuple[Any, dict[str, Any]]:
    """:func:`safe_lora_project` on three NNX models; returns ``(projected model, info)``.

    Args:
      finetuned, aligned, base: modules of the same graph (e.g. three ``CausalLM``).
      threshold, include: as :func:`safe_lora_project`.

    Returns:
      a new module with the projected parameters (the inputs are untouched) and the info dict.
    """
    graphdef, params, rest = nnx.split(finetuned, nnx.Param, ...)
    projected, info = safe_lora_project(
        nnx.to_pure_dict(params),
        nnx.to_pure_dict(nnx.state(aligned, nnx.Param)),
        nnx.to_pure_dict(nnx.state(base, nnx.Param)),
        threshold=threshold,
        include=include,
    )
    params = jax.tree.map(lambda x: x, params)
    nnx.replace_by_pure_dict(params, projected)
    return nnx.merge(graphdef, params, rest), info
