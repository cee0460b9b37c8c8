"""Per-matrix bases and projection rules of SPF against NumPy, plus their properties."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.safety.spf import subspace as sub

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)


def low_rank(rng: np.random.Generator, m: int, n: int, r: int) -> np.ndarray:
    """An exactly rank-r matrix with well separated singular values."""
    qa, _ = np.linalg.qr(rng.normal(size=(m, r)))
    qb, _ = np.linalg.qr(rng.normal(size=(n, r)))
    s = 2.0 ** -np.arange(r) * 5.0
    return ((qa * s) @ qb.T).astype(np.float32)


def atoms(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """u_i v_i^T per column: sign-invariant, so comparable across estimators."""
    return np.einsum("mk,nk->kmn", np.asarray(u, np.float64), np.asarray(v, np.float64))


def np_basis(g: np.ndarray, k: int):
    """NumPy reference: top-k SVD triplets with numerically-null directions zeroed."""
    u, s, vt = np.linalg.svd(g.astype(np.float64), full_matrices=False)
    u, s, v = u[:, :k], s[:k], vt[:k].T
    keep = s > max(g.shape) * np.finfo(np.float32).eps * s.max(initial=0.0)
    return u * keep, s * keep, v * keep


def np_project(g: np.ndarray, basis, mode: str) -> np.ndarray:
    u, s, v = basis
    g = g.astype(np.float64)
    c = np.array([u[:, i] @ g @ v[:, i] for i in range(u.shape[1])])
    if mode == "conflict":
        return g - sum(min(ci, 0.0) * np.outer(u[:, i], v[:, i]) for i, ci in enumerate(c))
    if mode == "null":
        return g - sum(ci * np.outer(u[:, i], v[:, i]) for i, ci in enumerate(c))
    if mode == "block":
        return g - u @ u.T @ g @ v @ v.T
    sk = (u * s) @ v.T
    dot = np.sum(g * sk)
    return g - dot / np.sum(sk * sk) * sk if dot < 0 else g


# A few fixed (m, n, k) so that compiled kernels are reused across hypothesis examples; the
# values (seeds) are what hypothesis explores. k = min(m, n) (full rank) is included.
shapes = st.sampled_from([(3, 5, 2), (4, 4, 4), (6, 3, 1)])
basis_svd = jax.jit(sub.basis_svd, static_argnums=1)
coefficients = jax.jit(sub.subspace_coefficients)
project_conflict = jax.jit(sub.project_conflict)
project_pcgrad = jax.jit(sub.project_pcgrad)
project_null = jax.jit(sub.project_null)
project_block = jax.jit(sub.project_block)


@pytest.mark.parametrize("method", ["svd", "gram", "randomized", "factors"])
@pytest.mark.parametrize(("m", "n", "r", "k"), [(6, 40, 3, 5), (48, 9, 4, 4)])
def test_estimators_agree_with_full_svd_on_low_rank(method, m, n, r, k):
    rng = np.random.default_rng(m * n + r)
    if method == "factors":
        x = rng.normal(size=(r, m)).astype(np.float32)
        gy = rng.normal(size=(r, n)).astype(np.float32)
        g = x.T @ gy
        basis = sub.basis_from_factors(jnp.asarray(x), jnp.asarray(gy), k)
    else:
        g = low_rank(rng, m, n, r)
        basis = sub.compute_basis(jnp.asarray(g), k, method=method)
    ref_u, ref_s, ref_v = np_basis(g, k)
    np.testing.assert_allclose(np.asarray(basis.s), ref_s, rtol=2e-4, atol=1e-5 * ref_s[0])
    np.testing.assert_allclose(atoms(basis.u, basis.v), atoms(ref_u, ref_v), atol=5e-4)
    # Columns beyond the rank are inactive (exact zeros), not arbitrary directions.
    assert np.all(np.asarray(basis.s)[r:] == 0) and np.all(np.asarray(basis.u)[:, r:] == 0)


@pytest.mark.usefixtures("own_error_messages")
def test_auto_method_choice():
    assert sub.choose_basis_method((64, 512), 8) == "svd"
    assert sub.choose_basis_method((128, 512), 8) == "randomized"
    assert sub.choose_basis_method((1024, 4096), 8) == "randomized"
    assert sub.choose_basis_method((300, 4096), 70) == "gram"
    with pytest.raises(ValueError, match="basis"):
        sub.choose_basis_method((4, 4), 1, "qr")


@pytest.mark.usefixtures("own_error_messages")
def test_factors_reject_mismatched_token_counts():
    with pytest.raises(ValueError, match="same token count"):
        sub.basis_from_factors(jnp.ones((3, 4)), jnp.ones((2, 5)), 1)


@pytest.mark.parametrize("mode", ["conflict", "pcgrad", "null", "block"])
def test_projection_matches_numpy_reference(mode):
    rng = np.random.default_rng(2)
    g_s = rng.normal(size=(5, 7)).astype(np.float32)
    # Partly against safety: <G, G_s> < 0 overall, mixed signs per direction.
    g = (rng.normal(size=(5, 7)) - 0.3 * g_s).astype(np.float32)
    basis = sub.basis_svd(jnp.asarray(g_s), 3)
    c = np.asarray(sub.subspace_coefficients(jnp.asarray(g), basis))
    assert c.min() < 0 < c.max() and float(np.sum(c * np.asarray(basis.s))) < 0
    got = np.asarray(sub.project(jnp.asarray(g), basis, mode))
    want = np_project(g, np_basis(g_s, 3), mode)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert not np.allclose(got, g)  # this case does conflict, so the test can fail


def _random_case(seed: int, m: int, n: int, k: int):
    rng = np.random.default_rng(seed)
    g_s = jnp.asarray(rng.normal(size=(m, n)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(m, n)), jnp.float32)
    return g, basis_svd(g_s, k)


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_conflict_properties(shape, seed):
    m, n, k = shape
    g, basis = _random_case(seed, m, n, k)
    out = project_conflict(g, basis)
    c_after = np.asarray(coefficients(out, basis))
    assert np.all(c_after >= -1e-5)
    # Idempotent: nothing left to remove.
    np.testing.assert_allclose(np.asarray(project_conflict(out, basis)), out, atol=1e-5)
    # Descent kept: <G', G> = ||G'||^2 >= 0, and > 0 unless everything was removed.
    inner = float(jnp.vdot(out, g))
    np.testing.assert_allclose(inner, float(jnp.vdot(out, out)), rtol=1e-4, atol=1e-5)
    assert inner > 0 or float(jnp.linalg.norm(out)) < 1e-5
    # Only the negative coefficients changed; the positive ones are kept.
    c_before = np.asarray(coefficients(g, basis))
    np.testing.assert_allclose(c_after, np.maximum(c_before, 0.0), atol=1e-5)


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_non_conflicting_gradient_is_untouched_exactly(shape, seed):
    m, n, k = shape
    g, basis = _random_case(seed, m, n, k)
    c = np.asarray(coefficients(g, basis))
    # Flip the conflicting coordinates so that none conflicts, then expect bit equality.
    g_ok = g - 2.0 * (basis.u * jnp.asarray(np.minimum(c, 0.0))[None, :]) @ basis.v.T
    assert np.all(np.asarray(coefficients(g_ok, basis)) >= 0)
    np.testing.assert_array_equal(np.asarray(project_conflict(g_ok, basis)), np.asarray(g_ok))
    # pcgrad leaves it alone too: <G, S_k> = sum_i s_i c_i >= 0.
    np.testing.assert_array_equal(np.asarray(project_pcgrad(g_ok, basis)), np.asarray(g_ok))


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_null_and_block_leave_nothing_in_the_span(shape, seed):
    m, n, k = shape
    g, basis = _random_case(seed, m, n, k)
    nulled = project_null(g, basis)
    np.testing.assert_allclose(np.asarray(coefficients(nulled, basis)), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(project_null(nulled, basis)), nulled, atol=1e-5)
    blocked = project_block(g, basis)
    np.testing.assert_allclose(np.asarray(basis.u.T @ blocked @ basis.v), 0, atol=1e-5)
    # null removes exactly what conflict removes when every coefficient is negative.
    c = np.asarray(coefficients(g, basis))
    g_neg = g - (basis.u * jnp.asarray(np.abs(c) + 1.0)[None, :]) @ basis.v.T
    np.testing.assert_allclose(
        np.asarray(project_null(g_neg, basis)),
        np.asarray(project_conflict(g_neg, basis)),
        atol=1e-5,
    )


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_pcgrad_removes_the_conflict_with_the_rank_k_gradient(shape, seed):
    m, n, k = shape
    g, basis = _random_case(seed, m, n, k)
    out = project_pcgrad(g, basis)
    s_k = (basis.u * basis.s[None, :]) @ basis.v.T
    scale = float(jnp.linalg.norm(g) * jnp.linalg.norm(s_k))
    assert float(jnp.vdot(out, s_k)) >= -1e-5 * scale
    assert float(jnp.vdot(out, g)) >= -1e-5 * float(jnp.vdot(g, g))


def test_zero_gradient_gives_an_inactive_basis_and_no_change():
    basis = sub.basis_svd(jnp.zeros((4, 5)), 2)
    assert np.all(np.asarray(basis.u) == 0) and np.all(np.asarray(basis.s) == 0)
    g = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), jnp.float32)
    for mode in sub.PROJECTION_MODES:
        np.testing.assert_array_equal(np.asarray(sub.project(g, basis, mode)), np.asarray(g))


@pytest.mark.parametrize("ratio", [0.5, 0.99, 1.0])
def test_explained_ratio_rank_matches_numpy(ratio):
    rng = np.random.default_rng(3)
    g = rng.normal(size=(8, 12)) * (0.6 ** np.arange(12))[None, :]
    s = np.linalg.svd(g, compute_uv=False)
    cer = np.cumsum(s**2) / np.sum(s**2)
    want = int(np.argmax(cer >= ratio - 1e-6)) + 1
    assert int(sub.rank_for_ratio(jnp.asarray(s, jnp.float32), ratio)) == want
    for method in ("svd", "gram", "randomized"):
        basis = sub.compute_basis(
            jnp.asarray(g, jnp.float32), 8, method=method, explained_ratio=ratio
        )
        assert int(np.sum(np.asarray(basis.s) > 0)) == min(want, 8), method
