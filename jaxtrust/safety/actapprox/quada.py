# ruff: noqa: F722  (jaxtyping shape strings such as "batch seq" are not forward references)
r"""QuadA-style safety-aware alignment against activation approximations.

Zhang et al. (USENIX Security 2025) show that the activation approximations of private
inference and of efficient serving (polynomial GELU/SiLU, activation sparsity, activation
quantization) lower the refusal rate of aligned LLMs, that errors in the *first* layers matter
most, and that harmful-prompt activations, which form a cluster in the aligned model, are pushed
towards benign regions by the approximation error. Their defence, QuadA, is DPO in which

1. the policy runs with the worst-case ("most vulnerable approximation", MVA) error injected,
2. only into the first :math:`\tau` layers, and
3. a regulariser pulls the first-layer activations of harmful prompts together.

With :math:`\pi^{\epsilon}_\theta` the policy under the perturbation :math:`\epsilon` of layers
:math:`< \tau`, :math:`\pi_{ref}` the exact aligned model, :math:`(x, y_w, y_l)` a harmful prompt
with a refusal (chosen) and a compliant answer (rejected), and :math:`f_\ell(x)` the output of
block :math:`\ell` mean-pooled over the prompt tokens, the objective minimised here is

.. math::
   \mathcal L(\theta) = \mathbb E\Big[-\log\sigma\Big(\beta\log\tfrac{\pi^\epsilon_\theta(y_w|x)}
   {\pi_{ref}(y_w|x)} - \beta\log\tfrac{\pi^\epsilon_\theta(y_l|x)}{\pi_{ref}(y_l|x)}\Big)\Big]
   + \lambda\,\Big(1 - \tfrac{1}{n(n-1)}\sum_{i\ne j}\cos\big(f_\ell(x_i), f_\ell(x_j)\big)\Big)
   + \mu\,\mathcal L_{SFT}(\theta)

What follows the paper and what is reconstructed (the authors' released code,
github.com/Kevin-Zh-CS/QuadA, contains only the Gaussian-noise evaluation and a plain DPO
trainer):

* **Paper:** DPO with the *unperturbed* aligned model as reference; perturbation of the first
  :math:`\tau` layers only; a cosine-similarity clustering regulariser over harmful prompts;
  the noise proxy (Gaussian noise on the FFN activation output ``act(gate(x))`` or on the
  RMSNorm outputs) as the model of approximation error.
* **Reconstruction (defaults stated):**

  - The MVA error is modelled as the audit's own Gaussian noise technique
    (:class:`~jaxtrust.safety.actapprox.GaussianNoise` with ``layers=(0, tau)``, see
    :func:`quada_noise`) of standard deviation ``sigma`` on the chosen site
    (``noise_site="activation"``, the paper's FFN site); ``sigma`` is meant to be the worst
    strength found by the audit (``jaxtrust reproduce actapprox`` picks the sweep point of lowest
    refusal whose perplexity stays under its budget). A fresh draw per step and per layer.
  - ``tau`` is a config value (the paper picks it by a constrained optimisation it does not
    publish); default 1, i.e. the first block.
  - The regulariser uses the output of block ``activation_layer`` (default 1: the first block,
    ``hidden_states[1]``), mean-pooled over the prompt tokens, computed on the *perturbed*
    forward of the chosen sequences (the prompt tokens do not see the response, so this costs
    no extra forward). The paper writes :math:`\cos(f_1(T(x_i)), f_1(T(x_j)))`; the pooling is
    not stated.
  - An SFT term (weight ``sft_weight``, on the exact model, over an alignment mix: refusals,
    benign answers, utility) keeps utility; the paper's DPO on PKU-SafeRLHF has benign
    preference pairs for the same purpose.
  - Training is :func:`jaxtrust.training.finetune` (AdamW with warmup and cosine decay,
    :func:`~jaxtrust.training.adamw_cosine`; shuffled epochs; the compiled step memoised per
    recipe), the preference terms :func:`~jaxtrust.training.sequence_logprobs` and
    :func:`~jaxtrust.training.dpo_loss`, the SFT term :func:`~jaxtrust.training.lm_batch_loss`.

Reference:
  Zhang, Chen, He, Lou, Li, Feng, Song, Liu, Ren, Yang, `Activation Approximations Can Incur
  Safety Vulnerabilities Even in Aligned LLMs: Comprehensive Analysis and Defense
  <https://arxiv.org/abs/2502.00840>`_, USENIX Security 2025.

Example::

    from jaxtrust.safety.actapprox import QuadAConfig, quada_align
    result = quada_align(aligned, chosen, rejected, QuadAConfig(sigma=0.3, tau=1), sft=mix)
    result.model      # the mitigated CausalLM; result.log: per-step losses

(``chosen`` / ``rejected``: harmful prompts with a refusal / a compliant answer, and ``mix`` an
SFT set, each ``{"tokens", "attention_mask", "loss_mask"}``: :meth:`jaxtrust.data.Batch.as_dict`.)
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jaxtrust.eval.perplexity import sequence_nll
from jaxtrust.safety.actapprox._hooks import approx_hooks
from jaxtrust.safety.actapprox.noise import NOISE_SITES, GaussianNoise
from jaxtrust.training import (
    BATCH_KEYS,
    adamw_cosine,
    check_batch,
    dpo_loss,
    finetune,
    lm_batch_loss,
    pool_size,
    sequence_logprobs,
)

__all__ = [
    "QuadAConfig",
    "QuadAResult",
    "activation_cluster_loss",
    "make_quada_loss",
    "pooled_prompt_activations",
    "quada_align",
    "quada_noise",
]


def _sites(noise_site: str | Sequence[str]) -> tuple[str, ...]:
    sites = (noise_site,) if isinstance(noise_site, str) else tuple(noise_site)
    bad = [s for s in sites if s not in NOISE_SITES]
    if not sites or bad:
        raise ValueError(
            f"noise_site must be one of {NOISE_SITES} or a non-empty tuple of them, "
            f"got {noise_site!r}"
        )
    return sites


def quada_noise(
    sigma: float, tau: int, noise_site: str | Sequence[str] = "activation"
) -> tuple[GaussianNoise, ...]:
    r"""QuadA's training perturbation: :math:`\mathcal N(0, \sigma^2)` noise on layers ``< tau``.

    One :class:`~jaxtrust.safety.actapprox.GaussianNoise` with ``layers=(0, tau)`` per site
    ("activation": the paper's FFN noise on ``act(gate(x))``; "norm": its "LN" noise on both
    block norms; a tuple of sites for several), composed with
    :func:`~jaxtrust.safety.actapprox.approx_hooks` and a key. Empty (the exact model) when
    ``sigma == 0`` or ``tau == 0``.

    Args:
      sigma: noise standard deviation (>= 0).
      tau: perturb layers ``[0, tau)`` (>= 0).
      noise_site: one of ``NOISE_SITES`` or a tuple of them.

    Returns:
      The noise techniques, in site order.

    Example:
      >>> quada_noise(0.3, 1)
      (GaussianNoise(layers=(0, 1), site='activation', sigma=0.3),)
      >>> quada_noise(0.0, 1)
      ()
    """
    sites = _sites(noise_site)
    if isinstance(tau, bool) or not isinstance(tau, int) or tau < 0:
        raise ValueError(f"tau must be a non-negative int, got {tau!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not sigma >= 0:
        raise ValueError(f"sigma must be a number >= 0, got {sigma!r}")
    if sigma == 0 or tau == 0:
        return ()
    return tuple(GaussianNoise(sigma=float(sigma), site=s, layers=(0, tau)) for s in sites)


def activation_cluster_loss(
    activations: Float[Array, "n dim"], *, eps: float = 1e-8
) -> Float[Array, ""]:
    r"""One minus the mean pairwise cosine similarity of ``n >= 2`` activation vectors.

    .. math:: R = 1 - \frac{1}{n(n-1)}\sum_{i \ne j}
              \frac{\langle a_i, a_j\rangle}{\max(\|a_i\|,\epsilon)\max(\|a_j\|,\epsilon)}

    In ``[0, 2]``; 0 iff all vectors point the same way. Minimising it clusters them (QuadA's
    activation-space regulariser, applied to harmful prompts).

    Args:
      activations: ``[n, dim]`` one vector per prompt.
      eps: floor of the norms (a zero vector contributes similarity 0).

    Returns:
      scalar float32.

    Example:
      >>> float(activation_cluster_loss(jnp.array([[1.0, 0.0], [2.0, 0.0]])))
      0.0
    """
    a = jnp.asarray(activations, jnp.float32)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"activations must have shape [n >= 2, dim], got {a.shape}")
    unit = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), eps)
    sim = unit @ unit.T
    n = a.shape[0]
    off_diagonal = (jnp.sum(sim) - jnp.trace(sim)) / (n * (n - 1))
    return 1.0 - off_diagonal


def pooled_prompt_activations(
    hidden: Float[Array, "batch seq dim"],
    attention_mask: Bool[Array, "batch seq"] | Int[Array, "batch seq"],
    loss_mask: Float[Array, "batch seq"] | Bool[Array, "batch seq"],
) -> Float[Array, "batch dim"]:
    r"""Mean of ``hidden`` over the prompt tokens (real tokens that are not supervised targets).

    .. math:: f_b = \sum_t p_{b,t} h_{b,t} \Big/ \max(1, \sum_t p_{b,t}), \quad
              p_{b,t} = a_{b,t} (1 - m_{b,t})

    Args:
      hidden: ``[batch, seq, dim]`` hidden states (e.g. ``hidden_states[1]``).
      attention_mask: ``[batch, seq]`` real tokens.
      loss_mask: ``[batch, seq]`` supervised (response) tokens.

    Returns:
      ``[batch, dim]`` float32.

    Example:
      >>> h = jnp.arange(6.0).reshape(1, 3, 2)
      >>> pooled_prompt_activations(h, jnp.ones((1, 3), bool), jnp.array([[0.0, 0.0, 1.0]]))
      Array([[1., 2.]], dtype=float32)
    """
    prompt = attention_mask.astype(jnp.float32) * (1.0 - loss_mask.astype(jnp.float32))
    total = jnp.sum(hidden.astype(jnp.float32) * prompt[..., None], axis=1)
    return total / jnp.maximum(jnp.sum(prompt, axis=1, keepdims=True), 1.0)


@dataclasses.dataclass(frozen=True)
class QuadAConfig:
    r"""QuadA hyper-parameters (frozen, hashable). See the module docstring for the objective;
    each field's docstring says what it sets."""

    sigma: float = 0.3
    """Std of the MVA Gaussian noise during training (0 = plain DPO + SFT)."""
    tau: int = 1
    """Perturb layers ``[0, tau)``."""
    noise_site: str | tuple[str, ...] = "activation"
    """Where the noise goes (:data:`~jaxtrust.safety.actapprox.NOISE_SITES`): "activation" (the
    paper's FFN site, default), "norm" (its LN site), or a tuple of sites."""
    reg_weight: float = 0.1
    r"""The weight :math:`\lambda` of the clustering regulariser (0 = off)."""
    activation_layer: int = 1
    r"""Hidden-state index of :math:`f_\ell` (1 = output of the first block)."""
    beta: float = 0.1
    """DPO inverse temperature."""
    sft_weight: float = 1.0
    r"""The weight :math:`\mu` of the SFT term (0 = pure DPO)."""
    steps: int = 200
    """Optimiser steps (AdamW, gradient clipping at norm 1, warmup then cosine decay to a
    tenth of the peak)."""
    batch_size: int = 32
    """Preference pairs (and SFT rows) per step (>= 2: the regulariser is pairwise)."""
    learning_rate: float = 5e-4
    """Peak AdamW step size."""
    warmup_steps: int = 20
    """Linear warmup steps."""
    seed: int = 0
    """Data order and noise seed."""

    def __post_init__(self):
        if isinstance(self.noise_site, list):
            object.__setattr__(self, "noise_site", tuple(self.noise_site))
        _sites(self.noise_site)
        for name in ("sigma", "reg_weight", "sft_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("steps", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be >= 2 (pairwise regulariser), got {self.batch_size}"
            )
        if not isinstance(self.tau, int) or self.tau < 0:
            raise ValueError(f"tau must be a non-negative int, got {self.tau!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative int, got {self.warmup_steps!r}")
        if not self.beta > 0 or not self.learning_rate > 0:
            raise ValueError(
                f"beta and learning_rate must be > 0, got {self.beta}, {self.learning_rate}"
            )

    def check_model(self, num_layers: int) -> None:
        """Raise ValueError if ``tau`` or ``activation_layer`` lies beyond ``num_layers``."""
        if self.tau > num_layers:
            raise ValueError(f"tau={self.tau} exceeds the model's {num_layers} layers")
        if not 0 <= self.activation_layer <= num_layers:
            raise ValueError(
                f"activation_layer must be in [0, {num_layers}], got {self.activation_layer}"
            )


@dataclasses.dataclass(frozen=True)
class QuadAResult:
    """The aligned model, the per-step training log (loss terms) and the config used."""

    model: Any
    log: list[dict[str, float]]
    config: QuadAConfig


def _prefixed(prefix: str, batch: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{k}": batch[k] for k in BATCH_KEYS}


def _unprefixed(prefix: str, batch: Mapping[str, Any]) -> dict[str, Any]:
    return {k: batch[f"{prefix}_{k}"] for k in BATCH_KEYS}


def make_quada_loss(config: QuadAConfig):
    """The QuadA loss ``loss_fn(model, batch, key) -> (loss, metrics)`` for
    :func:`jaxtrust.training.make_train_step` / :func:`~jaxtrust.training.finetune`.

    ``batch`` holds ``chosen_*`` / ``rejected_*`` (``tokens``, ``attention_mask``, ``loss_mask``)
    of harmful prompts, their reference log-probabilities ``ref_chosen`` / ``ref_rejected``, and
    (when ``config.sft_weight > 0``) ``sft_tokens`` / ``sft_attention_mask`` / ``sft_loss_mask``.
    ``key`` draws the training noise (:func:`quada_noise`).

    Args:
      config: the :class:`QuadAConfig`.

    Returns:
      The loss function; its metrics are ``dpo``, ``reward_accuracy`` and, when enabled,
      ``cluster`` and ``sft``.
    """
    if not isinstance(config, QuadAConfig):
        raise TypeError(f"config must be a QuadAConfig, got {type(config).__name__}")
    noise = quada_noise(config.sigma, config.tau, config.noise_site)

    def loss_fn(model, batch, key):
        config.check_model(model.config.num_layers)
        n = batch["chosen_tokens"].shape[0]
        hooks = approx_hooks(noise, model.config, rng=key) if noise else None
        both = {
            k: jnp.concatenate([batch[f"chosen_{k}"], batch[f"rejected_{k}"]]) for k in BATCH_KEYS
        }
        out = model(
            both["tokens"],
            attention_mask=both["attention_mask"],
            hooks=hooks,
            output_hidden_states=config.reg_weight > 0,
        )
        logps = sequence_logprobs(out.logits, both["tokens"], both["loss_mask"])
        dpo, dpo_metrics = dpo_loss(
            logps[:n], logps[n:], batch["ref_chosen"], batch["ref_rejected"], beta=config.beta
        )
        loss = dpo
        metrics = {"dpo": dpo, "reward_accuracy": dpo_metrics["reward_accuracy"]}
        if config.reg_weight > 0:
            pooled = pooled_prompt_activations(
                out.hidden_states[config.activation_layer][:n],
                batch["chosen_attention_mask"],
                batch["chosen_loss_mask"],
            )
            reg = activation_cluster_loss(pooled)
            loss = loss + config.reg_weight * reg
            metrics["cluster"] = reg
        if config.sft_weight > 0:
            sft, _ = lm_batch_loss(model, _unprefixed("sft", batch))
            loss = loss + config.sft_weight * sft
            metrics["sft"] = sft
        return loss, metrics

    return loss_fn


def _reference_logps(model, batch: Mapping[str, Any], chunk: int = 256) -> np.ndarray:
    """``log pi_ref(y | x)`` of every row, scored in chunks (the reference model is exact)."""
    n = pool_size(batch)
    return np.concatenate(
        [
            -np.asarray(sequence_nll(model, {k: v[lo : lo + chunk] for k, v in batch.items()})[0])
            for lo in range(0, n, chunk)
        ]
    )


def _host(name: str, batch: Any) -> dict[str, np.ndarray]:
    check_batch(batch, name)
    return {k: np.asarray(batch[k]) for k in BATCH_KEYS}


def quada_align(
    model,
    chosen: Mapping[str, Any],
    rejected: Mapping[str, Any],
    config: QuadAConfig = QuadAConfig(),
    *,
    sft: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> QuadAResult:
    """Run QuadA-style alignment of ``model`` (see the module docstring).

    The input model is the frozen DPO reference and is left untouched. Step ``i`` trains on
    rows ``i * batch_size ...`` of shuffled epochs over the pairs (seed ``[config.seed, 41]``);
    row ``j`` of ``sft`` goes with pair ``j``.

    Args:
      model: an aligned :class:`~jaxtrust.models.CausalLM`.
      chosen: harmful prompts with a refusal, ``{"tokens", "attention_mask", "loss_mask"}``
        (``loss_mask`` on the response), ``[n, seq]`` each.
      rejected: the same prompts with a compliant answer, same layout and ``n``.
      config: :class:`QuadAConfig`; ``sigma=0, reg_weight=0`` is plain DPO (+ SFT), the
        baseline.
      sft: the SFT set (same layout, ``n`` rows), required when ``config.sft_weight > 0``.
      progress: show a progress bar.

    Returns:
      :class:`QuadAResult` with the new model and a per-step log (``loss``, ``dpo``,
      ``cluster``, ``sft``, ``reward_accuracy``, ``grad_norm``).

    Raises:
      TypeError: ``config`` is not a QuadAConfig or a data set is not a mapping.
      KeyError: a data set lacks a key. ValueError: ``tau`` or ``activation_layer`` beyond the
      model's layers; data sets of different sizes; ``sft`` missing when it is weighted.
    """
    if not isinstance(config, QuadAConfig):
        raise TypeError(f"config must be a QuadAConfig, got {type(config).__name__}")
    config.check_model(model.config.num_layers)
    sets = {
        "chosen": _host("chosen", chosen),
        "rejected": _host("rejected", rejected),
    }
    if config.sft_weight > 0:
        if sft is None:
            raise ValueError("sft (an SFT batch dict) is required when config.sft_weight > 0")
        sets["sft"] = _host("sft", sft)
    sizes = {name: pool_size(b) for name, b in sets.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"chosen, rejected and sft must have the same number of rows, got {sizes}")
    pool: dict[str, np.ndarray] = {}
    for name, batch in sets.items():
        pool.update(_prefixed(name, batch))
        if name != "sft":
            pool[f"ref_{name}"] = _reference_logps(model, batch)
    tx = adamw_cosine(
        config.learning_rate, config.steps, warmup_steps=config.warmup_steps, final_fraction=0.1
    )
    result = finetune(
        model,
        pool,
        tx,
        steps=config.steps,
        batch_size=config.batch_size,
        seed=config.seed,
        data_seed=[config.seed, 41],
        loss_fn=make_quada_loss(config),
        # one compiled step per (architecture, recipe): the seed changes only the data and key
        step_key=("quada", dataclasses.replace(config, seed=0)),
        progress=progress,
    )
    return QuadAResult(result.model, result.history, config)
