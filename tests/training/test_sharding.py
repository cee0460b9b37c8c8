"""Data- and model-parallel train steps on the 8 host devices match one device."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtrust.training import (
    fsdp_rules,
    init_train_state,
    make_mesh,
    make_train_step,
    shard_batch,
    shard_params,
)
from jaxtrust.training.sharding import tree_paths

from ._resume_worker import MLP, mse_loss, regression_batch

needs_8 = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 (host) devices")

TENSOR_PARALLEL = [
    (r"l1/kernel$", P(None, "model")),
    (r"l1/bias$", P("model")),
    (r"l2/kernel$", P("model", None)),
]


def _run(mesh, rules, steps=5, accum_steps=1):
    tx = optax.adamw(3e-2, weight_decay=1e-2)
    graphdef, state = init_train_state(MLP(rngs=nnx.Rngs(0)), tx)
    if mesh is not None:
        state = shard_params(state, mesh, rules)
    step = make_train_step(graphdef, mse_loss, tx, mesh=mesh, accum_steps=accum_steps)
    losses = []
    for i in range(steps):
        batch = regression_batch(i)
        if mesh is not None:
            batch = shard_batch(batch, mesh)
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return state, losses


@pytest.fixture(scope="module")
def single_device():
    return _run(None, None)


@needs_8
@pytest.mark.parametrize(
    "data,model,rules,kernel_spec",
    [(8, 1, None, P()), (4, 2, TENSOR_PARALLEL, P(None, "model")), (4, 2, fsdp_rules(), P("data"))],
    ids=["dp8", "dp4xtp2", "fsdp4x2"],
)
def test_sharded_training_matches_single_device(single_device, data, model, rules, kernel_spec):
    reference, ref_losses = single_device
    mesh = make_mesh(data=data, model=model)
    state, losses = _run(mesh, rules)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    assert ref_losses[-1] < 0.8 * ref_losses[0]  # it trained
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)
    # Layouts survive the step: params and their Adam moments keep the rule's sharding.
    kernel = state.params["l1"]["kernel"][...]
    mu = state.opt_state[0].mu["l1"]["kernel"][...]
    for leaf in (kernel, mu):
        assert isinstance(leaf.sharding, NamedSharding)
        assert leaf.sharding.spec == kernel_spec
    if rules is not None:
        assert len(kernel.addressable_shards[0].data.ravel()) < kernel.size


@needs_8
def test_sharded_accumulation_matches_single_device(single_device):
    reference, ref_losses = single_device
    state, losses = _run(make_mesh(data=4, model=2), TENSOR_PARALLEL, accum_steps=2)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)


@needs_8
def test_make_mesh_and_shard_batch():
    mesh = make_mesh(model=2)
    assert dict(mesh.shape) == {"data": 4, "model": 2}
    assert make_mesh().shape["data"] == len(jax.devices())
    with pytest.raises(ValueError, match="needs 16 devices"):
        make_mesh(data=8, model=2)
    batch = shard_batch({"x": np.ones((8, 3), np.float32)}, mesh)
    assert batch["x"].sharding.spec == P("data")
    assert batch["x"].addressable_shards[0].data.shape == (2, 3)
    with pytest.raises(ValueError, match=r"\['x'\].*divisible by the 'data' mesh size 4"):
        shard_batch({"x": np.ones((6, 3), np.float32)}, mesh)


@needs_8
def test_shard_params_rules_and_errors():
    mesh = make_mesh(data=4, model=2)
    params = nnx.state(MLP(rngs=nnx.Rngs(0)), nnx.Param)
    assert tree_paths(params) == ["l1/bias", "l1/kernel", "l2/bias", "l2/kernel"]
    placed = shard_params(params, mesh, TENSOR_PARALLEL)
    assert placed["l1"]["kernel"][...].sharding.spec == P(None, "model")
    assert placed["l2"]["bias"][...].sharding.spec == P()  # unmatched: replicated
    np.testing.assert_array_equal(
        np.asarray(placed["l1"]["kernel"][...]), np.asarray(params["l1"]["kernel"][...])
    )
    with pytest.raises(ValueError, match=r"l2/bias.*not divisible"):
        shard_params(params, make_mesh(data=1, model=8), [(r"bias$", P("model"))])
    with pytest.raises(ValueError, match="no axis 'tensor'"):
        shard_params(params, mesh, [(r"kernel$", P("tensor"))])
    with pytest.raises(ValueError, match="2 entries for a 1-D"):
        shard_params(params, mesh, [(r"bias$", P(None, "model"))])


@needs_8
def test_sharded_state_checkpoint_round_trip_keeps_layout(tmp_path):
    from jaxtrust.training import Checkpointer, abstract_like

    mesh = make_mesh(data=4, model=2)
    tx = optax.adam(1e-2)
    graphdef, state = init_train_state(MLP(rngs=nnx.Rngs(0)), tx)
    state = shard_params(state, mesh, TENSOR_PARALLEL)
    state, _ = make_train_step(graphdef, mse_loss, tx, mesh=mesh, donate=False)(
        state, shard_batch(regression_batch(0), mesh)
    )
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state)
        ckpt.wait()
        restored = ckpt.restore(target=abstract_like(state))
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.sharding == b.sharding
    assert restored.params["l1"]["kernel"][...].sharding.spec == P(None, "model")


LM_RULES = [
    (r"(q_proj|k_proj|v_proj|gate_proj|up_proj)/kernel$", P(None, None, "model")),
    (r"(o_proj|down_proj)/kernel$", P(None, "model", None)),
]


@pytest.mark.slow
@needs_8
def test_causal_lm_overfits_and_sharded_lm_step_matches_single_device():
    from jaxtrust.models import CausalLM, LMConfig
    from jaxtrust.training import lm_loss

    rng = np.random.default_rng(0)
    attention_mask = np.ones((8, 16), bool)
    attention_mask[4:, 12:] = False  # right padding on half the rows
    batch = {
        "tokens": jax.numpy.asarray(rng.integers(0, 256, size=(8, 16)), jax.numpy.int32),
        "attention_mask": jax.numpy.asarray(attention_mask),
    }

    def loss_fn(model, batch, rng):
        del rng
        out = model(batch["tokens"], attention_mask=batch["attention_mask"])
        loss, metrics = lm_loss(out.logits, batch["tokens"], batch["attention_mask"])
        return loss, {"accuracy": metrics["accuracy"]}

    def run(mesh, steps=20):
        tx = optax.adamw(1e-2)
        graphdef, state = init_train_state(CausalLM(LMConfig.tiny(), rngs=nnx.Rngs(0)), tx)
        placed = batch
        if mesh is not None:
            state = shard_params(state, mesh, LM_RULES)
            placed = shard_batch(batch, mesh)
        step = make_train_step(graphdef, loss_fn, tx, mesh=mesh)
        losses = []
        for _ in range(steps):
            state, metrics = step(state, placed)
            losses.append(float(metrics["loss"]))
        return state, losses, float(metrics["accuracy"])

    state, losses, accuracy = run(None)
    assert losses[0] > 0.9 * np.log(256)  # starts near chance
    assert losses[-1] < 0.2 * losses[0] and accuracy > 0.8  # memorised the 8 sequences
    sharded_state, sharded_losses, _ = run(make_mesh(data=4, model=2))
    np.testing.assert_allclose(sharded_losses, losses, rtol=1e-5, atol=1e-5)
    # 20 AdamW steps at lr 1e-2 amplify reduction-order differences to ~3e-5.
    for a, b in zip(
        jax.tree.leaves(sharded_state.params), jax.tree.leaves(state.params), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-4)
    q_proj = sharded_state.params["layers"]["attn"]["q_proj"]["kernel"][...]
    assert q_proj.sharding.spec == P(None, None, "model")
