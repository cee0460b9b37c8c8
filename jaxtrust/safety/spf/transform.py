# ruff: noqa: F722  (jaxtyping shape strings such as "m n" are not forward references)
"""SPF: safety-preserving fine-tuning as an optax gradient transformation.

See :func:`spf` for the method, the three readings of its projection rule and the API.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from jaxtrust.safety.spf.subspace import (
    BASIS_METHODS,
    PROJECTION_MODES,
    SubspaceBasis,
    basis_from_factors,
    choose_basis_method,
    compute_basis,
    project,
)
from jaxtrust.training.checks import require

__all__ = ["SPFState", "spf", "path_name", "selected_matrices"]


class SPFState(NamedTuple):
    """State of :func:`spf` (a pytree of arrays: jit-safe and checkpointable with orbax).

    Attributes:
        count: number of updates applied so far (int32 scalar).
        basis_ready: whether a safety basis has been estimated yet (bool scalar).
        last_refresh: the ``count`` at which the basis was last estimated, -1 before (int32).
        bases: one :class:`SubspaceBasis` per selected matrix leaf, in tree-flatten order;
            a stacked ``[L, ...]`` leaf has bases with a leading ``L`` axis.
    """

    count: jax.Array
    basis_ready: jax.Array
    last_refresh: jax.Array
    bases: tuple[SubspaceBasis, ...]


def _is_variable(x: Any) -> bool:
    # nnx.Variable without importing flax (cold import ~2.5 s): nnx.Optimizer hands init a
    # State whose leaves are still Variables (flax >= 0.11 `nnx.Optimizer(model, tx, wrt=...)`).
    return hasattr(x, "get_value") or type(x).__name__ in {"Param", "Variable", "VariableState"}


def _unwrap(x: Any) -> Any:
    if hasattr(x, "get_value"):
        return x.get_value()
    if _is_variable(x) and hasattr(x, "value"):
        return x.value
    return x


def path_name(path: tuple[Any, ...]) -> str:
    """``"/".join`` of a jax key path: dict keys, attribute names and sequence indices.

    ``{"layers": [{"attn": {"q": W}}]}`` -> ``"layers/0/attn/q"``; an ``nnx.State`` gives the
    module attribute path, e.g. ``"blocks/mlp/up/kernel"``.
    """
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def _flatten(tree: Any) -> tuple[list[tuple[str, Any]], Any]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)
    return [(path_name(p), _unwrap(x)) for p, x in leaves], treedef


def rebuild_like(tree: Any, new_leaves: list[Any]) -> Any:
    """``tree`` with its leaves (as :func:`_flatten` lists them) replaced by ``new_leaves``.

    A ``nnx.State`` of ``Param`` (the gradients of a jitted NNX train step) keeps its ``Param``
    wrappers: each Variable flattens to exactly one array child, so the orders agree.
    """
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), new_leaves)


class _Plan(NamedTuple):
    """Static description of one selected leaf."""

    index: int  # position among all leaves
    path: str
    shape: tuple[int, ...]
    stacked: bool  # leading layer axis vmapped over
    m: int
    n: int
    k: int  # stored basis columns


def _matrix_shape(shape: tuple[int, ...], stacked: bool) -> tuple[int, int]:
    inner = shape[1:] if stacked else shape
    return math.prod(inner[:-1]), inner[-1]


def selected_matrices(
    tree: Any,
    *,
    include: str = r".*",
    exclude: str | None = None,
    stacked: bool | str = True,
) -> dict[str, tuple[tuple[int, ...], bool, tuple[int, int]]]:
    """The leaves :func:`spf` would treat as matrices: ``path -> (shape, stacked, (m, n))``.

    Useful to check a regex before training (see :func:`spf` for the selection rules).
    """
    leaves, _ = _flatten(tree)
    out = {}
    for path, leaf in leaves:
        is_stacked = _leaf_is_stacked(path, leaf, include, exclude, stacked)
        if is_stacked is not None:
            out[path] = (
                tuple(leaf.shape),
                is_stacked,
                _matrix_shape(tuple(leaf.shape), is_stacked),
            )
    return out


_MASK_HINT = (
    " (inside optax.masked or optax.multi_transform, pass mask_compatible_extra_args=True so "
    "that safety_grads is masked like the updates)"
)


_LAYER_PATH = re.compile(r"(^|/)layers/")


def _leaf_is_stacked(path, leaf, include, exclude, stacked) -> bool | None:
    """None when the leaf is not selected, else whether its leading axis is a layer axis."""
    shape = getattr(leaf, "shape", None)
    if shape is None or len(shape) < 2:
        return None
    if not jnp.issubdtype(getattr(leaf, "dtype", jnp.float32), jnp.inexact):
        return None
    if re.search(include, path) is None:
        return None
    if exclude is not None and re.search(exclude, path) is not None:
        return None
    if isinstance(stacked, str):
        is_stacked = re.search(stacked, path) is not None
    else:
        # jaxtrust LMs keep every per-layer parameter under ``layers/`` with a leading layer
        # axis, so a 2-D leaf there ([layers, dim]: norm scales, biases) is a stack of vectors.
        is_stacked = bool(stacked) and (len(shape) >= 3 or _LAYER_PATH.search(path) is not None)
    if is_stacked and len(shape) < 3:
        return None  # a stack of vectors: nothing to project
    return is_stacked


def spf(
    rank: int | None = 8,
    *,
    explained_ratio: float | None = None,
    max_rank: int = 32,
    mode: str = "conflict",
    include: str = r".*",
    exclude: str | None = None,
    stacked: bool | str = True,
    refresh_every: int | None = None,
    basis: str = "auto",
    seed: int = 0,
    check_inputs: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""Safety-preserving fine-tuning: remove update components that conflict with safety.

    For every selected weight matrix ``W`` the safety gradient ``G_s = dL_s/dW`` of ONE refusal
    sample is truncated to its top-k singular triplets ``G_s ~= sum_{i<=k} s_i u_i v_i^T``.
    The atoms ``u_i v_i^T`` are orthonormal in the Frobenius inner product ``<A, B> = tr(A^T B)``.
    The incoming update ``G`` (a gradient, or Adam's direction when placed after Adam) has
    coordinates ``c_i = <G, u_i v_i^T> = u_i^T G v_i``. A step ``-eta G`` changes the safety
    loss by ``-eta <G_s, G> + O(eta^2)``, so a negative ``c_i`` is a direction in which the
    fine-tuning step works against safety. Three readings of "remove the components conflicting
    with the low-rank safety subspace" (the paper's exact rule is not public):

    * ``mode="conflict"`` (R1, default, the literal reading): ``G' = G - sum_i min(c_i, 0)
      u_i v_i^T``. Afterwards every ``c_i' = max(c_i, 0) >= 0``, so
      ``<G_s^(k), G'> = sum_i s_i max(c_i, 0) >= 0`` (no first-order increase of the rank-k
      safety loss), and ``<G', G> = ||G||^2 - sum_i min(c_i, 0)^2 = ||G'||^2 >= 0``: the step is
      still a descent direction of the fine-tuning loss (this gives the utility convergence),
      while the safety drift per step is bounded by
      ``eta sqrt(1 - CER(k)) ||G_s|| ||G'|| + O(eta^2)``. It removes only what conflicts, per
      direction, which is why it is the default: the least restrictive rule with the guarantee.
    * ``mode="pcgrad"`` (R2, PCGrad / SafeGrad against the denoised safety gradient):
      with ``S_k = sum_i s_i u_i v_i^T``, if ``<G, S_k> < 0`` then
      ``G' = G - <G, S_k> / ||S_k||^2 S_k``, else ``G`` unchanged. One scalar constraint per
      matrix: individual ``c_i`` may stay negative when others compensate.
    * ``mode="null"`` (R3, subspace nulling): ``G' = G - sum_i c_i u_i v_i^T`` (projection onto
      the orthogonal complement of ``span{u_i v_i^T}``), whatever the signs; the most
      restrictive, costs the most utility. ``mode="block"`` removes the larger block
      ``U U^T G V V^T`` (all ``k^2`` atoms ``u_i v_j^T``), the NSPO / SaLoRA-style null space.

    Matrices. A leaf is a matrix when it is a floating array with ``ndim >= 2`` whose path
    matches ``include`` and not ``exclude`` (``re.search``; anchor with ``^...$`` for exact
    names). The path is ``"/".join`` of the pytree key path (dict keys, attribute names,
    sequence indices), e.g. ``"layers/attn/q/kernel"`` for an ``nnx.State``. Leaves with
    ``ndim >= 3`` have a leading stacked-layers axis (the LM's ``[layers, in, out]`` weights)
    when ``stacked`` is True (or when their path matches ``stacked`` given as a regex); each
    layer gets its own basis (``jax.vmap``). All remaining axes are reshaped to 2-D as
    ``(prod(all but last), last)``, e.g. a DenseGeneral kernel ``[d, heads, head_dim]``
    (with ``stacked=False``) becomes ``[d * heads, head_dim]``. Other leaves pass through
    unchanged.

    Placement. It is an ordinary transform in an ``optax.chain``:

    * before Adam, on raw gradients: ``optax.chain(spf(...), optax.adamw(lr))``; Adam's
      per-coordinate scaling can re-create some conflict afterwards;
    * after Adam, on the actual direction: ``optax.chain(optax.scale_by_adam(), spf(...),
      optax.scale_by_learning_rate(lr))``; the first-order guarantee above then holds exactly
      for the applied step.

    Prefer ``include`` / ``exclude`` for layer selection. Inside ``optax.masked`` pass
    ``mask_compatible_extra_args=True`` so that ``safety_grads`` is masked like the updates.
    The state only depends on parameter shapes (derived in ``init`` from the unwrapped
    leaves), so ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` works: ``init`` sees
    ``nnx.Variable`` leaves, ``update`` arrays; ``safety_grads`` may be the ``nnx.State``
    returned by ``nnx.grad``.

    Args:
        rank: number of safety directions k per matrix (``1 <= k <= min(m, n)``, else a
            ValueError naming the matrix). Set ``rank=None`` to use ``explained_ratio``.
        explained_ratio: instead of a fixed rank, the smallest k with cumulative explained
            ratio ``CER(k) = sum_{i<=k} s_i^2 / ||G_s||_F^2 >= explained_ratio``, at most
            ``max_rank`` (clipped to ``min(m, n)`` per matrix; state shapes use that bound).
        max_rank: storage bound for ``explained_ratio``.
        mode: ``"conflict"`` | ``"pcgrad"`` | ``"null"`` | ``"block"`` (see above).
        include: regex of matrix paths to protect.
        exclude: regex of paths to leave alone (e.g. ``"embed|lm_head"``).
        stacked: whether a leaf carries a leading layer axis: True means leaves with ``ndim >= 3``
            and every leaf under a ``layers/`` path component (the jaxtrust LM layout, where
            ``[layers, dim]`` leaves are stacks of vectors and are skipped); or a regex on paths.
        refresh_every: when to (re-)estimate the basis from ``safety_grads``: ``None`` = once,
            at the first update that receives them, and keep it; ``1`` = every update; ``N`` =
            at updates ``0, N, 2N, ...`` (a ``lax.cond``, so shapes stay static under jit).
        basis: ``"auto"`` | ``"svd"`` | ``"gram"`` | ``"randomized"`` basis estimator
            (:func:`jaxtrust.safety.choose_basis_method`; ``"auto"`` uses the exact SVD up to a
            smaller side of 64, else the randomized range finder or the Gram matrix).
        seed: seed of the randomized range finder's test matrix.
        check_inputs: check ``safety_grads`` / ``safety_factors`` for NaN/Inf and a missing
            basis (under ``jax.jit`` via ``jax.debug.callback``). Structure, shape and rank
            errors are always checked (they are static).

    Returns:
        An ``optax.GradientTransformationExtraArgs``. Its ``update(updates, state, params=None,
        *, safety_grads=None, safety_factors=None)`` takes ``safety_grads``, a params-shaped
        pytree (the safety-loss gradient of one sample), and/or ``safety_factors``, a mapping
        ``path -> (x [T, m], gy [T, n])`` of per-token layer inputs and output gradients
        (``[L, T, m]``, ``[L, T, n]`` for stacked leaves) with ``G_s = x^T gy``, which gives
        the basis by QR of the thin factors and an SVD of a ``T x T`` core
        (:func:`jaxtrust.safety.basis_from_factors`). A basis must exist or be due: a first
        update without either raises ValueError.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from jaxtrust.safety.spf import spf
        >>> params = {"w": jnp.ones((4, 3))}
        >>> tx = optax.chain(spf(rank=1), optax.sgd(0.1))
        >>> state = tx.init(params)
        >>> safety = {"w": jnp.outer(jnp.arange(4.0), jnp.ones(3))}
        >>> grads = {"w": -safety["w"]}            # directly against safety
        >>> updates, state = tx.update(grads, state, params, safety_grads=safety)
        >>> bool(jnp.allclose(updates["w"], 0.0, atol=1e-5))   # the conflict is removed
        True

    References:
        Zhang et al., *Understanding and Preserving Safety in Fine-Tuned LLMs*,
        arXiv:2601.10141 (2026). Zhang et al., *Safety at One Shot: Patching Fine-Tuned LLMs
        with A Single Instance*, ICLR 2026, arXiv:2601.01887. Yu et al., *Gradient Surgery for
        Multi-Task Learning* (PCGrad), NeurIPS 2020.
    """
    for name, value in (
        ("rank", rank),
        ("explained_ratio", explained_ratio),
        ("max_rank", max_rank),
        ("refresh_every", refresh_every),
        ("seed", seed),
    ):
        if isinstance(value, jax.Array | jax.core.Tracer):
            raise TypeError(
                f"spf's {name} must be a static Python number, got a JAX array {value!r}. It "
                "sets the shapes of the state (or a Python-level schedule), so it cannot be a "
                "hyperparameter array: with optax.inject_hyperparams pass "
                'static_args=("rank", "explained_ratio", "max_rank", "refresh_every", "seed")'
            )
    if (rank is None) == (explained_ratio is None):
        raise ValueError(
            "give exactly one of rank (an int >= 1) or explained_ratio (in (0, 1]); got "
            f"rank={rank!r}, explained_ratio={explained_ratio!r}"
        )
    if rank is not None and (not isinstance(rank, int | np.integer) or rank <= 0):
        raise ValueError(f"rank must be a positive int, got rank={rank!r}")
    if explained_ratio is not None:
        if not 0.0 < float(explained_ratio) <= 1.0:
            raise ValueError(f"explained_ratio must be in (0, 1], got {explained_ratio!r}")
        if not isinstance(max_rank, int | np.integer) or max_rank <= 0:
            raise ValueError(f"max_rank must be a positive int, got max_rank={max_rank!r}")
    if mode not in PROJECTION_MODES:
        raise ValueError(f"mode must be one of {PROJECTION_MODES}, got mode={mode!r}")
    if basis not in BASIS_METHODS:
        raise ValueError(f"basis must be one of {BASIS_METHODS}, got basis={basis!r}")
    if refresh_every is not None and (
        not isinstance(refresh_every, int | np.integer) or refresh_every <= 0
    ):
        raise ValueError(f"refresh_every must be None or an int >= 1, got {refresh_every!r}")
    for name, pattern in (("include", include), ("exclude", exclude), ("stacked", stacked)):
        if isinstance(pattern, str):
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"{name} is not a valid regex: {pattern!r} ({err})") from err

    def make_plans(tree: Any) -> tuple[list[tuple[str, Any]], Any, list[_Plan]]:
        leaves, treedef = _flatten(tree)
        plans = []
        for index, (path, leaf) in enumerate(leaves):
            is_stacked = _leaf_is_stacked(path, leaf, include, exclude, stacked)
            if is_stacked is None:
                continue
            shape = tuple(leaf.shape)
            m, n = _matrix_shape(shape, is_stacked)
            if rank is not None:
                if rank > min(m, n):
                    raise ValueError(
                        f"rank={rank} exceeds min(m, n)={min(m, n)} of matrix {path!r} "
                        f"(leaf shape {shape}, as 2-D [{m}, {n}]); lower rank or exclude it"
                    )
                k = int(rank)
            else:
                k = min(int(max_rank), m, n)
            plans.append(_Plan(index, path, shape, is_stacked, m, n, k))
        return leaves, treedef, plans

    def empty_bases(plans: list[_Plan]) -> tuple[SubspaceBasis, ...]:
        out = []
        for p in plans:
            lead = (p.shape[0],) if p.stacked else ()
            out.append(
                SubspaceBasis(
                    jnp.zeros((*lead, p.m, p.k), jnp.float32),
                    jnp.zeros((*lead, p.k), jnp.float32),
                    jnp.zeros((*lead, p.n, p.k), jnp.float32),
                )
            )
        return tuple(out)

    def init_fn(params: Any) -> SPFState:
        leaves, _, plans = make_plans(params)
        if not plans:
            paths = [path for path, _ in leaves][:8]
            raise ValueError(
                f"spf(include={include!r}, exclude={exclude!r}) selects no matrix of the params, "
                f"so it would protect nothing. Parameter paths look like {paths}; check the "
                "regex with jaxtrust.safety.spf.selected_matrices(params, include=...)"
            )
        return SPFState(
            count=jnp.zeros([], jnp.int32),
            basis_ready=jnp.zeros([], jnp.bool_),
            last_refresh=jnp.full([], -1, jnp.int32),
            bases=empty_bases(plans),
        )

    def basis_of_matrix(g2d: Any, p: _Plan) -> SubspaceBasis:
        return compute_basis(
            g2d,
            p.k,
            method=choose_basis_method((p.m, p.n), p.k, basis),
            explained_ratio=explained_ratio,
            seed=seed,
        )

    def basis_of_leaf(p: _Plan, grad_leaf: Any, factors: Any) -> SubspaceBasis:
        if factors is not None:
            x, gy = factors
            fn = functools.partial(basis_from_factors, k=p.k, explained_ratio=explained_ratio)
            return jax.lax.map(lambda xg: fn(*xg), (x, gy)) if p.stacked else fn(x, gy)
        if p.stacked:
            # lax.map, not vmap: a vmapped SVD/eigh becomes ONE batched LAPACK call, and jaxlib's
            # batched kernels split the batch over XLA's CPU thread pool; two of them running at
            # once (two stacked leaves) on a 2-thread pool each waited for the other's workers: a
            # deadlock (seen with jax 0.10.2 on 2 cores). Per-layer calls run inline.
            mats = grad_leaf.reshape(p.shape[0], p.m, p.n)
            return jax.lax.map(lambda g: basis_of_matrix(g, p), mats)
        return basis_of_matrix(grad_leaf.reshape(p.m, p.n), p)

    def project_leaf(leaf: Any, b: SubspaceBasis, p: _Plan) -> jax.Array:
        if p.stacked:
            mats = leaf.reshape(p.shape[0], p.m, p.n)
            out = jax.vmap(lambda g, bb: project(g, bb, mode))(mats, b)
        else:
            out = project(leaf.reshape(p.m, p.n), b, mode)
        return out.reshape(p.shape)

    def check_safety_grads(leaves, safety_grads) -> list[tuple[str, Any]]:
        s_leaves, _ = _flatten(safety_grads)
        for i, (path, leaf) in enumerate(leaves):
            if i >= len(s_leaves):
                raise ValueError(
                    f"safety_grads must have the structure of the updates; it has no leaf "
                    f"{path!r} (it has {len(s_leaves)} leaves, the updates {len(leaves)})"
                    + _MASK_HINT
                )
            s_path, s_leaf = s_leaves[i]
            if s_path != path:
                raise ValueError(
                    f"safety_grads must have the structure of the updates; first differing "
                    f"path: updates {path!r} vs safety_grads {s_path!r}" + _MASK_HINT
                )
            if tuple(jnp.shape(s_leaf)) != tuple(jnp.shape(leaf)):
                raise ValueError(
                    f"safety_grads[{path!r}] has shape {tuple(jnp.shape(s_leaf))}, expected "
                    f"the update's shape {tuple(jnp.shape(leaf))}"
                )
        if len(s_leaves) > len(leaves):
            raise ValueError(
                f"safety_grads must have the structure of the updates; it has an extra leaf "
                f"{s_leaves[len(leaves)][0]!r}" + _MASK_HINT
            )
        return s_leaves

    def check_factors(plans: list[_Plan], safety_factors: Mapping[str, Any]) -> dict[str, Any]:
        by_path = {p.path: p for p in plans}
        out = {}
        for path, factors in safety_factors.items():
            if path not in by_path:
                raise ValueError(
                    f"safety_factors has path {path!r}, which is not a selected matrix; "
                    f"selected: {sorted(by_path)}"
                )
            p = by_path[path]
            if not isinstance(factors, tuple | list) or len(factors) != 2:
                raise ValueError(f"safety_factors[{path!r}] must be a pair (x, gy)")
            x, gy = (jnp.asarray(f) for f in factors)
            lead = (p.shape[0],) if p.stacked else ()
            nd = len(lead) + 2
            ok = (
                x.ndim == nd
                and gy.ndim == nd
                and x.shape[:-2] == lead
                and gy.shape[:-2] == lead
                and x.shape[-1] == p.m
                and gy.shape[-1] == p.n
                and x.shape[-2] == gy.shape[-2]
            )
            if not ok:
                x_spec = ", ".join(map(str, (*lead, "T", p.m)))
                gy_spec = ", ".join(map(str, (*lead, "T", p.n)))
                raise ValueError(
                    f"safety_factors[{path!r}] must be x [{x_spec}] and gy [{gy_spec}] "
                    f"(same T), got {tuple(x.shape)} and {tuple(gy.shape)}"
                )
            out[path] = (x, gy)
        return out

    def update_fn(
        updates: Any,
        state: SPFState,
        params: Any = None,
        *,
        safety_grads: Any = None,
        safety_factors: Mapping[str, tuple[Float[Array, "T m"], Float[Array, "T n"]]] | None = None,
        **extra_args: Any,
    ) -> tuple[Any, SPFState]:
        del params, extra_args
        leaves, treedef, plans = make_plans(updates)
        if len(plans) != len(state.bases):
            raise ValueError(
                "spf state does not match the updates: it was initialised for "
                f"{len(state.bases)} matrices, the updates have {len(plans)} selected matrices "
                f"({[p.path for p in plans]}); init the optimizer with the same parameters"
                + _MASK_HINT
            )
        for p, b in zip(plans, state.bases, strict=True):
            lead = (p.shape[0],) if p.stacked else ()
            if tuple(b.u.shape) != (*lead, p.m, p.k) or tuple(b.v.shape) != (*lead, p.n, p.k):
                init_shape = (*b.u.shape[:-2], b.u.shape[-2], b.v.shape[-2])
                raise ValueError(
                    f"the update of {p.path!r} has shape {p.shape} (as matrices "
                    f"{(*lead, p.m, p.n)}), but spf was initialised with a parameter of matrix "
                    f"shape {init_shape}; init the optimizer with the parameters you update"
                )

        s_leaves = check_safety_grads(leaves, safety_grads) if safety_grads is not None else None
        factors = check_factors(plans, safety_factors) if safety_factors else {}
        has_safety = s_leaves is not None or (factors and all(p.path in factors for p in plans))
        if s_leaves is None and factors and not has_safety:
            missing = next(p.path for p in plans if p.path not in factors)
            raise ValueError(
                f"safety_factors covers only some matrices and safety_grads is None; missing "
                f"{missing!r}. Pass safety_grads for the rest"
            )

        count = state.count
        if refresh_every is None:
            refresh = ~state.basis_ready
        elif refresh_every == 1:
            refresh = jnp.ones([], jnp.bool_)
        else:
            refresh = (count % refresh_every == 0) | ~state.basis_ready

        if not has_safety:
            if refresh_every == 1:
                raise ValueError(
                    "spf(refresh_every=1) re-estimates the safety basis at every update: pass "
                    "safety_grads=<params-shaped safety-loss gradient> to update()"
                )
            if check_inputs:
                require(
                    ~refresh,
                    "spf needs safety_grads (the params-shaped gradient of the safety loss on "
                    "one sample) on this update: no safety basis has been estimated yet, or a "
                    f"refresh is due (refresh_every={refresh_every}); pass "
                    "update(..., safety_grads=...)",
                )
            new_bases = state.bases
            refresh = jnp.zeros([], jnp.bool_)
        else:
            if check_inputs:
                names, flags = [], []
                if s_leaves is not None:
                    for path, leaf in s_leaves:
                        names.append(f"safety_grads[{path!r}] contains NaN or Inf")
                        flags.append(jnp.all(jnp.isfinite(leaf)))
                for path, (x, gy) in factors.items():
                    names.append(f"safety_factors[{path!r}] contains NaN or Inf")
                    flags.append(jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(gy)))
                if flags:
                    require(jnp.stack(flags), names)

            def fresh_bases() -> tuple[SubspaceBasis, ...]:
                return tuple(
                    basis_of_leaf(
                        p,
                        None if p.path in factors else s_leaves[p.index][1],
                        factors.get(p.path),
                    )
                    for p in plans
                )

            try:
                refresh_now = bool(refresh)
            except jax.errors.ConcretizationTypeError:
                refresh_now = None
            if refresh_now is None:
                new_bases = jax.lax.cond(refresh, fresh_bases, lambda: state.bases)
            else:
                new_bases = fresh_bases() if refresh_now else state.bases

        new_leaves = [leaf for _, leaf in leaves]
        for p, b in zip(plans, new_bases, strict=True):
            new_leaves[p.index] = project_leaf(new_leaves[p.index], b, p)
        new_state = SPFState(
            count=optax.safe_increment(count),
            basis_ready=state.basis_ready | refresh,
            last_refresh=jnp.where(refresh, count, state.last_refresh).astype(jnp.int32),
            bases=tuple(new_bases),
        )
        return rebuild_like(updates, new_leaves), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
