"""One-shot recovery: the loss of the single example falls, the pool choice follows the rule,
the input model is untouched, and bad input is refused."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrust.models import CausalLM, LMConfig
from jaxtrust.safety.recovery import recover


def _pool(n=3, seq=12, vocab=97, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, vocab, size=(n, seq)).astype(np.int32)
    loss_mask = np.zeros((n, seq), np.float32)
    loss_mask[:, 6:] = 1.0
    return {"tokens": tokens, "attention_mask": np.ones((n, seq), bool), "loss_mask": loss_mask}


@pytest.fixture(scope="module")
def model():
    return CausalLM(LMConfig.tiny(), rngs=nnx.Rngs(0))


def test_recovery_fits_the_example_and_leaves_the_input_alone(model):
    before = [np.asarray(x).copy() for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    result = recover(model, _pool(1), steps=30, learning_rate=1e-2, tol=0.5)
    assert len(result.losses) == 31
    assert result.losses[-1] < 0.3 * result.losses[0]
    assert result.steps_to_converge is not None and result.losses[result.steps_to_converge] < 0.5
    assert all(result.losses[i] >= 0.5 for i in range(result.steps_to_converge))
    after = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pool_selection_follows_the_rule(model):
    from jaxtrust.training import lm_loss

    pool = _pool(4, seed=3)
    losses = []
    for i in range(4):
        logits = model(jnp.asarray(pool["tokens"][i : i + 1])).logits
        losses.append(
            float(
                lm_loss(
                    logits,
                    jnp.asarray(pool["tokens"][i : i + 1]),
                    jnp.asarray(pool["loss_mask"][i : i + 1]),
                )[0]
            )
        )
    high = recover(model, pool, steps=1, select="max_loss")
    low = recover(model, pool, steps=1, select="min_loss")
    first = recover(model, pool, steps=1, select="first")
    assert (
        high.chosen == int(np.argmax(losses))
        and low.chosen == int(np.argmin(losses))
        and first.chosen == 0
    )
    np.testing.assert_allclose(high.pool_losses, losses, rtol=1e-4)


@pytest.mark.usefixtures("own_error_messages")
def test_bad_input(model):
    with pytest.raises(KeyError, match="loss_mask"):
        recover(
            model, {"tokens": np.ones((1, 4), np.int32), "attention_mask": np.ones((1, 4), bool)}
        )
    with pytest.raises(ValueError, match="steps"):
        recover(model, _pool(1), steps=0)
    with pytest.raises(ValueError, match="select"):
        recover(model, _pool(1), select="best")
    bad = _pool(1)
    bad["loss_mask"][:] = 0
    with pytest.raises(ValueError, match="supervised"):
        recover(model, bad)
    with pytest.raises(ValueError, match="shape"):
        recover(model, {**_pool(1), "attention_mask": np.ones((1, 5), bool)})


def test_recover_accepts_a_batch(model):
    from jaxtrust.data import collate

    batch = collate([[5, 6, 7, 8, 9, 10]], [[11, 12, 13, 14, 15, 16]], pad_to_multiple=12)
    result = recover(model, batch, steps=2)
    assert len(result.losses) == 3 and result.chosen == 0


def test_bilevel_selection_scores_every_candidate_by_its_upper_objective(model):
    from jaxtrust.safety.recovery.recover import token_kl

    pool = _pool(4, seed=5)
    harmful, task = _pool(3, seed=6), _pool(3, seed=7)
    aligned = CausalLM(LMConfig.tiny(), rngs=nnx.Rngs(1))
    result = recover(
        model,
        pool,
        steps=3,
        learning_rate=1e-2,
        select="bilevel",
        aligned=aligned,
        harmful=harmful,
        task=task,
    )
    # the reference: patch each candidate separately and evaluate J(i) in plain Python
    expected = []
    for i in range(4):
        one = {k: v[i : i + 1] for k, v in pool.items()}
        patched = recover(model, one, steps=3, learning_rate=1e-2).model
        h = {k: jnp.asarray(v) for k, v in harmful.items()}
        t = {k: jnp.asarray(v) for k, v in task.items()}
        expected.append(float(token_kl(aligned, patched, h) + token_kl(model, patched, t)))
    np.testing.assert_allclose(result.pool_scores, expected, rtol=1e-4, atol=1e-6)
    assert result.chosen == int(np.argmin(expected))
    assert (
        len(set(np.round(expected, 6))) > 1
    )  # the candidates differ, so the choice means something


def test_token_kl_is_zero_against_itself_and_positive_otherwise(model):
    from jaxtrust.safety.recovery.recover import token_kl

    batch = {k: jnp.asarray(v) for k, v in _pool(2).items()}
    assert abs(float(token_kl(model, model, batch))) < 1e-6
    other = CausalLM(LMConfig.tiny(), rngs=nnx.Rngs(2))
    assert float(token_kl(model, other, batch)) > 1e-4


def test_bilevel_needs_its_references(model):
    with pytest.raises(ValueError, match="bilevel"):
        recover(model, _pool(2), select="bilevel")
