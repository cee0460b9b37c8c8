"""The evaluation core: responses, perplexity against a NumPy reference, summaries."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from flax import nnx

from jaxtrust.data import WordTokenizer
from jaxtrust.eval import (
    claim_count,
    generate_responses,
    mean_se,
    perplexity,
    proportion_se,
    seed_summary,
    sequence_nll,
    special_ids,
)
from jaxtrust.models import CausalLM, LMConfig, generate

TOK = WordTokenizer(["a", "b", "c", "d"])


@pytest.fixture(scope="module")
def model():
    config = LMConfig.for_tokenizer(
        TOK, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1
    )
    return CausalLM(config, rngs=nnx.Rngs(0))


def test_chunked_responses_equal_one_batch(model):
    prompts = [TOK.encode(p) for p in ("a b", "c", "d d a", "b", "a", "c d")]
    one = generate_responses(model, TOK, prompts, max_new_tokens=5, batch_size=64)
    chunked = generate_responses(model, TOK, prompts, max_new_tokens=5, batch_size=4)
    assert one == chunked
    out = generate(model, prompts, max_new_tokens=5, stop_tokens=(TOK.eos_id,), pad_id=TOK.pad_id)
    direct = [TOK.decode(r) for r in np.asarray(out.tokens).tolist()]
    assert one == direct
    ids = generate_responses(model, TOK, prompts[:2], max_new_tokens=5, return_ids=True)
    assert ids.texts == one[:2] and all(isinstance(i, list) for i in ids.ids)


def test_sampled_responses_need_a_key_and_depend_on_it(model):
    prompts = [TOK.encode("a b")] * 8
    with pytest.raises(ValueError, match="key"):
        generate_responses(model, TOK, prompts, temperature=1.0)
    a = generate_responses(model, TOK, prompts, temperature=2.0, key=jax.random.key(0))
    b = generate_responses(model, TOK, prompts, temperature=2.0, key=jax.random.key(0))
    c = generate_responses(model, TOK, prompts, temperature=2.0, key=jax.random.key(1))
    assert a == b and a != c
    with pytest.raises(ValueError, match="empty"):
        generate_responses(model, TOK, [])


def test_special_ids_of_both_tokenizer_kinds():
    assert special_ids(TOK) == (TOK.eos_id, TOK.pad_id)

    class HF:
        eos_token_id, pad_token_id = 7, None

    assert special_ids(HF()) == (7, 7)
    with pytest.raises(ValueError, match="eos"):
        special_ids(object())


def test_perplexity_against_numpy(model):
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, TOK.vocab_size, size=(5, 6)).astype(np.int32)
    mask = np.ones((5, 6), bool)
    loss_mask = (rng.random((5, 6)) < 0.7).astype(np.float32)
    loss_mask[:, 1] = 1.0
    pool = {"tokens": tokens, "attention_mask": mask, "loss_mask": loss_mask}
    logits = np.asarray(model(tokens, attention_mask=mask).logits, np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0]
    nll_ref = -(picked * loss_mask[:, 1:]).sum(1)
    nll, count = sequence_nll(model, pool)
    np.testing.assert_allclose(np.asarray(nll), nll_ref, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(count), loss_mask[:, 1:].sum(1))
    expected = math.exp(nll_ref.sum() / loss_mask[:, 1:].sum())
    assert perplexity(model, pool, batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert perplexity(model, pool, batch_size=5) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="no target"):
        perplexity(model, {**pool, "loss_mask": np.zeros_like(loss_mask)})


def test_summaries():
    m = mean_se([1.0, 3.0])
    assert m.mean == 2.0 and m.se == pytest.approx(1.0) and m.n == 2
    assert mean_se([5.0]).se == 0.0
    with pytest.raises(ValueError, match="empty"):
        mean_se([])
    assert proportion_se(0.2, 400) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="n must"):
        proportion_se(0.2, 0)
    assert claim_count([True, True, False]) == {"holds": 2, "seeds": 3}
    s = seed_summary([{"a": 1.0, "b": "x"}, {"a": 3.0, "b": "y"}])
    assert s == {"a": 2.0, "a_std": 1.0, "a_se": pytest.approx(1.0)}


def test_lm_metrics_accuracy_and_loss_against_numpy(model):
    from jaxtrust.eval import lm_metrics

    rng = np.random.default_rng(1)
    tokens = rng.integers(1, TOK.vocab_size, size=(7, 5)).astype(np.int32)
    loss_mask = np.ones((7, 5), np.float32)
    pool = {"tokens": tokens, "attention_mask": np.ones((7, 5), bool), "loss_mask": loss_mask}
    logits = np.asarray(model(tokens).logits, np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0]
    acc = (logits[:, :-1].argmax(-1) == tokens[:, 1:]).mean()
    m = lm_metrics(model, pool, batch_size=3)
    assert m["loss"] == pytest.approx(-picked.mean(), rel=1e-5)
    assert m["accuracy"] == pytest.approx(acc)
    assert m["num_tokens"] == 28.0 and m["perplexity"] == pytest.approx(math.exp(m["loss"]))
