"""The DPO recipe: pair pools, the cached reference pass and the DPO + SFT loss against NumPy,
the direction of one gradient step, and bad input."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtrust.models import CausalLM, LMConfig
from jaxtrust.training import (
    dpo_finetune,
    make_dpo_loss,
    pair_logprobs,
    preference_pool,
    reference_logprobs,
)

V, S = 13, 6


def _lm(seed):
    return CausalLM(LMConfig.tiny(vocab_size=V), rngs=nnx.Rngs(seed))


def _side(rng, n):
    tokens = rng.integers(1, V, (n, S)).astype(np.int32)
    lengths = rng.integers(4, S + 1, n)
    attn = np.arange(S)[None] < lengths[:, None]
    loss = (np.arange(S)[None] >= 2) & attn
    return {"tokens": tokens, "attention_mask": attn, "loss_mask": loss.astype(np.float32)}


def _pool(seed=0, n=5):
    rng = np.random.default_rng(seed)
    return preference_pool(_side(rng, n), _side(rng, n))


def _np_seq_logp(logits, tokens, mask):
    x = np.asarray(logits, np.float64)
    m = x.max(-1, keepdims=True)
    logp = (x - m - np.log(np.exp(x - m).sum(-1, keepdims=True)))[:, :-1]
    picked = np.take_along_axis(logp, np.asarray(tokens)[:, 1:, None], -1)[..., 0]
    w = np.asarray(mask, np.float64)[:, 1:]
    return (picked * w).sum(-1), -(picked * w).sum() / w.sum()


@partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, tokens, mask):
    return nnx.merge(graphdef, state)(tokens, attention_mask=mask).logits


def _np_logits(model, side):
    graphdef, state = nnx.split(model)
    tokens, mask = jnp.asarray(side["tokens"]), jnp.asarray(side["attention_mask"])
    return np.asarray(_forward(graphdef, state, tokens, mask))


def _side_of(pool, s):
    return {k: pool[f"{s}_{k}"] for k in ("tokens", "attention_mask", "loss_mask")}


def test_loss_matches_numpy_with_the_reference_term_and_sft():
    policy, reference = _lm(0), _lm(1)
    pool = _pool(n=5)
    ref = reference_logprobs(reference, pool, batch_size=2)  # chunked, last chunk padded
    np_ref = {
        s: _np_seq_logp(
            _np_logits(reference, _side_of(pool, s)),
            _side_of(pool, s)["tokens"],
            _side_of(pool, s)["loss_mask"],
        )
        for s in ("chosen", "rejected")
    }
    np.testing.assert_allclose(ref["ref_chosen_logps"], np_ref["chosen"][0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        ref["ref_rejected_logps"], np_ref["rejected"][0], rtol=1e-4, atol=1e-4
    )
    beta, alpha = 0.3, 0.7
    loss, aux = make_dpo_loss(beta=beta, sft_weight=alpha)(policy, {**pool, **ref})
    wc, nll = _np_seq_logp(
        _np_logits(policy, _side_of(pool, "chosen")),
        _side_of(pool, "chosen")["tokens"],
        _side_of(pool, "chosen")["loss_mask"],
    )
    wl, _ = _np_seq_logp(
        _np_logits(policy, _side_of(pool, "rejected")),
        _side_of(pool, "rejected")["tokens"],
        _side_of(pool, "rejected")["loss_mask"],
    )
    h = (wc - np_ref["chosen"][0]) - (wl - np_ref["rejected"][0])
    expected = np.mean(np.log1p(np.exp(-beta * h))) + alpha * nll
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
    np.testing.assert_allclose(float(aux["sft_loss"]), nll, rtol=1e-4)
    np.testing.assert_allclose(float(aux["reward_margin"]), np.mean(beta * h), rtol=1e-3, atol=1e-5)
    c, r = pair_logprobs(policy, pool)
    np.testing.assert_allclose(np.asarray(c), wc, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(r), wl, rtol=1e-4, atol=1e-4)


def test_reference_of_the_policy_itself_gives_log_two():
    policy = _lm(0)
    pool = _pool(n=4)
    loss, aux = make_dpo_loss()(policy, {**pool, **reference_logprobs(policy, pool)})
    np.testing.assert_allclose(float(loss), np.log(2.0), rtol=1e-4)
    assert abs(float(aux["reward_margin"])) < 1e-4


def test_shared_arrays_reach_both_sides():
    # a logits_fn that adds a per-row shared bias to the logits: both sides must see it
    policy = _lm(0)
    pool = _pool(n=3)
    bias = np.random.default_rng(3).normal(size=(3, V)).astype(np.float32) * 3

    def logits_fn(model, batch):
        return (
            model(batch["tokens"], attention_mask=batch["attention_mask"]).logits
            + batch["bias"][:, None]
        )

    shared = preference_pool(_side_of(pool, "chosen"), _side_of(pool, "rejected"), {"bias": bias})
    c, r = pair_logprobs(policy, shared, logits_fn=logits_fn)
    for s, got in (("chosen", c), ("rejected", r)):
        side = _side_of(pool, s)
        expected, _ = _np_seq_logp(
            _np_logits(policy, side) + bias[:, None], side["tokens"], side["loss_mask"]
        )
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a_small_step_raises_the_margin_and_with_sft_the_winner(seed):
    policy = _lm(seed)
    pool = _pool(seed + 10, n=4)
    full = {**pool, **reference_logprobs(policy, pool)}
    graphdef, params, rest = nnx.split(policy, nnx.Param, ...)

    def margin_and_winner(p):
        c, r = pair_logprobs(nnx.merge(graphdef, p, rest), pool)
        return float(jnp.mean(c - r)), float(jnp.mean(c))

    for alpha in (0.0, 5.0):
        loss_fn = make_dpo_loss(beta=0.1, sft_weight=alpha)
        grads = jax.jit(jax.grad(lambda p, f=loss_fn: f(nnx.merge(graphdef, p, rest), full)[0]))(
            params
        )
        stepped = jax.tree.map(lambda w, g: w - 1e-2 * g, params, grads)
        m0, w0 = margin_and_winner(params)
        m1, w1 = margin_and_winner(stepped)
        assert m1 > m0 + 1e-4
        if alpha:
            assert w1 > w0 + 1e-4


@pytest.mark.slow
def test_training_separates_winners_from_losers():
    policy = _lm(0)
    pool = _pool(5, n=8)
    out = dpo_finetune(policy, pool, optax.adam(3e-3), steps=25, batch_size=8, seed=0, beta=0.5)
    c, r = pair_logprobs(out.model, pool)
    gain = (np.asarray(c) - out.reference["ref_chosen_logps"]) - (
        np.asarray(r) - out.reference["ref_rejected_logps"]
    )
    assert np.all(gain > 0)
    assert out.history[-1]["reward_accuracy"] == 1.0
    assert out.history[-1]["loss"] < 0.5 * np.log(2.0)


def test_bad_input(own_error_messages):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="chosen has 3 rows .* rejected has 2 rows"):
        preference_pool(_side(rng, 3), _side(rng, 2))
    with pytest.raises(KeyError, match="rejected lacks"):
        preference_pool(_side(rng, 2), {"tokens": np.ones((2, S), int)})
    with pytest.raises(ValueError, match="must have 2 rows"):
        preference_pool(_side(rng, 2), _side(rng, 2), {"images": np.ones((3, 4))})
    with pytest.raises(ValueError, match="beta must be > 0"):
        make_dpo_loss(beta=0.0)
    with pytest.raises(ValueError, match="sft_weight must be >= 0"):
        make_dpo_loss(sft_weight=-1.0)
    pool = _pool(n=2)
    with pytest.raises(KeyError, match="reference_logprobs"):
        make_dpo_loss()(_lm(0), pool)
    with pytest.raises(KeyError, match="preference_pool"):
        pair_logprobs(_lm(0), {"tokens": np.ones((2, S), int)})
    with pytest.raises(TypeError, match="reference must be a flax.nnx.Module"):
        reference_logprobs("model", pool)
