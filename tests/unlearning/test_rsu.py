"""RSU: rankers vs direct computation, stage splits (property), sequential unlearning, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.privacy.mia import balanced_in_masks, lira_scores, logit_confidence
from jaxtrust.unlearning.baselines import UnlearnConfig
from jaxtrust.unlearning.rsu import (
    RSUConfig,
    lira_risk,
    loss_risk,
    memorization_risk,
    seq_unlearn,
    split_by_risk,
)


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 60),
    k=st.integers(1, 6),
    order=st.sampled_from(["low_to_high", "high_to_low", "random"]),
    seed=st.integers(0, 50),
)
def test_split_is_an_ordered_partition(n, k, order, seed):
    if k > n:
        return
    risk = np.random.default_rng(seed).normal(size=n)
    parts = split_by_risk(risk, k, order, seed=seed)
    assert len(parts) == k
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    if order != "random" and k > 1:
        means = [risk[p].mean() for p in parts]
        assert all(np.diff(means) > 0) if order == "low_to_high" else all(np.diff(means) < 0)


def test_rankers_match_direct_computation():
    rng = np.random.default_rng(0)
    k, n, c = 6, 10, 4
    shadow = rng.normal(size=(k, n, c)).astype(np.float32)
    target = rng.normal(size=(n, c)).astype(np.float32)
    y = rng.integers(0, c, n)
    masks = balanced_in_masks(k, n, seed=1)
    stats = np.stack([np.asarray(logit_confidence(shadow[j], y)) for j in range(k)])
    np.testing.assert_allclose(
        lira_risk(target, y, shadow, masks),
        lira_scores(np.asarray(logit_confidence(target, y)), stats, masks),
        rtol=1e-9,
    )
    p = np.exp(shadow) / np.exp(shadow).sum(-1, keepdims=True)
    conf = p[:, np.arange(n), y]
    want = np.array([conf[masks[:, i], i].mean() - conf[~masks[:, i], i].mean() for i in range(n)])
    np.testing.assert_allclose(memorization_risk(y, shadow, masks), want, rtol=1e-5, atol=1e-7)
    logp = target - scipy.special.logsumexp(target, axis=1, keepdims=True)
    np.testing.assert_allclose(loss_risk(target, y), logp[np.arange(n), y], rtol=1e-5)


def test_seq_unlearn_runs_stages_in_order_from_the_previous_model():
    rng = np.random.default_rng(0)
    f = {"x": rng.normal(size=(9, 4)).astype(np.float32), "y": rng.integers(0, 3, 9)}
    r = {"x": rng.normal(size=(20, 4)).astype(np.float32), "y": rng.integers(0, 3, 20)}
    risk = np.array([5.0, 1.0, 3.0, 0.0, 8.0, 2.0, 7.0, 4.0, 6.0])
    seen = []

    def base(model, chunk, retain, stage, seed):
        seen.append((stage, sorted(chunk["y"].tolist()), id(model)))
        return nnx.Linear(4, 3, rngs=nnx.Rngs(stage + 10))

    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    out = seq_unlearn(
        model, f, r, risk, RSUConfig(num_stages=3, order="high_to_low"), seed=0, base=base
    )
    assert [s.tolist() for s in out.stages] == [[4, 6, 8], [0, 7, 2], [5, 1, 3]]
    assert [s for s, _, _ in seen] == [0, 1, 2]
    assert seen[0][2] == id(model) and seen[1][2] != id(model)
    assert len(out.stage_seconds) == 3
    real = seq_unlearn(
        model,
        f,
        r,
        risk,
        RSUConfig(num_stages=2, unlearn=UnlearnConfig(steps=2, forget_batch=4)),
        seed=0,
    )
    assert real.model is not model


@pytest.mark.usefixtures("own_error_messages")
def test_bad_inputs():
    with pytest.raises(ValueError, match="order must be one of"):
        RSUConfig(order="sideways")
    with pytest.raises(ValueError, match="num_stages must be a positive int"):
        RSUConfig(num_stages=0)
    with pytest.raises(ValueError, match="stage_configs has 1 entries for 3 stages"):
        RSUConfig(stage_configs=(UnlearnConfig(),))
    with pytest.raises(ValueError, match=r"num_stages must be an int in \[1, 3\]"):
        split_by_risk(np.zeros(3), 4, "random")
    with pytest.raises(ValueError, match="non-empty 1-D array of finite"):
        split_by_risk(np.array([np.nan]), 1, "random")
    f = {"x": np.zeros((3, 4), np.float32), "y": np.zeros(3, int)}
    with pytest.raises(ValueError, match="one score per forget row"):
        seq_unlearn(nnx.Linear(4, 3, rngs=nnx.Rngs(0)), f, f, np.zeros(2), RSUConfig(), seed=0)
    with pytest.raises(ValueError, match="IN and OUT"):
        memorization_risk(np.zeros(2, int), np.zeros((2, 2, 3)), np.ones((2, 2), bool))
