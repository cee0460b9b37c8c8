"""Polynomial approximations against their exact functions, with stated (tight) error bounds."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import erf

from jaxtrust.safety.actapprox import (
    POLYNOMIALS,
    STATED_MAX_ERROR,
    Polynomial,
    approximation_error,
    composite_sign,
    exp_approx,
    softmax_approx,
    technique,
)

NEXUS_COEFFS = (
    2.25775755e-4,
    0.396880960,
    -0.0637042698,
    8.38841647e-3,
    -7.17830961e-4,
    3.49617829e-5,
    -7.26059653e-7,
)


def np_gelu(x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def np_silu(x):
    return x / (1.0 + np.exp(-x))


@pytest.mark.smoke
@pytest.mark.parametrize("name", POLYNOMIALS)
@pytest.mark.parametrize("kind", ["gelu", "silu"])
def test_activation_within_stated_bound_and_bound_is_tight(name, kind):
    t = technique(name)
    x = np.linspace(-8.0, 8.0, 16001, dtype=np.float32)
    approx = np.asarray(t.activation_fn(kind, jnp.asarray(x)), np.float64)
    exact = (np_gelu if kind == "gelu" else np_silu)(x.astype(np.float64))
    err = np.abs(approx - exact).max()
    bound = STATED_MAX_ERROR[(name, kind)]
    assert err <= bound, (name, kind, err)
    assert err >= bound / 3, f"stated bound {bound} is loose for {name}/{kind}: measured {err}"
    assert approximation_error(t, activation=kind) == pytest.approx(err, rel=0.05, abs=1e-4)


def test_polynomials_are_not_exact():
    # Each technique is a real approximation: mean error clearly above float32 rounding.
    for name in POLYNOMIALS:
        assert approximation_error(technique(name), activation="gelu", reduce="mean") > 1e-5


def test_nexus_gelu_region_selection_and_published_polynomial():
    t = technique("nexus")
    x = np.concatenate(
        [np.linspace(-20, -3.5001, 200), np.linspace(-3.5, 3.4999, 701), np.linspace(3.5, 20, 200)]
    ).astype(np.float32)
    y = np.asarray(t.activation_fn("gelu", jnp.asarray(x)))
    low, mid, high = x < -3.5, (x >= -3.5) & (x < 3.5), x >= 3.5
    assert np.all(y[low] == 0.0)
    np.testing.assert_array_equal(y[high], x[high])
    xm = x[mid].astype(np.float64)
    reference = 0.5 * xm + sum(c * xm ** (2 * k) for k, c in enumerate(NEXUS_COEFFS))
    np.testing.assert_allclose(y[mid], reference, atol=2e-5)
    # the region boundaries: the polynomial meets 0 and x within the stated error
    assert abs(reference[0]) < 2e-3 and abs(reference[-1] - xm[-1]) < 2e-3


def test_nexus_composite_sign_selection():
    s = np.asarray(composite_sign(jnp.linspace(-1.0, 1.0, 2001)))
    grid = np.linspace(-1.0, 1.0, 2001)
    far = np.abs(grid) > 0.05
    np.testing.assert_allclose(s[far], np.sign(grid[far]), atol=2e-3)
    comp = Polynomial(name="nexus", selection="composite", sign_range=16.0)
    err = approximation_error(comp, activation="gelu")
    assert approximation_error(technique("nexus"), activation="gelu") < err <= 0.012


@pytest.mark.parametrize("name", POLYNOMIALS)
def test_exp_approximation(name):
    t = technique(name)
    x = np.linspace(-30.0, 0.0, 3001, dtype=np.float32)
    approx = np.asarray(
        exp_approx(jnp.asarray(x), squarings=t.exp_squarings, threshold=t.exp_threshold)
    )
    n = 2.0**t.exp_squarings
    reference = np.where(
        x >= -t.exp_threshold, (1.0 + np.maximum(x, -t.exp_threshold) / n) ** n, 0.0
    )
    np.testing.assert_allclose(approx, reference, rtol=1e-4, atol=1e-7)
    # the error of (1 + x/n)^n against e^x peaks near x = -2: about e^-2 (2/n) ... <= 1/(e n) * 2
    assert np.abs(approx - np.exp(x)).max() <= 2.0 / (math.e * n) * 1.05
    assert approximation_error(t, function="exp") > 0.5 / (math.e * n)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), keys=st.sampled_from([1, 5, 12]), masked=st.integers(0, 11))
def test_softmax_approx_is_a_masked_distribution_close_to_softmax(seed, keys, masked):
    rng = np.random.default_rng(seed)
    scores = rng.normal(scale=3.0, size=(3, keys)).astype(np.float32)
    mask = np.ones((3, keys), bool)
    mask[:, : min(masked, keys - 1)] = False
    mask[2] = False  # a fully masked (padding) row: uniform, as the exact softmax
    p = np.asarray(
        softmax_approx(jnp.asarray(scores), jnp.asarray(mask), squarings=6, threshold=13.0)
    )
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    assert np.all(p[:2][~mask[:2]] == 0.0)
    np.testing.assert_allclose(p[2], 1.0 / keys, rtol=1e-6)
    s = np.where(mask[:2], scores[:2], -np.inf)
    exact = np.exp(s - s.max(-1, keepdims=True))
    exact /= exact.sum(-1, keepdims=True)
    assert np.abs(p[:2] - exact).max() < 0.03


def test_approximation_error_bad_input():
    with pytest.raises(TypeError, match="depends on the data"):
        approximation_error(technique("teal", sparsity=0.5))
    with pytest.raises(ValueError, match="unbounded"):
        approximation_error(technique("gaussian_noise", sigma=0.1))
    with pytest.raises(ValueError, match="reduce"):
        approximation_error(technique("bolt"), reduce="median")
    with pytest.raises(ValueError, match="x <= 0"):
        approximation_error(technique("bolt"), function="exp", interval=(-1.0, 1.0))
    with pytest.raises(ValueError, match="activation"):
        approximation_error(technique("bolt"), activation="relu")
    with pytest.raises(ValueError, match="exp_threshold"):
        Polynomial(name="bolt", exp_squarings=2, exp_threshold=13.0)
    with pytest.raises(ValueError, match="selection"):
        Polynomial(name="bolt", selection="soft")


def test_approximation_error_of_the_other_families():
    assert approximation_error(
        technique("gaussian_noise", sigma=0.1), reduce="mean"
    ) == pytest.approx(0.1 * math.sqrt(2 / math.pi))
    assert approximation_error(
        technique("laplace_noise", scale=0.2), reduce="mean"
    ) == pytest.approx(0.2)
    e4, e8 = (
        approximation_error(technique("smoothquant", bits=4)),
        approximation_error(technique("smoothquant", bits=8)),
    )
    assert e4 > 10 * e8 > 0
