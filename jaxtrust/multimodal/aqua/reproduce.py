"""``jaxtrust reproduce aqua``: AQUA's acronym and spatial watermarks against the naive canary
and an adversarial image, through a retriever -> generator RAG service.

Test bed (:mod:`jaxtrust.multimodal.aqua.testbed`), per seed: a scene world; a two-tower
retriever and a ViT-projector-LM generator pretrained on a broad sample of it; a typical
knowledge-base pool; clean services are random subsets of the pool (``kb_size`` items).

Per method and seed:

* clean rate :math:`p_0`: Clopper-Pearson bound of the probe success rate of
  ``calibration_keys`` never-inserted watermarks on a reference clean service;
* FPR: ``fpr_trials`` audits of clean services (other subsets) with fresh random keys;
* detection: ``audits`` services, each with ``watermarks_per_audit`` fresh watermarks inserted
  (``copies`` each); an audit detects when the pooled binomial p-value is below ``alpha``;
* retrieval rank of the watermark under its probes, harmlessness (ordinary queries whose top-k
  holds a watermark), stealth (AUROC of a kNN outlier detector, watermarks vs ordinary items);
* robustness (AQUA variants and the canary): transforms before insertion, dilution by a growing
  base, a query filter calibrated to refuse 5 % of ordinary queries.

Claims per seed: each AQUA variant has FPR <= 0.01 and detection >= ``high_detection``, and
detects more often than the naive canary (ties: lower median p-value).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxtrust.eval.stats import claim_count, mean_se, proportion_se
from jaxtrust.experiments.registry import (
    ExperimentResult,
    RunContext,
    Table,
    check_config,
    pyplot,
    register,
)
from jaxtrust.multimodal.aqua.audit import audit, calibrate, insert_watermarks, probe
from jaxtrust.multimodal.aqua.baselines import adversarial_watermark
from jaxtrust.multimodal.aqua.metrics import (
    auroc,
    fit_query_filter,
    knn_outlier_scores,
    watermark_retrieval_rate,
)
from jaxtrust.multimodal.aqua.robustness import apply_transform
from jaxtrust.multimodal.aqua.testbed import (
    SubstrateConfig,
    cached_substrate,
    knowledge_base,
    ordinary_queries,
    subset_system,
    substrate_metrics,
)
from jaxtrust.multimodal.aqua.verify import empirical_fpr
from jaxtrust.multimodal.aqua.watermarks import (
    Watermark,
    acronym_watermark,
    naive_canary,
    spatial_watermark,
)
from jaxtrust.multimodal.index import search
from jaxtrust.multimodal.rag import embed_queries
from jaxtrust.multimodal.retriever import embed_images
from jaxtrust.multimodal.world import (
    CARD_TEMPLATES,
    RELATION_TEMPLATES,
    SceneWorld,
    SceneWorldConfig,
)

METHODS = ("aqua_acronym", "aqua_spatial", "naive_canary", "adversarial")
TRANSFORM_NAMES = ("rescale", "rotate", "noise", "blur", "jpeg", "crop", "all")
_STREAMS = {"calibration": 1, "fpr": 2, "audit": 3, "robust": 4, "base": 5}


@dataclasses.dataclass(frozen=True)
class AquaConfig:
    world: SceneWorldConfig = SceneWorldConfig()
    substrate: SubstrateConfig = SubstrateConfig()
    num_seeds: int = 3
    substrate_per_seed: bool = False
    methods: tuple[str, ...] = METHODS
    kb_items: int = 400
    kb_size: int = 250
    clean_systems: int = 5
    watermarks_per_audit: int = 3
    copies: int = 1
    audits: int = 8
    adversarial_audits: int = 2
    calibration_keys: int = 20
    fpr_trials: int = 70
    alpha: float = 0.01
    high_detection: float = 0.9
    ordinary: int = 200
    adversarial_steps: int = 80
    adversarial_epsilon: float = 0.125
    adversarial_lr: float = 0.05
    transforms: tuple[str, ...] = TRANSFORM_NAMES
    robust_methods: tuple[str, ...] = ("aqua_acronym", "aqua_spatial", "naive_canary")
    robust_audits: int = 3
    dilution_sizes: tuple[int, ...] = (100, 250, 400)
    filter_reject_rate: float = 0.05

    def __post_init__(self):
        check_config(
            self,
            positive=(
                "num_seeds",
                "kb_items",
                "kb_size",
                "watermarks_per_audit",
                "copies",
                "audits",
                "calibration_keys",
                "fpr_trials",
                "ordinary",
                "robust_audits",
            ),
            nonnegative=("adversarial_audits", "adversarial_steps"),
            fractions=("alpha", "high_detection", "filter_reject_rate"),
            choices={
                "methods": METHODS,
                "robust_methods": METHODS[:3],
                "transforms": TRANSFORM_NAMES,
            },
        )
        if self.kb_size > self.kb_items or max(self.dilution_sizes, default=0) > self.kb_items:
            raise ValueError("kb_size and dilution_sizes must be <= kb_items")
        if self.clean_systems < 2:
            raise ValueError("clean_systems must be >= 2 (a reference and audited ones)")


PRESETS = {
    "smoke": AquaConfig(
        world=SceneWorldConfig(image_size=32),
        substrate=SubstrateConfig(
            patch=8,
            vit_dim=32,
            lm_dim=32,
            embed_dim=32,
            pretrain_items=60,
            retriever_steps=3,
            retriever_batch=16,
            vlm_steps=3,
            vlm_batch=16,
            questions_per_item=2,
            k=2,
        ),
        num_seeds=1,
        kb_items=40,
        kb_size=30,
        clean_systems=2,
        watermarks_per_audit=1,
        audits=2,
        adversarial_audits=1,
        calibration_keys=2,
        fpr_trials=3,
        ordinary=8,
        adversarial_steps=2,
        transforms=("blur",),
        robust_methods=("aqua_acronym",),
        robust_audits=1,
        dilution_sizes=(20, 40),
    ),
    "quick": AquaConfig(),
    "full": AquaConfig(
        substrate=SubstrateConfig(
            pretrain_items=3000,
            retriever_steps=3000,
            vlm_steps=2000,
            vlm_batch=16,
            vlm_lr=2e-4,
            generator="smollm2",
            seq_len=64,
            max_new_tokens=8,
        ),
        num_seeds=5,
        kb_items=1000,
        kb_size=600,
        clean_systems=11,
        audits=40,
        adversarial_audits=10,
        calibration_keys=100,
        fpr_trials=600,
        ordinary=500,
        adversarial_steps=300,
        robust_audits=20,
        dilution_sizes=(150, 300, 600, 1000),
    ),
}


def _key(seed: int, stream: str, method: str, i: int) -> jax.Array:
    key = jax.random.fold_in(jax.random.key(seed), _STREAMS[stream])
    return jax.random.fold_in(jax.random.fold_in(key, METHODS.index(method)), i)


class _Maker:
    """Watermarks of one method for one seed's world and base."""

    def __init__(self, world: SceneWorld, kb, substrate, config: AquaConfig, seed: int):
        self.world, self.kb, self.sub, self.config, self.seed = world, kb, substrate, config, seed
        self.adv_losses: list[np.ndarray] = []

    def make(self, method: str, key: jax.Array, *, optimise: bool = True) -> Watermark:
        size = self.world.config.image_size
        objects = self.kb.objects
        if method == "aqua_acronym" or method == "adversarial":
            wm = acronym_watermark(
                key,
                names_by_initial=self.world.names_by_initial,
                templates=CARD_TEMPLATES,
                exclude=sorted(self.kb.acronyms),
                size=size,
            )
            if method == "aqua_acronym":
                return wm
            # VisualAdv-style: a natural base image optimised for the same secret probes
            base_item = self.world.items(
                1, seed=int(jax.random.randint(key, (), 0, 2**30)), card_fraction=0.0, typical=True
            )
            base = self.world.render_items(base_item, seed=0)[0]
            if not optimise:
                return Watermark("adversarial", base, wm.probes, wm.answer, wm.secret)
            ctx_rows = search(
                self.kb.system.index,
                embed_queries(self.kb.system, wm.probes[:1]),
                k=self.kb.system.k,
            ).ids[0][: self.kb.system.k - 1]
            res = adversarial_watermark(
                self.sub.retriever,
                self.sub.generator,
                query_tokenizer=self.sub.tokenizer,
                answer_tokenizer=self.sub.generator_tokenizer,
                base_image=base,
                probes=wm.probes,
                answer=wm.answer,
                context_features=self.kb.system.features[ctx_rows].astype(np.float32),
                epsilon=self.config.adversarial_epsilon,
                steps=self.config.adversarial_steps,
                learning_rate=self.config.adversarial_lr,
                max_query_len=self.sub.config.max_query_len,
                seq_len=self.sub.config.seq_len,
            )
            self.adv_losses.append(res.losses)
            return res.watermark
        kw = dict(
            base_objects=objects,
            templates=RELATION_TEMPLATES,
            size=size,
            grid=self.world.config.grid,
        )
        if method == "aqua_spatial":
            return spatial_watermark(key, **kw)
        return naive_canary(key, **kw)


def _audit_many(systems, wm_sets, p0, alpha, *, copies=1, transform=None, query_filter=None):
    """Insert each set into its system, probe, test. Returns per-audit records."""
    out = []
    for system, wms in zip(systems, wm_sets, strict=True):
        marked, ids = insert_watermarks(system, wms, copies=copies, transform=transform)
        r = probe(marked, wms, watermark_ids=ids, query_filter=query_filter)
        v = audit(r, p0=p0, alpha=alpha)
        out.append(
            {
                "p": v.p_value,
                "detected": v.detected,
                "rate": v.successes / v.trials,
                "rank": float(r.ranks.mean()),
                "hit": float(r.hits.mean()),
                "marked": marked,
                "ids": ids,
            }
        )
    return out


def _clean_pvalues(systems, wm_sets, p0):
    """p-values of clean audits; trials on one system are probed in one batch."""
    by_system: dict[int, list[int]] = {}
    for t, s in enumerate(systems):
        by_system.setdefault(id(s), []).append(t)
    p = np.zeros(len(systems))
    lookup = {id(s): s for s in systems}
    for sid, trials in by_system.items():
        flat = [w for t in trials for w in wm_sets[t]]
        r = probe(lookup[sid], flat)
        lo = 0
        for t in trials:
            n = len(wm_sets[t])
            s, k = int(r.successes[lo : lo + n].sum()), int(r.trials[lo : lo + n].sum())
            p[t] = audit(r._replace(successes=np.array([s]), trials=np.array([k])), p0=p0).p_value
            lo += n
    return p


def _run_seed(config: AquaConfig, seed: int, ctx: RunContext) -> dict[str, Any]:
    stages: dict[str, float] = {}
    clock = time.perf_counter()
    # one pretrained substrate for all seeds (quick) or one per seed (full); seeds always
    # differ in the knowledge base, the clean subsets and the owner's keys
    sub_seed = seed if config.substrate_per_seed else ctx.seed
    world = SceneWorld(config.world, seed=sub_seed)
    sub = cached_substrate(
        world,
        config.substrate,
        seed=sub_seed,
        directory=Path(ctx.out_dir) / f"substrate_{sub_seed}",
        log=ctx.log,
    )
    if sub_seed == seed:
        stages.update(sub.seconds)
    clock = time.perf_counter()
    kb = knowledge_base(world, sub, n=config.kb_items, seed=seed + 1000)
    rng = np.random.default_rng([seed, 77])
    subsets = [
        np.sort(rng.choice(config.kb_items, config.kb_size, replace=False))
        for _ in range(config.clean_systems)
    ]
    systems = [subset_system(kb, rows) for rows in subsets]
    reference, audited = systems[0], systems[1:]
    ref_items = [kb.items[i] for i in subsets[0]]
    ordinary = ordinary_queries(world, ref_items, n=config.ordinary, seed=seed + 3)
    substrate = substrate_metrics(reference, ordinary)
    ord_queries = [q for q, _, _ in ordinary]
    ord_emb = embed_queries(reference, ord_queries)
    outside = np.setdiff1d(np.arange(config.kb_items), subsets[0])
    stages["knowledge_base"] = time.perf_counter() - clock
    ctx.log(f"seed {seed}: substrate {substrate}")
    maker = _Maker(world, kb, sub, config, seed)
    W = config.watermarks_per_audit
    methods: dict[str, Any] = {}
    examples: dict[str, Watermark] = {}
    p0s: dict[str, float] = {}
    for method in config.methods:
        clock = time.perf_counter()
        calib = [
            maker.make(method, _key(seed, "calibration", method, i), optimise=False)
            for i in range(config.calibration_keys)
        ]
        p0 = calibrate(reference, calib)
        p0s[method] = p0
        fpr_sets = [
            [
                maker.make(method, _key(seed, "fpr", method, t * W + j), optimise=False)
                for j in range(W)
            ]
            for t in range(config.fpr_trials)
        ]
        fpr_sys = [audited[t % len(audited)] for t in range(config.fpr_trials)]
        clean_p = _clean_pvalues(fpr_sys, fpr_sets, p0)
        fpr, fpr_n = empirical_fpr(clean_p, alpha=config.alpha)
        n_aud = config.adversarial_audits if method == "adversarial" else config.audits
        sets = [
            [maker.make(method, _key(seed, "audit", method, a * W + j)) for j in range(W)]
            for a in range(n_aud)
        ]
        examples[method] = sets[0][0] if sets else calib[0]
        recs = _audit_many(
            [audited[a % len(audited)] for a in range(n_aud)],
            sets,
            p0,
            config.alpha,
            copies=config.copies,
        )
        harmless = [
            watermark_retrieval_rate(
                search(
                    r["marked"].index, embed_queries(r["marked"], ord_queries), k=reference.k
                ).ids,
                np.concatenate(r["ids"]),
            )
            for r in recs
        ]
        wm_emb = embed_images(sub.retriever, np.stack([w.image for s in sets for w in s]))
        ref_emb = reference.index.embeddings
        ordinary_emb = kb.system.index.embeddings[outside]
        stealth = auroc(
            knn_outlier_scores(ref_emb, wm_emb), knn_outlier_scores(ref_emb, ordinary_emb)
        )
        methods[method] = {
            "detection_rate": float(np.mean([r["detected"] for r in recs])),
            "fpr": fpr,
            "fpr_trials": fpr_n,
            "p_value_median": float(np.median([r["p"] for r in recs])),
            "retrieval_rank": float(np.mean([r["rank"] for r in recs])),
            "harmless_rate": float(np.mean(harmless)),
            "stealth_auroc": stealth,
            "p0": p0,
            "success_rate": float(np.mean([r["rate"] for r in recs])),
            "hit_rate": float(np.mean([r["hit"] for r in recs])),
            "audits": len(recs),
            "clean_p_values": clean_p.tolist(),
            "audit_p_values": [r["p"] for r in recs],
        }
        stages[f"method_{method}"] = time.perf_counter() - clock
        ctx.log(
            f"seed {seed} {method}: det {methods[method]['detection_rate']:.2f} fpr {fpr:.3f}"
            f" p0 {p0:.3g} rank {methods[method]['retrieval_rank']:.2f}"
            f" success {methods[method]['success_rate']:.2f}"
        )

    robustness: dict[str, Any] = {}
    clock = time.perf_counter()
    qfilter = fit_query_filter(ord_emb, reject_rate=config.filter_reject_rate)
    held = ordinary_queries(world, ref_items, n=config.ordinary, seed=seed + 4)
    refused = 1.0 - float(np.mean(qfilter(embed_queries(reference, [q for q, _, _ in held]))))
    robustness["query_filter_ordinary_refusal"] = refused
    for method in config.robust_methods:
        sets = [
            [maker.make(method, _key(seed, "robust", method, a * W + j)) for j in range(W)]
            for a in range(config.robust_audits)
        ]
        syss = [audited[a % len(audited)] for a in range(config.robust_audits)]
        row: dict[str, float] = {}
        for name in config.transforms:

            def tf(img, c, name=name):
                return apply_transform(name, img, seed=seed + c)

            recs = _audit_many(syss, sets, p0s[method], config.alpha, transform=tf)
            row[name] = float(np.mean([r["detected"] for r in recs]))
            row[f"{name}_success"] = float(np.mean([r["rate"] for r in recs]))
        for n in config.dilution_sizes:
            rows = np.sort(rng.choice(config.kb_items, n, replace=False))
            recs = _audit_many(
                [subset_system(kb, rows)] * len(sets), sets, p0s[method], config.alpha
            )
            row[f"dilution_{n}"] = float(np.mean([r["detected"] for r in recs]))
            row[f"dilution_{n}_success"] = float(np.mean([r["rate"] for r in recs]))
        recs = _audit_many(syss, sets, p0s[method], config.alpha, query_filter=qfilter)
        row["query_filter"] = float(np.mean([r["detected"] for r in recs]))
        row["query_filter_success"] = float(np.mean([r["rate"] for r in recs]))
        robustness[method] = row
    stages["robustness"] = time.perf_counter() - clock
    return {
        "seed": seed,
        "methods": methods,
        "robustness": robustness,
        "substrate": substrate,
        "stages": stages,
        "curves": {**sub.curves, "adversarial": [x.tolist() for x in maker.adv_losses]},
        "examples": {m: w.image.tolist() for m, w in examples.items()},
        "example_secrets": {m: [w.answer, list(w.probes[:2])] for m, w in examples.items()},
    }


def _claims(row: dict) -> dict[str, bool]:
    m = row["methods"]
    out = {}
    for v in ("aqua_acronym", "aqua_spatial"):
        if v not in m:
            continue
        out[f"{v}_fpr_le_0.01_and_high_detection"] = bool(
            m[v]["fpr"] <= 0.01 and m[v]["detection_rate"] >= row["high_detection"]
        )
        if "naive_canary" in m:
            a, b = m[v], m["naive_canary"]
            out[f"{v}_beats_naive_canary"] = bool(
                a["detection_rate"] > b["detection_rate"]
                or (
                    a["detection_rate"] == b["detection_rate"]
                    and a["p_value_median"] < b["p_value_median"]
                )
            )
    return out


def _figures(rows, config, ctx):
    plt = pyplot()
    ex = rows[0]["examples"]
    fig, axes = plt.subplots(
        1, len(ex) + len(config.transforms), figsize=(2 * (len(ex) + len(config.transforms)), 2.3)
    )
    axes = np.atleast_1d(axes)
    for ax, (m, img) in zip(axes, ex.items(), strict=False):
        ax.imshow(np.asarray(img))
        ax.set_title(m, fontsize=8)
    acr = np.asarray(ex.get("aqua_acronym", next(iter(ex.values()))), np.float32)
    for ax, name in zip(axes[len(ex) :], config.transforms, strict=False):
        ax.imshow(apply_transform(name, acr, seed=0))
        ax.set_title(f"acronym, {name}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    ctx.save_figure(fig, "watermark_examples")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for r in rows:
        axes[0].plot(r["curves"]["retriever_loss"], alpha=0.7, label=f"seed {r['seed']}")
        axes[1].plot(r["curves"]["generator_loss"], alpha=0.7, label=f"seed {r['seed']}")
        for c in r["curves"]["adversarial"]:
            axes[2].plot(c, alpha=0.5)
    for ax, t in zip(
        axes, ("retriever CLIP loss", "generator answer NLL", "adversarial image loss"), strict=True
    ):
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    ctx.save_figure(fig, "training_curves")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for m in config.methods:
        clean = np.concatenate([r["methods"][m]["clean_p_values"] for r in rows])
        marked = np.concatenate([r["methods"][m]["audit_p_values"] for r in rows])
        ax.scatter(
            np.full(len(marked), config.methods.index(m)) + 0.1,
            np.log10(np.maximum(marked, 1e-300)),
            s=8,
            label=None,
            color="C3",
        )
        ax.scatter(
            np.full(len(clean), config.methods.index(m)) - 0.1,
            np.log10(np.maximum(clean, 1e-300)),
            s=4,
            color="C0",
            alpha=0.3,
        )
    ax.axhline(np.log10(config.alpha), color="k", ls="--", lw=1)
    ax.set_xticks(range(len(config.methods)), config.methods, fontsize=7)
    ax.set_ylabel("log10 p (blue: clean, red: watermarked)")
    ctx.save_figure(fig, "p_values")


@register("aqua", AquaConfig, PRESETS)
def run(config: AquaConfig, ctx: RunContext) -> ExperimentResult:
    """AQUA (acronym / spatial image watermarks) vs naive canary and adversarial image in RAG"""
    seeds = [ctx.seed + i for i in range(config.num_seeds)]
    cache = Path(ctx.out_dir) / "seeds"
    cache.mkdir(parents=True, exist_ok=True)
    tag = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)

    def same_config(saved_tag: str) -> bool:
        # a seed's results do not depend on how many seeds the run has
        def strip(t):
            d = json.loads(t)
            d.pop("num_seeds", None)
            return d

        return strip(saved_tag) == strip(tag)

    rows = []
    for seed in seeds:
        path = cache / f"seed_{seed}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            if same_config(saved.get("config", "{}")):
                ctx.log(f"seed {seed}: loaded {path}")
                rows.append(saved)
                continue
        row = _run_seed(config, seed, ctx)
        row["config"] = tag
        row["high_detection"] = config.high_detection
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(row))
        tmp.replace(path)
        rows.append(row)
    for r in rows:
        r["high_detection"] = config.high_detection
    keys = (
        "detection_rate",
        "fpr",
        "fpr_trials",
        "p_value_median",
        "retrieval_rank",
        "harmless_rate",
        "stealth_auroc",
    )
    methods = {}
    for m in config.methods:
        per = [r["methods"][m] for r in rows]
        clean = np.concatenate([p["clean_p_values"] for p in per])
        marked = [d for p in per for d in p["audit_p_values"]]
        methods[m] = {
            "detection_rate": float(np.mean([p < config.alpha for p in marked])),
            "fpr": float(np.mean(clean < config.alpha)),
            "fpr_trials": int(clean.size),
            "p_value_median": float(np.median(marked)),
            "retrieval_rank": float(np.mean([p["retrieval_rank"] for p in per])),
            "harmless_rate": float(np.mean([p["harmless_rate"] for p in per])),
            "stealth_auroc": float(np.mean([p["stealth_auroc"] for p in per])),
            "detection_rate_se": proportion_se(
                float(np.mean([p < config.alpha for p in marked])), len(marked)
            ),
            "fpr_se": proportion_se(float(np.mean(clean < config.alpha)), int(clean.size)),
            "success_rate": mean_se([p["success_rate"] for p in per]).mean,
            "p0": mean_se([p["p0"] for p in per]).mean,
            "audits": len(marked),
            "per_seed": [{k: p[k] for k in (*keys, "p0", "success_rate")} for p in per],
        }
    robustness: dict[str, Any] = {}
    for m in rows[0]["robustness"]:
        if m == "query_filter_ordinary_refusal":
            robustness[m] = float(np.mean([r["robustness"][m] for r in rows]))
            continue
        robustness[m] = {
            k: float(np.mean([r["robustness"][m][k] for r in rows]))
            for k in rows[0]["robustness"][m]
        }
    substrate = {
        k: mean_se([r["substrate"][k] for r in rows]).mean
        for k in ("retrieval_recall_at_5", "vqa_accuracy")
    }
    substrate["per_seed"] = [r["substrate"] for r in rows]
    per_claims = [_claims(r) for r in rows]
    claims = {k: claim_count([c[k] for c in per_claims]) for k in per_claims[0]}
    _figures(rows, config, ctx)
    stage_names = sorted({k for r in rows for k in r["stages"]})
    tables = [
        Table(
            f"methods (pooled over seeds {seeds}; alpha = {config.alpha}, "
            f"{config.watermarks_per_audit} watermarks x 10 probes per audit)",
            [
                "method",
                "detection",
                "FPR (trials)",
                "median p",
                "p0",
                "probe success",
                "rank (k=miss)",
                "harmless rate",
                "stealth AUROC",
            ],
            [
                [
                    m,
                    f"{v['detection_rate']:.2f} ± {v['detection_rate_se']:.2f} ({v['audits']})",
                    f"{v['fpr']:.3f} ± {v['fpr_se']:.3f} ({v['fpr_trials']})",
                    f"{v['p_value_median']:.2g}",
                    f"{v['p0']:.3f}",
                    f"{v['success_rate']:.2f}",
                    f"{v['retrieval_rank']:.2f}",
                    f"{v['harmless_rate']:.3f}",
                    f"{v['stealth_auroc']:.2f}",
                ]
                for m, v in methods.items()
            ],
        ),
        Table(
            "claims (holds / seeds)",
            ["claim", "holds", "seeds"],
            [[k, v["holds"], v["seeds"]] for k, v in claims.items()],
        ),
        Table(
            "robustness: detection rate (probe success rate)",
            [
                "method",
                *[
                    k
                    for k in next(v for v in robustness.values() if isinstance(v, dict))
                    if not k.endswith("success")
                ],
            ],
            [
                [
                    m,
                    *[
                        f"{v[k]:.2f} ({v[k + '_success']:.2f})"
                        for k in v
                        if not k.endswith("success")
                    ],
                ]
                for m, v in robustness.items()
                if isinstance(v, dict)
            ],
        ),
        Table(
            "substrate (reference clean service, ordinary queries)",
            ["seed", "retrieval recall@5", "VQA accuracy"],
            [
                [
                    r["seed"],
                    f"{r['substrate']['retrieval_recall_at_5']:.3f}",
                    f"{r['substrate']['vqa_accuracy']:.3f}",
                ]
                for r in rows
            ],
        ),
        Table(
            "wall time per stage (s)",
            ["stage", *[f"seed {r['seed']}" for r in rows]],
            [[s, *[f"{r['stages'].get(s, float('nan')):.1f}" for r in rows]] for s in stage_names],
        ),
    ]
    secrets = rows[0]["example_secrets"]
    summary = (
        "Claim: verification at FPR <= 0.01 with high detection "
        f"(>= {config.high_detection}) for both AQUA variants through retriever -> generator, "
        "better than the naive canary. "
        + "; ".join(f"{k}: holds on {v['holds']} of {v['seeds']} seeds" for k, v in claims.items())
        + f". Query filter refuses {robustness.get('query_filter_ordinary_refusal', 0):.3f} of "
        "held-out ordinary queries. Example secrets (seed "
        f"{rows[0]['seed']}): "
        + "; ".join(f"{m}: answer '{a}', probes {p}" for m, (a, p) in secrets.items())
    )
    metrics = {
        "methods": {
            m: {
                k: v[k]
                for k in (
                    *keys,
                    "detection_rate_se",
                    "fpr_se",
                    "p0",
                    "success_rate",
                    "audits",
                    "per_seed",
                )
            }
            for m, v in methods.items()
        },
        "robustness": robustness,
        "substrate": substrate,
        "claims": claims,
        "seeds": seeds,
        "stages": [r["stages"] for r in rows],
    }
    return ExperimentResult(metrics, tables, summary)
