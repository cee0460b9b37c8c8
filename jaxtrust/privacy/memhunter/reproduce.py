"""``jaxtrust reproduce memhunter``: dataset-level memorization detection on in-house targets.

Test bed (:mod:`jaxtrust.privacy.memhunter.world`): byte-level Llama- and Pythia-layout LMs at
two sizes trained on standard-library passages plus planted member datasets (duplicated
1-16x); a control of each architecture never sees a member. Per seed, every method scores
every member, non-member and reference passage on the target (and on the control); the
dataset-level test compares ``n`` suspect passages with the reference set (known non-members
of the same distribution). Power = rejections over ``trials`` random member datasets of size
``n``; FPR = rejections over as many random non-member datasets (and, on the control, over
member datasets: the control never saw them). Each method's free setting (Min-K%'s k, the
memorization score, Dataset Inference's ridge) is chosen on a validation half of the passages
(same number of candidates each), and everything is reported on the other half.

Extraction (a passage is extracted when the longest common word run of a continuation with
its reference reaches ``extract_words``) is compared at an equal number of target queries per
passage: MemHunter's prompts vs the true prefix with sampled continuations (Carlini et al.);
GCG gets the wall time MemHunter used, and in plug-in mode starts from MemHunter's prompts.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import jax
import numpy as np

from jaxtrust.eval.stats import claim_count, mean_se
from jaxtrust.experiments.registry import (
    ExperimentResult,
    RunContext,
    Table,
    check_config,
    pyplot,
    register,
)
from jaxtrust.privacy.memhunter.dataset_inference import dataset_inference
from jaxtrust.privacy.memhunter.gcg import gcg_search
from jaxtrust.privacy.memhunter.prompter import (
    PrompterConfig,
    continuation_scores,
    init_prompter,
    memhunter_scores,
    train_prompter,
)
from jaxtrust.privacy.memhunter.testing import dataset_test
from jaxtrust.privacy.memhunter.world import (
    TOKENIZER,
    TargetSpec,
    WorldConfig,
    build_world,
    encode_split,
    train_target,
    training_pool,
)
from jaxtrust.privacy.mia.lm import lm_features, lm_membership_scores, token_statistics

METHODS = ("memhunter", "prefix", "loss", "zlib", "min_k", "min_k_pp", "dataset_inference", "gcg")
SETTINGS = {  # the validation-chosen knob of each method (equal candidate budget: <= 3)
    "memhunter": ("precision", "substring"),
    "prefix": ("precision", "substring"),
    "loss": (None,),
    "zlib": (None,),
    "min_k": (0.1, 0.2, 0.5),
    "min_k_pp": (0.1, 0.2, 0.5),
    "dataset_inference": (1e-2, 1.0),
}


@dataclasses.dataclass(frozen=True)
class MemHunterExperimentConfig:
    world: WorldConfig = WorldConfig(
        background=1200, dataset_size=24, nonmember_pool=100, reference=100
    )
    targets: tuple[tuple[str, int, int], ...] = (
        ("llama", 128, 4),
        ("llama", 64, 2),
        ("gpt_neox", 64, 2),
    )
    target_steps: int = 1200
    num_seeds: int = 3
    prompter_hidden: int = 64
    prompter_layers: int = 2
    prompter_init_steps: int = 150
    prompter: PrompterConfig = PrompterConfig(
        rounds=2, steps_per_round=60, batch_size=128, units="words", keep_threshold=0.3
    )
    aux_passages: int = 128
    num_prompts: int = 4
    n_samples: tuple[int, ...] = (5, 10, 20, 40)
    trials: int = 400
    alpha: float = 0.05
    extract_words: int = 6
    gcg_samples: int = 32
    gcg_steps: int = 24
    gcg_prompt_len: int = 16
    gcg_reference_len: int = 32
    gcg_eval_every: int = 4
    cache_dir: str | None = None

    def __post_init__(self):
        check_config(
            self,
            positive=(
                "target_steps",
                "num_seeds",
                "prompter_init_steps",
                "aux_passages",
                "num_prompts",
                "trials",
                "extract_words",
                "gcg_samples",
                "gcg_prompt_len",
                "gcg_reference_len",
                "gcg_eval_every",
            ),
            nonnegative=("gcg_steps",),
        )
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if not self.targets:
            raise ValueError("targets must name at least one (arch, hidden, layers)")
        for t in self.targets:
            TargetSpec(*t)
        if (
            min(self.n_samples) < 4
            or max(self.n_samples) > self.world.dataset_size * len(self.world.duplications) // 2
        ):
            raise ValueError(
                f"n_samples must be >= 4 (Dataset Inference's halves) and at most half the "
                f"member passages, got {self.n_samples}"
            )


PRESETS = {
    "smoke": MemHunterExperimentConfig(
        world=WorldConfig(
            background=64, dataset_size=8, duplications=(1, 16), nonmember_pool=12, reference=12
        ),
        targets=(("llama", 32, 1), ("gpt_neox", 32, 1)),
        target_steps=30,
        num_seeds=1,
        prompter_hidden=32,
        prompter_layers=1,
        prompter_init_steps=10,
        prompter=PrompterConfig(
            rounds=1,
            steps_per_round=5,
            batch_size=16,
            num_candidates=2,
            units="words",
            prompt_len=8,
            continuation_len=16,
            keep_threshold=0.0,
        ),
        aux_passages=16,
        num_prompts=2,
        n_samples=(4, 6),
        trials=20,
        gcg_samples=4,
        gcg_steps=2,
        gcg_prompt_len=8,
        gcg_reference_len=8,
        gcg_eval_every=1,
    ),
    "quick": MemHunterExperimentConfig(
        world=WorldConfig(background=400, dataset_size=24, nonmember_pool=80, reference=80),
        targets=(("llama", 64, 2), ("llama", 32, 2), ("gpt_neox", 64, 2)),
        # 300 steps of the 64x2 Llama on a similar world gave a clear loss gap on 16x members
        # but no verbatim extraction; twice that is still ~1 min per model on a free 2-core CPU.
        target_steps=600,
        prompter=PrompterConfig(
            rounds=2, steps_per_round=40, batch_size=64, units="words", keep_threshold=0.3
        ),
        aux_passages=64,
        n_samples=(5, 10, 20),
        trials=200,
        gcg_samples=24,
        gcg_steps=12,
    ),
    "full": MemHunterExperimentConfig(
        world=WorldConfig(background=3000, dataset_size=40, nonmember_pool=200, reference=200),
        targets=(("llama", 192, 6), ("llama", 96, 3), ("gpt_neox", 192, 6), ("gpt_neox", 96, 3)),
        target_steps=4000,
        num_seeds=5,
        prompter=PrompterConfig(rounds=4, steps_per_round=100, batch_size=128, units="words"),
        aux_passages=256,
        n_samples=(5, 10, 20, 40, 80),
        trials=1000,
        gcg_samples=64,
        gcg_steps=60,
    ),
}


# ----------------------------------------------------------------------------- scoring
def _prefix_scores(model, hints, refs, config: MemHunterExperimentConfig, key) -> dict:
    """True prefix, one greedy and ``num_prompts - 1`` sampled continuations; best kept."""
    pc, start = config.prompter, time.perf_counter()
    prec, sub = [], []
    for k in range(config.num_prompts):
        s, _ = continuation_scores(
            model,
            TOKENIZER,
            hints,
            refs,
            continuation_len=pc.continuation_len,
            prompt_len=config.world.hint_bytes,
            batch_size=pc.batch_size,
            temperature=0.0 if k == 0 else 1.0,
            key=None if k == 0 else jax.random.fold_in(key, k),
            units=pc.units,
        )
        prec.append(s.precision)
        sub.append(s.substring)
    prec, sub = np.stack(prec, 1), np.stack(sub, 1)
    best = prec.argmax(1)
    rows = np.arange(len(hints))
    return {
        "precision": prec[rows, best],
        "substring": sub[rows, best].astype(float),
        "seconds": time.perf_counter() - start,
    }


def _score_all(model, prompter, texts, config, key) -> dict[str, Any]:
    """Every per-sample statistic of every method on one model."""
    pc = config.prompter
    hints, refs = encode_split(texts, config.world)
    out: dict[str, Any] = {}
    mh = memhunter_scores(
        prompter,
        model,
        TOKENIZER,
        TOKENIZER,
        hints,
        refs,
        num_prompts=config.num_prompts,
        key=key,
        prompt_len=pc.prompt_len,
        continuation_len=pc.continuation_len,
        temperature=pc.temperature,
        batch_size=pc.batch_size,
        units=pc.units,
    )
    out["memhunter"] = {
        "precision": mh.precision,
        "substring": mh.substring.astype(float),
        "seconds": mh.seconds,
        "prompts": mh.best_prompt,
    }
    out["prefix"] = _prefix_scores(model, hints, refs, config, jax.random.fold_in(key, 7))
    clock = time.perf_counter()
    stats = token_statistics(model, training_pool(texts, config.world), batch_size=64)
    mia_seconds = time.perf_counter() - clock
    out["loss"] = {None: lm_membership_scores(stats, "loss"), "seconds": mia_seconds}
    out["zlib"] = {None: lm_membership_scores(stats, "zlib", texts=texts), "seconds": mia_seconds}
    for kind in ("min_k", "min_k_pp"):
        out[kind] = {k: lm_membership_scores(stats, kind, k=k) for k in SETTINGS[kind]}
        out[kind]["seconds"] = mia_seconds
    out["features"] = lm_features(stats, texts)
    return out


# ----------------------------------------------------------------------------- tests
def _decisions(
    method, setting, suspect_idx, ref_idx, scores, config, rng, sizes=None
) -> np.ndarray:
    """Rejections of ``trials`` datasets of each size (rows: ``sizes``, default n_samples)."""
    sizes = config.n_samples if sizes is None else sizes
    out = np.zeros((len(sizes), config.trials), bool)
    for a, n in enumerate(sizes):
        n = min(n, len(suspect_idx))
        for t in range(config.trials):
            pick = rng.choice(suspect_idx, n, replace=False)
            if method == "dataset_inference":
                f = scores["features"]
                res = dataset_inference(
                    f[pick],
                    f[ref_idx],
                    alpha=config.alpha,
                    seed=int(rng.integers(1 << 30)),
                    l2=setting,
                )
                out[a, t] = res.test.reject
            else:
                s = scores[method][setting]
                out[a, t] = dataset_test(s[pick], s[ref_idx], alpha=config.alpha).reject
    return out


def _tune(method, scores, members_val, ref_val, config, rng) -> Any:
    best, best_power = SETTINGS[method][0], -1.0
    for setting in SETTINGS[method]:
        power = _decisions(method, setting, members_val, ref_val, scores, config, rng)[0].mean()
        if power > best_power:
            best, best_power = setting, power
    return best


# ----------------------------------------------------------------------------- GCG
def _gcg_block(target, mh_prompts, texts, config, key) -> dict[str, Any]:
    pc, wc = config.prompter, config.world
    hints, refs = encode_split(texts, wc)
    length = config.gcg_prompt_len
    space = TOKENIZER.encode(" ")[0]
    ref_cut = np.array(
        [(r + [space] * config.gcg_reference_len)[: config.gcg_reference_len] for r in refs]
    )

    def extraction(prompts: np.ndarray) -> float:
        s, _ = continuation_scores(
            target,
            TOKENIZER,
            [list(p) for p in prompts],
            refs,
            continuation_len=pc.continuation_len,
            prompt_len=length,
            batch_size=pc.batch_size,
            units=pc.units,
        )
        return float(np.mean(s.substring >= config.extract_words))

    def fit(p):
        p = list(p)[-length:]
        return [space] * (length - len(p)) + p

    filler = np.full((len(texts), length), TOKENIZER.encode("!")[0])
    runs = {}
    for name, init in (("gcg", filler), ("plugin", np.array([fit(p) for p in mh_prompts]))):
        trace = gcg_search(
            target,
            init,
            ref_cut,
            steps=config.gcg_steps,
            key=key,
            bos_id=TOKENIZER.bos_id,
            eval_every=config.gcg_eval_every,
            eval_fn=extraction,
        )
        runs[name] = [(int(s), float(t), float(e)) for s, t, e in trace.curve]
    return runs


def _time_to(curve, level) -> float | None:
    for _, seconds, value in curve:
        if value >= level - 1e-12:
            return seconds
    return None


def _at_time(curve, budget) -> float:
    value = curve[0][2]
    for _, seconds, v in curve:
        if seconds <= budget:
            value = v
    return value


# ----------------------------------------------------------------------------- one seed
def _prompter_init(config, world, seed):
    hints, _ = encode_split(world.background[: config.aux_passages], config.world)
    return init_prompter(
        TOKENIZER,
        hints,
        hidden=config.prompter_hidden,
        layers=config.prompter_layers,
        steps=config.prompter_init_steps,
        prompt_len=config.prompter.prompt_len,
        seed=seed,
    )


def _run_seed(config, seed, ctx, stages) -> dict[str, Any]:
    world = build_world(config.world, seed)
    groups = {f"dup{d}": list(v) for d, v in world.members.items()}
    groups["nonmember"], groups["reference"] = world.nonmembers, world.reference
    texts = [t for g in groups.values() for t in g]
    index, pos = {}, 0
    for g, v in groups.items():
        index[g] = np.arange(pos, pos + len(v))
        pos += len(v)
    rng = np.random.default_rng(seed + 99)
    # validation / test halves of the members (stratified by duplication) and the reference
    halves = {g: rng.permutation(index[g]) for g in index}
    val = {g: v[: len(v) // 2] for g, v in halves.items()}
    test = {g: v[len(v) // 2 :] for g, v in halves.items()}
    dups = [g for g in groups if g.startswith("dup")]
    members_val = np.concatenate([val[g] for g in dups])
    members_test = np.concatenate([test[g] for g in dups])
    clock = time.perf_counter()
    base_prompter = _prompter_init(config, world, seed)
    stages[f"prompter_init_{seed}"] = time.perf_counter() - clock
    aux = world.background[: config.aux_passages]
    aux_h, aux_r = encode_split(aux, config.world)
    out: dict[str, Any] = {"targets": {}}
    for t_i, t in enumerate(config.targets):
        spec = TargetSpec(*t)
        clock = time.perf_counter()
        target = train_target(
            spec, world, steps=config.target_steps, seed=seed, cache_dir=config.cache_dir
        )
        control = train_target(
            spec,
            world,
            steps=config.target_steps,
            seed=0,
            members=False,
            cache_dir=config.cache_dir,
        )
        stages[f"train_{spec.name}_{seed}"] = time.perf_counter() - clock
        clock = time.perf_counter()
        trace = train_prompter(
            base_prompter,
            target.model,
            TOKENIZER,
            TOKENIZER,
            aux_h,
            aux_r,
            config.prompter,
            seed=seed,
        )
        stages[f"prompter_{spec.name}_{seed}"] = time.perf_counter() - clock
        clock = time.perf_counter()
        key = jax.random.key(seed * 31 + t_i)
        on_target = _score_all(target.model, trace.model, texts, config, key)
        on_control = _score_all(control.model, trace.model, texts, config, key)
        stages[f"score_{spec.name}_{seed}"] = time.perf_counter() - clock
        clock = time.perf_counter()
        for scores in (on_target, on_control):
            for m in ("memhunter", "prefix"):
                scores[m] = {
                    **scores[m],
                    "precision": scores[m]["precision"],
                    "substring": scores[m]["substring"],
                }
        methods: dict[str, Any] = {}
        for m in METHODS[:-1]:
            setting = _tune(m, on_target, members_val, val["reference"], config, rng)
            power = _decisions(m, setting, members_test, test["reference"], on_target, config, rng)
            null = _decisions(
                m, setting, index["nonmember"], test["reference"], on_target, config, rng
            )
            null_ctrl = _decisions(
                m, setting, members_test, test["reference"], on_control, config, rng
            )
            by_dup = {
                g: float(
                    _decisions(
                        m,
                        setting,
                        test[g],
                        test["reference"],
                        on_target,
                        config,
                        rng,
                        sizes=(len(test[g]),),
                    ).mean()
                )
                for g in dups
            }
            entry = {
                "setting": setting,
                "power": power.mean(1).tolist(),
                "fpr": float(null[-1].mean()),
                "fpr_by_n": null.mean(1).tolist(),
                "fpr_control": float(null_ctrl[-1].mean()),
                "fpr_trials": int(config.trials),
                "power_by_duplication": by_dup,
                "seconds": float(on_target.get(m, {}).get("seconds", 0.0))
                if m != "dataset_inference"
                else float(on_target["loss"]["seconds"]),
                "extraction_rate": None,
            }
            if m in ("memhunter", "prefix"):
                sub = on_target[m]["substring"]
                entry["extraction_rate"] = float(np.mean(sub[members_test] >= config.extract_words))
                entry["extraction_by_duplication"] = {
                    g: float(np.mean(sub[test[g]] >= config.extract_words)) for g in dups
                }
                entry["false_extraction_rate"] = float(
                    np.mean(sub[index["nonmember"]] >= config.extract_words)
                )
            methods[m] = entry
        stages[f"tests_{spec.name}_{seed}"] = time.perf_counter() - clock
        row = {
            "methods": methods,
            "prompter_rounds": trace.rounds,
            "target_info": {
                k: target.info.get(k) for k in ("final_loss", "rows", "build_seconds", "loss_curve")
            },
            "control_final_loss": control.info.get("final_loss"),
        }
        if t_i == 0 and config.gcg_steps > 0:
            clock = time.perf_counter()
            big = [d for d in dups][::-1]
            pool_idx = np.concatenate([test[g] for g in big])[: config.gcg_samples]
            sel = [texts[i] for i in pool_idx]
            mh_prompts = [on_target["memhunter"]["prompts"][i] for i in pool_idx]
            runs = _gcg_block(target.model, mh_prompts, sel, config, jax.random.key(seed + 3))
            # Equal time: GCG gets the per-passage time MemHunter spent on these passages.
            per = on_target["memhunter"]["seconds"] / len(texts)
            budget = per * len(sel)
            mh_rate = float(
                np.mean(on_target["memhunter"]["substring"][pool_idx] >= config.extract_words)
            )
            prefix_rate = float(
                np.mean(on_target["prefix"]["substring"][pool_idx] >= config.extract_words)
            )
            level = runs["gcg"][-1][2]
            t_base = _time_to(runs["gcg"], level)
            t_plug = _time_to(runs["plugin"], level)
            saved = None
            if t_base and t_base > 0:
                saved = 1.0 - (t_plug if t_plug is not None else runs["plugin"][-1][1]) / t_base
            row["gcg"] = {
                "curves": runs,
                "budget_seconds": budget,
                "extraction_at_budget": _at_time(runs["gcg"], budget),
                "extraction_final": level,
                "memhunter_extraction_same_passages": mh_rate,
                "prefix_extraction_same_passages": prefix_rate,
                "seconds": runs["gcg"][-1][1],
                "search_seconds_saved_frac": saved,
                "plugin_reached_level": t_plug is not None,
            }
            stages[f"gcg_{seed}"] = time.perf_counter() - clock
        out["targets"][spec.name] = row
        ctx.log(
            f"seed {seed} {spec.name}: power@n={config.n_samples[-1]} "
            + ", ".join(f"{m} {methods[m]['power'][-1]:.2f}" for m in methods)
            + f"; FPR memhunter {methods['memhunter']['fpr']:.3f}; extraction memhunter "
            f"{methods['memhunter']['extraction_rate']:.2f} prefix "
            f"{methods['prefix']['extraction_rate']:.2f}"
        )
    return out


def _plain(x):
    return x.tolist() if hasattr(x, "tolist") else str(x)


def _summary_value(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    ms = mean_se(vals)
    return ms.mean, ms.se


@register(
    "memhunter",
    description="MemHunter (prompter + dataset test) vs prefix, MIA, Dataset Inference, GCG",
    config_cls=MemHunterExperimentConfig,
    presets=PRESETS,
)
def run(config: MemHunterExperimentConfig, ctx: RunContext) -> ExperimentResult:
    """MemHunter (prompter + dataset test) vs prefix, MIA, Dataset Inference, GCG."""
    plt = pyplot()
    stages: dict[str, float] = {}
    seeds = [ctx.seed + i for i in range(config.num_seeds)]
    per_seed = []
    for s in seeds:
        per_seed.append(_run_seed(config, s, ctx, stages))
        # A long run killed later keeps every finished seed (written atomically).
        tmp = ctx.out_dir / f"seed_{s}.json.tmp"
        tmp.write_text(
            json.dumps({"row": per_seed[-1], "stages": stages}, indent=1, default=_plain)
        )
        tmp.replace(ctx.out_dir / f"seed_{s}.json")
    main = TargetSpec(*config.targets[0]).name
    names = [TargetSpec(*t).name for t in config.targets]

    def agg(target: str) -> dict[str, Any]:
        out = {}
        for m in METHODS[:-1]:
            rows = [r["targets"][target]["methods"][m] for r in per_seed]
            power = np.array([r["power"] for r in rows])
            out[m] = {
                "power": power.mean(0).tolist(),
                "power_se": (power.std(0, ddof=1) / np.sqrt(len(rows))).tolist()
                if len(rows) > 1
                else [0.0] * power.shape[1],
                "fpr": float(np.mean([r["fpr"] for r in rows])),
                "fpr_control": float(np.mean([r["fpr_control"] for r in rows])),
                "fpr_trials": int(sum(r["fpr_trials"] for r in rows)),
                "extraction_rate": _summary_value([r["extraction_rate"] for r in rows])[0],
                "seconds": float(np.mean([r["seconds"] for r in rows])),
                "power_by_duplication": {
                    g: float(np.mean([r["power_by_duplication"][g] for r in rows]))
                    for g in rows[0]["power_by_duplication"]
                },
                "settings": [r["setting"] for r in rows],
            }
        return out

    by_target = {t: agg(t) for t in names}
    methods = dict(by_target[main])
    gcg_rows = [r["targets"][main].get("gcg") for r in per_seed if "gcg" in r["targets"][main]]
    if gcg_rows:
        methods["gcg"] = {
            "power": None,
            "fpr": None,
            "fpr_trials": 0,
            "extraction_rate": float(np.mean([g["extraction_at_budget"] for g in gcg_rows])),
            "extraction_final": float(np.mean([g["extraction_final"] for g in gcg_rows])),
            "seconds": float(np.mean([g["seconds"] for g in gcg_rows])),
        }
    saved = [g["search_seconds_saved_frac"] for g in gcg_rows]
    saved_mean, saved_se = _summary_value(saved)
    plugin = {"search_seconds_saved_frac": saved_mean, "se": saved_se, "per_seed": saved}
    claims = {
        "memhunter_extracts_more_than_prefix": claim_count(
            [
                r["targets"][main]["methods"]["memhunter"]["extraction_rate"]
                > r["targets"][main]["methods"]["prefix"]["extraction_rate"]
                for r in per_seed
            ]
        ),
        "memhunter_fpr_within_alpha": claim_count(
            [
                r["targets"][main]["methods"]["memhunter"]["fpr"]
                <= config.alpha + 2 * np.sqrt(config.alpha * (1 - config.alpha) / config.trials)
                for r in per_seed
            ]
        ),
        "plugin_saves_search_time": claim_count([s is not None and s > 0 for s in saved]),
        "memhunter_power_above_prefix": claim_count(
            [
                r["targets"][main]["methods"]["memhunter"]["power"][-1]
                > r["targets"][main]["methods"]["prefix"]["power"][-1]
                for r in per_seed
            ]
        ),
    }
    # ---- plots
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for m in METHODS[:-1]:
        axes[0].errorbar(
            config.n_samples, methods[m]["power"], yerr=methods[m]["power_se"], marker="o", label=m
        )
        dup = methods[m]["power_by_duplication"]
        axes[1].plot([int(g[3:]) for g in dup], list(dup.values()), marker="o", label=m)
    axes[0].axhline(config.alpha, color="k", ls=":", lw=1)
    axes[0].set(xlabel="passages per suspect dataset", ylabel="power", title=main, xscale="log")
    axes[1].set(
        xlabel="duplication of the member dataset", ylabel="power (half dataset)", xscale="log"
    )
    axes[0].legend(fontsize=7)
    for t in names:
        axes[2].plot(
            config.n_samples, by_target[t]["memhunter"]["power"], marker="o", label=f"memhunter {t}"
        )
        axes[2].plot(config.n_samples, by_target[t]["loss"]["power"], ls="--", label=f"loss {t}")
    axes[2].set(
        xlabel="passages per suspect dataset", ylabel="power", xscale="log", title="by target"
    )
    axes[2].legend(fontsize=6)
    for ax in axes:
        ax.grid(alpha=0.3)
    ctx.save_figure(fig, "power")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for r, s in zip(per_seed, seeds, strict=True):
        rounds = r["targets"][main]["prompter_rounds"]
        axes[0].plot(
            [x["round"] for x in rounds],
            [x["mean_best"] for x in rounds],
            marker="o",
            label=f"seed {s} best-of-K",
        )
        axes[0].plot(
            [x["round"] for x in rounds],
            [x["mean_greedy"] for x in rounds],
            ls="--",
            label=f"seed {s} greedy",
        )
        g = r["targets"][main].get("gcg")
        if g:
            for name, curve in g["curves"].items():
                axes[1].plot(
                    [c[1] for c in curve],
                    [c[2] for c in curve],
                    marker=".",
                    label=f"{name} seed {s}",
                )
    axes[0].set(xlabel="prompter round", ylabel="ROUGE-L precision (aux members)")
    axes[1].set(xlabel="search seconds", ylabel="extraction rate", title="GCG vs plug-in")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    ctx.save_figure(fig, "trajectories")
    # ---- tables
    n_hi = config.n_samples[-1]
    tables = [
        Table(
            f"{main}: dataset-level detection (test halves, alpha={config.alpha}, "
            f"{config.trials} datasets per cell and seed, seeds {seeds})",
            [
                "method",
                *[f"power n={n}" for n in config.n_samples],
                f"FPR n={n_hi}",
                "FPR control",
                "extraction",
                "seconds",
            ],
            [
                [
                    m,
                    *[f"{p:.2f} ± {e:.2f}" for p, e in zip(v["power"], v["power_se"], strict=True)],
                    f"{v['fpr']:.3f}",
                    f"{v['fpr_control']:.3f}",
                    "-" if v["extraction_rate"] is None else f"{v['extraction_rate']:.2f}",
                    f"{v['seconds']:.1f}",
                ]
                for m, v in methods.items()
                if m != "gcg"
            ],
        ),
        Table(
            f"power at n={n_hi} by target (scaling with size and layout)",
            ["target", *METHODS[:-1]],
            [[t, *[f"{by_target[t][m]['power'][-1]:.2f}" for m in METHODS[:-1]]] for t in names],
        ),
        Table(
            "power by duplication (suspect = half of one member dataset)",
            ["method", *methods["memhunter"]["power_by_duplication"]],
            [
                [m, *[f"{x:.2f}" for x in methods[m]["power_by_duplication"].values()]]
                for m in METHODS[:-1]
            ],
        ),
        Table(
            "claims per seed",
            ["claim", "holds", "seeds"],
            [[k, v["holds"], v["seeds"]] for k, v in claims.items()],
        ),
        Table(
            "wall time per stage (s)",
            ["stage", "seconds"],
            [[k, f"{v:.1f}"] for k, v in stages.items()],
        ),
    ]
    if gcg_rows:
        tables.insert(
            3,
            Table(
                f"extraction on {config.gcg_samples} most-duplicated test members ({main})",
                [
                    "seed",
                    "memhunter",
                    "prefix",
                    "gcg @ memhunter time",
                    "gcg final",
                    "gcg s",
                    "plug-in time saved",
                ],
                [
                    [
                        s,
                        f"{g['memhunter_extraction_same_passages']:.2f}",
                        f"{g['prefix_extraction_same_passages']:.2f}",
                        f"{g['extraction_at_budget']:.2f}",
                        f"{g['extraction_final']:.2f}",
                        f"{g['seconds']:.1f}",
                        "-"
                        if g["search_seconds_saved_frac"] is None
                        else f"{g['search_seconds_saved_frac']:.2f}",
                    ]
                    for s, g in zip(seeds, gcg_rows, strict=False)
                ],
            ),
        )
    metrics = {
        "methods": methods,
        "n_samples": list(config.n_samples),
        "plugin": plugin,
        "targets": by_target,
        "claims": claims,
        "seeds": seeds,
        "stage_seconds": stages,
        "per_seed": per_seed,
    }
    mh, pf = methods["memhunter"], methods["prefix"]
    summary = (
        "MemHunter reconstructed from its abstract (no code or tables were published). "
        f"On {main}, power at n={n_hi}: MemHunter {mh['power'][-1]:.2f}, prefix "
        f"{pf['power'][-1]:.2f}, loss {methods['loss']['power'][-1]:.2f}, Min-K%++ "
        f"{methods['min_k_pp']['power'][-1]:.2f}, Dataset Inference "
        f"{methods['dataset_inference']['power'][-1]:.2f}; FPR of MemHunter's test "
        f"{mh['fpr']:.3f} on non-member datasets and {mh['fpr_control']:.3f} on the control "
        f"(alpha {config.alpha}). Extraction at equal queries: MemHunter "
        f"{mh['extraction_rate']:.2f} vs prefix {pf['extraction_rate']:.2f} "
        f"(holds on {claims['memhunter_extracts_more_than_prefix']['holds']} of {len(seeds)} "
        "seeds). Byte-level models of at most a few hundred thousand parameters: the numbers "
        "do not transfer to Pythia or Llama-2 scale."
    )
    return ExperimentResult(metrics=metrics, tables=tables, summary=summary)
