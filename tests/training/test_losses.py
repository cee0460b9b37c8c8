"""LM cross-entropy, sequence log-probs and DPO/IPO against NumPy (and torch) references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.training import dpo_loss, lm_loss, prompt_loss_mask, sequence_logprobs


def _np_log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _np_lm_loss(logits, tokens, mask):
    logp = _np_log_softmax(logits)[:, :-1]
    target = np.asarray(tokens)[:, 1:]
    picked = np.take_along_axis(logp, target[..., None], -1)[..., 0]
    weights = np.asarray(mask, np.float64)[:, 1:]
    n = weights.sum()
    correct = (logp.argmax(-1) == target).astype(np.float64)
    return (
        -(picked * weights).sum() / n,
        (correct * weights).sum() / n,
        n,
        (picked * weights).sum(-1),
    )


def _random_lm(seed, b=3, s=7, v=11, scale=4.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(b, s, v)).astype(np.float32) * scale
    tokens = rng.integers(0, v, size=(b, s)).astype(np.int32)
    mask = (rng.random((b, s)) < 0.7).astype(np.float32)
    mask[:, 1] = 1.0
    return logits, tokens, mask


@pytest.mark.smoke
def test_lm_loss_matches_numpy():
    logits, tokens, mask = _random_lm(0)
    loss, metrics = lm_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(mask))
    ref_loss, ref_acc, ref_n, _ = _np_lm_loss(logits, tokens, mask)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["accuracy"]), ref_acc, rtol=1e-6)
    assert float(metrics["num_tokens"]) == ref_n
    seq = sequence_logprobs(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(seq), _np_lm_loss(logits, tokens, mask)[3], rtol=1e-5)


def test_lm_loss_bf16_logits_computed_in_fp32():
    logits, tokens, mask = _random_lm(1, scale=30.0)  # large logits: a bf16 softmax would be off
    bf16 = jnp.asarray(logits).astype(jnp.bfloat16)
    loss, _ = lm_loss(bf16, jnp.asarray(tokens), jnp.asarray(mask))
    assert loss.dtype == jnp.float32
    ref, *_ = _np_lm_loss(np.asarray(bf16.astype(jnp.float32)), tokens, mask)
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)


def test_masked_positions_do_not_matter_and_empty_mask_is_finite():
    logits, tokens, mask = _random_lm(2)
    loss, _ = lm_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(mask))
    # Change the targets at masked positions and the logits predicting them.
    t2, l2 = tokens.copy(), logits.copy()
    masked = np.argwhere(mask[:, 1:] == 0)
    for b, t in masked:
        t2[b, t + 1] = (t2[b, t + 1] + 1) % logits.shape[-1]
        l2[b, t] = -l2[b, t]
    assert len(masked) > 0
    loss2, _ = lm_loss(jnp.asarray(l2), jnp.asarray(t2), jnp.asarray(mask))
    np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)
    zero, metrics = lm_loss(
        jnp.asarray(logits), jnp.asarray(tokens), jnp.zeros_like(jnp.asarray(mask))
    )
    assert float(zero) == 0.0 and float(metrics["num_tokens"]) == 0.0


def test_uniform_logits_give_log_vocab_and_grad_matches_softmax_minus_onehot():
    v = 5
    tokens = jnp.array([[0, 3, 1, 4]], jnp.int32)
    loss, _ = lm_loss(jnp.zeros((1, 4, v)), tokens)
    np.testing.assert_allclose(float(loss), np.log(v), rtol=1e-6)
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(1, 4, v)), jnp.float32)
    grad = jax.grad(lambda z: lm_loss(z, tokens)[0])(logits)
    probs = np.exp(_np_log_softmax(logits))[:, :-1]
    onehot = np.eye(v)[np.asarray(tokens)[:, 1:]]
    np.testing.assert_allclose(np.asarray(grad)[:, :-1], (probs - onehot) / 3, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(grad)[:, -1], 0.0)


def test_prompt_loss_mask():
    attention = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    mask = prompt_loss_mask(jnp.array([2, 4]), 5, attention)
    np.testing.assert_array_equal(np.asarray(mask), [[0, 0, 1, 1, 0], [0, 0, 0, 0, 1]])
    with pytest.raises(ValueError, match="attention_mask"):
        prompt_loss_mask(jnp.array([2, 4]), 5, attention[:, :4])


@pytest.mark.usefixtures("own_error_messages")
def test_lm_loss_shape_errors():
    with pytest.raises(ValueError, match=r"logits must have shape \[batch, seq, vocab\]"):
        lm_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="tokens must have shape"):
        lm_loss(jnp.zeros((2, 3, 4)), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="loss_mask must have shape"):
        lm_loss(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 2)))
    with pytest.raises(TypeError, match="integer"):
        lm_loss(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3)))


# ---------------------------------------------------------------- DPO / IPO


def _np_dpo(pc, pr, rc, rr, beta, ls, loss_type):
    pc, pr, rc, rr = (np.asarray(x, np.float64) for x in (pc, pr, rc, rr))
    h = (pc - rc) - (pr - rr)

    def log_sigmoid(x):
        return -np.logaddexp(0.0, -x)

    if loss_type == "sigmoid":
        per = -(1 - ls) * log_sigmoid(beta * h) - ls * log_sigmoid(-beta * h)
    else:
        per = (h - 1 / (2 * beta)) ** 2
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    return per.mean(), chosen.mean(), rejected.mean(), (chosen > rejected).mean()


def _logps(seed, n=6):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(-rng.uniform(1, 30, size=n), jnp.float32) for _ in range(4)]


@pytest.mark.parametrize(
    "beta,ls,loss_type",
    [(0.1, 0.0, "sigmoid"), (0.5, 0.2, "sigmoid"), (0.1, 0.0, "ipo"), (1.0, 0.0, "ipo")],
)
def test_dpo_matches_numpy(beta, ls, loss_type):
    pc, pr, rc, rr = _logps(int(beta * 10) + len(loss_type))
    loss, metrics = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=ls, loss_type=loss_type)
    ref_loss, ref_chosen, ref_rejected, ref_acc = _np_dpo(pc, pr, rc, rr, beta, ls, loss_type)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["reward_chosen"]), ref_chosen, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        float(metrics["reward_rejected"]), ref_rejected, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        float(metrics["reward_margin"]), ref_chosen - ref_rejected, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(float(metrics["reward_accuracy"]), ref_acc, rtol=1e-6)
    assert 0.0 < ref_acc < 1.0  # both outcomes present, so the accuracy is informative


@pytest.mark.torch
def test_dpo_matches_torch_reference():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    pc, pr, rc, rr = _logps(7)
    beta, ls = 0.3, 0.1
    tensors = [
        torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=True)
        for x in (pc, pr, rc, rr)
    ]
    logits = (tensors[0] - tensors[2]) - (tensors[1] - tensors[3])
    ref = (-F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls).mean()
    ref.backward()
    loss, _ = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=ls)
    grads = jax.grad(
        lambda a, b: dpo_loss(a, b, rc, rr, beta=beta, label_smoothing=ls)[0], argnums=(0, 1)
    )(pc, pr)
    np.testing.assert_allclose(float(loss), ref.item(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grads[0]), tensors[0].grad.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(grads[1]), tensors[1].grad.numpy(), rtol=1e-4, atol=1e-7)


finite = st.floats(-50.0, 0.0, allow_nan=False, width=32)
betas = st.floats(0.01, 2.0)


@settings(max_examples=40, deadline=None)
@given(pc=finite, pr=finite, rc=finite, rr=finite, beta=betas)
def test_dpo_properties(pc, pr, rc, rr, beta):
    args = [jnp.array([v], jnp.float32) for v in (pc, pr, rc, rr)]
    h = (pc - rc) - (pr - rr)
    loss, metrics = dpo_loss(*args, beta=beta)
    # Antisymmetry: loss(h) - loss(-h) = -beta * h  (log sigma(x) - log sigma(-x) = x).
    swapped, swapped_metrics = dpo_loss(args[1], args[0], args[3], args[2], beta=beta)
    np.testing.assert_allclose(
        float(loss) - float(swapped), -beta * np.float32(h), rtol=1e-3, atol=1e-3
    )
    np.testing.assert_allclose(
        float(metrics["reward_margin"]),
        -float(swapped_metrics["reward_margin"]),
        rtol=1e-5,
        atol=1e-5,
    )
    assert float(loss) >= 0  # > 0 mathematically; may underflow to 0 at huge margins
    # Gradient sign: a higher chosen log-prob lowers the loss, a higher rejected one raises it.
    g_chosen, g_rejected = jax.grad(
        lambda a, b: dpo_loss(a, b, args[2], args[3], beta=beta)[0], argnums=(0, 1)
    )(args[0], args[1])
    assert float(g_chosen[0]) <= 0 <= float(g_rejected[0])
    np.testing.assert_allclose(float(g_chosen[0]), -float(g_rejected[0]), rtol=1e-6, atol=1e-12)
    # Gradient magnitude beta * sigmoid(-beta h): strictly positive unless saturated.
    expected = beta / (1 + np.exp(beta * np.float64(h)))
    np.testing.assert_allclose(-float(g_chosen[0]), expected, rtol=2e-3, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(ref=st.tuples(finite, finite), shift=st.floats(-20, 20), beta=betas)
def test_dpo_zero_margin_is_log2_and_ipo_minimum(ref, shift, beta):
    rc, rr = (jnp.array([v], jnp.float32) for v in ref)
    # Policy = reference shifted by the same amount on both responses: zero margin.
    loss, metrics = dpo_loss(rc + shift, rr + shift, rc, rr, beta=beta)
    np.testing.assert_allclose(float(loss), np.log(2.0), rtol=1e-4)
    assert abs(float(metrics["reward_margin"])) < 1e-4 * beta * (1 + abs(shift))
    # IPO's minimum (zero loss, zero gradient) is at margin h = 1 / (2 beta).
    target = 1.0 / (2.0 * beta)
    ipo = lambda pc: dpo_loss(pc, rr, rc, rr, beta=beta, loss_type="ipo")[0]
    at_min = rc + target
    assert float(ipo(at_min)) < 1e-6 * max(1.0, target**2)
    assert abs(float(jax.grad(ipo)(at_min)[0])) < 1e-3 * max(1.0, target)
    assert float(ipo(at_min + 1.0)) > float(ipo(at_min)) and float(ipo(at_min - 1.0)) > float(
        ipo(at_min)
    )


def test_label_smoothing_bounds_the_loss_from_below():
    pc, pr, rc, rr = (jnp.array([v], jnp.float32) for v in (0.0, -100.0, 0.0, 0.0))  # huge margin
    plain, _ = dpo_loss(pc, pr, rc, rr, beta=1.0)
    smoothed, _ = dpo_loss(pc, pr, rc, rr, beta=1.0, label_smoothing=0.1)
    assert float(plain) < 1e-6
    np.testing.assert_allclose(float(smoothed), 0.1 * 100.0, rtol=1e-4)


@pytest.mark.usefixtures("own_error_messages")
def test_dpo_bad_inputs():
    z = jnp.zeros(3)
    with pytest.raises(ValueError, match="ref_rejected_logps must have shape"):
        dpo_loss(z, z, z, jnp.zeros(2))
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(z, z, z, z, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(z, z, z, z, label_smoothing=0.5)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(z, z, z, z, loss_type="hinge")
