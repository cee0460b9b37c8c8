"""training.freeze: frozen parameters get exactly zero updates, even with weight decay."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtrust.training import init_train_state, make_train_step
from jaxtrust.training.recipes import adamw_cosine, freeze


class _TwoPart(nnx.Module):
    def __init__(self):
        self.vision = nnx.Linear(3, 3, rngs=nnx.Rngs(0))
        self.head = nnx.Linear(3, 1, rngs=nnx.Rngs(1))

    def __call__(self, x):
        return self.head(self.vision(x))


def test_frozen_paths_do_not_move_and_the_rest_matches_plain_tx():
    model = _TwoPart()
    loss = lambda m, b, k: (jnp.mean((m(b["x"]) - 1.0) ** 2), {})  # noqa: E731
    batch = {"x": jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)}
    base = adamw_cosine(0.1, 10, weight_decay=0.5)
    g, frozen = init_train_state(model, freeze(base, r"^vision/"))
    _, plain = init_train_state(model, base)
    step_f = make_train_step(g, loss, freeze(base, r"^vision/"), donate=False)
    step_p = make_train_step(g, loss, base, donate=False)
    new_f, _ = step_f(frozen, batch)
    new_p, _ = step_p(plain, batch)
    for a, b in zip(
        jax.tree.leaves(frozen.params["vision"]),
        jax.tree.leaves(new_f.params["vision"]),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    # the trainable head's first update is the plain optimiser's (same gradient, same state)
    for a, b in zip(
        jax.tree.leaves(new_f.params["head"]), jax.tree.leaves(new_p.params["head"]), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_bad_pattern(own_error_messages):
    with pytest.raises(ValueError, match="regular expression"):
        freeze(optax.sgd(0.1), "(")
