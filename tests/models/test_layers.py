"""Building blocks pinned to hand-computed numbers and to NumPy / transformers references."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrust.models import LMConfig, ModelHooks
from jaxtrust.models.hooks import apply_activation
from jaxtrust.models.layers import Linear, apply_rope, rope_inv_freq
from tests.conftest import HAS_TORCH


@pytest.mark.smoke
def test_rmsnorm_hand_computed():
    # x / sqrt(mean(x^2) + eps) with mean([0.01, 0.04]) = 0.025, eps = 1e-6
    out = ModelHooks().norm(jnp.array([[0.1, 0.2]]), jnp.ones(2), None, 0, "attn_norm", 1e-6)
    np.testing.assert_allclose(out, [[0.6324429, 1.2648858]], rtol=1e-6)
    scaled = ModelHooks().norm(
        jnp.array([[0.1, 0.2]]), jnp.array([2.0, -1.0]), None, 0, "attn_norm", 1e-6
    )
    np.testing.assert_allclose(scaled, [[1.2648858, -1.2648858]], rtol=1e-6)


def test_layernorm_hand_computed():
    # mean 2, variance 2/3: normalised [-sqrt(1.5), 0, sqrt(1.5)], then * scale + bias
    out = ModelHooks().norm(
        jnp.array([[1.0, 2.0, 3.0]]),
        jnp.array([1.0, 2.0, 0.5]),
        jnp.array([0.0, 1.0, -1.0]),
        0,
        "attn_norm",
        0.0,
    )
    r = math.sqrt(1.5)
    np.testing.assert_allclose(out, [[-r, 1.0, 0.5 * r - 1.0]], rtol=1e-6)


def test_linear_matches_numpy():
    layer = Linear(3, 2, bias=True, rngs=nnx.Rngs(0))
    w = np.arange(6, dtype=np.float32).reshape(3, 2) / 10
    layer.kernel[...] = jnp.asarray(w)
    layer.bias[...] = jnp.array([1.0, -1.0])
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_allclose(layer(jnp.asarray(x)), x @ w + np.array([1.0, -1.0]), rtol=1e-6)


def test_default_inv_freq_and_linear_scaling():
    c = LMConfig.tiny(
        head_dim=4, num_heads=4, num_kv_heads=4
    )  # theta = 1e4, d = 4: theta^(-0/4), theta^(-2/4)
    np.testing.assert_allclose(rope_inv_freq(c), [1.0, 0.01], rtol=1e-6)
    linear = LMConfig.tiny(head_dim=4, rope_scaling=(("factor", 2.0), ("rope_type", "linear")))
    np.testing.assert_allclose(rope_inv_freq(linear), [0.5, 0.005], rtol=1e-6)
    neox = LMConfig.tiny("gpt_neox")  # rotary 25% of head_dim 16 = 4 features
    np.testing.assert_allclose(rope_inv_freq(neox), [1.0, 0.01], rtol=1e-6)


def _rope_reference(x, positions, inv_freq):
    """Loop form: feature i is paired with i + rot/2 and the pair rotated by
    position * inv_freq[i]."""
    out = x.astype(np.float64).copy()
    half = len(inv_freq)
    for b in range(x.shape[0]):
        for s in range(x.shape[1]):
            for i in range(half):
                angle = positions[b, s] * float(inv_freq[i])
                a, c = x[b, s, :, i], x[b, s, :, i + half]
                out[b, s, :, i] = a * math.cos(angle) - c * math.sin(angle)
                out[b, s, :, i + half] = c * math.cos(angle) + a * math.sin(angle)
    return out


@pytest.mark.smoke
@pytest.mark.parametrize("partial", [1.0, 0.25])
def test_rope_matches_numpy_reference(partial):
    c = LMConfig.tiny(partial_rotary_factor=partial)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, c.head_dim)).astype(np.float32)
    positions = np.array([[0, 1, 2, 3, 4], [7, 8, 9, 100, 1000]])
    inv_freq = rope_inv_freq(c)
    out = apply_rope(jnp.asarray(x), jnp.asarray(positions), inv_freq)
    np.testing.assert_allclose(out, _rope_reference(x, positions, inv_freq), atol=2e-5)
    np.testing.assert_array_equal(
        out[..., c.rotary_dim :], x[..., c.rotary_dim :]
    )  # pass-through features


def test_rope_scores_depend_only_on_relative_position():
    c = LMConfig.tiny()
    rng = np.random.default_rng(1)
    q, k = (
        jnp.asarray(rng.normal(size=(1, 1, 1, c.head_dim)).astype(np.float32)) for _ in range(2)
    )
    inv_freq = rope_inv_freq(c)

    def score(pq, pk):
        return float(
            jnp.sum(
                apply_rope(q, jnp.array([[pq]]), inv_freq)
                * apply_rope(k, jnp.array([[pk]]), inv_freq)
            )
        )

    assert score(7, 3) == pytest.approx(score(104, 100), abs=1e-4)
    assert abs(score(7, 3) - score(7, 5)) > 1e-3  # and it does depend on the offset


@pytest.mark.torch
@pytest.mark.skipif(not HAS_TORCH, reason="needs torch + transformers")
@pytest.mark.parametrize(
    "scaling",
    [
        dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=16,
        ),
        dict(rope_type="linear", factor=4.0),
    ],
)
def test_scaled_inv_freq_matches_transformers(scaling):
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf = transformers.LlamaConfig(
        hidden_size=256, num_attention_heads=4, rope_theta=500000.0, rope_scaling=scaling
    )
    ref, _ = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](hf, "cpu")
    ours = rope_inv_freq(LMConfig.from_hf(hf.to_dict()))
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6)
    assert not np.allclose(
        ours, rope_inv_freq(LMConfig.tiny(head_dim=64, rope_theta=500000.0))
    )  # scaling did something


@pytest.mark.parametrize(
    "name, reference",
    [
        ("silu", lambda x: x / (1 + math.exp(-x))),
        ("gelu", lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2)))),
        (
            "gelu_new",
            lambda x: 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
        ),
        ("relu", lambda x: max(x, 0.0)),
    ],
)
def test_activations_match_formulas(name, reference):
    xs = np.array([-3.0, -0.5, 0.0, 0.7, 2.5], np.float32)
    np.testing.assert_allclose(
        apply_activation(name, jnp.asarray(xs)),
        [reference(float(x)) for x in xs],
        rtol=1e-5,
        atol=1e-7,
    )


def test_rmsnorm_without_eps_and_batched_rows():
    # eps = 0: exactly x / rms(x); rows are normalised independently
    x = jnp.array([[[0.1, 0.2]], [[3.0, -4.0]]])  # [2, 1, 2]
    out = ModelHooks().norm(x, jnp.ones(2), None, 0, "final_norm", 0.0)
    rms2 = math.sqrt(12.5)
    np.testing.assert_allclose(
        out,
        [[[0.1 / math.sqrt(0.025), 0.2 / math.sqrt(0.025)]], [[3.0 / rms2, -4.0 / rms2]]],
        rtol=1e-6,
    )
    np.testing.assert_allclose(out[0, 0], [0.6324555, 1.2649111], rtol=1e-6)


def test_norms_compute_in_float32_and_return_the_input_dtype():
    x = jnp.array([[1.0, 2.0, 3.0, 4.0]], jnp.bfloat16)
    rms = ModelHooks().norm(x, jnp.ones(4, jnp.bfloat16), None, 0, "attn_norm", 1e-6)
    ln = ModelHooks().norm(x, jnp.ones(4), jnp.zeros(4), 0, "attn_norm", 1e-5)
    assert rms.dtype == ln.dtype == jnp.bfloat16
    x64 = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(
        np.asarray(rms, np.float32)[0], x64 / np.sqrt(np.mean(x64**2)), rtol=1e-2
    )
    np.testing.assert_allclose(
        np.asarray(ln, np.float32)[0], (x64 - 2.5) / np.sqrt(1.25 + 1e-5), rtol=1e-2
    )


def _llama3_inv_freq_reference(dim, theta, factor, low, high, old_len):
    """Llama 3.1's rule, frequency by frequency: keep high frequencies, divide low ones by
    ``factor``, and interpolate linearly (in ``old_len / wavelength``) in between."""
    out = []
    for i in range(0, dim, 2):
        freq = theta ** (-i / dim)
        wavelength = 2 * math.pi / freq
        if wavelength < old_len / high:
            out.append(freq)
        elif wavelength > old_len / low:
            out.append(freq / factor)
        else:
            t = (old_len / wavelength - low) / (high - low)
            out.append((1 - t) * freq / factor + t * freq)
    return np.array(out)


@pytest.mark.parametrize("old_len, low, high", [(32, 1.0, 4.0), (64, 2.0, 8.0)])
def test_llama3_inv_freq_matches_numpy_reference(old_len, low, high):
    scaling = (
        ("factor", 8.0),
        ("high_freq_factor", high),
        ("low_freq_factor", low),
        ("original_max_position_embeddings", old_len),
        ("rope_type", "llama3"),
    )
    c = LMConfig.tiny(
        head_dim=64,
        num_heads=1,
        num_kv_heads=1,
        hidden_size=64,
        rope_theta=500000.0,
        rope_scaling=scaling,
    )
    ours = rope_inv_freq(c)
    ref = _llama3_inv_freq_reference(64, 500000.0, 8.0, low, high, old_len)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    plain = rope_inv_freq(
        LMConfig.tiny(head_dim=64, num_heads=1, num_kv_heads=1, hidden_size=64, rope_theta=500000.0)
    )
    kept, divided = np.isclose(ours, plain, rtol=1e-6), np.isclose(ours, plain / 8.0, rtol=1e-6)
    assert kept.any() and divided.any() and (~kept & ~divided).any()  # all three bands exercised


def test_linear_scaling_equals_dividing_positions():
    """Linear ("position interpolation") scaling rotates position p like position p / factor."""
    c = LMConfig.tiny(rope_scaling=(("factor", 4.0), ("rope_type", "linear")))
    x = jnp.asarray(np.random.default_rng(3).normal(size=(1, 3, 2, c.head_dim)).astype(np.float32))
    positions = np.array([[0, 8, 100]])
    scaled = apply_rope(x, jnp.asarray(positions), rope_inv_freq(c))
    reference = _rope_reference(np.asarray(x), positions / 4.0, rope_inv_freq(LMConfig.tiny()))
    np.testing.assert_allclose(scaled, reference, atol=2e-5)


def test_partial_rotary_in_bfloat16_leaves_pass_through_bits_untouched():
    c = LMConfig.tiny("gpt_neox")  # rotary_dim 4 of head_dim 16
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 3, 4, c.head_dim)), jnp.bfloat16)
    out = apply_rope(x, jnp.array([[0, 5, 9], [1, 2, 3]]), rope_inv_freq(c))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(out[..., c.rotary_dim :]).view(np.uint16),
        np.asarray(x[..., c.rotary_dim :]).view(np.uint16),
    )
    assert not np.array_equal(
        np.asarray(out[:, 1:, :, : c.rotary_dim], np.float32),
        np.asarray(x[:, 1:, :, : c.rotary_dim], np.float32),
    )
