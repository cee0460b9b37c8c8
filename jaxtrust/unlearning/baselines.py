# ruff: noqa: F722
r"""The standard approximate-unlearning baselines for classifiers, behind one interface.

``unlearn(method, model, forget, retain, config, seed=...)`` returns a new model (the input is
never modified) for every method below; ``forget`` and ``retain`` are ``{"x", "y"}`` arrays.
Every training method runs :func:`jaxtrust.training.fit` over a compiled
:func:`jaxtrust.training.make_train_step` (memoised per method, so one compile serves every
seed and hyper-parameter: the learning rate travels in the optimiser state through
``optax.inject_hyperparams`` and the loss weights in the batch), with AdamW-free Adam behind
global-norm clipping, one forget batch and one retain batch per step. With :math:`\ell` the mean
cross-entropy:

* ``finetune`` (FT; Warnecke et al., NDSS 2023): :math:`\ell(D_r)`.
* ``ga`` (gradient ascent / NegGrad; Thudi et al., EuroS&P 2022): :math:`-\ell(D_f)`.
* ``neggrad_plus`` (Kurmanji et al., *SCRUB*, NeurIPS 2023): :math:`\alpha\,\ell(D_r) -
  (1-\alpha)\,\ell(D_f)`; gradient difference is :math:`\alpha = 1/2` up to scale.
* ``random_labels`` (RL; Golatkar et al., CVPR 2020, as in SalUn): :math:`\ell(D_f,
  \tilde y) + \ell(D_r)` with a fixed random wrong label :math:`\tilde y` per forget sample.
* ``l1_sparse`` (Jia et al., *Model Sparsity Can Simplify Machine Unlearning*, NeurIPS 2023):
  :math:`\ell(D_r) + \gamma_t \lVert\theta\rVert_1`, :math:`\gamma_t` decayed linearly to 0.
* ``salun`` (Fan et al., *SalUn*, ICLR 2024): RL restricted to the weights whose forget-loss
  gradient magnitude :math:`|\nabla_\theta \ell(D_f)|` at the trained model is in the top
  ``saliency`` fraction, through :func:`~jaxtrust.unlearning.transforms.masked_updates`.
* ``ssd`` (Foster et al., *Selective Synaptic Dampening*, AAAI 2024): no training; with the
  diagonal empirical Fisher :math:`F_D` (all training data) and :math:`F_f` (forget data),
  every weight with :math:`F_f > \alpha F_D` is multiplied by :math:`\min(\lambda F_D / F_f, 1)`.
* ``npo`` (Zhang et al., *Negative Preference Optimization*, COLM 2024), as a classification
  objective: :math:`\alpha\,\ell(D_r) + (1-\alpha)\frac{2}{\beta}\,\mathbb E_{D_f}
  \operatorname{softplus}\!\big(\beta(\log p_\theta(y|x) - \log p_{\mathrm{ref}}(y|x))\big)`
  with the trained model as reference.

Every method accepts a parameter ``mask`` (a 0/1 pytree, e.g. MAPE's heads and filters), which
restricts its updates to the selected weights; that is how MAPE runs these objectives as its
base algorithm. Retrain from scratch, the exact reference, is :func:`retrain` (the same recipe
as :func:`train_classifier` on the retain rows).

Example:
  >>> import numpy as np
  >>> from flax import nnx
  >>> model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
  >>> rng = np.random.default_rng(0)
  >>> data = {"x": rng.normal(size=(20, 4)).astype(np.float32), "y": rng.integers(0, 3, 20)}
  >>> forget = {k: v[:5] for k, v in data.items()}
  >>> retain = {k: v[5:] for k, v in data.items()}
  >>> out = unlearn("ga", model, forget, retain, UnlearnConfig(steps=3, forget_batch=5), seed=0)
  >>> len(out.history)
  3
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Float, Int

from jaxtrust.privacy.mia.scores import predict_logits
from jaxtrust.training.batches import epoch_batches
from jaxtrust.training.finetune import FinetuneResult, finetune
from jaxtrust.training.loop import fit
from jaxtrust.training.memo import memoize
from jaxtrust.training.recipes import adamw_cosine
from jaxtrust.training.step import init_train_state, make_train_step, merge_model
from jaxtrust.unlearning.transforms import masked_updates

__all__ = [
    "METHODS",
    "TrainConfig",
    "UnlearnConfig",
    "UnlearnResult",
    "classification_loss",
    "forget_gradient",
    "random_wrong_labels",
    "retrain",
    "saliency_mask",
    "ssd_dampen",
    "train_classifier",
    "unlearn",
    "weight_fisher",
]

METHODS = (
    "finetune",
    "ga",
    "neggrad_plus",
    "random_labels",
    "l1_sparse",
    "salun",
    "ssd",
    "npo",
)


# --------------------------------------------------------------------------------------------
# training from scratch (the original model and Retrain)


def _ce(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def classification_loss(model, batch, key):
    """``loss_fn(model, batch, key) -> (mean CE, {"accuracy"})`` on ``{"x", "y"}`` batches."""
    del key
    logits = model(batch["x"])
    acc = jnp.mean((jnp.argmax(logits, -1) == batch["y"]).astype(jnp.float32))
    return jnp.mean(_ce(logits, batch["y"])), {"accuracy": acc}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Recipe of the original model and of Retrain (AdamW, warmup + cosine, clipping).

    Attributes:
      steps: optimiser steps (Retrain uses the same number as the original model, so both
        share one compiled step and one schedule).
      batch_size: rows per step.
      learning_rate, warmup_steps, weight_decay: :func:`jaxtrust.training.adamw_cosine`.
    """

    steps: int = 2500
    batch_size: int = 128
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")

    def tx(self) -> optax.GradientTransformation:
        return adamw_cosine(
            self.learning_rate,
            self.steps,
            warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay,
        )


def train_classifier(
    model: nnx.Module, pool: Mapping[str, Any], config: TrainConfig, *, seed: int
) -> FinetuneResult:
    """Train ``model`` (a copy) on ``{"x", "y"}`` with cross-entropy: :func:`finetune` with
    :func:`classification_loss` and ``config``'s AdamW recipe.

    Returns:
      The :class:`~jaxtrust.training.FinetuneResult` (``.model``, ``.history``, ``.seconds``).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    return finetune(
        model,
        {"x": pool["x"], "y": pool["y"]},
        config.tx(),
        steps=config.steps,
        batch_size=config.batch_size,
        seed=seed,
        loss_fn=classification_loss,
        step_key=("unlearning.train", dataclasses.astuple(config)),
    )


def retrain(
    init_fn: Callable[[int], nnx.Module],
    retain: Mapping[str, Any],
    config: TrainConfig,
    *,
    seed: int,
) -> UnlearnResult:
    """Exact unlearning: a fresh ``init_fn(seed)`` trained on the retain rows only."""
    start = time.perf_counter()
    result = train_classifier(init_fn(seed), retain, config, seed=seed)
    return UnlearnResult(result.model, time.perf_counter() - start, result.history, {})


# --------------------------------------------------------------------------------------------
# the approximate methods


@dataclasses.dataclass(frozen=True)
class UnlearnConfig:
    """Hyper-parameters of the approximate methods (each reads the fields it needs).

    Attributes:
      learning_rate: Adam step size (every training method).
      steps: optimiser steps.
      forget_batch, retain_batch: rows per step from each set.
      alpha: retain weight of ``neggrad_plus`` and ``npo`` (in [0, 1]).
      beta: NPO inverse temperature (> 0).
      l1: initial l1 weight of ``l1_sparse`` (decayed linearly to 0).
      saliency: fraction of weights SalUn updates (in (0, 1]).
      ssd_alpha, ssd_lambda: SSD's selection threshold and dampening constant.
      clip_norm: global gradient-norm clip (part of the compiled step; not tuned).
    """

    learning_rate: float = 1e-3
    steps: int = 100
    forget_batch: int = 64
    retain_batch: int = 128
    alpha: float = 0.5
    beta: float = 0.5
    l1: float = 1e-4
    saliency: float = 0.5
    ssd_alpha: float = 10.0
    ssd_lambda: float = 1.0
    clip_norm: float = 1.0

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("steps", "forget_batch", "retain_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "steps" else 1):
                raise ValueError(
                    f"{name} must be a {'non-negative' if name == 'steps' else 'positive'} "
                    f"int, got {value!r}"
                )
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 < self.saliency <= 1.0:
            raise ValueError(f"saliency must be in (0, 1], got {self.saliency}")
        if not (
            self.beta > 0 and self.ssd_alpha > 0 and self.ssd_lambda > 0 and self.clip_norm > 0
        ):
            raise ValueError("beta, ssd_alpha, ssd_lambda and clip_norm must be > 0")
        if self.l1 < 0:
            raise ValueError(f"l1 must be >= 0, got {self.l1}")


class UnlearnResult(NamedTuple):
    """Attributes:
    model: the unlearned model (new). seconds: wall time of the method (its own search,
    Fisher or saliency pass included). history: per-step training records. info: method
    extras (mask fraction, selected counts, ...)."""

    model: nnx.Module
    seconds: float
    history: list
    info: dict


def random_wrong_labels(
    labels: Int[np.ndarray, " n"], num_classes: int, *, seed: int
) -> Int[np.ndarray, " n"]:
    """A uniformly random label different from the true one, per sample (fixed by ``seed``)."""
    y = np.asarray(labels)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    shift = np.random.default_rng(seed).integers(1, num_classes, size=y.shape)
    return ((y + shift) % num_classes).astype(np.int32)


def _l1(model) -> jax.Array:
    return sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


# Each method is a weighting of one loss, so one compiled step per *group* (which batches the
# loss reads) serves every method of the group and every hyper-parameter:
#   w_r CE(D_r) + w_f CE(D_f) + w_rand CE(D_f, y~) + w_l1 |theta|_1 + w_npo NPO_beta(D_f)
_GROUP = {
    "ga": "forget",
    "finetune": "retain",
    "l1_sparse": "retain",
    "neggrad_plus": "both",
    "random_labels": "both",
    "salun": "both",
    "npo": "both",
}


def _weights(method: str, config: UnlearnConfig) -> dict[str, float]:
    a = config.alpha
    w = {"w_r": 0.0, "w_f": 0.0, "w_rand": 0.0, "w_l1": 0.0, "w_npo": 0.0}
    if method == "finetune":
        w["w_r"] = 1.0
    elif method == "ga":
        w["w_f"] = -1.0
    elif method == "neggrad_plus":
        w.update(w_r=a, w_f=-(1.0 - a))
    elif method in ("random_labels", "salun"):
        w.update(w_r=1.0, w_rand=1.0)
    elif method == "l1_sparse":
        w.update(w_r=1.0, w_l1=config.l1)
    elif method == "npo":
        w.update(w_r=a, w_npo=1.0 - a)
    return w


def _objective(group: str):
    def loss_fn(model, batch, key):
        del key
        aux = {}
        loss = jnp.zeros((), jnp.float32)
        if group in ("forget", "both"):
            logits_f = model(batch["fx"]).astype(jnp.float32)
            nll_f = _ce(logits_f, batch["fy"])
            aux["forget_ce"] = jnp.mean(nll_f)
            loss = loss + batch["w_f"] * aux["forget_ce"]
            loss = loss + batch["w_rand"] * jnp.mean(_ce(logits_f, batch["fy_rand"]))
            beta = batch["beta"]
            npo = 2.0 / beta * jnp.mean(jax.nn.softplus(beta * (-nll_f - batch["f_ref"])))
            loss = loss + batch["w_npo"] * npo
        if group in ("retain", "both"):
            aux["retain_ce"] = jnp.mean(_ce(model(batch["rx"]), batch["ry"]))
            loss = loss + batch["w_r"] * aux["retain_ce"] + batch["w_l1"] * _l1(model)
        return loss, aux

    return loss_fn


def _tx(config: UnlearnConfig, mask) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.inject_hyperparams(optax.adam)(learning_rate=config.learning_rate),
        masked_updates(mask),
    )


def _run(method, model, forget, retain, config: UnlearnConfig, *, seed, mask, extra_forget):
    if config.steps == 0:
        return model, []
    if mask is None:  # an all-ones mask keeps one optimiser-state structure for every method
        mask = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    tx = _tx(config, mask)
    graphdef, state = init_train_state(model, tx, seed=seed)
    group = _GROUP[method]

    def build():
        return make_train_step(graphdef, _objective(group), tx, donate=False)

    step = memoize("unlearning.baselines", (graphdef, group, config.clip_norm), build)
    nf = len(forget["y"])
    forget_pool = {
        "x": forget["x"],
        "y": forget["y"],
        "fy_rand": extra_forget.get("fy_rand", np.zeros(nf, np.int32)),
        "f_ref": extra_forget.get("f_ref", np.zeros(nf, np.float32)),
    }
    fb = epoch_batches(forget_pool, config.forget_batch, seed=[seed, 1])
    rb = epoch_batches({"x": retain["x"], "y": retain["y"]}, config.retain_batch, seed=[seed, 2])
    weights = {k: np.float32(v) for k, v in _weights(method, config).items()}
    weights["beta"] = np.float32(config.beta)
    steps = config.steps

    def batches_fn(i):
        f, r = fb(i), rb(i)
        batch = {
            "fx": f["x"],
            "fy": f["y"],
            "fy_rand": f["fy_rand"],
            "f_ref": f["f_ref"],
            "rx": r["x"],
            "ry": r["y"],
            **weights,
        }
        # l1-sparse's weight decays linearly to 0 over the run (Jia et al.)
        batch["w_l1"] = np.float32(weights["w_l1"] * (1.0 - i / steps))
        return batch

    state, history = fit(graphdef, state, step, batches_fn, num_steps=steps, progress=False)
    return merge_model(graphdef, state), history


def forget_gradient(model: nnx.Module, forget: Mapping[str, Any], *, batch_size: int = 256) -> Any:
    """:math:`\\nabla_\\theta \\ell(D_f)`, the gradient of the mean forget cross-entropy, as an
    ``nnx.State`` with the parameters' structure (chunked over ``batch_size`` rows)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def build():
        def total(p, r, x, y, w):
            logits = nnx.merge(graphdef, p, r)(x)
            return jnp.sum(w * _ce(logits, y))

        return jax.jit(jax.grad(total))

    grad = memoize("unlearning.forget_grad", graphdef, build)
    x, y = np.asarray(forget["x"]), np.asarray(forget["y"])
    n = len(y)
    acc = None
    for s in range(0, n, batch_size):
        xb, yb, w = _pad(x[s : s + batch_size], y[s : s + batch_size], batch_size)
        g = grad(params, rest, xb, yb, w)
        acc = g if acc is None else jax.tree.map(jnp.add, acc, g)
    return jax.tree.map(lambda a: a / n, acc)


def _pad(x, y, size):
    k = len(y)
    w = np.ones(size, np.float32)
    if k < size:
        w[k:] = 0.0
        x = np.concatenate([x, np.repeat(x[-1:], size - k, axis=0)])
        y = np.concatenate([y, np.repeat(y[-1:], size - k, axis=0)])
    return jnp.asarray(x), jnp.asarray(y), jnp.asarray(w)


def weight_fisher(
    model: nnx.Module,
    data: Mapping[str, Any],
    *,
    batch_size: int = 128,
) -> Any:
    r"""Diagonal empirical Fisher of the parameters, :math:`F = \frac1n \sum_i (\nabla_\theta
    \ell_i)^2`, from per-sample gradients (``vmap``-ed, chunked).

    Returns:
      An ``nnx.State`` with the parameters' structure.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def build():
        def one(p, r, x, y):
            logits = nnx.merge(graphdef, p, r)(x[None])
            return _ce(logits, y[None])[0]

        per_sample = jax.vmap(jax.grad(one), in_axes=(None, None, 0, 0))

        def chunk(p, r, x, y, w):
            g = per_sample(p, r, x, y)
            return jax.tree.map(lambda a: jnp.tensordot(w, a * a, axes=1), g)

        return jax.jit(chunk)

    fn = memoize("unlearning.weight_fisher", graphdef, build)
    x, y = np.asarray(data["x"]), np.asarray(data["y"])
    n = len(y)
    if n == 0:
        raise ValueError("data has no rows")
    acc = None
    for s in range(0, n, batch_size):
        xb, yb, w = _pad(x[s : s + batch_size], y[s : s + batch_size], batch_size)
        f = fn(params, rest, xb, yb, w)
        acc = f if acc is None else jax.tree.map(jnp.add, acc, f)
    return jax.tree.map(lambda a: a / n, acc)


def saliency_mask(gradient: Any, fraction: float) -> Any:
    """0/1 mask of the ``fraction`` of weights with the largest ``|gradient|`` (one global
    threshold over every parameter, as SalUn)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    flat = jnp.concatenate([jnp.abs(g).ravel() for g in jax.tree.leaves(gradient)])
    k = max(1, int(round(fraction * flat.size)))
    threshold = jnp.sort(flat)[flat.size - k]
    return jax.tree.map(lambda g: (jnp.abs(g) >= threshold).astype(jnp.float32), gradient)


def ssd_dampen(model: nnx.Module, fisher_all: Any, fisher_forget: Any, *, alpha: float, lam: float):
    """SSD: weights with :math:`F_f > \\alpha F_D` scaled by :math:`\\min(\\lambda F_D/F_f, 1)`.

    Returns:
      ``(model, fraction_dampened)`` (a new model).
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    selected = jax.tree.map(lambda fd, ff: ff > alpha * fd, fisher_all, fisher_forget)
    beta = jax.tree.map(
        lambda fd, ff: jnp.minimum(lam * fd / jnp.maximum(ff, 1e-30), 1.0),
        fisher_all,
        fisher_forget,
    )
    new = jax.tree.map(lambda p, s, b: jnp.where(s, p * b, p), params, selected, beta)
    count = sum(int(jnp.sum(s)) for s in jax.tree.leaves(selected))
    total = sum(s.size for s in jax.tree.leaves(selected))
    return nnx.merge(graphdef, new, rest), count / total


def _check_sets(forget, retain):
    for name, part in (("forget", forget), ("retain", retain)):
        if not isinstance(part, Mapping) or "x" not in part or "y" not in part:
            raise TypeError(f"{name} must be a mapping with 'x' and 'y' arrays")
        if len(part["y"]) == 0:
            raise ValueError(f"{name} set is empty")
        if len(part["x"]) != len(part["y"]):
            raise ValueError(f"{name}: x has {len(part['x'])} rows but y has {len(part['y'])}")


def unlearn(
    method: str,
    model: nnx.Module,
    forget: Mapping[str, Float[np.ndarray, "nf ..."]],
    retain: Mapping[str, Float[np.ndarray, "nr ..."]],
    config: UnlearnConfig,
    *,
    seed: int,
    mask: Any | None = None,
    num_classes: int | None = None,
) -> UnlearnResult:
    """Run baseline ``method`` (one of :data:`METHODS`) and return the unlearned model.

    Args:
      method: ``finetune``, ``ga``, ``neggrad_plus``, ``random_labels``, ``l1_sparse``,
        ``salun``, ``ssd`` or ``npo`` (see the module docstring).
      model: the trained model (not modified).
      forget, retain: ``{"x", "y"}`` arrays.
      config: an :class:`UnlearnConfig`.
      seed: seeds the batch order, random labels and the step key.
      mask: optional 0/1 parameter mask restricting every update (MAPE's selection); for
        ``salun`` it is intersected with the saliency mask.
      num_classes: number of labels (default: the model's output width on one forget row).

    Returns:
      An :class:`UnlearnResult`.
    """
    if method not in METHODS:
        raise KeyError(f"unknown unlearning method {method!r}; known: {METHODS}")
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    if not isinstance(config, UnlearnConfig):
        raise TypeError(f"config must be an UnlearnConfig, got {type(config).__name__}")
    _check_sets(forget, retain)
    start = time.perf_counter()
    info: dict[str, Any] = {}
    if method == "ssd":
        both = {
            k: np.concatenate([np.asarray(forget[k]), np.asarray(retain[k])]) for k in ("x", "y")
        }
        f_all = weight_fisher(model, both)
        f_forget = weight_fisher(model, forget)
        out, frac = ssd_dampen(
            model, f_all, f_forget, alpha=config.ssd_alpha, lam=config.ssd_lambda
        )
        info["dampened_fraction"] = frac
        return UnlearnResult(out, time.perf_counter() - start, [], info)
    extra: dict[str, np.ndarray] = {}
    if method in ("random_labels", "salun", "npo"):
        logits = predict_logits(model, np.asarray(forget["x"]))
        if method == "npo":  # the trained model is NPO's reference
            extra["f_ref"] = np.asarray(
                -_ce(jnp.asarray(logits), jnp.asarray(np.asarray(forget["y"]))), np.float32
            )
        else:
            classes = logits.shape[-1] if num_classes is None else num_classes
            extra["fy_rand"] = random_wrong_labels(forget["y"], classes, seed=seed)
    if method == "salun":
        sal = saliency_mask(forget_gradient(model, forget), config.saliency)
        mask = sal if mask is None else jax.tree.map(jnp.multiply, sal, mask)
        info["mask_fraction"] = float(
            sum(jnp.sum(m) for m in jax.tree.leaves(mask))
            / sum(m.size for m in jax.tree.leaves(mask))
        )
    out, history = _run(
        method, model, forget, retain, config, seed=seed, mask=mask, extra_forget=extra
    )
    return UnlearnResult(out, time.perf_counter() - start, history, info)
