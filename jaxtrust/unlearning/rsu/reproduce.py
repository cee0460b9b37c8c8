"""``jaxtrust reproduce rsu``: risk-ranked sequential unlearning (reconstructed) vs one shot.

Test bed as in ``reproduce mape`` (:mod:`jaxtrust.unlearning.protocol`; the trained models are
shared through the cache). LiRA shadow models (``num_shadows``, one vmapped batch, on random
halves of the training rows) give each forget sample a privacy risk against the original model;
RSU cuts the forget set into ``num_stages`` risk-ordered stages and unlearns them in sequence
with NegGrad+. Compared, each tuned with the same budget on the tuning trial's validation
split: every baseline, MAPE, ``one_shot`` (NegGrad+ on the whole set at once: the
``neggrad_plus`` entry), ``rsu`` (LiRA ranking, low-to-high), and ``rum`` (RUM's meta-algorithm:
Feldman-Zhang memorization ranking from the same shadows, low-to-high). With RSU's tuned
parameters, ``orders`` compares low-to-high, high-to-low and random stages, and the ranking
ablation swaps LiRA for the loss and for memorization. A difficulty study reports, after one-shot
unlearning, the UA of the low / mid / high risk thirds (does higher risk mean easier to forget?).

Claim tested per seed: RSU's average gap to Retrain is below one-shot NegGrad+'s.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np

from jaxtrust.eval.stats import claim_count
from jaxtrust.experiments.registry import ExperimentResult, RunContext, Table, pyplot, register
from jaxtrust.privacy.mia.lira import lira_evaluate, stacked_logits
from jaxtrust.privacy.mia.scores import predict_logits
from jaxtrust.unlearning.metrics import METRIC_NAMES, accuracy
from jaxtrust.unlearning.protocol import (
    MethodSpec,
    Setting,
    baseline_spec,
    evaluate_method,
    make_trial,
    mape_spec,
    summarise,
    train_shadows,
    tune,
    unlearn_config,
)
from jaxtrust.unlearning.rsu.method import RSUConfig, seq_unlearn
from jaxtrust.unlearning.rsu.ranking import (
    ORDERS,
    lira_risk,
    loss_risk,
    memorization_risk,
    split_by_risk,
)

BASELINES = ("finetune", "ga", "neggrad_plus", "random_labels", "l1_sparse", "salun", "ssd")
KEYS = (*METRIC_NAMES, "avg_gap", "seconds")
RSU_SPACE = {
    "learning_rate": (1e-3, 3e-4, 3e-3),
    "steps": (50, 25, 100),  # per stage
    "alpha": (0.9, 0.7, 0.5, 0.97),
    "num_stages": (3, 2, 5),
}


@dataclasses.dataclass(frozen=True)
class RSUExperimentConfig:
    setting: Setting = Setting()
    num_seeds: int = 3
    tuning_budget: int = 6
    num_shadows: int = 8

    def __post_init__(self):
        if self.num_seeds < 1 or self.tuning_budget < 1:
            raise ValueError("num_seeds and tuning_budget must be >= 1")
        if self.num_shadows < 4 or self.num_shadows % 2:
            raise ValueError(f"num_shadows must be even and >= 4, got {self.num_shadows}")


PRESETS = {
    "quick": RSUExperimentConfig(),
    "full": RSUExperimentConfig(num_seeds=5, tuning_budget=10, num_shadows=16),
}


def _rsu_spec(name: str, risks: dict, ranking: str, order: str | None = None) -> MethodSpec:
    """Sequential NegGrad+ on risk-ordered stages; ``risks[(seed, ranking)]`` per trial."""

    def run(model, forget, retain, params, seed):
        cfg = RSUConfig(
            num_stages=int(params.get("num_stages", 3)),
            order=order or params.get("order", "low_to_high"),
            unlearn=unlearn_config(params),
        )
        out = seq_unlearn(model, forget, retain, risks[(seed, ranking)], cfg, seed=seed)
        return out.model, out.seconds, {}

    return MethodSpec(name, RSU_SPACE, run)


@register("rsu", RSUExperimentConfig, PRESETS)
def run(config: RSUExperimentConfig, ctx: RunContext) -> ExperimentResult:
    """RSU: LiRA-ranked sequential unlearning vs one-shot and baselines on MNIST-1D."""

    plt = pyplot()

    stages: dict[str, float] = {}
    clock = time.perf_counter()
    shadows, shadow_seconds = train_shadows(config.setting, config.num_shadows, seed=ctx.seed)
    stages["shadows"] = time.perf_counter() - clock
    data = make_trial(config.setting, ctx.seed + 1000).data
    train = data.split("train")
    lira_quality = lira_evaluate(shadows, train["x"], train["y"]).summary()
    shadow_logits = stacked_logits(shadows, train["x"])
    ctx.log(f"shadows: {shadow_seconds:.0f} s to train, leave-one-out LiRA {lira_quality}")
    mem_all = memorization_risk(train["y"], shadow_logits, shadows.in_masks)

    risks: dict[tuple[int, str], np.ndarray] = {}

    def rank(trial):
        idx = trial.split.forget
        logits = predict_logits(trial.original, train["x"][idx])
        y = train["y"][idx]
        risks[(trial.seed, "lira")] = lira_risk(
            logits, y, shadow_logits[:, idx], shadows.in_masks[:, idx]
        )
        risks[(trial.seed, "loss")] = loss_risk(logits, y)
        risks[(trial.seed, "memorization")] = mem_all[idx]

    specs = {name: baseline_spec(name) for name in BASELINES}
    specs["mape"] = mape_spec()
    specs["rsu"] = _rsu_spec("rsu", risks, "lira", "low_to_high")
    specs["rum"] = _rsu_spec("rum", risks, "memorization", "low_to_high")
    clock = time.perf_counter()
    tuning = make_trial(config.setting, ctx.seed + 1000)
    rank(tuning)
    ref_val = tuning.metrics(tuning.retrain, "val")
    tuned = {
        n: tune(s, tuning, ref_val, budget=config.tuning_budget, seed=ctx.seed + i)
        for i, (n, s) in enumerate(specs.items())
    }
    params = {n: t.best for n, t in tuned.items()}
    params["one_shot"] = params["neggrad_plus"]
    ctx.log(f"tuned: {params}")
    stages["tuning"] = time.perf_counter() - clock

    variants = {f"rsu_{o}": _rsu_spec(f"rsu_{o}", risks, "lira", o) for o in ORDERS}
    rankings = {
        f"rsu_rank_{r}": _rsu_spec(f"rsu_rank_{r}", risks, r, "low_to_high")
        for r in ("lira", "loss", "memorization")
    }
    seeds = [ctx.seed + i for i in range(config.num_seeds)]
    per_seed: list[dict[str, Any]] = []
    for seed in seeds:
        clock = time.perf_counter()
        trial = make_trial(config.setting, seed)
        rank(trial)
        ref = trial.metrics(trial.retrain, "test")
        row: dict[str, Any] = {
            "retrain": {**ref.as_dict(), "avg_gap": 0.0, "seconds": trial.retrain_seconds}
        }
        models = {}
        for name, spec in specs.items():
            row[name], models[name] = evaluate_method(spec, params[name], trial, ref)
        row["one_shot"] = row["neggrad_plus"]
        for name, spec in {**variants, **rankings}.items():
            row[name], _ = evaluate_method(spec, params["rsu"], trial, ref)
        # difficulty study: UA per LiRA-risk third after one-shot unlearning, and under Retrain
        thirds = split_by_risk(risks[(seed, "lira")], 3, "low_to_high")
        f = trial.forget
        row["tiers"] = {}
        for label, model in (
            ("one_shot", models["neggrad_plus"]),
            ("retrain", trial.retrain),
            ("rsu", models["rsu"]),
        ):
            logits = predict_logits(model, f["x"])
            row["tiers"][label] = {
                t: 100.0 - accuracy(logits[p], f["y"][p])
                for t, p in zip(("low", "mid", "high"), thirds, strict=True)
            }
        rho = np.corrcoef(
            np.argsort(np.argsort(risks[(seed, "lira")])),
            np.argsort(np.argsort(risks[(seed, "memorization")])),
        )[0, 1]
        row["rank_correlation_lira_memorization"] = float(rho)
        stages[f"seed_{seed}"] = time.perf_counter() - clock
        ctx.log(
            f"seed {seed}: "
            + ", ".join(
                f"{n} {row[n]['avg_gap']:.2f}" for n in ("one_shot", "rsu", "rum", *variants)
            )
        )
        per_seed.append(row)

    names = ["retrain", *BASELINES, "mape", "one_shot", "rsu", "rum"]
    methods = {n: summarise([r[n] for r in per_seed]) for n in names}
    orders = {n: summarise([r[n] for r in per_seed]) for n in (*variants, "one_shot")}
    abl = {n: summarise([r[n] for r in per_seed]) for n in rankings}
    tiers = {
        m: {t: float(np.mean([r["tiers"][m][t] for r in per_seed])) for t in ("low", "mid", "high")}
        for m in per_seed[0]["tiers"]
    }
    claims = {
        "rsu_gap_below_one_shot": claim_count(
            [r["rsu"]["avg_gap"] < r["one_shot"]["avg_gap"] for r in per_seed]
        ),
        "rum_gap_below_one_shot": claim_count(
            [r["rum"]["avg_gap"] < r["one_shot"]["avg_gap"] for r in per_seed]
        ),
        "low_to_high_below_high_to_low": claim_count(
            [r["rsu_low_to_high"]["avg_gap"] < r["rsu_high_to_low"]["avg_gap"] for r in per_seed]
        ),
        "low_to_high_below_random": claim_count(
            [r["rsu_low_to_high"]["avg_gap"] < r["rsu_random"]["avg_gap"] for r in per_seed]
        ),
        "high_risk_tier_forgotten_more_one_shot": claim_count(
            [r["tiers"]["one_shot"]["high"] > r["tiers"]["one_shot"]["low"] for r in per_seed]
        ),
    }

    def table(title, summary):
        return Table(
            title,
            ["method", *[f"{k} (±std)" for k in KEYS]],
            [[n, *[f"{s[k]:.2f} ± {s[k + '_std']:.2f}" for k in KEYS]] for n, s in summary.items()],
        )

    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    for j, m in enumerate(tiers):
        ax.bar(
            np.arange(3) + 0.27 * j, [tiers[m][t] for t in ("low", "mid", "high")], 0.27, label=m
        )
    ax.set_xticks(np.arange(3) + 0.27, ["low risk", "mid", "high risk"])
    ax.set_ylabel("UA on the tier (%)")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    ctx.save_figure(fig, "tiers")
    tables = [
        table(
            f"random {config.setting.forget_fraction:.0%} forgetting, test split, seeds {seeds}",
            methods,
        ),
        table("RSU orders (RSU's tuned parameters) and one shot", orders),
        table("RSU rankings (low to high)", abl),
        Table(
            "UA per LiRA-risk third of D_f (mean over seeds)",
            ["model", "low", "mid", "high"],
            [[m, *[f"{tiers[m][t]:.2f}" for t in ("low", "mid", "high")]] for m in tiers],
        ),
        Table(
            "claims per seed",
            ["claim", "holds", "seeds"],
            [[k, v["holds"], v["seeds"]] for k, v in claims.items()],
        ),
        Table(
            "tuned hyper-parameters (random search, same budget each)",
            ["method", "chosen"],
            [[n, str(p)] for n, p in params.items()],
        ),
    ]
    metrics = {
        "methods": methods,
        "orders": orders,
        "ablations": abl,
        "tiers": tiers,
        "lira": {
            **lira_quality,
            "num_shadows": config.num_shadows,
            "shadow_train_seconds": shadow_seconds,
            "devices": len(jax.devices()),
        },
        "claims": claims,
        "tuning": {
            "configurations_per_method": config.tuning_budget,
            "tuning_seed": ctx.seed + 1000,
            "spaces": {n: {k: list(v) for k, v in s.space.items()} for n, s in specs.items()},
            "chosen": params,
            "trials": {n: t.trials for n, t in tuned.items()},
        },
        "seeds": seeds,
        "per_seed": per_seed,
        "stage_seconds": stages,
    }
    c = claims["rsu_gap_below_one_shot"]
    summary = (
        "Reconstructed RSU (the paper is withdrawn; only its abstract is public). Average gap to "
        f"Retrain: RSU {methods['rsu']['avg_gap']:.2f}, one-shot NegGrad+ "
        f"{methods['one_shot']['avg_gap']:.2f}, RUM {methods['rum']['avg_gap']:.2f}; RSU below "
        f"one shot on {c['holds']}/{c['seeds']} seeds. LiRA ({config.num_shadows} shadows, "
        f"leave-one-out): AUC {lira_quality['auc']:.3f}, TPR@1%FPR "
        f"{lira_quality['tpr_at_1pct']:.3f}."
    )
    return ExperimentResult(metrics=metrics, tables=tables, summary=summary)
