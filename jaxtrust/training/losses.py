# ruff: noqa: F722  (jaxtyping shape strings such as "batch seq" are not forward references)
"""Losses for causal-LM training and preference optimisation.

Everything here is a pure function of arrays, computed in float32 whatever the dtype of the
logits (bf16 logits from a mixed-precision forward are upcast before the log-softmax).

* :func:`lm_loss` — next-token cross-entropy with a target mask (shift done inside).
* :func:`prompt_loss_mask` — the target mask that supervises only response tokens.
* :func:`sequence_logprobs` — summed target-token log-probabilities per sequence.
* :func:`dpo_loss` — Direct Preference Optimisation (sigmoid) and IPO losses.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

__all__ = ["lm_loss", "prompt_loss_mask", "sequence_logprobs", "token_logprobs", "dpo_loss"]


def _check_lm_inputs(logits, tokens, loss_mask) -> None:
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape [batch, seq, vocab], got shape {logits.shape}")
    if tuple(tokens.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"tokens must have shape [batch, seq] = {tuple(logits.shape[:2])} to match logits, "
            f"got {tuple(tokens.shape)}"
        )
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"tokens must be an integer array, got dtype {tokens.dtype}")
    if loss_mask is not None and tuple(loss_mask.shape) != tuple(tokens.shape):
        raise ValueError(
            f"loss_mask must have shape [batch, seq] = {tuple(tokens.shape)}, "
            f"got {tuple(loss_mask.shape)}"
        )
    if logits.shape[1] < 2:
        raise ValueError(f"need seq >= 2 to predict a next token, got logits shape {logits.shape}")


def token_logprobs(
    logits: Float[Array, "batch seq vocab"],
    tokens: Int[Array, "batch seq"],
) -> tuple[Float[Array, "batch seq-1"], Float[Array, "batch seq-1 vocab"]]:
    r"""Log-probability of each next token, :math:`\log p(x_{t+1} \mid x_{\le t})`.

    Args:
      logits: next-token logits; ``logits[:, t]`` predicts ``tokens[:, t + 1]``.
      tokens: the token ids.

    Returns:
      ``(target_logprobs [b, s-1], log_softmax [b, s-1, V])``, both float32.
    """
    _check_lm_inputs(logits, tokens, None)
    logits32 = logits[:, :-1].astype(jnp.float32)
    log_probs = logits32 - jax.nn.logsumexp(logits32, axis=-1, keepdims=True)
    targets = tokens[:, 1:]
    picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return picked, log_probs


def lm_loss(
    logits: Float[Array, "batch seq vocab"],
    tokens: Int[Array, "batch seq"],
    loss_mask: Float[Array, "batch seq"] | Bool[Array, "batch seq"] | None = None,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    r"""Masked next-token cross-entropy, averaged over supervised target tokens.

    .. math::
       \mathcal{L} = -\frac{\sum_{b,t\ge1} m_{b,t}\,\log\mathrm{softmax}(z_{b,t-1})_{x_{b,t}}}
                            {\max(1, \sum_{b,t\ge1} m_{b,t})}

    The mask is indexed by the *target* token: ``loss_mask[b, t] = 1`` means token ``t`` is
    predicted (from position ``t - 1``) and counts; ``loss_mask[:, 0]`` is ignored (nothing
    predicts the first token). Use 0 on prompt tokens and padding (:func:`prompt_loss_mask`).

    Args:
      logits: ``[b, s, V]`` logits, any float dtype (computed in float32 with logsumexp).
      tokens: ``[b, s]`` integer token ids.
      loss_mask: ``[b, s]`` bool/float target weights; ``None`` supervises every token.

    Returns:
      ``(loss, metrics)`` with ``metrics = {"loss", "accuracy", "num_tokens"}``; accuracy is the
      masked greedy (arg-max) next-token accuracy, ``num_tokens`` the sum of target weights.

    Example:
      >>> import jax.numpy as jnp
      >>> logits = jnp.zeros((1, 3, 5))
      >>> loss, m = lm_loss(logits, jnp.array([[1, 2, 3]]))
      >>> round(float(loss), 4) == round(float(jnp.log(5.0)), 4)
      True
    """
    _check_lm_inputs(logits, tokens, loss_mask)
    picked, log_probs = token_logprobs(logits, tokens)
    if loss_mask is None:
        weights = jnp.ones(picked.shape, jnp.float32)
    else:
        weights = loss_mask[:, 1:].astype(jnp.float32)
    num_tokens = jnp.sum(weights)
    denom = jnp.maximum(num_tokens, 1.0)
    loss = -jnp.sum(picked * weights) / denom
    correct = (jnp.argmax(log_probs, axis=-1) == tokens[:, 1:]).astype(jnp.float32)
    accuracy = jnp.sum(correct * weights) / denom
    return loss, {"loss": loss, "accuracy": accuracy, "num_tokens": num_tokens}


def prompt_loss_mask(
    prompt_lengths: Int[Array, " batch"],
    seq_len: int,
    attention_mask: Int[Array, "batch seq"] | Bool[Array, "batch seq"] | None = None,
) -> Float[Array, "batch seq"]:
    r"""Target mask that supervises only the tokens after each prompt.

    ``mask[b, t] = 1`` iff ``t >= prompt_lengths[b]`` (and ``attention_mask[b, t]`` when given),
    i.e. the first response token (at index ``prompt_length``) is the first target.

    Args:
      prompt_lengths: ``[b]`` number of prompt tokens per (right-padded) sequence.
      seq_len: sequence length ``s``.
      attention_mask: optional ``[b, s]`` 1 on real tokens, 0 on padding.

    Returns:
      ``[b, s]`` float32 mask for :func:`lm_loss` / :func:`sequence_logprobs`.

    Example:
      >>> prompt_loss_mask(jnp.array([2]), 4).tolist()
      [[0.0, 0.0, 1.0, 1.0]]
    """
    prompt_lengths = jnp.asarray(prompt_lengths)
    if prompt_lengths.ndim != 1:
        raise ValueError(f"prompt_lengths must have shape [batch], got {prompt_lengths.shape}")
    positions = jnp.arange(seq_len)[None, :]
    mask = (positions >= prompt_lengths[:, None]).astype(jnp.float32)
    if attention_mask is not None:
        attention_mask = jnp.asarray(attention_mask)
        if tuple(attention_mask.shape) != (prompt_lengths.shape[0], seq_len):
            raise ValueError(
                f"attention_mask must have shape [batch, seq] = "
                f"{(prompt_lengths.shape[0], seq_len)}, got {tuple(attention_mask.shape)}"
            )
        mask = mask * attention_mask.astype(jnp.float32)
    return mask


def sequence_logprobs(
    logits: Float[Array, "batch seq vocab"],
    tokens: Int[Array, "batch seq"],
    loss_mask: Float[Array, "batch seq"] | Bool[Array, "batch seq"] | None = None,
) -> Float[Array, " batch"]:
    r"""Sum of target-token log-probabilities per sequence.

    .. math:: \log \pi(y \mid x) = \sum_{t\ge1} m_t \log \pi(x_t \mid x_{<t})

    Args:
      logits: ``[b, s, V]`` logits.
      tokens: ``[b, s]`` token ids.
      loss_mask: ``[b, s]`` target mask (same convention as :func:`lm_loss`).

    Returns:
      ``[b]`` float32 summed log-probabilities (the DPO policy / reference log-likelihoods).
    """
    _check_lm_inputs(logits, tokens, loss_mask)
    picked, _ = token_logprobs(logits, tokens)
    if loss_mask is None:
        return jnp.sum(picked, axis=-1)
    return jnp.sum(picked * loss_mask[:, 1:].astype(jnp.float32), axis=-1)


def dpo_loss(
    policy_chosen_logps: Float[Array, " batch"],
    policy_rejected_logps: Float[Array, " batch"],
    ref_chosen_logps: Float[Array, " batch"],
    ref_rejected_logps: Float[Array, " batch"],
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid",
) -> tuple[Float[Array, ""], dict[str, Array]]:
    r"""Direct Preference Optimisation loss (sigmoid / conservative) or IPO.

    With :math:`h = (\log\pi(y_w) - \log\pi_{ref}(y_w)) - (\log\pi(y_l) - \log\pi_{ref}(y_l))`:

    * ``"sigmoid"`` (DPO, with conservative label smoothing :math:`\epsilon`):
      :math:`-(1-\epsilon)\log\sigma(\beta h) - \epsilon\log\sigma(-\beta h)`;
    * ``"ipo"``: :math:`(h - \tfrac{1}{2\beta})^2`.

    The loss is averaged over the batch. Implicit rewards are
    :math:`r_w = \beta(\log\pi(y_w)-\log\pi_{ref}(y_w))`, :math:`r_l` likewise.

    Args:
      policy_chosen_logps: ``[b]`` summed log-probs of the preferred responses under the policy.
      policy_rejected_logps: ``[b]`` same for the dispreferred responses.
      ref_chosen_logps: ``[b]`` preferred responses under the frozen reference model.
      ref_rejected_logps: ``[b]`` dispreferred responses under the reference model.
      beta: inverse temperature (> 0); strength of the KL anchor to the reference.
      label_smoothing: probability in ``[0, 0.5)`` that a preference label is flipped
        (sigmoid loss only).
      loss_type: ``"sigmoid"`` (DPO) or ``"ipo"``.

    Returns:
      ``(loss, metrics)`` with ``loss``, ``reward_chosen``, ``reward_rejected``,
      ``reward_margin`` (batch means) and ``reward_accuracy`` (fraction with
      :math:`r_w > r_l`).

    Example:
      >>> z = jnp.zeros(2)
      >>> loss, _ = dpo_loss(z, z, z, z)
      >>> round(float(loss), 5) == round(float(jnp.log(2.0)), 5)
      True

    References:
      Rafailov et al., `Direct Preference Optimization: Your Language Model is Secretly a Reward
      Model <https://arxiv.org/abs/2305.18290>`_, 2023.
      Azar et al., `A General Theoretical Paradigm to Understand Learning from Human
      Preferences <https://arxiv.org/abs/2310.12036>`_, 2023 (IPO).
    """
    inputs = {
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": policy_rejected_logps,
        "ref_chosen_logps": ref_chosen_logps,
        "ref_rejected_logps": ref_rejected_logps,
    }
    arrays = {k: jnp.asarray(v, jnp.float32) for k, v in inputs.items()}
    shape = arrays["policy_chosen_logps"].shape
    for name, value in arrays.items():
        if value.ndim != 1 or value.shape != shape:
            raise ValueError(f"{name} must have shape [batch] = {shape}, got {value.shape}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_logratio = arrays["policy_chosen_logps"] - arrays["ref_chosen_logps"]
    rejected_logratio = arrays["policy_rejected_logps"] - arrays["ref_rejected_logps"]
    h = chosen_logratio - rejected_logratio
    if loss_type == "sigmoid":
        per_example = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * h) - (
            label_smoothing * jax.nn.log_sigmoid(-beta * h)
        )
    elif loss_type == "ipo":
        per_example = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"loss_type must be 'sigmoid' or 'ipo', got {loss_type!r}")
    loss = jnp.mean(per_example)
    reward_chosen = beta * chosen_logratio
    reward_rejected = beta * rejected_logratio
    metrics = {
        "loss": loss,
        "reward_chosen": jnp.mean(reward_chosen),
        "reward_rejected": jnp.mean(reward_rejected),
        "reward_margin": jnp.mean(reward_chosen - reward_rejected),
        "reward_accuracy": jnp.mean((reward_chosen > reward_rejected).astype(jnp.float32)),
    }
    return loss, metrics
