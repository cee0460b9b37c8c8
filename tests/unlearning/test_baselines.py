"""Baselines: weight Fisher vs NumPy, SSD and saliency rules vs hand computation, the effect of
each objective in its direction, metrics vs direct computation, bad inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrust.unlearning.baselines import (
    METHODS,
    TrainConfig,
    UnlearnConfig,
    forget_gradient,
    random_wrong_labels,
    saliency_mask,
    ssd_dampen,
    train_classifier,
    unlearn,
    weight_fisher,
)
from jaxtrust.unlearning.metrics import UnlearnMetrics, accuracy, avg_gap, unlearning_metrics
from jaxtrust.unlearning.protocol import draw_configs


class _Softmax(nnx.Module):
    """Multinomial logistic regression: per-sample gradients have a closed form."""

    def __init__(self, rngs):
        self.lin = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        return self.lin(x)


class _MLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(20, 128, rngs=rngs)
        self.l2 = nnx.Linear(128, 3, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


def _data(n=120, seed=0, dim=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    w = rng.normal(size=(dim, 3))
    y = np.argmax(x @ w + 0.5 * rng.normal(size=(n, 3)), -1).astype(np.int32)
    return {"x": x, "y": y}


def test_weight_fisher_and_forget_gradient_match_closed_form():
    model = _Softmax(nnx.Rngs(0))
    d = _data(37)
    k = np.asarray(model.lin.kernel[...], np.float64)
    b = np.asarray(model.lin.bias[...], np.float64)
    z = d["x"] @ k + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    err = p - np.eye(3)[d["y"]]  # dl/dz per sample
    gk = d["x"][:, :, None] * err[:, None, :]
    fisher = weight_fisher(model, d, batch_size=16)  # padded last chunk
    np.testing.assert_allclose(fisher["lin"]["kernel"][...], (gk**2).mean(0), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(fisher["lin"]["bias"][...], (err**2).mean(0), rtol=1e-4, atol=1e-8)
    grad = forget_gradient(model, d, batch_size=16)
    np.testing.assert_allclose(grad["lin"]["kernel"][...], gk.mean(0), rtol=1e-4, atol=1e-7)


def test_ssd_and_saliency_rules():
    model = _Softmax(nnx.Rngs(1))
    params = nnx.state(model, nnx.Param)
    fd = jax.tree.map(lambda a: jnp.ones_like(a), params)
    ff = jax.tree.map(lambda a: jnp.zeros_like(a), params)
    ff["lin"]["kernel"] = ff["lin"]["kernel"].replace(ff["lin"]["kernel"][...].at[0, 0].set(40.0))
    out, frac = ssd_dampen(model, fd, ff, alpha=10.0, lam=2.0)
    new = np.asarray(out.lin.kernel[...])
    old = np.asarray(model.lin.kernel[...])
    assert new[0, 0] == pytest.approx(old[0, 0] * 2.0 / 40.0)
    np.testing.assert_array_equal(new.ravel()[1:], old.ravel()[1:])
    assert frac == pytest.approx(1 / 18)
    g = {"a": jnp.array([0.1, -5.0, 0.2]), "b": jnp.array([[3.0, 0.0]])}
    m = saliency_mask(g, 0.4)
    assert m["a"].tolist() == [0.0, 1.0, 0.0] and m["b"].tolist() == [[1.0, 0.0]]


def test_random_wrong_labels():
    y = np.random.default_rng(0).integers(0, 7, 500)
    r = random_wrong_labels(y, 7, seed=1)
    assert (r != y).all() and set(np.unique(r)) == set(range(7))


@pytest.fixture(scope="module")
def trained():
    d = _data(300, seed=2, dim=20)
    forget = {k: v[:40] for k, v in d.items()}
    retain = {k: v[40:] for k, v in d.items()}
    # random labels on the forget rows make them memorised (high forget accuracy only if fitted)
    forget["y"] = random_wrong_labels(forget["y"], 3, seed=3)
    both = {k: np.concatenate([forget[k], retain[k]]) for k in d}
    cfg = TrainConfig(steps=600, batch_size=64, learning_rate=2e-2, warmup_steps=10)
    model = train_classifier(_MLP(nnx.Rngs(0)), both, cfg, seed=0).model
    assert _acc(model, forget) > 80  # the random forget labels are memorised
    return model, forget, retain


def _acc(model, part):
    return accuracy(np.asarray(model(part["x"])), part["y"])


def test_every_method_moves_forget_accuracy_in_its_direction(trained):
    model, forget, retain = trained
    before = _acc(model, forget)
    cfg = UnlearnConfig(learning_rate=3e-2, steps=60, forget_batch=20, retain_batch=64, alpha=0.5)
    results = {}
    for method in METHODS:
        out = unlearn(method, model, forget, retain, cfg, seed=0)
        results[method] = _acc(out.model, forget)
        assert out.model is not model
    # model untouched
    assert _acc(model, forget) == before
    for method in ("ga", "neggrad_plus", "random_labels", "npo", "salun"):
        assert results[method] < before - 10, (method, results[method], before)
    # fine-tuning on retain rows does not fit the random forget labels better
    assert results["finetune"] <= before + 5


def test_mask_freezes_unselected_weights(trained):
    model, forget, retain = trained
    params = nnx.state(model, nnx.Param)
    mask = jax.tree.map(jnp.zeros_like, params)
    mask["l2"]["kernel"] = mask["l2"]["kernel"].replace(jnp.ones((128, 3)))
    out = unlearn("neggrad_plus", model, forget, retain, UnlearnConfig(steps=5), seed=0, mask=mask)
    for name in ("l1", "l2"):
        np.testing.assert_array_equal(
            getattr(out.model, name).bias[...], getattr(model, name).bias[...]
        )
    np.testing.assert_array_equal(out.model.l1.kernel[...], model.l1.kernel[...])
    assert not np.allclose(out.model.l2.kernel[...], model.l2.kernel[...])


def test_metrics_match_direct_computation(trained):
    model, forget, retain = trained
    test = _data(200, seed=9, dim=20)
    m = unlearning_metrics(model, forget, retain, test)
    assert m.UA == pytest.approx(100 - _acc(model, forget))
    assert m.RA == pytest.approx(_acc(model, retain))
    assert m.TA == pytest.approx(_acc(model, test))
    assert 0.0 <= m.MIA <= 100.0
    ref = UnlearnMetrics(UA=m.UA + 4, RA=m.RA, TA=m.TA - 4, MIA=m.MIA)
    assert avg_gap(m, ref) == pytest.approx(2.0)


def test_draw_configs_distinct_defaults_first():
    space = {"lr": (1e-3, 3e-4, 1e-4), "steps": (50, 100), "alpha": (0.9, 0.5)}
    c = draw_configs(space, 6, seed=0)
    assert c[0] == {"lr": 1e-3, "steps": 50, "alpha": 0.9}
    assert len({tuple(sorted(x.items())) for x in c}) == 6
    assert len(draw_configs(space, 50, seed=0)) == 12


@pytest.mark.usefixtures("own_error_messages")
def test_bad_inputs(trained):
    model, forget, retain = trained
    with pytest.raises(KeyError, match="unknown unlearning method"):
        unlearn("magic", model, forget, retain, UnlearnConfig(), seed=0)
    with pytest.raises(ValueError, match="forget set is empty"):
        unlearn(
            "ga",
            model,
            {"x": forget["x"][:0], "y": forget["y"][:0]},
            retain,
            UnlearnConfig(),
            seed=0,
        )
    with pytest.raises(TypeError, match="config must be an UnlearnConfig"):
        unlearn("ga", model, forget, retain, {"steps": 1}, seed=0)
    with pytest.raises(ValueError, match=r"saliency must be in \(0, 1\]"):
        UnlearnConfig(saliency=0.0)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        UnlearnConfig(alpha=1.5)
    with pytest.raises(ValueError, match="steps must be a non-negative int"):
        UnlearnConfig(steps=-1)
    with pytest.raises(TypeError, match="retain must be a mapping"):
        unlearn("ga", model, forget, [1, 2], UnlearnConfig(), seed=0)
    with pytest.raises(ValueError, match="n must be a positive int"):
        draw_configs({"a": (1,)}, 0, seed=0)
