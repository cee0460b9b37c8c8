"""The TimesFM-style forecaster: patching and normalisation against NumPy, causality,
normalisation invariance, padding, decoding consistency, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.data.timeseries import sliding_windows, synthetic_series
from jaxtrust.models.tsfm import (
    TSFM,
    TSFMConfig,
    forecast,
    instance_stats,
    pad_context,
    patch_targets,
    tsfm_loss,
)

CFG = TSFMConfig.tiny()


@pytest.fixture(scope="module")
def model():
    return TSFM(CFG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def apply(model):
    # One compiled forward serves every property check (eager NNX runs op by op).
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda x, m: nnx.merge(graphdef, state)(x, m))
    return lambda x, m=None: run(jnp.asarray(x), jnp.ones(x.shape, bool) if m is None else m)


def _series(b=3, t=64, seed=0):
    return np.random.default_rng(seed).normal(size=(b, t)).cumsum(1).astype(np.float32)


def test_instance_stats_and_patch_targets_match_numpy():
    x = _series(2, 64)
    mask = np.ones_like(x, bool)
    mask[0, :13] = False  # the first observed patch of row 0 is patch 1 (points 13..15)
    loc, scale = instance_stats(jnp.asarray(x), jnp.asarray(mask), 8)
    first = x[0, 13:16]
    np.testing.assert_allclose(loc[0], first.mean(), rtol=1e-5)
    np.testing.assert_allclose(scale[0], first.std(), rtol=1e-4)
    np.testing.assert_allclose(loc[1], x[1, :8].mean(), rtol=1e-5)
    w = _series(2, 64 + 16)
    ctx, tgt = patch_targets(jnp.asarray(w), CFG)
    assert ctx.shape == (2, 64) and tgt.shape == (2, 8, 16)
    for i in range(8):
        np.testing.assert_array_equal(np.asarray(tgt[:, i]), w[:, (i + 1) * 8 : (i + 1) * 8 + 16])


def test_shapes_and_loss_finite(model, apply):
    out = apply(_series())
    assert out.mean.shape == (3, 8, 16) and out.quantiles.shape == (3, 8, 16, 3)
    assert np.isfinite(float(tsfm_loss(model, jnp.asarray(_series(3, 80)))))


def test_causal_over_patches(apply):
    x = _series(2, 64)
    y = x.copy()
    y[:, 40:] += 5.0  # patches 5.. change
    a, b = apply(x).mean, apply(y).mean
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-5)
    assert float(jnp.max(jnp.abs(a[:, 5:] - b[:, 5:]))) > 1e-3


@settings(max_examples=6, deadline=None)
@given(st.floats(0.01, 100.0), st.floats(-1000.0, 1000.0))
def test_affine_equivariance(apply, a, b):
    x = _series(2, 64, seed=3)
    out = apply(x)
    out2 = apply((a * x + b).astype(np.float32))
    tol = 1e-3 * (abs(b) + a * 10 + 1)
    np.testing.assert_allclose(out2.mean, a * out.mean + b, atol=tol)
    np.testing.assert_allclose(out2.quantiles, a * out.quantiles + b, atol=tol)


def test_padded_values_are_ignored(apply):
    x, m = pad_context(jnp.asarray(_series(2, 30)), 64)
    garbage = jnp.where(m, x, 1e3)
    np.testing.assert_allclose(apply(x, m).mean, apply(garbage, m).mean, atol=1e-4)


def test_decoding_is_consistent_with_single_steps(model, apply):
    ctx = jnp.asarray(_series(2, 64))
    one = forecast(model, ctx, 16)
    np.testing.assert_allclose(one.mean, apply(ctx).mean[:, -1], atol=1e-5)
    two = forecast(model, ctx, 40)
    assert two.mean.shape == (2, 40) and two.quantiles.shape == (2, 40, 3)
    np.testing.assert_allclose(two.mean[:, :16], one.mean, atol=1e-5)
    nxt = jnp.concatenate([ctx[:, 16:], one.mean], axis=1)
    np.testing.assert_allclose(two.mean[:, 16:32], apply(nxt).mean[:, -1], atol=1e-4)


def test_short_context_is_left_padded(model, apply):
    ctx = jnp.asarray(_series(2, 20))
    x, m = pad_context(ctx, 64)
    np.testing.assert_allclose(forecast(model, ctx, 16).mean, apply(x, m).mean[:, -1], atol=1e-5)


def test_generated_series_are_finite():
    for kind in ("seasonal", "trend", "ar", "gp"):
        x = synthetic_series(kind, 300, seed=2)
        assert x.shape == (300,) and np.isfinite(x).all() and x.std() > 0


def test_bad_inputs(model, own_error_messages):
    with pytest.raises(ValueError, match="NaN"):
        model(jnp.full((1, 64), jnp.nan))
    with pytest.raises(ValueError, match="shorter than one patch"):
        forecast(model, jnp.ones((1, 5)), 4)
    with pytest.raises(ValueError, match="multiple of patch_len"):
        model(jnp.ones((1, 60)))
    with pytest.raises(ValueError, match="horizon"):
        forecast(model, jnp.ones((1, 64)), 0)
    with pytest.raises(ValueError, match="longer than the series"):
        sliding_windows(np.ones(10), 20)
    with pytest.raises(ValueError, match="NaN"):
        sliding_windows(np.array([1.0, np.nan, 2.0]), 2)
    with pytest.raises(ValueError, match="multiple of patch_len"):
        TSFMConfig(patch_len=8, output_patch_len=12)
    with pytest.raises(TypeError, match="TSFMConfig"):
        TSFM({"patch_len": 8}, rngs=nnx.Rngs(0))
