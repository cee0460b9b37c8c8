"""Transformer encoder, text classifier and ViT: numerics against NumPy, masks, properties."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtrust.models.encoder import EncoderConfig, TextClassifier, TransformerEncoder
from jaxtrust.models.vit import ViT, ViTConfig, patchify

CFG = EncoderConfig(dim=16, num_layers=2, num_heads=4, mlp_dim=24)


def _np_layer_norm(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _np_gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _np_encoder(enc, x, mask=None, head_mask=None, ffn_mask=None, causal=False):
    c = enc.config
    p = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(enc, nnx.Param)))
    x = np.asarray(x, np.float64)
    b, s, d = x.shape
    mask = np.ones((b, s), bool) if mask is None else np.asarray(mask)
    allowed = np.broadcast_to(mask[:, None, :], (b, s, s)).copy()
    if causal:
        allowed &= np.tril(np.ones((s, s), bool))[None]
    L = p["layers"]
    for i in range(c.num_layers):

        def lin(name, h, i=i, sub="attn"):
            return h @ L[sub][name]["kernel"][i] + L[sub][name]["bias"][i]

        h = _np_layer_norm(x, L["attn_norm"]["scale"][i], L["attn_norm"]["bias"][i], c.norm_eps)
        q, k, v = (lin(n, h).reshape(b, s, c.num_heads, -1) for n in ("q_proj", "k_proj", "v_proj"))
        scores = np.einsum("bshd,bthd->bhst", q, k) / math.sqrt(c.head_dim)
        scores = np.where(allowed[:, None], scores, -1e30)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        out = np.einsum("bhst,bthd->bshd", probs, v)
        if head_mask is not None:
            out = out * np.asarray(head_mask)[i][None, None, :, None]
        x = x + lin("o_proj", out.reshape(b, s, d))
        h = _np_layer_norm(x, L["mlp_norm"]["scale"][i], L["mlp_norm"]["bias"][i], c.norm_eps)
        hidden = _np_gelu(lin("up_proj", h, sub="mlp"))
        if ffn_mask is not None:
            hidden = hidden * np.asarray(ffn_mask)[i]
        x = x + lin("down_proj", hidden, sub="mlp")
    return _np_layer_norm(x, p["final_norm"]["scale"], p["final_norm"]["bias"], c.norm_eps)


@pytest.fixture(scope="module")
def enc():
    return TransformerEncoder(CFG, rngs=nnx.Rngs(0))


def test_encoder_matches_numpy_with_masks(enc):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 16)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    head_mask = rng.random((2, 4)).astype(np.float32)
    ffn_mask = (rng.random((2, 24)) > 0.3).astype(np.float32)
    got = enc(x, attention_mask=mask, head_mask=head_mask, ffn_mask=ffn_mask)
    ref = _np_encoder(enc, x, mask, head_mask, ffn_mask)
    np.testing.assert_allclose(np.asarray(got), ref, atol=2e-5)
    np.testing.assert_allclose(np.asarray(enc(x)), _np_encoder(enc, x), atol=2e-5)


def test_causal_encoder_ignores_the_future():
    enc = TransformerEncoder(
        EncoderConfig(dim=16, num_heads=2, mlp_dim=32, causal=True), rngs=nnx.Rngs(1)
    )
    x = np.random.default_rng(1).normal(size=(1, 6, 16)).astype(np.float32)
    y = x.copy()
    y[:, 4:] += np.random.default_rng(9).normal(size=(1, 2, 16)).astype(np.float32)
    a, b = np.asarray(enc(x)), np.asarray(enc(y))
    np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-5)
    assert not np.allclose(a[:, 4:], b[:, 4:])
    np.testing.assert_allclose(a, _np_encoder(enc, x, causal=True), atol=2e-5)


def test_padded_keys_do_not_change_real_positions(enc):
    x = np.random.default_rng(2).normal(size=(1, 6, 16)).astype(np.float32)
    y = x.copy()
    y[:, 4:] = 100.0
    mask = np.array([[1, 1, 1, 1, 0, 0]], bool)
    a = np.asarray(enc(x, attention_mask=mask))
    b = np.asarray(enc(y, attention_mask=mask))
    np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-5)


def test_hidden_states_and_bad_input(enc, own_error_messages):
    x = jnp.ones((2, 3, 16))
    out, hs = enc(x, output_hidden_states=True)
    assert hs.shape == (3, 2, 3, 16)
    np.testing.assert_allclose(np.asarray(hs[0]), np.asarray(x))
    with pytest.raises(ValueError, match="x must have shape"):
        enc(jnp.ones((2, 3, 8)))
    with pytest.raises(ValueError, match="head_mask must have shape"):
        enc(x, head_mask=jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="divisible"):
        EncoderConfig(dim=10, num_heads=4)
    with pytest.raises(TypeError, match="EncoderConfig"):
        TransformerEncoder({"dim": 4}, rngs=nnx.Rngs(0))


def test_patchify_matches_numpy():
    x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    got = np.asarray(patchify(jnp.asarray(x), 2, 2))
    ref = np.stack(
        [
            x[:, i : i + 2, j : j + 2, :].reshape(2, -1)
            for i in range(0, 4, 2)
            for j in range(0, 6, 2)
        ],
        axis=1,
    )
    np.testing.assert_array_equal(got, ref)
    s = np.arange(2 * 8, dtype=np.float32).reshape(2, 8, 1)
    np.testing.assert_array_equal(np.asarray(patchify(jnp.asarray(s), 4, 1)), s.reshape(2, 2, 4))


def test_vit_features_head_and_masks():
    vit = ViT(ViTConfig(input_shape=(8, 8), patch=2, num_classes=3, encoder=CFG), rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 8, 8)), jnp.float32)
    logits = vit(x)
    assert logits.shape == (2, 3)
    assert vit.features(x, tokens=True).shape == (2, 17, 16)
    ones = vit(x, head_mask=jnp.ones((2, 4)), ffn_mask=jnp.ones((2, 24)))
    np.testing.assert_allclose(np.asarray(ones), np.asarray(logits), atol=1e-6)
    assert not np.allclose(np.asarray(vit(x, head_mask=jnp.zeros((2, 4)))), np.asarray(logits))


@pytest.mark.usefixtures("own_error_messages")
def test_vit_bad_input():
    with pytest.raises(ValueError, match="divide"):
        ViTConfig(input_shape=(10,), patch=4)
    with pytest.raises(ValueError, match="input_shape"):
        ViTConfig(input_shape=(2, 2, 2))
    vit = ViT(ViTConfig(input_shape=(8,), patch=4, encoder=CFG), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\[batch, 8, 1\]"):
        vit(jnp.ones((2, 9)))
    with pytest.raises(TypeError, match="floating"):
        vit(jnp.ones((2, 8), jnp.int32))


def test_vit_and_text_classifier_learn_a_separable_task():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 256)
    signal = rng.normal(size=(256, 16)).astype(np.float32) * 0.5
    signal[:, :8] += (2 * labels[:, None] - 1) * 1.0
    tokens = rng.integers(2, 12, size=(256, 6))
    tokens[:, 0] = labels  # the class is the first token
    small = EncoderConfig(dim=16, num_layers=1, num_heads=2, mlp_dim=32)
    vit = ViT(ViTConfig(input_shape=(16,), patch=4, num_classes=2, encoder=small), rngs=nnx.Rngs(0))
    clf = TextClassifier(vocab_size=12, num_classes=2, max_len=6, config=small, rngs=nnx.Rngs(0))
    for model, x in ((vit, jnp.asarray(signal)), (clf, jnp.asarray(tokens))):
        graphdef, params = nnx.split(model)
        tx = optax.adam(3e-3)

        def loss(p, x=x, graphdef=graphdef):
            logits = nnx.merge(graphdef, p)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        @jax.jit
        def step(p, s, loss=loss, tx=tx):
            g = jax.grad(loss)(p)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        state = tx.init(params)
        for _ in range(120):
            params, state = step(params, state)
        acc = float(jnp.mean(jnp.argmax(nnx.merge(graphdef, params)(x), -1) == labels))
        assert acc > 0.95, (type(model).__name__, acc)
