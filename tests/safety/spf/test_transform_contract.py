"""One contract for every transform that takes ``safety_grads=`` (in the manner of optax's
``contrib/_common_test.py``): jit, orbax round trip, ``optax.masked`` and ``multi_transform``
with ``mask_compatible_extra_args``, ``MultiSteps``, ``nnx.Optimizer``, and bad trees."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtrust.safety.spf import pcgrad_full, random_subspace, spf
from jaxtrust.training import Checkpointer

FACTORIES = {
    "spf": lambda: spf(rank=2),
    "spf_refresh": lambda: spf(rank=2, mode="pcgrad", refresh_every=2),
    "random_subspace": lambda: random_subspace(2, seed=1),
    "pcgrad_full": lambda: pcgrad_full(),
}
# the transforms that read safety_grads (random_subspace ignores them by design, so the
# mismatch tests do not apply to it)
READS_SAFETY = ("spf", "spf_refresh", "pcgrad_full")


def _tree(seed: int, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    return {
        "dense": {"kernel": jnp.asarray(scale * rng.normal(size=(6, 4)), jnp.float32)},
        "out": {"kernel": jnp.asarray(scale * rng.normal(size=(4, 3)), jnp.float32)},
        "bias": jnp.asarray(scale * rng.normal(size=(3,)), jnp.float32),
    }


PARAMS = _tree(0)
SAFETY = _tree(1)
GRADS = jax.tree.map(lambda s, n: -s + 0.3 * n, SAFETY, _tree(2))  # mostly against safety


def _allclose(a, b, atol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-5)


@pytest.fixture(params=sorted(FACTORIES))
def name(request):
    return request.param


def test_update_changes_something_and_keeps_structure(name):
    tx = FACTORIES[name]()
    out, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS, safety_grads=SAFETY)
    assert jax.tree.structure(out) == jax.tree.structure(GRADS)
    assert any(
        not np.allclose(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(GRADS), strict=True)
    )


def test_jit_matches_eager_and_compiles_once(name):
    tx = FACTORIES[name]()
    traces = []

    def update(g, s, p, sg):
        traces.append(1)
        return tx.update(g, s, p, safety_grads=sg)

    jitted = jax.jit(update)
    state = tx.init(PARAMS)
    eager_state = state
    for step in range(3):
        grads = jax.tree.map(lambda x, step=step: x * (1.0 + step), GRADS)
        out, state = jitted(grads, state, PARAMS, SAFETY)
        ref, eager_state = tx.update(grads, eager_state, PARAMS, safety_grads=SAFETY)
        _allclose(out, ref)
    assert len(traces) == 1


def test_state_roundtrips_through_orbax(name, tmp_path):
    tx = FACTORIES[name]()
    _, state = tx.update(GRADS, tx.init(PARAMS), PARAMS, safety_grads=SAFETY)
    with Checkpointer(tmp_path / name) as ckpt:
        ckpt.save(1, state, force=True)
        ckpt.wait()
        restored = ckpt.restore(target=jax.tree.map(jnp.zeros_like, state))
    _allclose(restored, state, atol=0)
    a, _ = tx.update(GRADS, state, PARAMS, safety_grads=SAFETY)
    b, _ = tx.update(GRADS, restored, PARAMS, safety_grads=SAFETY)
    _allclose(a, b, atol=0)


MASK = {"dense": {"kernel": True}, "out": {"kernel": False}, "bias": False}


def test_inside_optax_masked(name):
    tx = optax.masked(FACTORIES[name](), MASK, mask_compatible_extra_args=True)
    out, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS, safety_grads=SAFETY)
    inner = FACTORIES[name]()
    sub = {"dense": GRADS["dense"]}
    sub_params, sub_safety = {"dense": PARAMS["dense"]}, {"dense": SAFETY["dense"]}
    ref, _ = inner.update(sub, inner.init(sub_params), sub_params, safety_grads=sub_safety)
    _allclose(out["dense"], ref["dense"])
    _allclose(out["out"], GRADS["out"], atol=0)  # masked out: untouched
    _allclose(out["bias"], GRADS["bias"], atol=0)


@pytest.mark.usefixtures("own_error_messages")
@pytest.mark.parametrize("reader", READS_SAFETY)
def test_masked_without_the_flag_says_how_to_fix_it(reader):
    name = reader
    tx = optax.masked(FACTORIES[name](), MASK)
    with pytest.raises(ValueError, match="mask_compatible_extra_args=True"):
        tx.update(GRADS, tx.init(PARAMS), PARAMS, safety_grads=SAFETY)


def test_inside_multi_transform(name):
    labels = {"dense": {"kernel": "safe"}, "out": {"kernel": "safe"}, "bias": "plain"}
    tx = optax.multi_transform(
        {"safe": FACTORIES[name](), "plain": optax.scale(0.5)},
        labels,
        mask_compatible_extra_args=True,
    )
    out, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS, safety_grads=SAFETY)
    inner = FACTORIES[name]()
    sub = {"dense": GRADS["dense"], "out": GRADS["out"]}
    sp = {"dense": PARAMS["dense"], "out": PARAMS["out"]}
    ss = {"dense": SAFETY["dense"], "out": SAFETY["out"]}
    ref, _ = inner.update(sub, inner.init(sp), sp, safety_grads=ss)
    _allclose({"dense": out["dense"], "out": out["out"]}, ref)
    _allclose(out["bias"], 0.5 * GRADS["bias"])


def test_multisteps_accumulates_then_applies_once(name):
    tx = optax.MultiSteps(optax.chain(FACTORIES[name](), optax.sgd(1.0)), every_k_schedule=2)
    state = tx.init(PARAMS)
    g1 = GRADS
    g2 = jax.tree.map(lambda x: 0.5 * x, GRADS)
    first, state = tx.update(g1, state, PARAMS, safety_grads=SAFETY)
    _allclose(first, jax.tree.map(jnp.zeros_like, GRADS), atol=0)  # nothing applied yet
    second, state = tx.update(g2, state, PARAMS, safety_grads=SAFETY)
    plain = optax.chain(FACTORIES[name](), optax.sgd(1.0))
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    ref, _ = plain.update(mean, plain.init(PARAMS), PARAMS, safety_grads=SAFETY)
    _allclose(second, ref)


class _Net(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(6, 4, use_bias=False, rngs=rngs)
        self.out = nnx.Linear(4, 3, use_bias=True, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.dense(x)))


def test_nnx_optimizer_matches_the_functional_path(name):
    x = jnp.asarray(np.random.default_rng(3).normal(size=(8, 6)), jnp.float32)

    def loss(model, target):
        return jnp.mean((model(x) - target) ** 2)

    model = _Net(nnx.Rngs(0))
    p = nnx.to_pure_dict(nnx.state(model, nnx.Param))  # before the optimizer mutates the model
    grads = nnx.grad(loss)(model, 1.0)
    safety = nnx.grad(loss)(model, -1.0)
    tx = optax.chain(FACTORIES[name](), optax.sgd(0.1))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    optimizer.update(model, grads, safety_grads=safety)
    functional = optax.chain(FACTORIES[name](), optax.sgd(0.1))
    g, s = nnx.to_pure_dict(grads), nnx.to_pure_dict(safety)
    updates, _ = functional.update(g, functional.init(p), p, safety_grads=s)
    expected = optax.apply_updates(p, updates)
    _allclose(nnx.to_pure_dict(nnx.state(model, nnx.Param)), expected)


@pytest.mark.usefixtures("own_error_messages")
@pytest.mark.parametrize("reader", READS_SAFETY)
def test_bad_trees_are_named(reader):
    name = reader
    tx = FACTORIES[name]()
    state = tx.init(PARAMS)
    missing = {"dense": SAFETY["dense"], "out": SAFETY["out"]}
    with pytest.raises(ValueError, match="safety_grads"):
        tx.update(GRADS, state, PARAMS, safety_grads=missing)
    wrong = {**SAFETY, "out": {"kernel": jnp.zeros((3, 4))}}
    with pytest.raises(ValueError, match="out/kernel"):
        tx.update(GRADS, state, PARAMS, safety_grads=wrong)


@pytest.mark.usefixtures("own_error_messages")
def test_updates_unlike_the_init_params_are_refused():
    tx = spf(rank=2)
    state = tx.init(PARAMS)
    other = {**GRADS, "dense": {"kernel": jnp.ones((6, 5))}}
    with pytest.raises(ValueError, match="dense/kernel.*initialised"):
        tx.update(
            other, state, PARAMS, safety_grads={**SAFETY, "dense": {"kernel": jnp.ones((6, 5))}}
        )
