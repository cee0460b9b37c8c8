"""CausalLM with input embeddings and a bidirectional prefix; generation from embeddings."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrust.models import CausalLM, LMConfig, ModelHooks, generate, generate_from_embeds
from jaxtrust.models.cache import KVCache


@dataclasses.dataclass(frozen=True)
class _PrefixReference(ModelHooks):
    """Reference attention: causal plus a bidirectional block over the first ``prefix`` slots,
    built here from positions alone (ignores the model's own mask; no padding in these tests)."""

    prefix: int = 0

    def softmax(self, scores, mask, layer):
        s, t = scores.shape[-2:]
        q = jnp.arange(s)[:, None]
        k = jnp.arange(t)[None, :]
        allowed = (k <= q) | ((q < self.prefix) & (k < self.prefix))
        return jax.nn.softmax(jnp.where(allowed, scores, -1e30), axis=-1)


@pytest.fixture(scope="module")
def model():
    return CausalLM(LMConfig.tiny(vocab_size=40), rngs=nnx.Rngs(3))


def _tokens(b=2, s=7, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(1, 40, (b, s)), jnp.int32)


def test_inputs_embeds_equal_token_forward(model):
    tokens = _tokens()
    ref = model(tokens).logits
    out = model(None, inputs_embeds=model.embed(tokens)).logits
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("prefix", [0, 1, 4, 7])
def test_prefix_mask_matches_reference_attention(model, prefix):
    tokens = _tokens()
    b, s = tokens.shape
    pm = jnp.broadcast_to(jnp.arange(s)[None] < prefix, (b, s))
    out = model(tokens, prefix_mask=pm).logits
    ref = model(tokens, hooks=_PrefixReference(prefix=prefix)).logits
    np.testing.assert_allclose(out, ref, atol=1e-5)
    if 1 < prefix:
        # a prefix query sees later prefix tokens: changing token prefix-1 moves logits at 0
        changed = tokens.at[:, prefix - 1].set((tokens[:, prefix - 1] % 39) + 1)
        moved = model(changed, prefix_mask=pm).logits[:, 0]
        assert float(jnp.max(jnp.abs(moved - out[:, 0]))) > 1e-4


def test_prefix_mask_through_cache_prefill(model):
    tokens = _tokens(s=6)
    pm = jnp.broadcast_to(jnp.arange(6)[None] < 3, tokens.shape)
    full = model(tokens, prefix_mask=pm).logits[:, -1]
    cache = KVCache.init(model.config, 2, 10)
    out = model(tokens, prefix_mask=pm, cache=cache, last_logits_only=True)
    np.testing.assert_allclose(out.logits[:, -1], full, atol=1e-5)


def test_generate_from_embeds_matches_generate_on_ragged_prompts(model):
    prompts = [[5, 6, 7, 8], [9, 3]]
    ref = generate(model, prompts, max_new_tokens=5, prompt_bucket=6)
    width = 6
    tokens = np.zeros((2, width), np.int32)
    mask = np.zeros((2, width), bool)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p) :] = p
        mask[i, width - len(p) :] = True
    embeds = model.embed(jnp.asarray(tokens))
    out = generate_from_embeds(model, embeds, jnp.asarray(mask), max_new_tokens=5)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
    np.testing.assert_array_equal(np.asarray(out.prompt_lengths), [4, 2])


def test_generate_from_embeds_prefix_changes_greedy_only_through_attention(model):
    tokens = _tokens(b=1, s=5)
    embeds = model.embed(tokens)
    mask = jnp.ones((1, 5), bool)
    pm = jnp.asarray([[True, True, True, False, False]])
    with_prefix = generate_from_embeds(model, embeds, mask, prefix_mask=pm, max_new_tokens=1)
    logits = model(tokens, prefix_mask=pm).logits[:, -1]
    assert int(with_prefix.tokens[0, 0]) == int(jnp.argmax(logits[0]))


def test_bad_inputs(model, own_error_messages):
    tokens = _tokens()
    with pytest.raises(ValueError, match="either tokens or inputs_embeds"):
        model(tokens, inputs_embeds=model.embed(tokens))
    with pytest.raises(ValueError, match="inputs_embeds must be a"):
        model(None, inputs_embeds=jnp.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="prefix_mask must have shape"):
        model(tokens, prefix_mask=jnp.ones((2, 3), bool))
    embeds = model.embed(tokens)
    right_padded = jnp.asarray(np.arange(7)[None].repeat(2, 0) < 5)
    with pytest.raises(ValueError, match="left-padded"):
        generate_from_embeds(model, embeds, right_padded, max_new_tokens=2)
    with pytest.raises(ValueError, match="attention_mask must be bool"):
        generate_from_embeds(model, embeds, jnp.ones((2, 7), jnp.int32), max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_from_embeds(model, embeds, jnp.ones((2, 7), bool), max_new_tokens=0)
