"""The shared training pieces: epoch batching, the loss adapter, the recipe, memoisation, the
scanned inner optimiser and finetune."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.models import CausalLM, LMConfig
from jaxtrust.training import (
    adamw_cosine,
    check_batch,
    clear_memo,
    epoch_batches,
    finetune,
    lm_batch_loss,
    lm_loss,
    memo_size,
    memoize,
    scan_optimize,
    warmup_cosine,
)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 17), batch=st.integers(1, 9), steps=st.integers(1, 12), seed=st.integers(0, 99)
)
def test_epoch_batches_cover_each_epoch_once(n, batch, steps, seed):
    batches = epoch_batches({"x": np.arange(n)}, batch, seed=seed)
    rows = np.concatenate([batches(i)["x"] for i in range(steps)])
    assert len(rows) == batch * steps
    for e in range(len(rows) // n):  # every full epoch is a permutation
        assert sorted(rows[e * n : (e + 1) * n].tolist()) == list(range(n))
    # deterministic, and any step can be asked for first (resumption)
    again = epoch_batches({"x": np.arange(n)}, batch, seed=seed)
    np.testing.assert_array_equal(again(steps - 1)["x"], batches(steps - 1)["x"])


def test_epoch_batches_match_the_single_stream_order_the_zoo_used():
    # the order every fine-tune used before the core piece existed: successive permutations
    # of one generator seeded with [seed, 31]
    n, batch, steps = 10, 4, 7
    rng = np.random.default_rng([3, 31])
    order = np.concatenate([rng.permutation(n) for _ in range(-(-steps * batch // n))])
    batches = epoch_batches({"x": np.arange(n)}, batch, seed=[3, 31])
    for i in range(steps):
        np.testing.assert_array_equal(batches(i)["x"], order[i * batch : (i + 1) * batch])


def test_epoch_batches_bad_input():
    with pytest.raises(ValueError, match="share their first dimension"):
        epoch_batches({"a": np.zeros(3), "b": np.zeros(4)}, 2, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        epoch_batches({"a": np.zeros(3)}, 0, seed=0)
    with pytest.raises(ValueError, match="non-empty"):
        epoch_batches({}, 2, seed=0)


def test_warmup_cosine_shape():
    schedule = warmup_cosine(1.0, 100, warmup_steps=10, final_fraction=0.1)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(1.0)
    assert float(schedule(100)) == pytest.approx(0.1)
    assert float(schedule(55)) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-6)
    with pytest.raises(ValueError, match="learning_rate"):
        adamw_cosine(0.0, 10)
    with pytest.raises(ValueError, match="clip_norm"):
        adamw_cosine(1e-3, 10, clip_norm=0.0)


def test_lm_batch_loss_equals_lm_loss_on_the_forward():
    model = CausalLM(LMConfig.tiny(vocab_size=17), rngs=nnx.Rngs(0))
    batch = {
        "tokens": jnp.array([[1, 5, 6, 7, 0], [2, 3, 4, 0, 0]]),
        "attention_mask": jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], bool),
        "loss_mask": jnp.array([[0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], jnp.float32),
    }
    loss, aux = lm_batch_loss(model, batch)
    logits = model(batch["tokens"], attention_mask=batch["attention_mask"]).logits
    ref, _ = lm_loss(logits, batch["tokens"], batch["loss_mask"])
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-6)
    assert float(aux["num_tokens"]) == 4.0


@pytest.mark.usefixtures("own_error_messages")
def test_lm_batch_loss_bad_input():
    model = CausalLM(LMConfig.tiny(vocab_size=17), rngs=nnx.Rngs(0))
    batch = {"tokens": jnp.ones((1, 4), jnp.int32), "attention_mask": jnp.ones((1, 4), bool)}
    with pytest.raises(KeyError, match="loss_mask"):
        lm_batch_loss(model, {"tokens": batch["tokens"], "attention_mask": batch["attention_mask"]})
    with pytest.raises(TypeError, match="mapping"):
        lm_batch_loss(model, batch["tokens"])


@pytest.mark.usefixtures("own_error_messages")
def test_check_batch_names_the_argument_and_the_missing_keys():
    check_batch({"tokens": 0, "attention_mask": 0, "loss_mask": 0, "extra": 0})
    with pytest.raises(KeyError, match=r"chosen lacks \['attention_mask', 'loss_mask'\]"):
        check_batch({"tokens": 0}, "chosen")
    with pytest.raises(TypeError, match="sft must be a mapping .* got list"):
        check_batch([1, 2], "sft")


def test_memoize_builds_once_and_is_bounded():
    clear_memo("test")
    calls = []
    for _ in range(3):
        memoize("test", ("a", 1), lambda: calls.append(1) or len(calls))
    assert calls == [1] and memo_size("test") == 1
    with pytest.raises(TypeError, match="hashable"):
        memoize("test", ["unhashable"], lambda: None)
    clear_memo("test")
    assert memo_size("test") == 0


def test_scan_optimize_matches_a_python_loop():
    def loss(p, x, y):
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

    x = jax.random.normal(jax.random.key(0), (16, 3))
    y = jnp.sin(x[:, :1])
    params = {"w": jnp.zeros((3, 1)), "b": jnp.zeros((1, 1))}
    tx = optax.adam(0.05)
    out, losses = jax.jit(lambda p: scan_optimize(loss, p, tx, 25, x, y))(params)
    p, state, ref = params, tx.init(params), []
    for _ in range(25):
        value, grads = jax.value_and_grad(loss)(p, x, y)
        ref.append(float(value))
        updates, state = tx.update(grads, state, p)
        p = optax.apply_updates(p, updates)
    ref.append(float(loss(p, x, y)))
    np.testing.assert_allclose(np.asarray(losses), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out["w"]), np.asarray(p["w"]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="steps"):
        scan_optimize(loss, params, tx, -1, x, y)


def _pool(n=24, seq=8, vocab=17, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocab, size=(n, seq)).astype(np.int32)
    return {
        "tokens": tokens,
        "attention_mask": np.ones((n, seq), bool),
        "loss_mask": np.ones((n, seq), np.float32),
    }


def test_finetune_learns_keeps_its_input_and_reuses_the_step():
    model = CausalLM(LMConfig.tiny(vocab_size=17), rngs=nnx.Rngs(0))
    before = [np.asarray(x).copy() for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    pool = _pool()
    tx = adamw_cosine(3e-3, 30)
    evals = []

    def eval_fn(m):
        evals.append(1)
        return {"loss": float(lm_batch_loss(m, pool)[0])}

    clear_memo("finetune")
    result = finetune(
        model,
        pool,
        tx,
        steps=30,
        batch_size=8,
        seed=0,
        step_key=("t", 3e-3),
        eval_fn=eval_fn,
        eval_every=10,
    )
    assert memo_size("finetune") == 1
    assert len(result.history) == 30 and len(evals) == 3
    assert result.history[-1]["eval_loss"] < result.history[9]["eval_loss"] - 0.05
    after = jax.tree.leaves(nnx.state(model, nnx.Param))
    for x, y in zip(before, after, strict=True):
        np.testing.assert_array_equal(x, np.asarray(y))
    again = finetune(model, pool, tx, steps=30, batch_size=8, seed=0, step_key=("t", 3e-3))
    assert memo_size("finetune") == 1
    np.testing.assert_allclose(again.losses, result.losses, rtol=1e-6)


def test_finetune_extra_batch_reaches_the_loss():
    model = CausalLM(LMConfig.tiny(vocab_size=17), rngs=nnx.Rngs(0))
    seen = []

    def loss_fn(m, batch, key):
        seen.append(tuple(sorted(batch)))
        return lm_batch_loss(m, batch)

    extra = {"safety_tokens": np.zeros((1, 8), np.int32)}
    finetune(
        model,
        _pool(),
        optax.sgd(0.1),
        steps=2,
        batch_size=4,
        seed=0,
        loss_fn=loss_fn,
        extra_batch=extra,
    )
    assert "safety_tokens" in seen[0]


@pytest.mark.usefixtures("own_error_messages")
def test_finetune_bad_input():
    model = CausalLM(LMConfig.tiny(vocab_size=17), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="also pool keys"):
        finetune(
            model,
            _pool(),
            optax.sgd(0.1),
            steps=1,
            batch_size=4,
            seed=0,
            extra_batch={"tokens": np.zeros((1, 8), np.int32)},
        )
    with pytest.raises(TypeError, match="nnx.Module"):
        finetune(object(), _pool(), optax.sgd(0.1), steps=1, batch_size=4, seed=0)


def test_lm_marginal_loss_is_minus_logsumexp_of_the_set():
    from jaxtrust.training import lm_marginal_loss, sequence_logprobs

    model = CausalLM(LMConfig.tiny(vocab_size=17), rngs=nnx.Rngs(0))
    pool = _pool(n=6)
    pool["loss_mask"][:, :3] = 0.0
    loss, aux = lm_marginal_loss(model, pool, group=3)
    logits = model(jnp.asarray(pool["tokens"])).logits
    logp = np.asarray(
        sequence_logprobs(logits, jnp.asarray(pool["tokens"]), jnp.asarray(pool["loss_mask"]))
    )
    ref = -np.mean([np.logaddexp.reduce(logp[i : i + 3]) for i in (0, 3)])
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
    assert float(aux["num_prompts"]) == 2.0
    # the set's probability is at least its most likely member's
    assert float(loss) <= -np.mean([logp[0:3].max(), logp[3:6].max()]) + 1e-5


@pytest.mark.usefixtures("own_error_messages")
def test_lm_marginal_loss_bad_group():
    from jaxtrust.training import lm_marginal_loss

    model = CausalLM(LMConfig.tiny(vocab_size=17), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="group must be a positive int dividing"):
        lm_marginal_loss(model, _pool(n=6), group=4)
