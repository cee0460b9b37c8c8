"""Membership inference: scores vs NumPy, ROC vs the Mann-Whitney statistic, SVC efficacy,
LiRA numerics, planted members vs no members, vmapped shadows sharded over 8 devices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats
from flax import nnx

from jaxtrust.privacy.mia import (
    balanced_in_masks,
    lira_evaluate,
    lira_leave_one_out,
    lira_scores,
    logit_confidence,
    membership_scores,
    predict_logits,
    roc_metrics,
    stacked_logits,
    svc_mia_efficacy,
    svc_mia_from_logits,
    train_shadow_models,
)
from jaxtrust.training import make_mesh


def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_scores_match_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 7)).astype(np.float32) * 3
    y = rng.integers(0, 7, 50)
    p = _np_softmax(z.astype(np.float64))
    py = p[np.arange(50), y]
    np.testing.assert_allclose(membership_scores(z, y, "loss"), np.log(py), rtol=1e-5)
    np.testing.assert_allclose(membership_scores(z, y, "confidence"), py, rtol=1e-5)
    np.testing.assert_allclose(
        membership_scores(z, y, "entropy"), np.sum(p * np.log(p), -1), rtol=1e-4, atol=1e-6
    )
    other = p.copy()
    other[np.arange(50), y] = 0.0
    mentr = -(1 - py) * np.log(py) - np.sum(other * np.log(1 - other), -1)
    np.testing.assert_allclose(membership_scores(z, y, "modified_entropy"), -mentr, rtol=1e-4)
    np.testing.assert_allclose(
        membership_scores(z, y, "logit_confidence"), np.log(py / (1 - py)), rtol=1e-4, atol=1e-4
    )
    # stable where 1 - p_y underflows in float32
    big = np.array([[60.0, 0.0, 0.0]], np.float32)
    assert float(logit_confidence(big, np.array([0]))[0]) == pytest.approx(60 - np.log(2), 1e-5)


def test_roc_auc_equals_mann_whitney_and_tpr_at_fpr():
    rng = np.random.default_rng(1)
    members, others = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 500)
    scores = np.concatenate([members, others])
    truth = np.concatenate([np.ones(300, bool), np.zeros(500, bool)])
    r = roc_metrics(scores, truth)
    u = scipy.stats.mannwhitneyu(members, others).statistic / (300 * 500)
    assert r.auc == pytest.approx(u, abs=1e-9)
    # TPR at FPR 1 %: fraction of members above the 99th percentile of the non-members (+-1 step)
    thr = np.sort(others)[-5]  # 5 of 500 non-members at or above: FPR = 1 %
    assert r.tpr_at_1pct == pytest.approx(np.mean(members >= thr), abs=1.5 / 300)
    assert 0.0 <= r.tpr_at_0_1pct <= r.tpr_at_1pct <= 1.0


def test_svc_efficacy_direction():
    rng = np.random.default_rng(2)
    member, nonmember = rng.uniform(0.95, 1.0, 300), rng.uniform(0.2, 0.7, 300)
    looks_unseen = svc_mia_efficacy(member, nonmember, rng.uniform(0.2, 0.7, 100))
    looks_seen = svc_mia_efficacy(member, nonmember, rng.uniform(0.95, 1.0, 100))
    assert looks_unseen.efficacy > 90 and looks_seen.efficacy < 10
    assert looks_unseen.train_accuracy > 0.95
    z = np.zeros((10, 3), np.float32)
    res = svc_mia_from_logits(z, np.zeros(10, int), z, np.zeros(10, int), z[:4], np.zeros(4, int))
    assert res.n_target == 4


def test_lira_scores_match_hand_computation():
    rng = np.random.default_rng(3)
    k, n = 6, 5
    stats = rng.normal(size=(k, n))
    mask = balanced_in_masks(k, n, seed=0)
    target = rng.normal(size=n)
    got = lira_scores(target, stats, mask, online=True, variance="per_example")
    for i in range(n):
        a, b = stats[mask[:, i], i], stats[~mask[:, i], i]
        want = scipy.stats.norm.logpdf(target[i], a.mean(), a.std()) - scipy.stats.norm.logpdf(
            target[i], b.mean(), b.std()
        )
        assert got[i] == pytest.approx(want, rel=1e-9)
    off = lira_scores(target, stats, mask, online=False, variance="global")
    resid = np.concatenate([stats[~mask[:, i], i] - stats[~mask[:, i], i].mean() for i in range(n)])
    sd = np.sqrt(np.mean(resid**2))
    for i in range(n):
        mu = stats[~mask[:, i], i].mean()
        assert off[i] == pytest.approx(-scipy.stats.norm.logsf(target[i], mu, sd), rel=1e-9)


class _MLP(nnx.Module):
    def __init__(self, key):
        rngs = nnx.Rngs(key)
        self.l1 = nnx.Linear(16, 64, rngs=rngs)
        self.l2 = nnx.Linear(64, 5, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


def _ce(model, batch, key):
    logits = model(batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {}


def _random_label_pool(n, seed):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(n, 16)).astype(np.float32),
        "y": rng.integers(0, 5, n).astype(np.int32),
    }


def _train(pool, masks, mesh=None, steps=300):
    # steps_per_call = 100 > 20: the short runs compile one (shorter) scan each
    return train_shadow_models(
        _MLP,
        pool,
        masks,
        loss_fn=_ce,
        tx=optax.adam(1e-2),
        steps=steps,
        batch_size=32,
        seed=0,
        mesh=mesh,
        steps_per_call=100,
        step_key="test-mlp",
    )


@pytest.mark.slow
def test_lira_planted_members_high_auc_and_no_members_near_half():
    # Random labels: a member's label can only be known by memorising it, so IN and OUT
    # confidences separate; LiRA must find the planted members.
    pool = _random_label_pool(256, seed=0)
    masks = balanced_in_masks(16, 256, seed=1)
    shadows = _train(pool, masks)
    assert shadows.losses[-1].mean() < 0.1 * shadows.losses[0].mean()
    online = lira_evaluate(shadows, pool["x"], pool["y"], online=True)
    offline = lira_evaluate(shadows, pool["x"], pool["y"], online=False)
    assert online.auc > 0.9 and offline.auc > 0.85
    assert online.tpr_at_1pct > 0.2
    # No members: the target trained on other data; half of the pool called "member" at random
    other = _random_label_pool(256, seed=5)
    target = _train(other, np.ones((2, 256), bool), steps=300)
    logits_t = stacked_logits(target, pool["x"])[0]
    logits_s = stacked_logits(shadows, pool["x"])
    phi_t = np.asarray(logit_confidence(logits_t, pool["y"]))
    phi_s = np.stack([np.asarray(logit_confidence(z, pool["y"])) for z in logits_s])
    scores = lira_scores(phi_t, phi_s, masks)
    called = np.random.default_rng(9).permutation(256) < 128
    assert abs(roc_metrics(scores, called).auc - 0.5) < 0.12


def test_shadows_sharded_over_8_devices_match_one_device():
    assert len(jax.devices()) == 8
    pool = _random_label_pool(64, seed=2)
    masks = balanced_in_masks(8, 64, seed=3)
    one = _train(pool, masks, steps=20)
    eight = _train(pool, masks, mesh=make_mesh(data=8), steps=20)
    sharding = jax.tree.leaves(eight.params)[0].sharding
    assert len(sharding.device_set) == 8
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(eight.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
    # model k equals the same model trained alone (vmap does not mix models)
    alone = _train(pool, masks[:2], steps=20)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(alone.params), strict=True):
        np.testing.assert_allclose(np.asarray(a)[:2], np.asarray(b), rtol=2e-5, atol=2e-6)
    logits = predict_logits(one.model(1), pool["x"], batch_size=24)
    np.testing.assert_allclose(logits, stacked_logits(one, pool["x"])[1], rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("own_error_messages")
def test_bad_inputs():
    z = np.zeros((4, 3), np.float32)
    with pytest.raises(KeyError, match="unknown score kind"):
        membership_scores(z, np.zeros(4, int), "nope")
    with pytest.raises(ValueError, match="labels must be in"):
        membership_scores(z, np.array([0, 1, 2, 3]), "loss")
    with pytest.raises(ValueError, match="labels must have shape"):
        membership_scores(z, np.zeros(3, int), "loss")
    with pytest.raises(ValueError, match="need members and non-members"):
        roc_metrics(np.zeros(3), np.ones(3, bool))
    with pytest.raises(TypeError, match="is_member must be a boolean"):
        roc_metrics(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="num_models must be an even"):
        balanced_in_masks(3, 5, seed=0)
    mask = np.zeros((4, 2), bool)
    mask[:, 0] = True
    with pytest.raises(ValueError, match="no OUT shadow"):
        lira_scores(np.zeros(2), np.zeros((4, 2)), mask)
    with pytest.raises(ValueError, match="variance must be"):
        lira_scores(np.zeros(2), np.zeros((4, 2)), balanced_in_masks(4, 2, seed=0), variance="x")
    with pytest.raises(ValueError, match="leave-one-out needs"):
        lira_leave_one_out(np.zeros((2, 3)), np.ones((2, 3), bool))
    pool = _random_label_pool(8, 0)
    with pytest.raises(ValueError, match="no IN rows"):
        _train(pool, np.zeros((2, 8), bool), steps=1)
    with pytest.raises(ValueError, match="columns but the pool"):
        _train(pool, np.ones((2, 5), bool), steps=1)
    with pytest.raises(ValueError, match="divisible by mesh"):
        _train(pool, np.ones((3, 8), bool), mesh=make_mesh(data=2), steps=1)
    with pytest.raises(ValueError, match="target_features must be"):
        svc_mia_efficacy(np.ones(3), np.zeros(3), np.zeros(0))
    with pytest.raises(TypeError, match="must be a flax.nnx.Module"):
        predict_logits(lambda x: x, jnp.zeros((2, 2)))
