"""CLIP and SigLIP losses against NumPy references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.training.contrastive import clip_loss, siglip_loss


def _norm(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def np_clip(a, b, scale, groups=None):
    logits = np.exp(scale) * _norm(a) @ _norm(b).T
    n = len(a)
    pos = np.eye(n, dtype=bool) if groups is None else groups[:, None] == groups[None, :]
    # per-row / per-column cross-entropy against the uniform distribution over positives
    row = [-np.mean(_log_softmax(logits, 1)[i, pos[i]]) for i in range(n)]
    col = [-np.mean(_log_softmax(logits, 0)[pos[:, j], j]) for j in range(n)]
    return 0.5 * (np.mean(row) + np.mean(col))


def np_siglip(a, b, scale, bias, groups=None):
    logits = np.exp(scale) * _norm(a) @ _norm(b).T + bias
    n = len(a)
    pos = np.eye(n, dtype=bool) if groups is None else groups[:, None] == groups[None, :]
    y = np.where(pos, 1.0, -1.0)
    return -np.sum(np.log(1.0 / (1.0 + np.exp(-y * logits)))) / n


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 7), d=st.integers(2, 6), seed=st.integers(0, 10_000), grouped=st.booleans())
def test_losses_match_numpy(n, d, seed, grouped):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)).astype(np.float32)
    b = rng.normal(size=(n, d)).astype(np.float32)
    groups = rng.integers(0, max(1, n // 2), n).astype(np.int32) if grouped else None
    scale = float(rng.uniform(0, 3))
    loss, m = clip_loss(a, b, logit_scale=scale, groups=groups)
    np.testing.assert_allclose(float(loss), np_clip(a, b, scale, groups), rtol=2e-4, atol=2e-5)
    assert 0.0 <= float(m["a_to_b_accuracy"]) <= 1.0
    bias = float(rng.uniform(-5, 1))
    loss, _ = siglip_loss(a, b, logit_scale=scale, logit_bias=bias, groups=groups)
    np.testing.assert_allclose(
        float(loss), np_siglip(a, b, scale, bias, groups), rtol=2e-4, atol=2e-5
    )


def test_perfect_alignment_gives_accuracy_one_and_lower_loss():
    a = np.eye(4, dtype=np.float32)
    shuffled = a[[1, 0, 3, 2]]
    good, m = clip_loss(a, a, logit_scale=np.log(20.0))
    bad, _ = clip_loss(a, shuffled, logit_scale=np.log(20.0))
    assert float(m["a_to_b_accuracy"]) == 1.0 and float(good) < float(bad)


def test_bad_inputs(own_error_messages):
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="paired"):
        clip_loss(a, np.ones((2, 4), np.float32), logit_scale=0.0)
    with pytest.raises(ValueError, match="groups must be"):
        siglip_loss(a, a, logit_scale=0.0, logit_bias=0.0, groups=np.zeros(2, np.int32))
