"""``jaxtrust reproduce ltsv``: LTSV against influence baselines on planted corruptions.

Test bed: the in-house TSFM (:mod:`jaxtrust.zoo.forecaster`, pretrained on packaged real series
plus generated ones, the valued series left out) fine-tuned on overlapping windows of a real
hourly series (Seattle temperatures 2010, ``vega_datasets``; a generated seasonal series when
that package is absent). Per seed: a training segment cut into ``num_train`` windows (stride
``stride``), a later context segment (LTSV's context set, also the objective of every
gradient-based valuer) and a final test segment (removal curves). Corruptions (spike, level
shift, swapped segment, noise burst) are planted in the *series* of the training segment so
that about ``corrupt_fraction`` of the windows overlap one; those windows are the positives.

Valuers: LTSV with and without temporal block aggregation, exact fine-tuning LOO (on a subset of
``loo_subset`` windows), TracIn, influence functions (CG, LiSSA), KNN-Shapley, Data-OOB, random.
Each valuer's one hyperparameter is chosen from the same number of candidates on a separate
tuning seed (detection AUROC there); numbers are reported on the other seeds.

Metrics per valuer: detection AUROC (low value = corrupted), Spearman correlation with LOO on
the subset, wall time; remove-high / remove-low curves of the test loss after fine-tuning.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from jaxtrust.data.timeseries import (
    load_series,
    real_series_available,
    sliding_windows,
    synthetic_series,
)
from jaxtrust.eval.stats import claim_count
from jaxtrust.experiments.registry import (
    ExperimentResult,
    RunContext,
    Table,
    check_config,
    pyplot,
    register,
)
from jaxtrust.models.tsfm import TSFMConfig
from jaxtrust.valuation import (
    data_oob_scores,
    influence_scores,
    knn_shapley_scores,
    loo_scores,
    random_scores,
    removal_curve,
    tracin_scores,
    tsfm_objective,
    window_features,
)
from jaxtrust.valuation.ltsv.method import aggregate_blocks, ltsv_scores
from jaxtrust.zoo.forecaster import PretrainConfig, evaluate_forecaster, pretrained_forecaster

VALUERS = (
    "ltsv",
    "ltsv_no_aggregation",
    "loo",
    "tracin",
    "influence_cg",
    "influence_lissa",
    "knn_shapley",
    "data_oob",
    "random",
)
CURVE_VALUERS = ("ltsv", "tracin", "influence_cg", "knn_shapley", "data_oob", "random")
CORRUPTIONS = ("spike", "level_shift", "swap", "noise_burst")


@dataclasses.dataclass(frozen=True)
class LTSVConfig:
    pretrain: PretrainConfig = PretrainConfig.tiny(steps=800)
    series: str = "seattle_temps"
    num_train: int = 200
    num_context: int = 48
    num_test: int = 48
    stride: int = 8
    corrupt_fraction: float = 0.1
    corrupt_len: int = 8
    loo_subset: int = 40
    finetune_steps: int = 10
    finetune_lr: float = 1e-3
    ltsv_lrs: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    dampings: tuple[float, ...] = (1e-2, 1e-1, 1.0)
    knn_ks: tuple[int, ...] = (3, 10, 30)
    cg_iterations: int = 30
    hessian_windows: int = 64
    curve_fractions: tuple[float, ...] = (0.0, 0.1, 0.2)
    num_seeds: int = 3

    def __post_init__(self):
        check_config(
            self,
            positive=(
                "num_train",
                "num_context",
                "num_test",
                "stride",
                "corrupt_len",
                "loo_subset",
                "finetune_steps",
                "cg_iterations",
                "hessian_windows",
                "num_seeds",
            ),
            fractions=("corrupt_fraction",),
        )
        if self.loo_subset > self.num_train:
            raise ValueError(f"loo_subset ({self.loo_subset}) must be <= num_train")
        if not (len(self.ltsv_lrs) == len(self.dampings) == len(self.knn_ks)):
            raise ValueError("ltsv_lrs, dampings and knn_ks must offer the same number of choices")


PRESETS = {
    "smoke": LTSVConfig(
        pretrain=PretrainConfig.tiny(
            steps=20, synthetic_count=4, model=TSFMConfig.tiny(context_len=32)
        ),
        num_train=24,
        num_context=8,
        num_test=8,
        loo_subset=6,
        finetune_steps=2,
        ltsv_lrs=(1e-2,),
        dampings=(1e-1,),
        knn_ks=(3,),
        cg_iterations=5,
        hessian_windows=8,
        curve_fractions=(0.0, 0.2),
        num_seeds=1,
    ),
    "quick": LTSVConfig(),
    "full": LTSVConfig(
        pretrain=PretrainConfig.tiny(steps=3000),
        num_train=400,
        curve_fractions=(0.0, 0.1, 0.2, 0.3),
        num_seeds=5,
    ),
}


def _series(config: LTSVConfig) -> np.ndarray:
    if real_series_available(config.series):
        return load_series(config.series)
    return synthetic_series("seasonal", 12_000, seed=123)


def _corrupt(x: np.ndarray, starts: np.ndarray, length: int, rng) -> tuple[np.ndarray, list]:
    x = x.copy()
    sd = x.std()
    kinds = []
    for j, s in enumerate(starts):
        kind = CORRUPTIONS[j % len(CORRUPTIONS)]
        seg = slice(s, s + length)
        if kind == "spike":
            x[s + length // 2] += rng.choice([-1, 1]) * 6 * sd
        elif kind == "level_shift":
            x[seg] += rng.choice([-1, 1]) * 2 * sd
        elif kind == "swap":
            x[seg] = x[seg][::-1].copy() + rng.normal(0, sd)
        else:
            x[seg] += rng.normal(0, 1.5 * sd, size=length)
        kinds.append(kind)
    return x, kinds


def _trial(
    config: LTSVConfig, series: np.ndarray, length: int, seed: int, horizon: int
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n, s = config.num_train, config.stride
    train_len = (n - 1) * s + length
    # Held-out windows step by one horizon: their forecast targets do not overlap.
    held = (config.num_context + config.num_test - 1) * horizon + length
    offset = int(rng.integers(0, max(1, len(series) - train_len - held)))
    seg = series[offset : offset + train_len]
    per_event = (length + config.corrupt_len - 1) // s + 1
    events = max(1, int(round(config.corrupt_fraction * n / per_event)))
    starts = np.sort(rng.choice(np.arange(0, train_len - config.corrupt_len), events, False))
    seg, kinds = _corrupt(seg, starts, config.corrupt_len, rng)
    win_starts = np.arange(n) * s
    labels = np.zeros(n, bool)
    for c in starts:
        labels |= (win_starts < c + config.corrupt_len) & (win_starts + length > c)
    tail = series[offset + train_len : offset + train_len + held]
    rest = sliding_windows(tail, length, stride=horizon)
    return {
        "train": sliding_windows(seg, length, stride=s).astype(np.float32),
        "starts": win_starts,
        "series_len": train_len,
        "labels": labels,
        "kinds": kinds,
        "context": rest[: config.num_context].astype(np.float32),
        "test": rest[config.num_context : config.num_context + config.num_test].astype(np.float32),
        "loo_idx": np.sort(rng.choice(n, config.loo_subset, replace=False)),
    }


def _auroc(labels: np.ndarray, values: np.ndarray) -> float:
    if labels.all() or not labels.any() or not np.isfinite(values).all():
        return float("nan")
    return float(roc_auc_score(labels, -np.asarray(values)))


_SGD: dict[float, optax.GradientTransformation] = {}


def _sgd(lr: float) -> optax.GradientTransformation:
    # One transformation object per step size: compiled LTSV programs are memoised on it, so a
    # fresh optax.sgd per call would recompile (and bill the compile to LTSV's wall time).
    return _SGD.setdefault(lr, optax.sgd(lr))


def _value(name: str, choice: int, objective, trial, config, horizon) -> np.ndarray:
    train, ctx = jnp.asarray(trial["train"]), jnp.asarray(trial["context"])
    if name in ("ltsv", "ltsv_no_aggregation"):
        v = np.asarray(
            ltsv_scores(objective, train, ctx, tx=_sgd(config.ltsv_lrs[choice]), shard=False)
        )
        if name == "ltsv":
            v = aggregate_blocks(v, trial["starts"], train.shape[1], trial["series_len"]).sample
        return v
    if name == "tracin":
        return np.asarray(tracin_scores(objective, train, ctx))
    if name.startswith("influence"):
        return np.asarray(
            influence_scores(
                objective,
                train,
                ctx,
                method=name.split("_")[1],
                damping=config.dampings[choice],
                iterations=config.cg_iterations,
                hessian_windows=train[: config.hessian_windows],
            )
        )
    if name == "knn_shapley":
        x, y = window_features(trial["train"], horizon)
        xt, yt = window_features(trial["context"], horizon)
        return knn_shapley_scores(x, y, xt, yt, k=config.knn_ks[choice])
    if name == "data_oob":
        x, y = window_features(trial["train"], horizon)
        return data_oob_scores(x, y, num_models=50, seed=choice)
    if name == "random":
        return random_scores(train.shape[0], seed=choice)
    raise KeyError(name)


def _choices(name: str, config: LTSVConfig) -> int:
    return len(config.ltsv_lrs) if name not in ("tracin", "loo") else 1


@register(
    "ltsv",
    description="LTSV (one-step in-context fine-tuning) vs influence baselines on a tiny TSFM",
    config_cls=LTSVConfig,
    presets=PRESETS,
)
def run(config: LTSVConfig, ctx: RunContext) -> ExperimentResult:
    """LTSV vs LOO, TracIn, CG/LiSSA influence, KNN-Shapley, Data-OOB on planted corruptions."""
    stages: dict[str, float] = {}
    clock = time.perf_counter()
    cache_dir = os.environ.get("JAXTRUST_CACHE")
    fc = pretrained_forecaster(config.pretrain, 0, cache_dir=cache_dir)
    stages["pretrain_or_load"] = time.perf_counter() - clock
    ctx.log(f"forecaster ready ({'cache' if fc.from_cache else 'trained'}): {fc.path}")
    clock = time.perf_counter()
    fmetrics = evaluate_forecaster(fc.model, fc.config)
    stages["forecaster_eval"] = time.perf_counter() - clock
    for name, mase in fmetrics["mase"].items():
        ctx.log(
            f"forecaster {name}: MASE {mase:.3f} (seasonal-naive "
            f"{fmetrics['seasonal_naive_mase'][name]:.3f}), WQL {fmetrics['wql'][name]:.4f} "
            f"(seasonal-naive {fmetrics['seasonal_naive_wql'][name]:.4f})"
        )
    mc = config.pretrain.model
    length, horizon = mc.context_len + mc.output_patch_len, mc.output_patch_len
    objective = tsfm_objective(fc.model)
    series = _series(config)
    tx_ft = optax.adam(config.finetune_lr)

    # Tuning: one candidate per index on a separate seed, chosen by detection AUROC there.
    clock = time.perf_counter()
    tune_trial = _trial(config, series, length, ctx.seed + 1000, horizon)
    chosen: dict[str, int] = {}
    tuning: dict[str, list[float]] = {}
    for name in VALUERS:
        if name == "loo":
            continue
        aucs = [
            _auroc(tune_trial["labels"], _value(name, i, objective, tune_trial, config, horizon))
            for i in range(_choices(name, config))
        ]
        tuning[name] = aucs
        chosen[name] = int(np.nanargmax(aucs)) if np.isfinite(aucs).any() else 0
    stages["tuning"] = time.perf_counter() - clock
    ctx.log(f"tuned: {chosen}")

    per_seed = []
    seeds = [ctx.seed + i for i in range(config.num_seeds)]
    for seed in seeds:
        trial = _trial(config, series, length, seed, horizon)
        row: dict[str, Any] = {"num_positive": int(trial["labels"].sum()), "kinds": trial["kinds"]}
        values: dict[str, np.ndarray] = {}
        for name in VALUERS:
            start = time.perf_counter()
            if name == "loo":
                v = np.asarray(
                    loo_scores(
                        objective,
                        jnp.asarray(trial["train"]),
                        jnp.asarray(trial["context"]),
                        trial["loo_idx"],
                        tx=tx_ft,
                        steps=config.finetune_steps,
                    )
                )
            else:
                v = _value(name, chosen[name], objective, trial, config, horizon)
            values[name] = v
            row[name] = {"seconds": time.perf_counter() - start}
        sub = trial["loo_idx"]
        for name in VALUERS:
            v = values[name]
            row[name]["auroc"] = (
                _auroc(trial["labels"][sub], v) if name == "loo" else _auroc(trial["labels"], v)
            )
            vs = v if name == "loo" else v[sub]
            finite = np.isfinite(vs).all()
            row[name]["spearman_loo"] = (
                float(spearmanr(vs, values["loo"]).statistic) if finite else float("nan")
            )
        clock = time.perf_counter()
        row["curves"] = {
            name: removal_curve(
                objective,
                jnp.asarray(trial["train"]),
                values[name],
                jnp.asarray(trial["test"]),
                config.curve_fractions,
                tx=tx_ft,
                steps=config.finetune_steps,
            )._asdict()
            for name in CURVE_VALUERS
        }
        stages[f"curves_{seed}"] = time.perf_counter() - clock
        ctx.log(
            f"seed {seed}: "
            + ", ".join(
                f"{n} auc {row[n]['auroc']:.2f} rho {row[n]['spearman_loo']:.2f}" for n in VALUERS
            )
        )
        per_seed.append(row)
        ctx.log(f"seed {seed} done; stage seconds so far: {stages}")

    def agg(name, key):
        vals = np.array([r[name][key] for r in per_seed], float)
        return float(np.nanmean(vals)), float(np.nanstd(vals))

    valuers = {}
    for name in VALUERS:
        auc, auc_std = agg(name, "auroc")
        rho, rho_std = agg(name, "spearman_loo")
        valuers[name] = {
            "auroc": auc,
            "auroc_std": auc_std,
            "spearman_loo": rho,
            "spearman_loo_std": rho_std,
            "seconds": agg(name, "seconds")[0],
        }
    curves = {
        name: {
            "fractions": list(config.curve_fractions),
            "remove_high": np.mean(
                [r["curves"][name]["remove_high"] for r in per_seed], 0
            ).tolist(),
            "remove_low": np.mean([r["curves"][name]["remove_low"] for r in per_seed], 0).tolist(),
        }
        for name in CURVE_VALUERS
    }
    claims = {
        "aggregation_improves_auroc": claim_count(
            [r["ltsv"]["auroc"] > r["ltsv_no_aggregation"]["auroc"] for r in per_seed]
        ),
        "ltsv_spearman_within_0.1_of_influence_cg": claim_count(
            [
                r["ltsv_no_aggregation"]["spearman_loo"] >= r["influence_cg"]["spearman_loo"] - 0.1
                for r in per_seed
            ]
        ),
        "ltsv_under_half_the_time_of_influence_cg": claim_count(
            [
                r["ltsv_no_aggregation"]["seconds"] < 0.5 * r["influence_cg"]["seconds"]
                for r in per_seed
            ]
        ),
        "ltsv_auroc_above_random": claim_count(
            [r["ltsv"]["auroc"] > r["random"]["auroc"] for r in per_seed]
        ),
    }

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, key in zip(axes, ("remove_high", "remove_low"), strict=True):
        for name in CURVE_VALUERS:
            ax.plot(config.curve_fractions, curves[name][key], marker="o", label=name)
        ax.set_title(key.replace("_", " ") + "-valued windows")
        ax.set_xlabel("fraction removed")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test loss after fine-tuning")
    axes[1].legend(fontsize=7)
    ctx.save_figure(fig, "removal_curves")
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name in VALUERS:
        ax.scatter(valuers[name]["seconds"], valuers[name]["spearman_loo"], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per seed")
    ax.set_ylabel("Spearman with LOO")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    ctx.save_figure(fig, "fidelity_vs_cost")

    forecaster = {
        "mase": fmetrics["mase"],
        "seasonal_naive_mase": fmetrics["seasonal_naive_mase"],
        "wql": fmetrics["wql"],
        "seasonal_naive_wql": fmetrics["seasonal_naive_wql"],
        "pretrain": {k: v for k, v in fc.info.items() if k != "losses_every_10"},
    }
    tables = [
        Table(
            f"valuers on {config.series} ({config.num_train} windows, seeds {seeds}; AUROC over"
            " all windows, Spearman with LOO on the subset)",
            ["valuer", "AUROC", "Spearman vs LOO", "seconds"],
            [
                [
                    n,
                    f"{v['auroc']:.3f} ± {v['auroc_std']:.3f}",
                    f"{v['spearman_loo']:.3f} ± {v['spearman_loo_std']:.3f}",
                    f"{v['seconds']:.2f}",
                ]
                for n, v in valuers.items()
            ],
        ),
        Table(
            "forecaster on held-out tails (MASE / WQL; seasonal-naive alongside)",
            ["series", "MASE", "seasonal-naive MASE", "WQL", "seasonal-naive WQL"],
            [
                [
                    s,
                    f"{fmetrics['mase'][s]:.3f}",
                    f"{fmetrics['seasonal_naive_mase'][s]:.3f}",
                    f"{fmetrics['wql'][s]:.4f}",
                    f"{fmetrics['seasonal_naive_wql'][s]:.4f}",
                ]
                for s in fmetrics["mase"]
            ],
        ),
        Table(
            "claims per seed (holds / seeds)",
            ["claim", "holds", "seeds"],
            [[k, v["holds"], v["seeds"]] for k, v in claims.items()],
        ),
    ]
    metrics = {
        "valuers": valuers,
        "curves": curves,
        "forecaster": forecaster,
        "claims": claims,
        "tuning": {"chosen": chosen, "auroc_per_candidate": tuning},
        "seeds": seeds,
        "per_seed": per_seed,
        "stage_seconds": stages,
    }
    summary = (
        f"LTSV AUROC {valuers['ltsv']['auroc']:.3f} (no aggregation "
        f"{valuers['ltsv_no_aggregation']['auroc']:.3f}), influence CG "
        f"{valuers['influence_cg']['auroc']:.3f}, TracIn {valuers['tracin']['auroc']:.3f}, "
        f"random {valuers['random']['auroc']:.3f}; Spearman with LOO: LTSV "
        f"{valuers['ltsv_no_aggregation']['spearman_loo']:.3f}, CG "
        f"{valuers['influence_cg']['spearman_loo']:.3f}. Seconds per seed: LTSV "
        f"{valuers['ltsv_no_aggregation']['seconds']:.2f}, CG "
        f"{valuers['influence_cg']['seconds']:.2f}, LOO {valuers['loo']['seconds']:.2f} (the LOO"
        f" subset only). The forecaster is ~10^3x smaller than the paper's Time-MoE-50M."
    )
    return ExperimentResult(metrics=metrics, tables=tables, summary=summary)
