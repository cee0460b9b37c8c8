"""Defects a new user hit, each fixed with a clear error (issue: the layout review)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtrust.safety.spf import spf
from jaxtrust.safety.spf.step import safety_batch, safety_extra_args
from jaxtrust.training import finetune

PARAMS = {"layers": {"q": {"kernel": jnp.ones((2, 4, 3))}}, "embed": jnp.ones((5, 4))}

pytestmark = pytest.mark.usefixtures("own_error_messages")


def test_an_include_regex_that_matches_nothing_raises():
    with pytest.raises(ValueError, match="selects no matrix.*layers/q/kernel"):
        spf(rank=1, include="attn/").init(PARAMS)


def test_inject_hyperparams_on_rank_says_static_args():
    with pytest.raises(TypeError, match=r'static_args=\("rank"'):
        optax.inject_hyperparams(spf)(rank=2).init(PARAMS)
    static = ("rank", "explained_ratio", "max_rank", "refresh_every", "seed")
    tx = optax.inject_hyperparams(spf, static_args=static)(rank=2)
    tx.init(PARAMS)  # the hint's advice works


def test_nan_in_safety_grads_under_jit_raises_its_own_message_first():
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    x = np.ones((4, 4), np.float32)
    pool = {"x": x, "y": np.zeros((4, 3), np.float32)}

    def loss(m, batch):
        return jnp.mean((m(batch["x"]) - batch["y"]) ** 2), {}

    def safety_loss(m, batch):
        return jnp.mean(m(batch["x"])) * jnp.nan, {}

    graphdef = nnx.split(model, nnx.Param, ...)[0]
    tx = optax.chain(spf(rank=1), optax.sgd(0.1))
    with pytest.raises(ValueError) as info:
        finetune(
            model,
            pool,
            tx,
            steps=2,
            batch_size=2,
            seed=0,
            loss_fn=lambda m, b, key: loss(m, b),
            extra_args_fn=safety_extra_args(graphdef, loss=safety_loss),
            extra_batch=safety_batch({"x": x[:1], "y": np.zeros((1, 3), np.float32)}),
        )
    assert str(info.value).startswith("safety_grads[") and "NaN or Inf" in str(info.value)


def test_host_errors_leave_other_runtime_errors_alone():
    from jaxtrust.training.checks import host_errors, require

    with pytest.raises(ValueError, match="^x must be positive$"):
        require(jnp.array(False), "x must be positive")
    with pytest.raises(RuntimeError, match="unrelated"), host_errors():
        raise RuntimeError("unrelated")
    ok = jax.jit(lambda x: (require(x > 0, "positive"), x)[1])
    with host_errors():
        jax.block_until_ready(ok(jnp.array(1.0)))
