# ruff: noqa: F722  (jaxtyping shape strings such as "m n" are not forward references)
"""Gradient geometry tools for the SPF analysis (the paper's three insights as tables).

Pure functions on pytrees of gradients, matched per 2-D matrix with the same selection rules
as :func:`jaxtrust.safety.spf` (``include`` / ``exclude`` regexes on ``"/"``-joined paths;
leaves with ``ndim >= 3`` have a leading stacked-layers axis when ``stacked`` is True, and one
row per layer is reported as ``"path[i]"``; remaining axes are reshaped to
``(prod(all but last), last)``).

* Insight I (low rank): :func:`spectrum_table` - cumulative explained ratio
  ``CER(k) = sum_{i<=k} s_i^2 / sum_i s_i^2``, the entropy effective rank
  ``exp(-sum_i p_i log p_i)`` with ``p_i = s_i / sum_j s_j`` (Roy & Vetterli 2007) and
  ``k@ratio``, the smallest k with ``CER(k) >= ratio``; per matrix and aggregated.
* Insight II (conflict): :func:`gradient_cosine` - global and per-leaf cosine.
* Insight III (one sample suffices): :func:`subspace_overlap` / :func:`basis_overlap_table` -
  mean squared cosine of the principal angles between two rank-k bases,
  ``phi = ||U_a^T U_b||_F^2 / min(k_a, k_b)``, against the chance level of two random
  k-dimensional subspaces of R^n, ``E[phi] = k / n`` (:func:`random_subspace_overlap`).

References:
    Zhang et al., arXiv:2601.10141 and arXiv:2601.01887 (2026). Roy & Vetterli, *The effective
    rank: a measure of effective dimensionality*, EUSIPCO 2007.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from jaxtrust.safety.spf.subspace import explained_ratio_curve, rank_for_ratio
from jaxtrust.safety.spf.transform import _flatten, _leaf_is_stacked, _matrix_shape

__all__ = [
    "basis_overlap_table",
    "effective_rank",
    "gradient_cosine",
    "matrices",
    "random_subspace_overlap",
    "spectrum_table",
    "subspace_overlap",
    "top_singular_vectors",
]


def matrices(
    tree: Any, *, include: str = r".*", exclude: str | None = None, stacked: bool | str = True
) -> dict[str, np.ndarray]:
    """The 2-D matrices of a gradient pytree, ``name -> [m, n]`` float32 NumPy array.

    Stacked leaves ``[L, ...]`` give one entry per layer, named ``"path[i]"``.
    """
    out: dict[str, np.ndarray] = {}
    for path, leaf in _flatten(tree)[0]:
        is_stacked = _leaf_is_stacked(path, leaf, include, exclude, stacked)
        if is_stacked is None:
            continue
        m, n = _matrix_shape(tuple(leaf.shape), is_stacked)
        arr = np.asarray(leaf, dtype=np.float32)
        if is_stacked:
            for i, mat in enumerate(arr.reshape(arr.shape[0], m, n)):
                out[f"{path}[{i}]"] = mat
        else:
            out[path] = arr.reshape(m, n)
    return out


def effective_rank(s: Float[ArrayLike, " r"]) -> float:
    """Entropy effective rank ``exp(H(p))``, ``p_i = s_i / sum_j s_j`` (1 <= erank <= r).

    Returns 0.0 for an all-zero spectrum.
    """
    s = np.asarray(s, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def spectrum_table(
    grads: Any,
    *,
    ks: tuple[int, ...] = (1, 4, 10, 20),
    ratio: float = 0.9,
    include: str = r".*",
    exclude: str | None = None,
    stacked: bool | str = True,
) -> dict[str, dict[str, float]]:
    """Low-rank structure of a gradient pytree, per matrix and aggregated.

    Args:
        grads: a gradient pytree (dict, ``nnx.State`` ...).
        ks: ranks at which to report ``CER(k)`` (clipped to the matrix rank bound).
        ratio: the threshold of ``k@ratio``.
        include, exclude, stacked: matrix selection (see the module docstring).

    Returns:
        ``{name: {"cer@k": ..., "effective_rank": ..., "k@<ratio>": ..., "numel": ...}}`` for
        every matrix, plus two aggregate rows: ``"mean"`` (unweighted mean over matrices) and
        ``"energy_weighted"`` (rows weighted by ``||G||_F^2``, i.e. the CER of the whole
        gradient when every matrix is truncated to rank k).
    """
    rows: dict[str, dict[str, float]] = {}
    energies = []
    key_ratio = f"k@{ratio:g}"
    for name, mat in matrices(grads, include=include, exclude=exclude, stacked=stacked).items():
        s = np.linalg.svd(mat.astype(np.float64), compute_uv=False)
        cer = np.asarray(explained_ratio_curve(jnp.asarray(s, jnp.float32)))
        row = {f"cer@{k}": float(cer[min(k, len(cer)) - 1]) for k in ks}
        row["effective_rank"] = effective_rank(s)
        row[key_ratio] = float(rank_for_ratio(jnp.asarray(s, jnp.float32), ratio))
        row["numel"] = float(mat.size)
        rows[name] = row
        energies.append(float(np.sum(s**2)))
    if rows:
        cols = list(next(iter(rows.values())))
        table = np.array([[r[c] for c in cols] for r in rows.values()])
        w = np.asarray(energies)
        weights = w / w.sum() if w.sum() > 0 else np.full_like(w, 1.0 / len(w))
        mean = dict(zip(cols, table.mean(axis=0).tolist(), strict=True))
        weighted = dict(zip(cols, (weights @ table).tolist(), strict=True))
        mean["numel"] = weighted["numel"] = float(table[:, cols.index("numel")].sum())
        rows["mean"] = mean
        rows["energy_weighted"] = weighted
    return rows


def gradient_cosine(a: Any, b: Any) -> tuple[float, dict[str, float]]:
    """Cosine similarity of two gradient pytrees with the same structure.

    Returns:
        ``(global_cosine, {path: per_leaf_cosine})``; the global one uses the full flattened
        gradients; a zero-norm leaf gets cosine 0.
    """
    la, lb = _flatten(a)[0], _flatten(b)[0]
    if [p for p, _ in la] != [p for p, _ in lb]:
        first = next(
            (pa for (pa, _), (pb, _) in zip(la, lb, strict=False) if pa != pb),
            "<length differs>",
        )
        raise ValueError(
            f"gradient_cosine needs two pytrees of the same structure; differs at {first!r}"
        )
    per_leaf: dict[str, float] = {}
    dot = na = nb = 0.0
    for (path, x), (_, y) in zip(la, lb, strict=True):
        x = np.asarray(x, np.float64).ravel()
        y = np.asarray(y, np.float64).ravel()
        if x.shape != y.shape:
            raise ValueError(f"gradient_cosine: leaf {path!r} has shapes {x.shape} vs {y.shape}")
        d, nx, ny = float(x @ y), float(x @ x), float(y @ y)
        per_leaf[path] = d / math.sqrt(nx * ny) if nx > 0 and ny > 0 else 0.0
        dot, na, nb = dot + d, na + nx, nb + ny
    glob = dot / math.sqrt(na * nb) if na > 0 and nb > 0 else 0.0
    return glob, per_leaf


def subspace_overlap(u_a: Float[ArrayLike, "n ka"], u_b: Float[ArrayLike, "n kb"]) -> float:
    """Mean squared cosine of the principal angles between ``span(u_a)`` and ``span(u_b)``.

    ``phi = ||U_a^T U_b||_F^2 / min(k_a, k_b) = mean_i cos^2(theta_i)`` for orthonormal
    columns; 1 for identical subspaces, 0 for orthogonal ones. Zero (unused) columns are
    dropped first, so bases from :mod:`jaxtrust.safety` can be passed directly.
    """
    a, b = np.asarray(u_a, np.float64), np.asarray(u_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(
            f"subspace_overlap needs u_a [n, ka] and u_b [n, kb], got {a.shape}, {b.shape}"
        )
    a = a[:, np.linalg.norm(a, axis=0) > 0]
    b = b[:, np.linalg.norm(b, axis=0) > 0]
    k = min(a.shape[1], b.shape[1])
    if k == 0:
        return 0.0
    return float(np.sum((a.T @ b) ** 2) / k)


def random_subspace_overlap(k: int, n: int) -> float:
    """Chance level of :func:`subspace_overlap` for two random k-dim subspaces of R^n: ``k/n``.

    ``E||U_a^T U_b||_F^2 = sum_{ij} E(u_i . w_j)^2 = k^2 / n`` for uniformly random
    orthonormal bases, divided by k.
    """
    if not 1 <= k <= n:
        raise ValueError(f"random_subspace_overlap needs 1 <= k <= n, got k={k}, n={n}")
    return k / n


def top_singular_vectors(mat: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(U_k [m, k'], s_k [k'], V_k [n, k'])`` with ``k' = min(k, numerical rank)``."""
    u, s, vt = np.linalg.svd(np.asarray(mat, np.float64), full_matrices=False)
    tol = max(mat.shape) * np.finfo(np.float32).eps * (s[0] if s.size else 0.0)
    kk = int(min(k, np.sum(s > tol)))
    return u[:, :kk], s[:kk], vt[:kk].T


def basis_overlap_table(
    grads_a: Any,
    grads_b: Any,
    *,
    k: int = 10,
    include: str = r".*",
    exclude: str | None = None,
    stacked: bool | str = True,
) -> dict[str, dict[str, float]]:
    """Per-matrix overlap of the rank-k singular subspaces of two gradient pytrees.

    Returns:
        ``{name: {"left": phi(U_a, U_b), "right": phi(V_a, V_b), "random_left": k/m,
        "random_right": k/n, "k": k'}}`` per matrix plus a ``"mean"`` row. ``k'`` is k
        clipped to the numerical ranks of both matrices, and the baselines use it.
    """
    ma = matrices(grads_a, include=include, exclude=exclude, stacked=stacked)
    mb = matrices(grads_b, include=include, exclude=exclude, stacked=stacked)
    if list(ma) != list(mb):
        raise ValueError("basis_overlap_table needs two gradient pytrees with the same matrices")
    rows: dict[str, dict[str, float]] = {}
    for name, a in ma.items():
        b = mb[name]
        if a.shape != b.shape:
            raise ValueError(f"basis_overlap_table: {name!r} has shapes {a.shape} vs {b.shape}")
        ua, _, va = top_singular_vectors(a, k)
        ub, _, vb = top_singular_vectors(b, k)
        kk = min(ua.shape[1], ub.shape[1])
        m, n = a.shape
        rows[name] = {
            "left": subspace_overlap(ua, ub),
            "right": subspace_overlap(va, vb),
            "random_left": kk / m if kk else 0.0,
            "random_right": kk / n if kk else 0.0,
            "k": float(kk),
        }
    if rows:
        cols = list(next(iter(rows.values())))
        rows["mean"] = {c: float(np.mean([r[c] for r in rows.values()])) for c in cols}
    return rows
