"""The encrypted verbalizer (Concrete-ML quantized linear layer): scores against the float
projection (fhe env, simulation), and bad input (both environments)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtrust import fhe


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(3, 8))
    hidden = rng.normal(size=(24, 8))
    # Well-separated classes: each row leans towards one label-word row.
    labels = np.arange(24) % 3
    hidden += 2.0 * weights[labels] / np.linalg.norm(weights[labels], axis=1, keepdims=True)
    return hidden, weights, labels


@pytest.mark.fhe
def test_encrypted_verbalizer_scores_follow_the_float_projection(tmp_path):
    hidden, weights, labels = _data()
    result = fhe.encrypted_verbalizer(
        hidden, weights, labels=labels, n_bits=6, fhe_mode="simulate", key_cache_dir=tmp_path
    )
    float_scores = hidden @ weights.T
    np.testing.assert_allclose(result.float_scores, float_scores, rtol=1e-6)
    assert result.scores.shape == (24, 3)
    # 6-bit quantization: the scores stay within a few steps of the float ones ...
    span = float_scores.max() - float_scores.min()
    assert result.max_abs_error < 0.15 * span
    # ... and the argmax agrees on nearly every row.
    assert result.argmax_agreement >= 0.9
    assert result.accuracy_loss <= 0.1


@pytest.mark.smoke
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden": np.zeros(8)}, "hidden"),
        ({"weights": np.zeros((1, 8))}, "weights"),
        ({"weights": np.zeros((3, 7))}, "weights"),
        ({"bias": np.zeros(2)}, "bias"),
        ({"labels": np.full(24, 5)}, "labels"),
        ({"n_bits": 9}, "n_bits"),
        ({"fhe_mode": "fast"}, "fhe_mode"),
    ],
)
def test_encrypted_verbalizer_rejects_bad_input_before_any_process(
    kwargs, match, own_error_messages
):
    hidden, weights, labels = _data()
    args = {"hidden": hidden, "weights": weights, "bias": None, "labels": labels, **kwargs}
    with pytest.raises(ValueError, match=match):
        fhe.encrypted_verbalizer(args.pop("hidden"), args.pop("weights"), args.pop("bias"), **args)
