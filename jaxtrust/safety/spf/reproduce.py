"""``jaxtrust reproduce spf``: safety-preserving fine-tuning against fine-tuning attacks.

The zoo's aligned model is fine-tuned by each attack with each method from the same start,
with the same data order and recipe (AdamW, linear warmup then cosine decay):

* attacks (:data:`jaxtrust.data.FINETUNE_ATTACKS`): ``benign`` (the fine-tuning task only),
  ``poison_5`` / ``poison_10`` / ``poison_20`` (that share of forbidden requests with compliant
  answers; the share of *supervised tokens* is reported too), ``harmful`` and ``deep`` (benign,
  ``deep_steps`` steps);
* methods: ``sft`` (plain AdamW), ``spf`` / ``spf_pcgrad`` / ``spf_null`` (three readings of
  SPF's rule, basis from ``safety_samples`` refusal examples, one by default, re-estimated
  every ``refresh_every`` steps at the current parameters), ``random_subspace`` (the same rule
  on a random rank-k subspace: the control), ``pcgrad_full`` (full-gradient PCGrad against the
  same safety gradient), ``safe_lora`` (Safe LoRA's post-hoc projection of the SFT delta) and
  ``oneshot`` (SFT, then one-shot recovery with ``oneshot_select``).

Protocol (the fair-test rules): each trained method's learning rate is chosen from
``lr_grid`` by ``utility + refusal`` on a validation split (other prompts and task items,
another seed) after ``tune_attack``; results are reported on test sets of ``eval_examples``
items per split (four forbidden and four benign splits: training / held-out templates x
training / held-out topics) with standard errors; seeds are ``ctx.seed + i``. The sample curve
measures SPF's one-sample claim (``curve_samples`` x ``curve_ranks`` x ``curve_placements``);
the geometry tables measure the paper's three insights on the first seed. ``world="v2"``
(:class:`~jaxtrust.data.safety_world_v2.SafetyWorldV2`, a 4-layer 256-wide model) is the test
bed; ``world="v1"`` is the small version-1 world of the demo.

Reference: Zhang et al., *Understanding and Preserving Safety in Fine-Tuned LLMs*,
arXiv:2601.10141 (2026).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxtrust.data import FINETUNE_ATTACKS
from jaxtrust.eval import mean_se
from jaxtrust.experiments.registry import (
    ExperimentResult,
    RunContext,
    Table,
    check_config,
    register,
)
from jaxtrust.safety.spf._reproduce_bench import (
    METHODS,
    POST_HOC,
    attack_pool,
    choose_learning_rates,
    geometry_tables,
    recovery_inputs,
    run_method,
    sample_curve,
)
from jaxtrust.safety.spf._reproduce_report import claims_of, main_table, plots, score_of
from jaxtrust.zoo import ZooConfig, aligned_model, base_model
from jaxtrust.zoo.safety_eval import safety_batch_of, summarize

ATTACKS = tuple(FINETUNE_ATTACKS)
KEYS = ("refusal_rate", "utility", "over_refusal", "refusal_heldout_both")


@dataclasses.dataclass(frozen=True)
class SPFExperimentConfig:
    """One SPF reproduction (big_vision style: every knob in one frozen object)."""

    zoo: ZooConfig = ZooConfig.v2()
    num_seeds: int = 3
    attacks: tuple[str, ...] = ("benign", "poison_10")
    methods: tuple[str, ...] = (
        "sft",
        "spf",
        "random_subspace",
        "pcgrad_full",
        "safe_lora",
        "oneshot",
    )
    train_examples: int = 512
    steps: int = 80
    deep_steps: int = 320
    batch_size: int = 16
    warmup_steps: int = 8
    # "warmup_cosine" (the protocol's small-step regime) or "constant" (the demo's long run at
    # one rate, so the drift of plain fine-tuning shows within a few hundred steps)
    schedule: str = "warmup_cosine"
    lr_grid: tuple[float, ...] = (5e-5, 2e-4)
    tune_attack: str = "poison_10"
    val_examples: int = 64
    rank: int = 4
    refresh_every: int = 1
    placement: str = "pre_adam"
    include: str = r".*"
    safety_samples: int = 1
    safety_loss: str = "one"
    safe_lora_threshold: float = 0.35
    oneshot_steps: int = 10
    oneshot_learning_rate: float = 3e-4
    oneshot_select: str = "bilevel"
    oneshot_pool: int = 32
    eval_examples: int = 200
    geometry: bool = True
    curve_samples: tuple[int, ...] = (1, 2, 4, 16)
    curve_ranks: tuple[int, ...] = (4, 16)
    curve_placements: tuple[str, ...] = ("pre_adam",)
    curve_attack: str = "poison_10"
    curve_seeds: int = 1
    trajectory_every: int = 20
    trajectory_examples: int = 32
    real_model: bool = False

    def __post_init__(self):
        check_config(
            self,
            positive=(
                "num_seeds",
                "train_examples",
                "steps",
                "deep_steps",
                "batch_size",
                "rank",
                "eval_examples",
                "val_examples",
                "oneshot_steps",
                "safety_samples",
                "trajectory_examples",
                "oneshot_pool",
            ),
            nonnegative=("trajectory_every", "warmup_steps", "curve_seeds"),
            choices={
                "attacks": ATTACKS,
                "methods": METHODS,
                "tune_attack": ATTACKS,
                "curve_attack": ATTACKS,
                "placement": ("pre_adam", "post_adam"),
                "curve_placements": ("pre_adam", "post_adam"),
                "safety_loss": ("one", "marginal"),
                "schedule": ("warmup_cosine", "constant"),
                "oneshot_select": ("bilevel", "max_loss", "min_loss", "first"),
            },
        )
        if not self.lr_grid or any(lr <= 0 for lr in self.lr_grid):
            raise ValueError(f"lr_grid must hold positive learning rates, got {self.lr_grid}")


PRESETS = {
    "quick": SPFExperimentConfig(),
    "full": SPFExperimentConfig(
        num_seeds=5,
        attacks=ATTACKS,
        methods=METHODS,
        lr_grid=(2e-5, 5e-5, 2e-4),
        eval_examples=256,
        val_examples=128,
        curve_placements=("pre_adam", "post_adam"),
        curve_seeds=3,
        real_model=True,
    ),
    # the experiment tests: the small version-1 zoo model, one seed, one learning rate
    "smoke": SPFExperimentConfig(
        zoo=ZooConfig(),
        num_seeds=1,
        attacks=("benign", "harmful"),
        methods=("sft", "spf", "pcgrad_full"),
        steps=30,
        batch_size=32,
        warmup_steps=0,
        lr_grid=(5e-4,),
        eval_examples=12,
        curve_samples=(1, 4),
        curve_ranks=(4,),
        curve_attack="harmful",
        trajectory_every=0,
    ),
    # the library's headline job (`make demo`): the small version-1 zoo model fine-tuned for a
    # long benign run with and without SPF, refusal plotted over the steps; one seed, minutes
    "demo": SPFExperimentConfig(
        zoo=ZooConfig(),
        num_seeds=1,
        attacks=("deep",),
        methods=("sft", "spf"),
        steps=100,
        deep_steps=300,
        batch_size=32,
        warmup_steps=0,
        schedule="constant",
        lr_grid=(5e-4,),
        eval_examples=40,
        geometry=False,
        curve_samples=(),
        trajectory_every=50,
        trajectory_examples=16,
    ),
}


@register("spf", SPFExperimentConfig, PRESETS)
def run(config: SPFExperimentConfig, ctx: RunContext) -> ExperimentResult:
    """SPF vs fine-tuning attacks on the in-house aligned model (and SmolLM2 in full)."""
    seeds = [ctx.seed + i for i in range(config.num_seeds)]
    seq = config.zoo.seq_len
    stages: dict[str, float] = {}
    clock = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[name] = round(stages.get(name, 0.0) + now - clock, 1)
        clock = now

    first = aligned_model(config.zoo, seed=seeds[0])
    needs_base = "safe_lora" in config.methods
    stage("zoo")
    model_info = {
        "layers": config.zoo.num_layers,
        "d_model": config.zoo.hidden_size,
        "params": int(sum(x.size for x in jax.tree.leaves(nnx.state(first.model, nnx.Param)))),
    }
    if len(config.lr_grid) > 1:
        base0 = base_model(config.zoo, seed=seeds[0]).model if needs_base else None
        lrs, validation = choose_learning_rates(
            first.model, base0, first.world, config, seeds[0], ctx.log
        )
    else:
        lrs, validation = {m: config.lr_grid[0] for m in config.methods}, {}
    stage("learning-rate choice (validation)")

    per_seed = {a: {m: [] for m in config.methods} for a in config.attacks}
    trajectories = {a: {m: [] for m in config.methods} for a in config.attacks}
    aligned_scores, shares, geometry, geometry_t, curves = [], {}, None, [], []
    for i, seed in enumerate(seeds):
        zoo = aligned_model(config.zoo, seed=seed)
        world, aligned = zoo.world, zoo.model
        base = base_model(config.zoo, seed=seed).model if needs_base else None
        safety = safety_batch_of(
            world,
            config.safety_samples,
            seed=seed,
            marginal=config.safety_loss == "marginal",
            seq_len=seq,
        )
        recovery = recovery_inputs(world, config, seed) if "oneshot" in config.methods else None
        aligned_scores.append(summarize(aligned, world, n=config.eval_examples, seed=20_000))
        ctx.log(f"seed {seed}: aligned {aligned_scores[-1]}")
        stage("zoo")
        if config.geometry and geometry is None:
            geometry, geometry_t = geometry_tables(aligned, world, config, seed)
            stage("geometry")

        def eval_fn(m, world=world):
            return summarize(m, world, n=config.trajectory_examples, seed=30_000)

        for attack in config.attacks:
            pool, shares[attack] = attack_pool(world, attack, config.train_examples, seed, seq)
            steps = config.deep_steps if attack == "deep" else config.steps
            for method in config.methods:
                model, trajectory, extra = run_method(
                    method,
                    aligned,
                    pool,
                    safety,
                    config=config,
                    lr=lrs[method],
                    steps=steps,
                    seed=seed,
                    aligned=aligned,
                    base=base,
                    recovery=recovery,
                    eval_fn=eval_fn if config.trajectory_every and method not in POST_HOC else None,
                )
                scores = {**summarize(model, world, n=config.eval_examples, seed=20_000), **extra}
                per_seed[attack][method].append(scores)
                if trajectory:
                    trajectories[attack][method].append(trajectory)
                ctx.log(
                    f"seed {seed} {attack} {method}: refusal {scores['refusal_rate']:.3f} "
                    f"utility {scores['utility']:.3f} over-refusal "
                    f"{scores['over_refusal']:.3f}"
                )
                stage(f"fine-tune {attack}")
        if i < config.curve_seeds and config.curve_samples:
            curves.append(
                sample_curve(
                    aligned, world, config, seed, lrs.get("spf", config.lr_grid[0]), ctx.log
                )
            )
            stage("sample curve")

    runs = {
        attack: {
            method: {
                **{k: float(np.mean([r[k] for r in rs])) for k in KEYS},
                **{f"{k}_std": float(np.std([r[k] for r in rs])) for k in KEYS},
                **{f"{k}_se": mean_se([r[k] for r in rs]).se for k in KEYS},
                "per_seed": rs,
            }
            for method, rs in per_seed[attack].items()
        }
        for attack in config.attacks
    }
    aligned_mean = {k: float(np.mean([a[k] for a in aligned_scores])) for k in KEYS}
    claims, claim_rows = claims_of(config, seeds, aligned_scores, per_seed, curves)
    tables = [main_table(config, seeds, aligned_scores, runs, shares), *claim_rows, *geometry_t]
    if validation:
        tables.append(
            Table(
                "validation learning-rate choice (score = utility + refusal on validation data)",
                ["method", *map(str, config.lr_grid), "chosen"],
                [
                    [m, *(round(score_of(v[str(lr)]), 3) for lr in config.lr_grid), lrs[m]]
                    for m, v in validation.items()
                ],
            )
        )
    if curves:
        cols = sorted({k for c in curves for row in c.values() for k in row})
        tables.append(
            Table(
                f"sample curve: refusal after {config.curve_attack} with SPF (mean over "
                f"{len(curves)} seed(s)); columns rank or rank/placement",
                ["safety samples", *cols],
                [
                    [n, *(float(np.mean([c[n][k] for c in curves])) for k in cols)]
                    for n in curves[0]
                ],
            )
        )
    plots(config, runs, trajectories, aligned_mean, ctx)
    stages["total"] = round(sum(v for k, v in stages.items() if k != "total"), 1)
    tables.append(Table("wall time of each stage (s)", ["stage", "seconds"], list(stages.items())))
    metrics: dict[str, Any] = {
        "aligned": {**aligned_mean, "per_seed": aligned_scores},
        "seeds": seeds,
        "runs": runs,
        "claim": {
            k: {"holds_per_seed": v["per_seed"], "holds_all_seeds": all(v["per_seed"])}
            for k, v in claims.items()
        },
        "claims": {k: {"holds": v["holds"], "seeds": v["seeds"]} for k, v in claims.items()},
        "config": {
            "rank": config.rank,
            "refresh_every": config.refresh_every,
            "placement": config.placement,
            "steps": config.steps,
            "deep_steps": config.deep_steps,
            "safety_loss": config.safety_loss,
        },
        "lr": lrs,
        "validation": validation,
        "model": model_info,
        "eval_sizes": {
            "forbidden": aligned_scores[0].get("n_forbidden", 4 * config.eval_examples),
            "benign": aligned_scores[0].get("n_benign", 4 * config.eval_examples),
            "utility": aligned_scores[0].get("n_utility", config.eval_examples),
        },
        "harmful_share": shares,
        "sample_curve": {
            n: {k: float(np.mean([c[n][k] for c in curves])) for k in curves[0][n]}
            for n in curves[0]
        }
        if curves
        else {},
        "trajectories": trajectories if config.trajectory_every else {},
        "stages_s": stages,
    }
    if geometry is not None:
        metrics["geometry"] = geometry
    if config.real_model:
        from jaxtrust.safety.spf.real import RealSPFConfig, run_real_spf

        real = run_real_spf(RealSPFConfig(), ctx)
        metrics["real_model"] = real.metrics
        tables += list(real.tables)
    summary = f"Seeds {seeds}, model {model_info}. " + "; ".join(
        f"{k}: holds on {v['holds']} of {v['seeds']} seeds" for k, v in claims.items()
    )
    return ExperimentResult(metrics=metrics, tables=tables, summary=summary + ".")
