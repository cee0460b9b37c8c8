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

What follows the paper and what is reconstructed (the released code,
github.com/Kevin-Zh-CS/QuadA, contains only the Gaussian-noise evaluation and a plain DPO
trainer; see ``/work/shared/methods/secpe_actapprox.md`` part B):

* **Paper:** DPO with the *unperturbed* aligned model as reference; perturbation of the first
  :math:`\tau` layers only; a cosine-similarity clustering regulariser over harmful prompts;
  the noise proxy (Gaussian noise on the FFN activation output ``act(gate(x))`` or on the
  RMSNorm outputs) as the model of approximation error.
* **Reconstruction (defaults stated):**

  - The MVA error is modelled as Gaussian noise of standard deviation ``sigma`` on the chosen
    site (``noise_site="ffn"``, the paper's FFN site); ``sigma`` is meant to be the worst
    strength found by the audit (``jaxtrust reproduce actapprox`` picks the sweep point of lowest
    refusal whose perplexity stays under its budget). A fresh draw per step and per layer.
  - ``tau`` is a config value (the paper picks it by a constrained optimisation it does not
    publish); default 1, i.e. the first block.
  - The regulariser uses the output of block ``activation_layer`` (default 1: the first block,
    ``hidden_states[1]``), mean-pooled over the prompt tokens, computed on the *perturbed*
    forward of the chosen sequences (the prompt tokens do not see the response, so this costs
    no extra forward). The paper writes :math:`\cos(f_1(T(x_i)), f_1(T(x_j)))`; the pooling is
    not stated.
  - An SFT term (weight ``sft_weight``, on the exact model, over the world's alignment mix:
    refusals, benign answers, utility, classification) keeps utility; the paper's DPO on
    PKU-SafeRLHF has benign preference pairs for the same purpose.

Reference:
  Zhang, Chen, He, Lou, Li, Feng, Song, Liu, Ren, Yang, `Activation Approximations Can Incur
  Safety Vulnerabilities Even in Aligned LLMs: Comprehensive Analysis and Defense
  <https://arxiv.org/abs/2502.00840>`_, USENIX Security 2025.

Example::

    from jaxtrust.zoo import aligned_model
    from jaxtrust.safety.actapprox.quada import QuadAConfig, quada_align
    aligned = aligned_model(seed=0)
    result = quada_align(aligned.model, aligned.world, QuadAConfig(sigma=0.3, tau=1, steps=200))
    result.model      # the mitigated CausalLM; result.log: per-step losses
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from jaxtrust.models.hooks import ModelHooks, apply_activation

__all__ = [
    "NOISE_SITES",
    "FirstLayersNoise",
    "QuadAConfig",
    "QuadAResult",
    "activation_cluster_loss",
    "make_quada_loss",
    "pooled_prompt_activations",
    "preference_pool",
    "quada_align",
]

NOISE_SITES = ("ffn", "norm", "both")
_STEP_CACHE: dict[Any, Any] = {}


@dataclasses.dataclass(frozen=True)
class FirstLayersNoise(ModelHooks):
    r"""Hooks adding Gaussian noise :math:`\mathcal N(0, \sigma^2)` to activations of layers
    ``< tau`` (the QuadA training perturbation).

    ``site="ffn"`` perturbs the FFN activation output ``act(gate(x))`` (the paper's FFN noise),
    ``"norm"`` the outputs of the attention and MLP RMSNorms (its "LN" noise), ``"both"`` both.
    The draw for layer ``l`` uses ``fold_in(key, l)``, so every layer gets its own noise. ``key``
    is an array: create the hooks inside the jitted function (they are not hashable then).

    Example::

        hooks = FirstLayersNoise(sigma=0.2, tau=1, key=jax.random.key(0))
        logits = model(tokens, hooks=hooks).logits
    """

    sigma: float = 0.0
    tau: int = 1
    site: str = "ffn"
    key: Any = None

    def __post_init__(self):
        if self.site not in NOISE_SITES:
            raise ValueError(f"site must be one of {NOISE_SITES}, got {self.site!r}")
        if not self.sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if not isinstance(self.tau, int) or self.tau < 0:
            raise ValueError(f"tau must be a non-negative int, got {self.tau!r}")
        if self.sigma > 0 and self.key is None:
            raise ValueError("key (a jax PRNG key) is required when sigma > 0")

    def _perturb(self, y, layer, salt: int):
        if self.sigma == 0 or self.tau == 0:
            return y
        key = jax.random.fold_in(jax.random.fold_in(_as_key(self.key), salt), layer)
        noise = self.sigma * jax.random.normal(key, y.shape, jnp.float32)
        return jnp.where(jnp.asarray(layer) < self.tau, y + noise.astype(y.dtype), y)

    def activation(self, x, layer):
        y = apply_activation(self.activation_name, x)
        return self._perturb(y, layer, 0) if self.site in ("ffn", "both") else y

    def norm(self, x, scale, bias, layer, kind, eps):
        y = super().norm(x, scale, bias, layer, kind, eps)
        if self.site in ("norm", "both") and kind in ("attn_norm", "mlp_norm"):
            return self._perturb(y, layer, 1 if kind == "attn_norm" else 2)
        return y


def _as_key(key):
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key.astype(jnp.uint32))


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
    """Mean of ``hidden`` over the prompt tokens (real tokens that are not supervised targets)."""
    prompt = attention_mask.astype(jnp.float32) * (1.0 - loss_mask.astype(jnp.float32))
    total = jnp.sum(hidden.astype(jnp.float32) * prompt[..., None], axis=1)
    return total / jnp.maximum(jnp.sum(prompt, axis=1, keepdims=True), 1.0)


@dataclasses.dataclass(frozen=True)
class QuadAConfig:
    """QuadA hyper-parameters (frozen, hashable). See the module docstring for the objective.

    Attributes:
      sigma: std of the MVA Gaussian noise during training (0 = plain DPO + SFT).
      tau: perturb layers ``[0, tau)``.
      noise_site: "ffn" (paper default), "norm" or "both".
      reg_weight: :math:`\\lambda` of the clustering regulariser (0 = off).
      activation_layer: hidden-state index of :math:`f_\\ell` (1 = output of the first block).
      beta: DPO inverse temperature.
      sft_weight: :math:`\\mu` of the SFT term on the alignment mix (0 = pure DPO).
      steps, batch_size, learning_rate, warmup_steps: the optimiser run (AdamW, cosine decay).
      pool_size: harmful preference pairs (and SFT examples) drawn from the world.
      seed: data order, data sampling and noise seed.
    """

    sigma: float = 0.3
    tau: int = 1
    noise_site: str = "ffn"
    reg_weight: float = 0.1
    activation_layer: int = 1
    beta: float = 0.1
    sft_weight: float = 1.0
    steps: int = 200
    batch_size: int = 32
    learning_rate: float = 5e-4
    warmup_steps: int = 20
    pool_size: int = 2000
    seed: int = 0

    def __post_init__(self):
        if self.noise_site not in NOISE_SITES:
            raise ValueError(f"noise_site must be one of {NOISE_SITES}, got {self.noise_site!r}")
        for name in ("sigma", "reg_weight", "sft_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("steps", "batch_size", "pool_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be >= 2 (pairwise regulariser), got {self.batch_size}"
            )
        if not isinstance(self.tau, int) or self.tau < 0:
            raise ValueError(f"tau must be a non-negative int, got {self.tau!r}")
        if not self.beta > 0 or not self.learning_rate > 0:
            raise ValueError(
                f"beta and learning_rate must be > 0, got {self.beta}, {self.learning_rate}"
            )


@dataclasses.dataclass(frozen=True)
class QuadAResult:
    """The aligned model, the per-step training log (loss terms) and the config used."""

    model: Any
    log: list[dict[str, float]]
    config: QuadAConfig


def make_quada_loss(config: QuadAConfig):
    """The QuadA loss ``loss_fn(model, batch, rng) -> (loss, metrics)`` for
    :func:`jaxtrust.training.make_train_step`.

    ``batch`` holds ``chosen_*`` / ``rejected_*`` (``tokens``, ``attention_mask``, ``loss_mask``)
    of harmful prompts, their reference log-probabilities ``ref_chosen`` / ``ref_rejected``, and
    (when ``config.sft_weight > 0``) ``sft_tokens`` / ``sft_attention_mask`` / ``sft_loss_mask``.
    """
    from jaxtrust.training import dpo_loss, lm_loss, sequence_logprobs

    def loss_fn(model, batch, rng):
        n = batch["chosen_tokens"].shape[0]
        if config.tau > model.config.num_layers:
            raise ValueError(
                f"tau={config.tau} exceeds the model's {model.config.num_layers} layers"
            )
        if not 0 <= config.activation_layer <= model.config.num_layers:
            raise ValueError(
                f"activation_layer must be in [0, {model.config.num_layers}], "
                f"got {config.activation_layer}"
            )
        hooks = FirstLayersNoise(
            activation_name=model.config.activation,
            sigma=config.sigma,
            tau=config.tau,
            site=config.noise_site,
            key=rng if config.sigma > 0 else None,
        )
        tokens = jnp.concatenate([batch["chosen_tokens"], batch["rejected_tokens"]])
        mask = jnp.concatenate([batch["chosen_attention_mask"], batch["rejected_attention_mask"]])
        loss_mask = jnp.concatenate([batch["chosen_loss_mask"], batch["rejected_loss_mask"]])
        out = model(
            tokens, attention_mask=mask, hooks=hooks, output_hidden_states=config.reg_weight > 0
        )
        logps = sequence_logprobs(out.logits, tokens, loss_mask)
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
            logits = model(batch["sft_tokens"], attention_mask=batch["sft_attention_mask"]).logits
            sft, _ = lm_loss(logits, batch["sft_tokens"], batch["sft_loss_mask"])
            loss = loss + config.sft_weight * sft
            metrics["sft"] = sft
        return loss, metrics

    return loss_fn


def preference_pool(
    world, n: int, *, seed: int = 0, seq_len: int | None = None
) -> dict[str, np.ndarray]:
    """Harmful preference pairs from a :class:`~jaxtrust.data.SafetyWorld`: forbidden requests
    (alignment templates and topics) with a refusal as chosen and the compliant answer as
    rejected, as right-padded ``chosen_*`` / ``rejected_*`` arrays."""
    harmful = world.requests(n, category="forbidden", split="train", seed=seed)
    chosen = world.batch(world.refusal_examples(harmful, seed=seed), seq_len=seq_len)
    rejected = world.batch(harmful, seq_len=seq_len)
    out = {}
    for prefix, b in (("chosen", chosen), ("rejected", rejected)):
        out[f"{prefix}_tokens"] = np.asarray(b.tokens)
        out[f"{prefix}_attention_mask"] = np.asarray(b.attention_mask)
        out[f"{prefix}_loss_mask"] = np.asarray(b.loss_mask)
    return out


def _sequence_logps(graphdef, state, tokens, mask, loss_mask):
    from jaxtrust.training import sequence_logprobs

    model = nnx.merge(graphdef, state)
    return sequence_logprobs(model(tokens, attention_mask=mask).logits, tokens, loss_mask)


_sequence_logps_jit = jax.jit(_sequence_logps, static_argnums=0)


def _reference_logps(model, tokens, mask, loss_mask, chunk: int = 256) -> np.ndarray:
    graphdef, state = nnx.split(model)
    out = [
        np.asarray(
            _sequence_logps_jit(
                graphdef,
                state,
                tokens[i : i + chunk],
                mask[i : i + chunk],
                loss_mask[i : i + chunk],
            )
        )
        for i in range(0, len(tokens), chunk)
    ]
    return np.concatenate(out)


def quada_align(
    model, world, config: QuadAConfig = QuadAConfig(), *, progress: bool = False
) -> QuadAResult:
    """Run QuadA-style alignment of ``model`` on ``world`` (see the module docstring).

    The input model is the frozen DPO reference and is left untouched (no buffer donation).

    Args:
      model: an aligned :class:`~jaxtrust.models.CausalLM`.
      world: the :class:`~jaxtrust.data.SafetyWorld` it was aligned on.
      config: :class:`QuadAConfig`; ``sigma=0, reg_weight=0`` is plain DPO (+ SFT), the baseline.
      progress: show a progress bar.

    Returns:
      :class:`QuadAResult` with the new model and a per-step log (``loss``, ``dpo``, ``cluster``,
      ``sft``, ``reward_accuracy``).

    Raises:
      ValueError: ``tau`` or ``activation_layer`` beyond the model's layers.
    """
    from jaxtrust.training import fit, init_train_state, make_train_step, merge_model

    if not isinstance(config, QuadAConfig):
        raise TypeError(f"config must be a QuadAConfig, got {type(config).__name__}")
    num_layers = model.config.num_layers
    if config.tau > num_layers:
        raise ValueError(f"tau={config.tau} exceeds the model's {num_layers} layers")
    if not 0 <= config.activation_layer <= num_layers:
        raise ValueError(
            f"activation_layer must be in [0, {num_layers}], got {config.activation_layer}"
        )
    seq_len = world.max_sequence_length
    pool = preference_pool(world, config.pool_size, seed=config.seed, seq_len=seq_len)
    for prefix in ("chosen", "rejected"):
        pool[f"ref_{prefix}"] = _reference_logps(
            model,
            pool[f"{prefix}_tokens"],
            pool[f"{prefix}_attention_mask"],
            pool[f"{prefix}_loss_mask"],
        )
    if config.sft_weight > 0:
        sft = world.batch(
            world.alignment_mix(config.pool_size, seed=config.seed + 7), seq_len=seq_len
        )
        pool["sft_tokens"] = np.asarray(sft.tokens)
        pool["sft_attention_mask"] = np.asarray(sft.attention_mask)
        pool["sft_loss_mask"] = np.asarray(sft.loss_mask)

    # One compiled step per (architecture, recipe): a second model of the same size re-uses it.
    recipe = (model.config, dataclasses.replace(config, seed=0), seq_len)
    if recipe not in _STEP_CACHE:
        warmup = min(config.warmup_steps, config.steps - 1)
        schedule = optax.warmup_cosine_decay_schedule(
            0.0,
            config.learning_rate,
            warmup,
            max(config.steps, warmup + 1),
            config.learning_rate * 0.1,
        )
        tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.0))
        graphdef = nnx.split(model, nnx.Param, ...)[0]
        if len(_STEP_CACHE) >= 8:
            _STEP_CACHE.pop(next(iter(_STEP_CACHE)))
        _STEP_CACHE[recipe] = (
            tx,
            make_train_step(graphdef, make_quada_loss(config), tx, donate=False),
        )
    tx, train_step = _STEP_CACHE[recipe]
    graphdef, state = init_train_state(model, tx, seed=config.seed)

    n = config.pool_size
    rng = np.random.default_rng([config.seed, 41])
    epochs = -(-config.steps * config.batch_size // n)
    order = np.concatenate([rng.permutation(n) for _ in range(epochs)])

    def batches_fn(step: int):
        rows = order[step * config.batch_size : (step + 1) * config.batch_size]
        return {k: v[rows] for k, v in pool.items()}

    state, history = fit(
        graphdef, state, train_step, batches_fn, num_steps=config.steps, progress=progress
    )
    log = [{k: float(v) for k, v in h.items()} for h in history]
    return QuadAResult(merge_model(graphdef, state), log, config)
