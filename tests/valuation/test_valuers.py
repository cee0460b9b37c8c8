"""Valuers: vmapped LTSV against the per-sample loop, LTSV against TracIn to first order, block
aggregation by hand, the inverse-HVP solvers against an exact Hessian inverse, LOO against
explicit fine-tunes, KNN-Shapley against brute-force Shapley, bad input."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from jaxtrust.models.tsfm import TSFM, TSFMConfig
from jaxtrust.training import scan_optimize
from jaxtrust.valuation import (
    Objective,
    data_oob_scores,
    influence_scores,
    inverse_hvp,
    knn_shapley_scores,
    loo_scores,
    removal_curve,
    tracin_scores,
    tsfm_objective,
    window_features,
)
from jaxtrust.valuation.ltsv import aggregate_blocks, ltsv_scores, ltsv_scores_loop

CFG = TSFMConfig.tiny(context_len=32, model_dim=16, ffn_dim=32, mlp_dim=32)


def _windows(n, length=48, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    phase = rng.uniform(0, 6, size=(n, 1))
    return (np.sin(2 * np.pi * t / 8 + phase) + 0.1 * rng.normal(size=(n, length))).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def objective():
    return tsfm_objective(TSFM(CFG, rngs=nnx.Rngs(0)))


def test_vmapped_ltsv_equals_loop(objective):
    train, ctx = jnp.asarray(_windows(8)), jnp.asarray(_windows(4, seed=1))
    tx = optax.adam(1e-3)
    fast = ltsv_scores(objective, train, ctx, tx=tx, steps=2, chunk_size=3, shard=False)
    slow = ltsv_scores_loop(objective, train, ctx, tx=tx, steps=2)
    np.testing.assert_allclose(fast, slow, atol=1e-5)
    sharded = ltsv_scores(objective, train, ctx, tx=tx, steps=2)  # 8 host devices
    np.testing.assert_allclose(sharded, slow, atol=1e-5)


def test_ltsv_with_small_sgd_step_is_tracin(objective):
    train, ctx = jnp.asarray(_windows(6)), jnp.asarray(_windows(4, seed=1))
    lr = 1e-4
    v = ltsv_scores(objective, train, ctx, tx=optax.sgd(lr), shard=False)
    t = tracin_scores(objective, train, ctx, learning_rate=lr)
    np.testing.assert_allclose(v, t, rtol=0.05, atol=1e-3 * float(jnp.max(jnp.abs(t))))


def test_block_aggregation_by_hand():
    # blocks [0,3) value 3, [1,4) value 6, [3,6) value 0 over 6 points
    out = aggregate_blocks(np.array([3.0, 6.0, 0.0]), np.array([0, 1, 3]), 3, 6)
    np.testing.assert_allclose(out.point, [3.0, 4.5, 4.5, 3.0, 0.0, 0.0])
    np.testing.assert_array_equal(out.coverage, [1, 2, 2, 2, 1, 1])
    np.testing.assert_allclose(out.sample, [4.0, 4.0, 1.0])


def _mlp_objective():
    """A 2-layer tanh AR model (horizon 2 from 6 lags): small enough for an exact Hessian."""
    key = jax.random.PRNGKey(0)
    params = {
        "w1": 0.3 * jax.random.normal(key, (6, 5)),
        "w2": 0.3 * jax.random.normal(jax.random.fold_in(key, 1), (5, 2)),
    }

    def loss(p, windows, weights):
        pred = jnp.tanh(windows[:, :6] @ p["w1"]) @ p["w2"]
        per = jnp.mean((pred - windows[:, 6:]) ** 2, axis=1)
        return jnp.sum(per * weights) / jnp.sum(weights)

    return Objective(loss, params, lambda p: p)


@pytest.mark.parametrize("method", ["cg", "lissa"])
def test_influence_matches_exact_hessian_inverse(method):
    obj = _mlp_objective()
    train, ctx = jnp.asarray(_windows(30, 8)), jnp.asarray(_windows(10, 8, seed=1))
    flat, unravel = ravel_pytree(obj.params)
    ones = jnp.ones((30,))
    hess = jax.hessian(lambda v: obj.loss(unravel(v), train, ones))(flat)
    eig = np.linalg.eigvalsh(np.asarray(hess))
    damping = 0.1 + max(0.0, -float(eig.min()))  # CG and LiSSA need H + damping I > 0
    scale = 1.5 * float(eig.max() + damping)
    # LiSSA's error shrinks by (1 - (eig_min + damping) / scale) per step.
    iterations = int(min(20_000, 12 * scale / (eig.min() + damping))) if method == "lissa" else 400
    g_ctx = jax.grad(lambda v: obj.loss(unravel(v), ctx, jnp.ones((10,))))(flat)
    grads = jax.vmap(
        lambda w: jax.grad(lambda v: obj.loss(unravel(v), w[None], jnp.ones(1)))(flat)
    )(train)
    exact = grads @ np.linalg.solve(np.asarray(hess) + damping * np.eye(flat.size), g_ctx)
    got = influence_scores(
        obj, train, ctx, method=method, damping=damping, iterations=iterations, scale=scale
    )
    np.testing.assert_allclose(got, exact, rtol=2e-3, atol=1e-5 * float(np.abs(exact).max()))


def test_inverse_hvp_bad_input(own_error_messages):
    with pytest.raises(ValueError, match="method"):
        inverse_hvp(lambda v: v, jnp.ones(2), method="exact")
    with pytest.raises(ValueError, match="damping"):
        inverse_hvp(lambda v: v, jnp.ones(2), damping=-1.0)


def test_loo_equals_explicit_finetunes():
    obj = _mlp_objective()
    train, ctx = jnp.asarray(_windows(12, 8)), jnp.asarray(_windows(5, 8, seed=1))
    tx = optax.sgd(0.3)
    got = loo_scores(obj, train, ctx, [0, 4, 7], tx=tx, steps=5)
    ones = jnp.ones((5,))

    def ctx_loss(w):
        p, _ = scan_optimize(obj.loss, obj.params, tx, 5, train, jnp.asarray(w))
        return float(obj.loss(p, ctx, ones))

    base = ctx_loss(np.ones(12, np.float32))
    for j, i in enumerate([0, 4, 7]):
        w = np.ones(12, np.float32)
        w[i] = 0
        np.testing.assert_allclose(float(got[j]), ctx_loss(w) - base, atol=1e-5)


def test_removal_curve_shapes():
    obj = _mlp_objective()
    train, ev = jnp.asarray(_windows(10, 8)), jnp.asarray(_windows(5, 8, seed=1))
    curve = removal_curve(obj, train, np.arange(10.0), ev, (0.0, 0.2), tx=optax.sgd(0.3), steps=3)
    assert curve.remove_high[0] == pytest.approx(curve.remove_low[0])
    assert len(curve.remove_high) == 2


def _brute_shapley(a_sorted_util, n):
    vals = np.zeros(n)
    for perm in itertools.permutations(range(n)):
        seen = []
        for i in perm:
            before = a_sorted_util(seen)
            seen.append(i)
            vals[i] += a_sorted_util(seen) - before
    return vals / math.factorial(n)


def test_knn_shapley_matches_brute_force():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(5, 1))
    xt, yt = rng.normal(size=(1, 2)), rng.normal(size=(1, 1))
    k = 2
    dist = np.sum((x - xt) ** 2, axis=1)
    agree = -np.mean((y - yt) ** 2, axis=1)

    def util(subset):
        if not subset:
            return 0.0
        near = sorted(subset, key=lambda i: dist[i])[:k]
        return float(np.sum(agree[near]) / k)

    np.testing.assert_allclose(knn_shapley_scores(x, y, xt, yt, k=k), _brute_shapley(util, 5))


def test_data_oob_ranks_corrupted_windows_low():
    w = _windows(80, 24)
    bad = np.arange(8)
    w[bad, -8:] += 5.0  # corrupted horizons
    x, y = window_features(w, 8)
    v = data_oob_scores(x, y, num_models=30)
    assert v[bad].mean() < np.delete(v, bad).mean()


def test_bad_windows(objective, own_error_messages):
    ok = jnp.asarray(_windows(2))
    with pytest.raises(ValueError, match="train contains NaN"):
        ltsv_scores(objective, jnp.full((2, 48), jnp.nan), ok)
    with pytest.raises(ValueError, match="context must have windows of length 48"):
        tracin_scores(objective, ok, jnp.ones((2, 40)))
    with pytest.raises(ValueError, match="steps"):
        ltsv_scores(objective, ok, ok, steps=0)
    with pytest.raises(ValueError, match="subset"):
        loo_scores(objective, ok, ok, [5], tx=optax.sgd(0.1), steps=1)
    with pytest.raises(ValueError, match="must lie in the series"):
        aggregate_blocks(np.ones(2), np.array([0, 5]), 3, 6)
