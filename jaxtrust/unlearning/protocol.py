"""The evaluation protocol the unlearning reproductions share (SalUn-style, tuned fairly).

One **trial** per seed (:func:`make_trial`): a data set with fixed splits, a forget split drawn
with the seed (random ``fraction`` of the training rows, or one class), an original ViT trained
on every training row and **Retrain**, a fresh ViT trained on the retain rows with the same
recipe and number of steps. Both are kept in sealed cache entries
(:func:`jaxtrust.zoo.cached_entry`), so reruns and the two reproductions share them; their
training times are recorded when built.

Fair tuning (:func:`tune`): every method (baselines, MAPE, RSU) gets the same number of
configurations, drawn by random search from its own space (the first draw is the space's
defaults), evaluated on a separate *tuning* trial (its own seed, forget set, original and
Retrain) with the **validation** split as the test/non-member set; the configuration with the
smallest average gap to that trial's Retrain is kept. Reported numbers
(:func:`evaluate_method`) use the report seeds and the **test** split. Wall times are measured
after the tuning runs compiled every program, so they are run times, not compile times.

Methods are :class:`MethodSpec` s: a name, a search space, and
``run(model, forget, retain, params, seed) -> (model, seconds, info)``.

Example:
  >>> draw_configs({"lr": (1e-3, 3e-4), "steps": (50, 100)}, 3, seed=0)[0]
  {'lr': 0.001, 'steps': 50}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxtrust.data.vision import (
    ClassificationData,
    ForgetSplit,
    class_forget_split,
    load_digits,
    load_mnist1d,
    random_forget_split,
)
from jaxtrust.eval.stats import seed_summary
from jaxtrust.models.encoder import EncoderConfig
from jaxtrust.models.vit import ViT, ViTConfig
from jaxtrust.privacy.mia.lira import ShadowModels, balanced_in_masks, train_shadow_models
from jaxtrust.privacy.mia.scores import predict_logits
from jaxtrust.training.checkpoint import load_pytree, save_pytree
from jaxtrust.training.finetune import finetune
from jaxtrust.unlearning.baselines import (
    TrainConfig,
    UnlearnConfig,
    classification_loss,
    train_classifier,
    unlearn,
)
from jaxtrust.unlearning.mape.method import MAPEConfig, mape_unlearn
from jaxtrust.unlearning.metrics import (
    METRIC_NAMES,
    UnlearnMetrics,
    accuracy,
    avg_gap,
    unlearning_metrics,
)
from jaxtrust.zoo.cache import cache_key, cached_entry

__all__ = [
    "SPACES",
    "MethodSpec",
    "RelearnResult",
    "ModelSpec",
    "Setting",
    "Trial",
    "TuneResult",
    "baseline_spec",
    "mape_config",
    "mape_spec",
    "relearn_attack",
    "unlearn_config",
    "draw_configs",
    "evaluate_method",
    "load_data",
    "make_trial",
    "retrain_without",
    "train_original",
    "metric_keys",
    "summarise",
    "train_shadows",
    "tune",
]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A small ViT over the data set's inputs (patches of ``patch`` samples / pixels)."""

    dim: int = 32
    num_layers: int = 3
    num_heads: int = 4
    mlp_dim: int = 64
    patch: int = 4

    def init_fn(self, data: ClassificationData) -> Callable[[int], ViT]:
        config = ViTConfig(
            input_shape=data.input_shape,
            patch=self.patch,
            num_classes=data.num_classes,
            encoder=EncoderConfig(
                dim=self.dim,
                num_layers=self.num_layers,
                num_heads=self.num_heads,
                mlp_dim=self.mlp_dim,
            ),
        )
        return lambda seed: ViT(config, rngs=nnx.Rngs(int(seed)))


@dataclasses.dataclass(frozen=True)
class Setting:
    """The test bed of a trial.

    Attributes:
      dataset: ``"mnist1d"`` or ``"digits"``.
      forget: ``"random"`` (``forget_fraction`` of the training rows) or ``"class"`` (every
        training row of class ``seed % num_classes``).
      forget_fraction: size of a random forget set.
      model: the ViT.
      train: the recipe of the original model and Retrain.
    """

    dataset: str = "mnist1d"
    forget: str = "random"
    forget_fraction: float = 0.1
    model: ModelSpec = ModelSpec()
    train: TrainConfig = TrainConfig(steps=1875, batch_size=128, learning_rate=2e-3)

    def __post_init__(self):
        if self.dataset not in ("mnist1d", "digits"):
            raise ValueError(f"dataset must be 'mnist1d' or 'digits', got {self.dataset!r}")
        if self.forget not in ("random", "class"):
            raise ValueError(f"forget must be 'random' or 'class', got {self.forget!r}")


def load_data(name: str) -> ClassificationData:
    """``load_mnist1d()`` or ``load_digits()`` by name."""
    if name == "mnist1d":
        return load_mnist1d()
    if name == "digits":
        return load_digits()
    raise KeyError(f"unknown data set {name!r}; known: mnist1d, digits")


class Trial(NamedTuple):
    """One seed's test bed (see the module docstring).

    Attributes:
      seed: the trial's seed (forget draw, inits, batch orders).
      data: the data set.
      split: the forget/retain split over the training rows.
      original, retrain: the trained models.
      original_seconds, retrain_seconds: their training wall times (when built).
      classes_kept: labels whose test/val rows count for TA and as MIA non-members (all but
        the forgotten class in class-wise forgetting).
    """

    seed: int
    data: ClassificationData
    split: ForgetSplit
    original: nnx.Module
    retrain: nnx.Module
    original_seconds: float
    retrain_seconds: float
    classes_kept: tuple[int, ...]

    @property
    def forget(self) -> dict[str, np.ndarray]:
        return self.data.rows(self.split.forget)

    @property
    def retain(self) -> dict[str, np.ndarray]:
        return self.data.rows(self.split.retain)

    def holdout(self, name: str) -> dict[str, np.ndarray]:
        """The ``val`` or ``test`` rows of the kept classes."""
        part = self.data.split(name)
        keep = np.isin(part["y"], np.asarray(self.classes_kept))
        return {"x": part["x"][keep], "y": part["y"][keep]}

    def metrics(self, model: nnx.Module, holdout: str) -> UnlearnMetrics:
        """UA, RA, TA, MIA of ``model`` with ``holdout`` (``val``/``test``) as the test set."""
        return unlearning_metrics(
            model, self.forget, self.retain, self.holdout(holdout), seed=self.seed
        )


def _split_for(setting: Setting, data: ClassificationData, seed: int) -> tuple[ForgetSplit, tuple]:
    classes = tuple(range(data.num_classes))
    if setting.forget == "random":
        return random_forget_split(data.num_train, setting.forget_fraction, seed=seed), classes
    c = seed % data.num_classes
    return class_forget_split(data.y_train, c), tuple(k for k in classes if k != c)


def _cached_model(kind, payload, init_fn, build, cache_dir):
    def write(value, folder: Path):
        save_pytree(folder / "params", nnx.state(value))

    def read(folder: Path):
        graphdef, abstract = nnx.split(nnx.eval_shape(lambda: init_fn(0)))
        state = load_pytree(folder / "params", abstract)
        # orbax hands back committed arrays; plain ones let cached and fresh models share
        # compiled programs.
        state = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), state)
        return nnx.merge(graphdef, state)

    entry = cached_entry(cache_dir, cache_key(kind, payload), build, write, read)
    return entry.value, float(entry.info["train_seconds"])


def _payload(setting: Setting, seed: int) -> dict:
    return {
        "data": setting.dataset,
        "model": dataclasses.asdict(setting.model),
        "train": dataclasses.asdict(setting.train),
        "seed": seed,
    }


def train_original(
    setting: Setting, seed: int, *, cache_dir: str | Path | None = None
) -> tuple[nnx.Module, float]:
    """The model trained on every training row (cached): ``(model, training seconds)``."""
    data = load_data(setting.dataset)
    init_fn = setting.model.init_fn(data)

    def build():
        result = train_classifier(init_fn(seed), data.split("train"), setting.train, seed=seed)
        return result.model, {"train_seconds": result.seconds}

    return _cached_model("unlearn-original", _payload(setting, seed), init_fn, build, cache_dir)


def retrain_without(
    setting: Setting,
    forget: np.ndarray,
    seed: int,
    *,
    cache_dir: str | Path | None = None,
) -> tuple[nnx.Module, float]:
    """Retrain: a fresh model trained on every training row but ``forget`` (cached), with the
    original's recipe and number of steps: ``(model, training seconds)``."""
    data = load_data(setting.dataset)
    init_fn = setting.model.init_fn(data)
    keep = np.setdiff1d(np.arange(data.num_train), np.asarray(forget))

    def build():
        result = train_classifier(init_fn(seed + 7919), data.rows(keep), setting.train, seed=seed)
        return result.model, {"train_seconds": result.seconds}

    payload = {**_payload(setting, seed), "forget": [int(i) for i in np.sort(forget)]}
    return _cached_model("unlearn-retrain", payload, init_fn, build, cache_dir)


def make_trial(setting: Setting, seed: int, *, cache_dir: str | Path | None = None) -> Trial:
    """Build (or load) the trial of ``seed``: data, forget split, original model and Retrain.

    Args:
      setting: the :class:`Setting`.
      seed: trial seed (>= 0).
      cache_dir: cache root of the trained models (default: the zoo's cache directory).

    Returns:
      A :class:`Trial`.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    data = load_data(setting.dataset)
    split, kept = _split_for(setting, data, seed)
    original, t_orig = train_original(setting, seed, cache_dir=cache_dir)
    retrain, t_re = retrain_without(setting, split.forget, seed, cache_dir=cache_dir)
    return Trial(seed, data, split, original, retrain, t_orig, t_re, kept)


class MethodSpec(NamedTuple):
    """A method under test.

    Attributes:
      name: the metrics.json key.
      space: hyper-parameter name -> candidate values (the first of each is the default).
      run: ``run(model, forget, retain, params, seed) -> (model, seconds, info)``.
    """

    name: str
    space: Mapping[str, Sequence[Any]]
    run: Callable[..., tuple[nnx.Module, float, dict]]


def draw_configs(space: Mapping[str, Sequence[Any]], n: int, *, seed: int) -> list[dict]:
    """``n`` distinct configurations of ``space`` (the defaults first, then random ones; fewer
    if the space is smaller)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    names = list(space)
    if not names:
        return [{}]
    sizes = [len(space[k]) for k in names]
    if any(s == 0 for s in sizes):
        raise ValueError("every hyper-parameter needs at least one candidate")
    total = math.prod(sizes)
    rng = np.random.default_rng(seed)
    picks = [0]
    if total <= 4096:
        others = rng.permutation(np.arange(1, total))[: n - 1].tolist()
        picks += others
    else:
        seen = {0}
        while len(picks) < n:
            j = int(rng.integers(1, total))
            if j not in seen:
                seen.add(j)
                picks.append(j)
    configs = []
    for flat in picks[:n]:
        idx = np.unravel_index(flat, sizes)
        configs.append({k: space[k][int(i)] for k, i in zip(names, idx, strict=True)})
    return configs


class TuneResult(NamedTuple):
    """Attributes: best: the chosen parameters. trials: every configuration with its val
    metrics and gap. budget: number of configurations evaluated."""

    best: dict
    trials: list[dict]
    budget: int


def _clean(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def tune(
    spec: MethodSpec,
    trial: Trial,
    reference: UnlearnMetrics,
    *,
    budget: int,
    seed: int,
) -> TuneResult:
    """Random search of ``budget`` configurations on the tuning ``trial``'s validation split.

    Args:
      spec: the method.
      trial: the tuning trial.
      reference: Retrain's metrics on that trial's validation split.
      budget: configurations to evaluate (the same for every method).
      seed: seed of the draw.

    Returns:
      A :class:`TuneResult`; the best configuration minimises the average gap.
    """
    rows = []
    for params in draw_configs(spec.space, budget, seed=seed):
        model, seconds, _ = spec.run(trial.original, trial.forget, trial.retain, params, trial.seed)
        m = trial.metrics(model, "val")
        rows.append(
            {
                "params": {k: _clean(v) for k, v in params.items()},
                **m.as_dict(),
                "avg_gap": avg_gap(m, reference),
                "seconds": seconds,
            }
        )
    best = min(rows, key=lambda r: r["avg_gap"])
    return TuneResult(dict(best["params"]), rows, len(rows))


def evaluate_method(
    spec: MethodSpec,
    params: Mapping[str, Any],
    trial: Trial,
    reference: UnlearnMetrics,
    *,
    model: nnx.Module | None = None,
) -> tuple[dict[str, float], nnx.Module]:
    """Run ``spec`` with ``params`` on ``trial`` (from ``model``, default the original) and
    measure it on the test split.

    Returns:
      ``({UA, RA, TA, MIA, avg_gap, seconds, ...info}, unlearned model)``.
    """
    start = trial.original if model is None else model
    out, seconds, info = spec.run(start, trial.forget, trial.retain, dict(params), trial.seed)
    m = trial.metrics(out, "test")
    row = {**m.as_dict(), "avg_gap": avg_gap(m, reference), "seconds": float(seconds)}
    row.update({k: float(v) for k, v in info.items() if isinstance(v, int | float)})
    return row, out


def summarise(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean, ``_std`` and ``_se`` over seeds of every metric (via ``eval.seed_summary``)."""
    return seed_summary(list(per_seed))


def metric_keys() -> tuple[str, ...]:
    """The per-method keys of metrics.json."""
    return (*METRIC_NAMES, "avg_gap", "seconds")


# --------------------------------------------------------------------------------------------
# the methods under test and their search spaces (the first value of each is the default)

_LR = (1e-3, 3e-4, 3e-3)
_STEPS = (100, 50, 150)
SPACES: dict[str, dict[str, tuple]] = {
    "finetune": {"learning_rate": _LR, "steps": _STEPS},
    "ga": {"learning_rate": (1e-4, 3e-5, 3e-4, 1e-3), "steps": (50, 25, 100)},
    "neggrad_plus": {"learning_rate": _LR, "steps": _STEPS, "alpha": (0.9, 0.7, 0.5, 0.97)},
    "random_labels": {"learning_rate": _LR, "steps": _STEPS},
    "l1_sparse": {"learning_rate": _LR, "steps": _STEPS, "l1": (1e-4, 3e-5, 3e-4)},
    "salun": {"learning_rate": _LR, "steps": _STEPS, "saliency": (0.5, 0.3, 0.1)},
    "ssd": {"ssd_alpha": (10.0, 3.0, 1.0, 30.0), "ssd_lambda": (1.0, 0.3, 3.0)},
    "npo": {
        "learning_rate": _LR,
        "steps": _STEPS,
        "alpha": (0.5, 0.7, 0.9),
        "beta": (0.5, 0.1, 1.0),
    },
    "mape": {
        "budget": (0.3, 0.1, 0.5),
        "lam": (1.0, 0.5, 2.0),
        "learning_rate": _LR,
        "steps": _STEPS,
        "alpha": (0.9, 0.7, 0.5, 0.97),
    },
}

_UNLEARN_FIELDS = {f.name for f in dataclasses.fields(UnlearnConfig)}
_MAPE_FIELDS = {f.name for f in dataclasses.fields(MAPEConfig)} - {"unlearn"}


def unlearn_config(params: Mapping[str, Any]) -> UnlearnConfig:
    """An :class:`~jaxtrust.unlearning.baselines.UnlearnConfig` from a parameter dict."""
    return UnlearnConfig(**{k: v for k, v in params.items() if k in _UNLEARN_FIELDS})


def mape_config(params: Mapping[str, Any]) -> MAPEConfig:
    """A :class:`~jaxtrust.unlearning.mape.MAPEConfig` from a flat parameter dict."""
    return MAPEConfig(
        **{k: v for k, v in params.items() if k in _MAPE_FIELDS},
        unlearn=unlearn_config(params),
    )


def baseline_spec(name: str, space: Mapping[str, Sequence[Any]] | None = None) -> MethodSpec:
    """The :class:`MethodSpec` of baseline ``name`` (:data:`jaxtrust.unlearning.baselines.
    METHODS`)."""

    def run(model, forget, retain, params, seed):
        out = unlearn(name, model, forget, retain, unlearn_config(params), seed=seed)
        return out.model, out.seconds, out.info

    return MethodSpec(name, SPACES[name] if space is None else space, run)


def mape_spec(
    name: str = "mape",
    *,
    space: Mapping[str, Sequence[Any]] | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> MethodSpec:
    """MAPE (or an ablation of it: ``fixed`` overrides parameters, e.g. ``greedy=False``)."""
    extra = dict(fixed or {})

    def run(model, forget, retain, params, seed):
        res = mape_unlearn(model, forget, retain, mape_config({**params, **extra}), seed=seed)
        info = {
            "mask_fraction": res.mask_fraction,
            "search_seconds": res.search_seconds,
            "heads": res.selection.num_heads,
            "filters": res.selection.num_filters,
            "swaps": res.selection.swaps,
            "objective_gain": res.selection.objective - res.selection.warm_objective,
        }
        return res.model, res.seconds, info

    return MethodSpec(name, SPACES["mape"] if space is None else space, run)


class RelearnResult(NamedTuple):
    """Attributes: UA_before, UA_after: 100 - accuracy on the held-out forget rows before and
    after the attack. recovered: UA_before - UA_after."""

    UA_before: float
    UA_after: float
    recovered: float


def relearn_attack(
    model: nnx.Module,
    relearn: Mapping[str, np.ndarray],
    held_out: Mapping[str, np.ndarray],
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
) -> RelearnResult:
    """Fine-tune on a few forget rows and measure how much of the rest comes back.

    The relearning attack of the unlearning literature (e.g. Hu et al., *Jogging the Memory
    of Unlearned LLMs*, ICLR 2025; Lynch et al. 2024): if unlearning only hid the forget data,
    brief fine-tuning on ``relearn`` (a part of D_f) restores accuracy on ``held_out`` (the
    rest of D_f) beyond what Retrain regains under the same attack.

    Returns:
      A :class:`RelearnResult`.
    """
    before = predict_logits(model, held_out["x"])
    tx = optax.adam(learning_rate)
    out = finetune(
        model,
        {"x": relearn["x"], "y": relearn["y"]},
        tx,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        loss_fn=classification_loss,
        step_key=("unlearning.relearn", float(learning_rate)),
    ).model
    after = predict_logits(out, held_out["x"])
    ua_b = 100.0 - accuracy(before, held_out["y"])
    ua_a = 100.0 - accuracy(after, held_out["y"])
    return RelearnResult(ua_b, ua_a, ua_b - ua_a)


def train_shadows(
    setting: Setting,
    num_models: int,
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    mesh: Any = None,
) -> tuple[ShadowModels, float]:
    """LiRA shadow models on random halves of the training rows (cached), trained as one
    vmapped batch with the original's recipe for the same number of *epochs* (half the steps).

    Returns:
      ``(shadows, training seconds when built)``.
    """
    data = load_data(setting.dataset)
    init_fn = setting.model.init_fn(data)
    masks = balanced_in_masks(num_models, data.num_train, seed=seed)
    recipe = dataclasses.replace(setting.train, steps=max(1, setting.train.steps // 2))
    payload = {**_payload(setting, seed), "shadows": num_models, "recipe_steps": recipe.steps}

    def build():
        shadows = train_shadow_models(
            lambda key: init_fn(int(jax.random.randint(key, (), 0, 2**30))),
            data.split("train"),
            masks,
            loss_fn=classification_loss,
            tx=recipe.tx(),
            steps=recipe.steps,
            batch_size=recipe.batch_size,
            seed=seed,
            mesh=mesh,
            step_key=("unlearning.shadows", dataclasses.astuple(recipe)),
        )
        return shadows, {"train_seconds": shadows.seconds}

    def write(value: ShadowModels, folder: Path):
        save_pytree(folder / "params", {"params": value.params, "rest": value.rest})
        np.save(folder / "in_masks.npy", value.in_masks)
        np.save(folder / "losses.npy", value.losses)

    def read(folder: Path) -> ShadowModels:
        graphdef, params, rest = nnx.split(nnx.eval_shape(lambda: init_fn(0)), nnx.Param, ...)
        stack = lambda t: jax.tree.map(  # noqa: E731
            lambda a: jax.ShapeDtypeStruct((num_models, *a.shape), a.dtype), t
        )
        tree = load_pytree(folder / "params", {"params": stack(params), "rest": stack(rest)})
        tree = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), tree)
        in_masks = np.load(folder / "in_masks.npy", allow_pickle=False)
        if not np.array_equal(in_masks, masks):
            raise ValueError("cached shadow masks differ from the requested ones")
        losses = np.load(folder / "losses.npy", allow_pickle=False)
        return ShadowModels(graphdef, tree["params"], tree["rest"], in_masks, losses, 0.0)

    entry = cached_entry(cache_dir, cache_key("unlearn-shadows", payload), build, write, read)
    return entry.value, float(entry.info["train_seconds"])
