"""Fake quantizers against NumPy references; SmoothQuant's equivalence; bit-width validation."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.safety.actapprox import (
    OmniQuant,
    SmoothQuant,
    fake_quantize,
    quantization_error,
    smoothing_scales,
    technique,
)


def np_quantize(x, bits, granularity, symmetric):
    x = x.astype(np.float64)
    axes = {
        "per_token": (x.ndim - 1,),
        "per_channel": tuple(range(x.ndim - 1)),
        "per_tensor": tuple(range(x.ndim)),
    }[granularity]
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        step = np.abs(x).max(axis=axes, keepdims=True) / qmax
        step = np.where(step > 0, step, 1.0)
        return np.clip(np.round(x / step), -qmax, qmax) * step
    levels = 2**bits - 1
    hi = np.maximum(x.max(axis=axes, keepdims=True), 0.0)
    lo = np.minimum(x.min(axis=axes, keepdims=True), 0.0)
    step = np.where(hi > lo, (hi - lo) / levels, 1.0)
    zero = np.round(-lo / step)
    return (np.clip(np.round(x / step) + zero, 0, levels) - zero) * step


@pytest.mark.smoke
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    bits=st.integers(2, 8),
    granularity=st.sampled_from(["per_token", "per_channel", "per_tensor"]),
    symmetric=st.booleans(),
    shift=st.floats(-2.0, 2.0),
)
def test_fake_quantize_matches_numpy(seed, bits, granularity, symmetric, shift):
    x = (np.random.default_rng(seed).standard_normal((3, 5, 16)) + shift).astype(np.float32)
    x[0, 0] = 0.0  # an all-zero token must not divide by zero
    got = np.asarray(
        fake_quantize(jnp.asarray(x), bits, granularity=granularity, symmetric=symmetric)
    )
    expected = np_quantize(x, bits, granularity, symmetric)
    # float32 rounding can flip a value lying exactly between two levels: at most one step
    step = np.abs(x).max() * 2 / (2**bits - 2)
    assert np.abs(got - expected).max() <= step + 1e-6
    assert np.mean(np.abs(got - expected) > 1e-5) < 0.02
    # the levels used: per row (token) at most 2^bits distinct values
    if granularity == "per_token":
        assert all(len(np.unique(row)) <= 2**bits for row in got.reshape(-1, 16))


def test_quantizer_exact_cases():
    x = jnp.array([[0.3, -1.0, 0.6, 1.0]])
    np.testing.assert_allclose(np.asarray(fake_quantize(x, 2)), [[0.0, -1.0, 1.0, 1.0]])
    np.testing.assert_allclose(
        np.asarray(fake_quantize(x, 3)), [[1 / 3, -1.0, 2 / 3, 1.0]], rtol=1e-6
    )
    # asymmetric 2 bits on [-1, 1]: step 2/3, zero 2
    asym = np.asarray(fake_quantize(x, 2, symmetric=False))
    np.testing.assert_allclose(asym, np_quantize(np.asarray(x), 2, "per_token", False), rtol=1e-6)
    assert fake_quantize(x, 16) is x  # 16 bits = unquantized


def test_error_shrinks_with_bits():
    errs = [quantization_error(SmoothQuant(bits=b)) for b in (4, 6, 8)]
    assert errs[0] > 3 * errs[1] > 9 * errs[2] > 0
    assert quantization_error(OmniQuant(bits=4)) < errs[0]
    assert quantization_error(SmoothQuant(bits=8), reduce="max") >= quantization_error(
        SmoothQuant(bits=8)
    )


def test_smoothing_is_exact_at_w16():
    # X W == (X / s)(diag(s) W): quantizing X / s and multiplying by s equals the smoothed layer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 32)).astype(np.float32)
    x[:, 3] *= 30.0  # an outlier channel
    w = rng.standard_normal((32, 16)).astype(np.float32)
    s = smoothing_scales(np.abs(x).max(0), np.abs(w).max(1), 0.5)
    np.testing.assert_allclose(s, np.sqrt(np.abs(x).max(0)) / np.sqrt(np.abs(w).max(1)), rtol=1e-5)
    q = np.asarray(fake_quantize(jnp.asarray(x / s), 8))
    np.testing.assert_allclose((q * s) @ w, q @ (s[:, None] * w), rtol=1e-4, atol=1e-4)
    # smoothing helps per-token quantization with an outlier channel (SmoothQuant's point)
    plain = np.abs(np.asarray(fake_quantize(jnp.asarray(x), 4)) @ w - x @ w).mean()
    smooth = np.abs(np.asarray(fake_quantize(jnp.asarray(x / s), 4)) * s @ w - x @ w).mean()
    assert smooth < 0.8 * plain


@pytest.mark.usefixtures("own_error_messages")
@pytest.mark.parametrize("bits", [1, 0, 17, 32])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match=r"bits must be in \[2, 16\]"):
        technique("smoothquant", bits=bits)
    with pytest.raises(ValueError, match="bits"):
        fake_quantize(jnp.ones((2, 2)), bits)


@pytest.mark.usefixtures("own_error_messages")
def test_bad_quantizer_arguments():
    with pytest.raises(TypeError, match="bits must be an int"):
        technique("omniquant", bits=8.0)
    with pytest.raises(ValueError, match="granularity"):
        fake_quantize(jnp.ones((2, 2)), 4, granularity="per_row")
    with pytest.raises(ValueError, match="alpha"):
        technique("smoothquant", alpha=1.5)
    with pytest.raises(ValueError, match="steps"):
        technique("omniquant", steps=-1)


def test_output_factor_preserves_the_reconstruction_error():
    # OmniQuant's per-layer loss |E W|^2 is computed as |E F|^2 with a narrower F (F F^T = W W^T)
    from jaxtrust.safety.actapprox._calibration import _output_factor

    rng = np.random.default_rng(0)
    for out in (6, 20):
        w = rng.standard_normal((2, 8, out)).astype(np.float32)
        f = _output_factor(w)
        assert f.shape == (2, 8, min(8, out))
        e = rng.standard_normal((2, 5, 8))
        np.testing.assert_allclose(
            np.sum((e @ f) ** 2, axis=(1, 2)), np.sum((e @ w) ** 2, axis=(1, 2)), rtol=1e-4
        )
