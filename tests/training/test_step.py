"""Train/eval steps: exact SGD step, accumulation, mixed precision, extra args, NNX state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtrust.training import (
    evaluate,
    init_train_state,
    lm_loss,
    make_eval_step,
    make_train_step,
    merge_model,
)

from ._resume_worker import MLP, TinyLM, lm_batch, lm_loss_fn, mse_loss, regression_batch


def _reference_mlp_loss(p, batch):
    hidden = jnp.tanh(batch["x"] @ p["w1"] + p["b1"][None, :])
    out = hidden @ p["w2"] + p["b2"][None, :]
    return jnp.mean((out - batch["y"]) ** 2)


def _plain_params(model: MLP) -> dict:
    # Copies: the train state shares (and its donating step frees) the model's buffers.
    return {
        "w1": jnp.array(model.l1.kernel[...]),
        "b1": jnp.array(model.l1.bias[...]),
        "w2": jnp.array(model.l2.kernel[...]),
        "b2": jnp.array(model.l2.bias[...]),
    }


def _max_diff(a, b) -> float:
    return max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.smoke
def test_one_sgd_step_matches_hand_written_gradient():
    model = MLP(rngs=nnx.Rngs(0))
    plain = _plain_params(model)
    batch = regression_batch(0)
    lr = 0.5
    tx = optax.sgd(lr)
    graphdef, state = init_train_state(model, tx)
    step = make_train_step(graphdef, mse_loss, tx)
    new_state, metrics = step(state, batch)

    loss, grads = jax.value_and_grad(_reference_mlp_loss)(plain, batch)
    expected = jax.tree.map(lambda p, g: p - lr * g, plain, grads)
    got = _plain_params(merge_model(graphdef, new_state))
    for name in expected:
        np.testing.assert_allclose(
            np.asarray(got[name]), np.asarray(expected[name]), rtol=1e-5, atol=1e-6
        )
    np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-6)
    grad_norm = np.sqrt(sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(float(metrics["grad_norm"]), grad_norm, rtol=1e-5)
    assert "abs_err" in metrics and int(new_state.step) == 1
    assert new_state.params["l1"]["kernel"][...].dtype == jnp.float32


@pytest.mark.parametrize("accum_steps", [2, 4])
def test_gradient_accumulation_equals_full_batch(accum_steps):
    tx = optax.sgd(0.3, momentum=0.9)
    graphdef, full = init_train_state(MLP(rngs=nnx.Rngs(1)), tx)
    _, accum = init_train_state(MLP(rngs=nnx.Rngs(1)), tx)
    full_step = make_train_step(graphdef, mse_loss, tx)
    accum_step = make_train_step(graphdef, mse_loss, tx, accum_steps=accum_steps)
    for i in range(3):
        batch = regression_batch(i)
        full, full_metrics = full_step(full, batch)
        accum, accum_metrics = accum_step(accum, batch)
        np.testing.assert_allclose(
            float(accum_metrics["loss"]), float(full_metrics["loss"]), rtol=1e-5
        )
        np.testing.assert_allclose(
            float(accum_metrics["grad_norm"]), float(full_metrics["grad_norm"]), rtol=1e-5
        )
    assert _max_diff(full.params, accum.params) < 1e-6
    # A single micro-batch's gradient is measurably different: the test can fail.
    single = make_train_step(graphdef, mse_loss, tx)
    _, s0 = init_train_state(MLP(rngs=nnx.Rngs(1)), tx)
    _, m_half = single(s0, jax.tree.map(lambda x: x[::accum_steps], regression_batch(0)))
    _, s1 = init_train_state(MLP(rngs=nnx.Rngs(1)), tx)
    _, m_full = single(s1, regression_batch(0))
    assert abs(float(m_half["grad_norm"]) - float(m_full["grad_norm"])) > 1e-3


def test_accumulation_advances_dropout_stream_per_micro_batch():
    tx = optax.adam(1e-2)
    graphdef, state = init_train_state(TinyLM(rngs=nnx.Rngs(0)), tx)
    step = make_train_step(graphdef, lm_loss_fn, tx, accum_steps=2)
    state, _ = step(state, lm_batch(0))
    state, _ = step(state, lm_batch(1))
    assert int(state.rest["drop"]["rngs"]["count"][...]) == 4


def test_bf16_compute_keeps_fp32_params_and_close_loss():
    tx = optax.adamw(1e-2)
    graphdef, s32 = init_train_state(TinyLM(rngs=nnx.Rngs(2), dropout=0.0), tx)
    _, s16 = init_train_state(TinyLM(rngs=nnx.Rngs(2), dropout=0.0), tx)
    step32 = make_train_step(graphdef, lm_loss_fn, tx)
    step16 = make_train_step(graphdef, lm_loss_fn, tx, compute_dtype=jnp.bfloat16)
    losses32, losses16 = [], []
    for i in range(4):
        s32, m32 = step32(s32, lm_batch(i))
        s16, m16 = step16(s16, lm_batch(i))
        losses32.append(float(m32["loss"]))
        losses16.append(float(m16["loss"]))
    np.testing.assert_allclose(losses16, losses32, rtol=2e-2)
    assert losses16 != losses32  # the forward really ran in bf16
    for leaf in jax.tree.leaves((s16.params, s16.opt_state)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32
    assert _max_diff(s16.params, s32.params) < 5e-2


def _project_out(safety_key: str = "safety_grads") -> optax.GradientTransformationExtraArgs:
    """Removes the update component along the given direction (a safety-projection stand-in)."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, **extra):
        del params
        direction = extra[safety_key]
        dot = sum(
            jnp.vdot(u, d)
            for u, d in zip(jax.tree.leaves(updates), jax.tree.leaves(direction), strict=True)
        )
        norm2 = sum(jnp.vdot(d, d) for d in jax.tree.leaves(direction))
        return jax.tree.map(lambda u, d: u - dot / norm2 * d, updates, direction), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def test_extra_args_reach_the_transform():
    def safety_loss(model, batch):
        return jnp.mean(model(batch["x"][:, ::-1]) ** 2)

    def vdot_tree(a, b):
        return float(
            sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
        )

    batch = regression_batch(3)
    tx = optax.chain(_project_out(), optax.sgd(0.1))
    graphdef, state = init_train_state(MLP(rngs=nnx.Rngs(0)), tx)

    def extra_args_fn(state, batch):
        def loss(params):
            return safety_loss(nnx.merge(graphdef, params, state.rest), batch)

        return {"safety_grads": jax.grad(loss)(state.params)}

    safety_grads = extra_args_fn(state, batch)["safety_grads"]
    projected = make_train_step(graphdef, mse_loss, tx, extra_args_fn=extra_args_fn, donate=False)
    plain_tx = optax.sgd(0.1)
    _, plain_state = init_train_state(MLP(rngs=nnx.Rngs(0)), plain_tx)
    plain = make_train_step(graphdef, mse_loss, plain_tx, donate=False)
    new_projected, _ = projected(state, batch)
    new_plain, _ = plain(plain_state, batch)
    delta_projected = jax.tree.map(jnp.subtract, new_projected.params, state.params)
    delta_plain = jax.tree.map(jnp.subtract, new_plain.params, plain_state.params)
    scale = np.sqrt(vdot_tree(delta_plain, delta_plain) * vdot_tree(safety_grads, safety_grads))
    assert abs(vdot_tree(delta_plain, safety_grads)) > 1e-2 * scale
    assert abs(vdot_tree(delta_projected, safety_grads)) < 1e-5 * scale


def test_learning_rate_metric_from_injected_schedule():
    schedule = optax.linear_schedule(0.1, 0.0, 10)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule)
    graphdef, state = init_train_state(MLP(rngs=nnx.Rngs(0)), tx)
    step = make_train_step(graphdef, mse_loss, tx)
    rates = []
    for i in range(3):
        state, metrics = step(state, regression_batch(i))
        rates.append(float(metrics["learning_rate"]))
    np.testing.assert_allclose(rates, [0.1, 0.09, 0.08], rtol=1e-6)


class _BNNet(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(8, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, momentum=0.9, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.lin(x))


def test_batch_statistics_are_carried_in_rest():
    model = _BNNet(nnx.Rngs(0))
    batch = regression_batch(0)
    pre_bn = np.asarray(model.lin(batch["x"]))
    tx = optax.sgd(0.0)
    graphdef, state = init_train_state(model, tx)
    step = make_train_step(graphdef, mse_loss, tx)
    state, _ = step(state, batch)
    expected_mean = 0.1 * np.asarray(jnp.mean(pre_bn, axis=0))
    np.testing.assert_allclose(
        np.asarray(state.rest["bn"]["mean"][...]), expected_mean, rtol=1e-5, atol=1e-7
    )


def test_matches_nnx_optimizer_api():
    tx = optax.adamw(1e-2)
    model = MLP(rngs=nnx.Rngs(5))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, optimizer, batch):
        grad_fn = nnx.value_and_grad(lambda m: mse_loss(m, batch, None), has_aux=True)
        (loss, _), grads = grad_fn(model)
        optimizer.update(model, grads)
        return loss

    graphdef, state = init_train_state(MLP(rngs=nnx.Rngs(5)), tx)
    step = make_train_step(graphdef, mse_loss, tx)
    for i in range(3):
        nnx_loss = nnx_step(model, optimizer, regression_batch(i))
        state, metrics = step(state, regression_batch(i))
        np.testing.assert_allclose(float(metrics["loss"]), float(nnx_loss), rtol=1e-6)
    assert _max_diff(nnx.state(model, nnx.Param), state.params) < 1e-6


def test_evaluate_is_token_weighted():
    tx = optax.sgd(0.1)
    model = TinyLM(rngs=nnx.Rngs(0))
    graphdef, state = init_train_state(model, tx)

    def metric_fn(model, batch):
        _, metrics = lm_loss(model(batch["tokens"]), batch["tokens"], batch["loss_mask"])
        return metrics

    batches = []
    for i, keep in enumerate([8, 3, 5]):
        b = lm_batch(i, batch=4)
        b["loss_mask"] = b["loss_mask"].at[:, keep:].set(0.0)
        batches.append(b)
    result = evaluate(
        graphdef, state, batches, metric_fn, eval_step=make_eval_step(graphdef, metric_fn)
    )

    model.eval()
    total, count = 0.0, 0.0
    for b in batches:
        logits = np.asarray(model(b["tokens"]), np.float64)[:, :-1]
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        target = np.asarray(b["tokens"])[:, 1:]
        picked = np.take_along_axis(logp, target[..., None], -1)[..., 0]
        mask = np.asarray(b["loss_mask"])[:, 1:]
        total += -(picked * mask).sum()
        count += mask.sum()
    np.testing.assert_allclose(result["loss"], total / count, rtol=1e-5)
    assert result["num_tokens"] == count
    unweighted = np.mean([float(metric_fn(model, b)["loss"]) for b in batches])
    assert abs(unweighted - result["loss"]) > 1e-4


@pytest.mark.usefixtures("own_error_messages")
def test_bad_arguments_raise():
    tx = optax.sgd(0.1)
    graphdef, state = init_train_state(MLP(rngs=nnx.Rngs(0)), tx)
    with pytest.raises(ValueError, match="accum_steps"):
        make_train_step(graphdef, mse_loss, tx, accum_steps=0)
    with pytest.raises(ValueError, match="divisible by accum_steps=3"):
        make_train_step(graphdef, mse_loss, tx, accum_steps=3, donate=False)(
            state, regression_batch(0)
        )
    with pytest.raises(ValueError, match="scalar loss"):
        make_train_step(graphdef, lambda m, b, r: (m(b["x"]), {}), tx, donate=False)(
            state, regression_batch(0)
        )
    with pytest.raises(TypeError, match="nnx.Module"):
        init_train_state({"w": jnp.zeros(3)}, tx)


def test_wrt_path_filter_freezes_the_other_params():
    tx = optax.adam(1e-2)
    model = MLP(rngs=nnx.Rngs(0))
    frozen_before = np.asarray(model.l1.kernel[...]).copy()
    trained_before = np.asarray(model.l2.kernel[...]).copy()
    graphdef, state = init_train_state(model, tx, wrt=nnx.All(nnx.Param, nnx.PathContains("l2")))
    assert set(state.params) == {"l2"} and set(state.rest) == {"l1"}
    step = make_train_step(graphdef, mse_loss, tx)
    for i in range(2):
        state, _ = step(state, regression_batch(i))
    trained = merge_model(graphdef, state)
    np.testing.assert_array_equal(np.asarray(trained.l1.kernel[...]), frozen_before)
    assert np.max(np.abs(np.asarray(trained.l2.kernel[...]) - trained_before)) > 1e-3
