"""HookedLM: the same model as ``approx_hooks`` (full forward and KV-cache decoding), the exact
model without techniques, noise strengths as state (one graph per layer range), generation, and
bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrust.data import WordTokenizer
from jaxtrust.eval import generate_responses
from jaxtrust.models import CausalLM, KVCache, LMConfig
from jaxtrust.safety.actapprox import HookedLM, approx_hooks, calibrate, technique

TOKENIZER = WordTokenizer([f"w{i}" for i in range(20)])
CONFIG = LMConfig.for_tokenizer(
    TOKENIZER, hidden_size=32, intermediate_size=64, num_layers=3, num_heads=2, num_kv_heads=1
)


@pytest.fixture(scope="module")
def model():
    return CausalLM(CONFIG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def tokens():
    return jax.random.randint(jax.random.key(1), (3, 7), 4, CONFIG.vocab_size)


def _logits(m, tokens, **kwargs):
    return np.asarray(m(tokens, **kwargs).logits)


def test_no_technique_is_the_exact_model(model, tokens):
    np.testing.assert_array_equal(_logits(HookedLM(model, ()), tokens), _logits(model, tokens))


def test_noise_equals_approx_hooks_with_the_same_key(model, tokens):
    """The traced strength behaves as the static one: the same draws, the same logits."""
    key = jax.random.key(5)
    for t in (
        technique("gaussian_noise", sigma=0.3, layers=(1, 3)),
        technique("laplace_noise", scale=0.2),
    ):
        expected = _logits(model, tokens, hooks=approx_hooks(t, CONFIG, rng=key))
        got = _logits(HookedLM(model, t, key=key), tokens)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        assert np.abs(got - _logits(model, tokens)).max() > 1e-3
    # another key, other noise
    t = technique("gaussian_noise", sigma=0.3)
    a = _logits(HookedLM(model, t, key=jax.random.key(5)), tokens)
    b = _logits(HookedLM(model, t, key=jax.random.key(6)), tokens)
    assert np.abs(a - b).max() > 1e-3


def test_decoding_draws_fresh_noise_per_cache_index(model, tokens):
    """With a KV cache the key is folded with the cache index: every decoding step is
    ``approx_hooks`` with ``fold_in(key, index)``."""
    key = jax.random.key(2)
    noise = technique("gaussian_noise", sigma=0.4)
    hooked = HookedLM(model, noise, key=key)
    cache_a = cache_b = KVCache.init(CONFIG, tokens.shape[0], 16)
    for lo, hi in ((0, 5), (5, 6), (6, 7)):
        step = tokens[:, lo:hi]
        rng = jax.random.fold_in(key, cache_b.index)
        expected = model(step, cache=cache_b, hooks=approx_hooks(noise, CONFIG, rng=rng))
        got = hooked(step, cache=cache_a)
        np.testing.assert_allclose(got.logits, expected.logits, rtol=1e-6, atol=1e-6)
        if lo > 0:  # a decoding step does not reuse the prefill's draw
            stale = approx_hooks(noise, CONFIG, rng=jax.random.fold_in(key, 0))
            other = model(step, cache=cache_b, hooks=stale).logits
            assert float(jnp.abs(other - got.logits).max()) > 1e-4
        cache_a, cache_b = got.cache, expected.cache


def test_noise_strengths_are_state_so_a_sweep_shares_one_graph(model, tokens):
    def hooked(sigma, layers=None):
        noise = technique("gaussian_noise", sigma=sigma, layers=layers)
        return HookedLM(model, noise, key=jax.random.key(0))

    a, b = hooked(0.1), hooked(0.7)
    assert nnx.graphdef(a) == nnx.graphdef(b) and hash(nnx.graphdef(a)) == hash(nnx.graphdef(b))
    assert nnx.graphdef(a) != nnx.graphdef(hooked(0.1, layers=(0, 1)))
    np.testing.assert_allclose(float(a.strengths[...][0]), 0.1, rtol=1e-6)
    # stronger noise, larger deviation from the exact logits
    exact = _logits(model, tokens)
    assert np.abs(_logits(b, tokens) - exact).mean() > np.abs(_logits(a, tokens) - exact).mean()


def test_generation_under_a_hashable_technique_equals_generate_with_hooks(model):
    prompts = [TOKENIZER.encode("w1 w2 w3"), TOKENIZER.encode("w4 w5")]
    t = technique("bolt")
    hooked = generate_responses(HookedLM(model, t), TOKENIZER, prompts, max_new_tokens=6)
    direct = generate_responses(
        model, TOKENIZER, prompts, max_new_tokens=6, hooks=approx_hooks(t, CONFIG)
    )
    assert hooked == direct
    exact = generate_responses(HookedLM(model, ()), TOKENIZER, prompts, max_new_tokens=6)
    assert exact == generate_responses(model, TOKENIZER, prompts, max_new_tokens=6)


def test_calibrated_technique(model, tokens):
    (teal,) = calibrate(technique("teal", sparsity=0.5), model, tokens)
    expected = _logits(model, tokens, hooks=approx_hooks(teal, CONFIG))
    np.testing.assert_allclose(_logits(HookedLM(model, teal), tokens), expected, atol=1e-6)


def test_bad_input(model, tokens, own_error_messages):
    with pytest.raises(TypeError, match="CausalLM"):
        HookedLM(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), ())
    with pytest.raises(ValueError, match="key="):
        HookedLM(model, technique("gaussian_noise", sigma=0.1))
    with pytest.raises(ValueError, match="calibrate"):
        HookedLM(model, technique("teal", sparsity=0.5))
    with pytest.raises(ValueError, match="beyond the model's 3 layers"):
        HookedLM(model, technique("nexus", layers=(0, 4)))
    with pytest.raises(TypeError, match="Technique"):
        HookedLM(model, ["nexus"])
    with pytest.raises(TypeError, match="jax.random key"):
        HookedLM(model, technique("gaussian_noise", sigma=0.1), key=jnp.zeros(3))
    with pytest.raises(ValueError, match="no other hooks"):
        HookedLM(model, technique("nexus"))(tokens, hooks=approx_hooks(technique("bolt"), CONFIG))
