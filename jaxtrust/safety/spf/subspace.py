# ruff: noqa: F722  (jaxtyping shape strings such as "m n" are not forward references)
"""Per-matrix low-rank safety bases and the three SPF projection rules, as pure functions.

Everything here works on ONE 2-D matrix ``G`` of shape ``[m, n]`` (``jax.vmap`` them for a
stacked ``[layers, m, n]`` weight; :mod:`jaxtrust.safety.spf.transform` does that). A
rank-``k`` basis is
a :class:`SubspaceBasis` ``(u [m, k], s [k], v [n, k])`` holding the top singular triplets of the
safety gradient ``G_s ~= sum_i s_i u_i v_i^T``. Its storage is shape-static: unused columns
(beyond the chosen rank, or numerically zero singular values) are stored as zeros, so a column
of zeros contributes nothing to any projection. The atoms ``u_i v_i^T`` of the used columns are
orthonormal under the Frobenius inner product ``<A, B> = trace(A^T B)``.

Basis estimators (all return the same subspace on inputs of rank <= k, up to column signs):

* ``"svd"``: ``jnp.linalg.svd`` of ``G``; ``O(m n min(m, n))``, the reference.
* ``"gram"``: eigen-decomposition of the Gram matrix of the smaller side (``G G^T`` when
  ``m <= n``), then the other side from ``G^T u_i / s_i``. Squares the condition number, which
  is harmless for the *top* directions we keep.
* ``"randomized"``: randomized range finder (Halko, Martinsson & Tropp 2011, Alg. 4.4 with
  ``power_iters`` subspace iterations and ``oversample`` extra columns), then the SVD of a small
  ``(k + p) x n`` matrix. Exact when ``rank(G) <= k + oversample``.
* factored (:func:`basis_from_factors`): a one-sample gradient of a linear layer ``y = x W``
  is ``G = X^T Gy = sum_t x_t g_t^T`` over the ``T`` supervised tokens, so ``rank(G) <= T``.
  With the thin factors ``X [T, m]`` and ``Gy [T, n]``: ``X^T = Qx Rx``, ``Gy^T = Qy Ry``,
  ``G = Qx (Rx Ry^T) Qy^T``, and the SVD of the ``T x T`` core gives the basis in
  ``O((m + n) T^2)`` without ever forming ``G``.

References:
    Zhang et al., *Understanding and Preserving Safety in Fine-Tuned LLMs*, arXiv:2601.10141
    (2026). Halko, Martinsson & Tropp, *Finding Structure with Randomness*, SIAM Review (2011).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float

BasisMethod = Literal["auto", "svd", "gram", "randomized"]
ProjectionMode = Literal["conflict", "pcgrad", "null", "block"]
BASIS_METHODS = ("auto", "svd", "gram", "randomized")
PROJECTION_MODES = ("conflict", "pcgrad", "null", "block")

# "auto" uses the exact SVD up to this smaller side; beyond it the cheaper estimators
# (benchmarks/spf_basis.py: on CPU the Gram route is already ~4x faster than the SVD at
# 128 x 512 with the same accuracy, and the randomized one faster still).
AUTO_SVD_MAX_SIDE = 64


class SubspaceBasis(NamedTuple):
    """Top-k singular triplets of one safety-gradient matrix (zeros in unused columns).

    Attributes:
        u: left singular vectors, ``[..., m, k]``.
        s: singular values, descending, ``[..., k]`` (0 for unused columns).
        v: right singular vectors, ``[..., n, k]``.
    """

    u: Float[ArrayLike, "... m k"]
    s: Float[ArrayLike, "... k"]
    v: Float[ArrayLike, "... n k"]


def empty_basis(m: int, n: int, k: int, dtype=jnp.float32) -> SubspaceBasis:
    """An all-zero (inactive) basis of static shape ``([m, k], [k], [n, k])``."""
    return SubspaceBasis(jnp.zeros((m, k), dtype), jnp.zeros((k,), dtype), jnp.zeros((n, k), dtype))


def explained_ratio_curve(s: Float[ArrayLike, "... r"]) -> Float[ArrayLike, "... r"]:
    """Cumulative explained ratio ``CER(k) = sum_{i<=k} s_i^2 / sum_i s_i^2`` for k = 1..r.

    ``s`` must be sorted descending; an all-zero spectrum gives all ones (nothing to explain).
    """
    energy = jnp.square(s.astype(jnp.float32))
    total = jnp.sum(energy, axis=-1, keepdims=True)
    cumulative = jnp.cumsum(energy, axis=-1)
    return jnp.where(total > 0, cumulative / jnp.where(total > 0, total, 1.0), 1.0)


def rank_for_ratio(s: Float[ArrayLike, "... r"], ratio: float) -> jax.Array:
    """Smallest ``k`` with ``CER(k) >= ratio`` (an int array; 0 for an all-zero spectrum)."""
    cer = explained_ratio_curve(s)
    # A small slack so that ratio=1.0 is reachable despite float32 rounding of the cumsum.
    k = 1 + jnp.sum(cer < ratio - 1e-6, axis=-1)
    nonzero = jnp.any(s > 0, axis=-1)
    return jnp.where(nonzero, jnp.minimum(k, s.shape[-1]), 0)


def _numerical_rank_mask(s: Float[ArrayLike, " r"], rtol: float) -> jax.Array:
    """True for singular values above ``rtol * s_1`` (and strictly positive)."""
    return (s > rtol * jnp.max(s, initial=0.0)) & (s > 0)


def _ratio_rank(s: jax.Array, ratio: float, total_energy: jax.Array) -> jax.Array:
    """Smallest prefix of ``s`` whose energy reaches ``ratio * total_energy`` (0 if empty)."""
    energy = jnp.cumsum(jnp.square(s))
    safe_total = jnp.where(total_energy > 0, total_energy, 1.0)
    k = 1 + jnp.sum(energy / safe_total < ratio - 1e-6)
    return jnp.where(total_energy > 0, k, 0)


def _truncate(
    u: jax.Array,
    s: jax.Array,
    v: jax.Array,
    k: int,
    *,
    explained_ratio: float | None,
    total_energy: jax.Array,
    rtol: float,
) -> SubspaceBasis:
    """Keep the first ``k`` triplets, zeroing numerically-null and beyond-ratio columns.

    ``total_energy`` is ``||G||_F^2 = sum_i s_i^2`` over the WHOLE spectrum, so the ratio is
    right even when an estimator only returns the top part of the spectrum.
    """
    r = s.shape[0]
    if r < k:  # fewer triplets than storage columns (e.g. T < k in the factored path)
        u = jnp.pad(u, ((0, 0), (0, k - r)))
        v = jnp.pad(v, ((0, 0), (0, k - r)))
        s = jnp.pad(s, (0, k - r))
    u, s, v = u[:, :k], s[:k], v[:, :k]
    keep = _numerical_rank_mask(s, rtol)
    if explained_ratio is not None:
        keep = keep & (jnp.arange(k) < _ratio_rank(s, explained_ratio, total_energy))
    keep_f = keep.astype(u.dtype)
    return SubspaceBasis(u * keep_f[None, :], s * keep_f, v * keep_f[None, :])


def _svd_rtol(shape: tuple[int, ...]) -> float:
    # LAPACK's usual numerical-rank tolerance, max(m, n) * eps, relative to s_1.
    return max(shape) * float(jnp.finfo(jnp.float32).eps)


# Eigenvalues of a Gram matrix are accurate to ~eps * s_1^2, so singular values from it are
# accurate only to ~sqrt(eps) * s_1 ~ 3e-4 s_1; directions below 1e-3 s_1 (1e-6 of the energy)
# are indistinguishable from noise there and are dropped.
GRAM_RTOL = 1e-3


def choose_basis_method(shape: tuple[int, int], k: int, method: BasisMethod = "auto") -> str:
    """Resolve ``"auto"``: exact SVD for small matrices, else randomized or Gram.

    The randomized range finder wins when ``k + oversample`` is much smaller than the smaller
    side; otherwise the Gram matrix of the smaller side is the cheaper exact-enough route.
    Whatever the estimator, the stored ``u``/``v`` columns are orthonormal, so the projection
    guarantees of :func:`project` (``c_i >= 0`` after ``"conflict"``, descent kept) hold
    exactly for the basis it returns; only how well that basis matches the true top-k
    singular subspace depends on the estimator (randomized: exact when
    ``rank(G) <= k + 8``, otherwise it needs a decaying spectrum).
    """
    if method not in BASIS_METHODS:
        raise ValueError(f"basis must be one of {BASIS_METHODS}, got {method!r}")
    if method != "auto":
        return method
    small = min(shape)
    if small <= AUTO_SVD_MAX_SIDE:
        return "svd"
    if 4 * (k + 8) <= small:
        return "randomized"
    return "gram"


def basis_svd(
    g: Float[ArrayLike, "m n"], k: int, *, explained_ratio: float | None = None
) -> SubspaceBasis:
    """Top-k basis from the full thin SVD (the reference estimator).

    Args:
        g: the safety-gradient matrix ``[m, n]``.
        k: number of stored columns (``1 <= k <= min(m, n)``).
        explained_ratio: if given, keep only the smallest prefix reaching this CER.

    Returns:
        A :class:`SubspaceBasis` with ``u [m, k]``, ``s [k]``, ``v [n, k]``.
    """
    g = g.astype(jnp.float32)
    u, s, vt = jnp.linalg.svd(g, full_matrices=False)
    return _truncate(
        u,
        s,
        vt.T,
        k,
        explained_ratio=explained_ratio,
        total_energy=jnp.sum(jnp.square(s)),
        rtol=_svd_rtol(g.shape),
    )


def basis_gram(
    g: Float[ArrayLike, "m n"], k: int, *, explained_ratio: float | None = None
) -> SubspaceBasis:
    """Top-k basis from the eigen-decomposition of the Gram matrix of the smaller side.

    With ``m <= n``: ``G G^T = U diag(s^2) U^T``, then ``v_i = G^T u_i / s_i``
    (symmetrically for ``m > n``). Cost ``O(m n min(m, n))`` in one matmul plus an
    ``O(min(m, n)^3)`` symmetric eigensolver.
    """
    g = g.astype(jnp.float32)
    transpose = g.shape[0] > g.shape[1]
    a = g.T if transpose else g  # a: [small, large]
    gram = a @ a.T
    evals, evecs = jnp.linalg.eigh(gram)
    order = jnp.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    del evals
    # s_i = ||a^T e_i|| is more accurate than sqrt(eigenvalue_i) and normalises the other side.
    other = a.T @ evecs
    s = jnp.linalg.norm(other, axis=0)
    other = other / jnp.where(s > 0, s, 1.0)[None, :]
    u, v = (other, evecs) if transpose else (evecs, other)
    return _truncate(
        u,
        s,
        v,
        k,
        explained_ratio=explained_ratio,
        total_energy=jnp.sum(jnp.square(g)),
        rtol=GRAM_RTOL,
    )


def basis_randomized(
    g: Float[ArrayLike, "m n"],
    k: int,
    *,
    explained_ratio: float | None = None,
    oversample: int = 8,
    power_iters: int = 2,
    seed: int = 0,
) -> SubspaceBasis:
    """Top-k basis from a randomized range finder with subspace (power) iterations.

    ``Y = (G G^T)^q G Omega`` with a Gaussian ``Omega [n, k + p]`` (re-orthonormalised by QR
    after every multiplication), ``Q = qr(Y)``, then the SVD of ``B = Q^T G`` ``[k + p, n]``.
    Exact (up to rounding) whenever ``rank(G) <= k + p``; otherwise the error in the top-k
    directions decays like ``(s_{k+p+1} / s_k)^(2q+1)``.
    """
    g = g.astype(jnp.float32)
    m, n = g.shape
    width = min(k + oversample, m, n)
    omega = jax.random.normal(jax.random.PRNGKey(seed), (n, width), jnp.float32)
    q, _ = jnp.linalg.qr(g @ omega)
    for _ in range(power_iters):
        z, _ = jnp.linalg.qr(g.T @ q)
        q, _ = jnp.linalg.qr(g @ z)
    ub, s, vt = jnp.linalg.svd(q.T @ g, full_matrices=False)
    return _truncate(
        q @ ub,
        s,
        vt.T,
        k,
        explained_ratio=explained_ratio,
        total_energy=jnp.sum(jnp.square(g)),
        rtol=_svd_rtol(g.shape),
    )


def basis_from_factors(
    x: Float[ArrayLike, "T m"],
    gy: Float[ArrayLike, "T n"],
    k: int,
    *,
    explained_ratio: float | None = None,
) -> SubspaceBasis:
    """Top-k basis of ``G = x^T gy`` from its thin factors, without forming ``G``.

    For a linear layer ``y = x W`` (``W [m, n]``) the gradient of a one-sample loss is
    ``G = sum_t x_t gy_t^T = x^T gy`` with the layer inputs ``x [T, m]`` and output gradients
    ``gy [T, n]`` of the ``T`` tokens. Thin QRs ``x^T = Qx Rx``, ``gy^T = Qy Ry`` give
    ``G = Qx (Rx Ry^T) Qy^T``; the SVD of the small core ``C = Rx Ry^T = Uc S Vc^T`` gives
    ``U = Qx Uc`` and ``V = Qy Vc``. Cost ``O((m + n) T^2 + T^3)``.

    Args:
        x: per-token layer inputs ``[T, m]`` (zero rows for unsupervised/padded tokens are fine).
        gy: per-token gradients of the loss w.r.t. the layer outputs ``[T, n]``.
        k: number of stored columns.
        explained_ratio: optional CER threshold, as in :func:`basis_svd`.

    Returns:
        A :class:`SubspaceBasis` with ``u [m, k]``, ``s [k]``, ``v [n, k]``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jax.random.normal(jax.random.PRNGKey(0), (3, 16))
        >>> gy = jax.random.normal(jax.random.PRNGKey(1), (3, 12))
        >>> basis = basis_from_factors(x, gy, k=2)
        >>> basis.u.shape, basis.v.shape
        ((16, 2), (12, 2))
    """
    if x.ndim != 2 or gy.ndim != 2 or x.shape[0] != gy.shape[0]:
        raise ValueError(
            "factors must be x [T, m] and gy [T, n] with the same token count T, got "
            f"x {tuple(x.shape)} and gy {tuple(gy.shape)}"
        )
    x = x.astype(jnp.float32)
    gy = gy.astype(jnp.float32)
    qx, rx = jnp.linalg.qr(x.T)
    qy, ry = jnp.linalg.qr(gy.T)
    uc, s, vct = jnp.linalg.svd(rx @ ry.T, full_matrices=False)
    shape = (x.shape[1], gy.shape[1])
    return _truncate(
        qx @ uc,
        s,
        qy @ vct.T,
        k,
        explained_ratio=explained_ratio,
        total_energy=jnp.sum(jnp.square(s)),
        rtol=_svd_rtol(shape),
    )


def compute_basis(
    g: Float[ArrayLike, "m n"],
    k: int,
    *,
    method: BasisMethod = "auto",
    explained_ratio: float | None = None,
    seed: int = 0,
) -> SubspaceBasis:
    """Top-k basis of ``g`` with the estimator ``method`` (see :func:`choose_basis_method`)."""
    resolved = choose_basis_method(tuple(g.shape), k, method)
    if resolved == "svd":
        return basis_svd(g, k, explained_ratio=explained_ratio)
    if resolved == "gram":
        return basis_gram(g, k, explained_ratio=explained_ratio)
    return basis_randomized(g, k, explained_ratio=explained_ratio, seed=seed)


def subspace_coefficients(
    g: Float[ArrayLike, "m n"], basis: SubspaceBasis
) -> Float[ArrayLike, " k"]:
    """``c_i = <G, u_i v_i^T> = u_i^T G v_i`` (0 for unused columns)."""
    g = g.astype(jnp.float32)
    return jnp.einsum("mk,mn,nk->k", basis.u, g, basis.v)


def _atoms(basis: SubspaceBasis, weights: Float[ArrayLike, " k"]) -> Float[ArrayLike, "m n"]:
    """``sum_i w_i u_i v_i^T``."""
    return (basis.u * weights[None, :]) @ basis.v.T


def project_conflict(g: Float[ArrayLike, "m n"], basis: SubspaceBasis) -> Float[ArrayLike, "m n"]:
    """R1: ``G - sum_i min(c_i, 0) u_i v_i^T``; every ``c_i`` is ``>= 0`` afterwards.

    Leaves ``G`` bit-for-bit unchanged when no ``c_i`` is negative.
    """
    c = subspace_coefficients(g, basis)
    negative = jnp.minimum(c, 0.0)
    projected = g.astype(jnp.float32) - _atoms(basis, negative)
    return jnp.where(jnp.any(c < 0), projected.astype(g.dtype), g)


def project_pcgrad(g: Float[ArrayLike, "m n"], basis: SubspaceBasis) -> Float[ArrayLike, "m n"]:
    """R2: PCGrad against ``S_k = sum_i s_i u_i v_i^T``.

    If ``<G, S_k> < 0``: ``G - (<G, S_k> / ||S_k||^2) S_k``, else ``G`` unchanged.
    """
    c = subspace_coefficients(g, basis)
    dot = jnp.sum(c * basis.s)
    norm_sq = jnp.sum(jnp.square(basis.s))
    scale = dot / jnp.where(norm_sq > 0, norm_sq, 1.0)
    projected = g.astype(jnp.float32) - _atoms(basis, scale * basis.s)
    return jnp.where((dot < 0) & (norm_sq > 0), projected.astype(g.dtype), g)


def project_null(g: Float[ArrayLike, "m n"], basis: SubspaceBasis) -> Float[ArrayLike, "m n"]:
    """R3 (atom span): ``G - sum_i c_i u_i v_i^T``, the complement of ``span{u_i v_i^T}``."""
    c = subspace_coefficients(g, basis)
    return (g.astype(jnp.float32) - _atoms(basis, c)).astype(g.dtype)


def project_block(g: Float[ArrayLike, "m n"], basis: SubspaceBasis) -> Float[ArrayLike, "m n"]:
    """R3 (block): ``G - U U^T G V V^T``, removing all of ``span{u_i v_j^T}`` (k^2 directions)."""
    gf = g.astype(jnp.float32)
    block = basis.u @ (basis.u.T @ gf @ basis.v) @ basis.v.T
    return (gf - block).astype(g.dtype)


_PROJECTIONS = {
    "conflict": project_conflict,
    "pcgrad": project_pcgrad,
    "null": project_null,
    "block": project_block,
}


def project(
    g: Float[ArrayLike, "m n"], basis: SubspaceBasis, mode: ProjectionMode = "conflict"
) -> Float[ArrayLike, "m n"]:
    """Apply the projection rule ``mode`` to one matrix (see :func:`jaxtrust.safety.spf`)."""
    if mode not in _PROJECTIONS:
        raise ValueError(f"mode must be one of {PROJECTION_MODES}, got {mode!r}")
    return _PROJECTIONS[mode](g, basis)
