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
    scaled = ModelHooks().norm(jnp.array([[0.1, 0.2]]), jnp.array([2.0, -1.0]), None, 0, "attn_norm", 1e-6)
    np.testing.assert_allclose(scaled, [[1.2648858, -1.2648858]], rtol=1e-6)


def test_layernorm_hand_computed():
    # mean 2, variance 2/3: normalised [-sqrt(1.5), 0, sqrt(1.5)], then * scale + bias
    out = ModelHooks().norm(jnp.array([[1.0, 2.0, 3.0]]), jnp.array([1.0, 2.0, 0.5]), jnp.array([0.0, 1.0, -1.0]), 0, "attn_norm", 0.0)
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
    c = LMConfig.tiny(head_dim=4, num_heads=4, num_kv_heads=4)  # theta = 1e4, d = 4: theta^(-0/4), theta^(-2/4)
    np.testing.assert_allclose(rope_inv_freq(c), [1.0, 0.01], rtol=1e-6)
    linear = LMConfig.tiny(head_dim=4, rope_scaling=(("factor", 2.0), ("rope_type", "linear")))
    np.testing.assert_allclose(rope_inv_freq(linear), [0.5, 0.005], rtol=1e-6)
    neox = LMConfig.tiny("gpt_neox")  # rotary 25% of head_dim 16 = 4 features
    np.testing.assert_allclose(rope_inv_freq(neox), [1.0, 0.01], rtol=1e-6)


def _rope_reference(x, positions, inv_freq):
    """Loop form: feature i is paired with i + rot/2 and the pair rotated by position * inv_freq[i]."""
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
    np.testing.assert_array_equal(out[..., c.rotary_dim :], x[..., c.rotary_dim :])  # pass-through features


def test_rope_scores_depend_only_on_relative_position():
    c = LMConfig.tiny()
    rng = np.random.default_rng(1)
    q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, c.head_dim)).astype(np.float32)) for _ in range(2))
    inv_freq = rope_inv_freq(c)

    def score(pq, pk):
        return float(jnp.sum(apply_rope(q, jnp.array([[pq]]), inv_freq) * apply_rope(k, jnp.array([[pk]]), inv_freq)))

    assert score(7, 3) == pytest.approx(score(104, 100), abs=1e-4)
    assert abs(score(7, 3) - score(7, 5)) > 1e-3  # and it does depend on the offset


@pytest.mark.torch
@pytest.mark.skipif(not HAS_TORCH, reason="needs torch + transformers")
@pytest.mark.parametrize("scaling", [dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16), dict(rope_type="linear", factor=4.0)])
def test_scaled_inv_freq_matches_transformers(scaling):
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf = transformers.LlamaConfig(hidden_size=256, num_attention_heads=4, rope_theta=500000.0, rope_scaling=scaling)
    ref, _ = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](hf, "cpu")
    ours = rope_inv_freq(LMConfig.from_hf(hf.to_dict()))
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6)
    assert not np.allclose(ours, rope_inv_freq(LMConfig.tiny(head_dim=64, rope_theta=500000.0)))  # scaling did something


@pytest.mark.parametrize(
    "name, reference",
    [
        ("silu", lambda x: x / (1 + math.exp(-x))),
        ("gelu", lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2)))),
        ("gelu_new", lambda x: 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
        ("relu", lambda x: max(x, 0.0)),
    ],
)
def test_activations_match_formulas(name, reference):
    xs = np.array([-3.0, -0.5, 0.0, 0.7, 2.5], np.float32)
    np.testing.assert_allclose(apply_activation(name, jnp.asarray(xs)), [reference(float(x)) for x in xs], rtol=1e-5, atol=1e-7)
