"""``jaxtrust reproduce shape``: SHAPE's holistic-winner DPO against SFT, SeVa and controls.

Test bed (:mod:`jaxtrust.multimodal.shape.world`): rendered scenes of 2-4 objects whose
training captions are terse (one object) with a minority of full list captions, yes/no object
questions, and a co-occurrence bias (a shape's partner joins it with probability ``bias``).
A small VLM (ViT, projector, causal LM) is trained end to end on that data (``base``); every
method then starts from ``base`` with the vision tower frozen (as LLaVA-style DPO keeps it) and
runs ``rounds`` rounds of ``round_steps`` steps:

* ``sft``: more SFT on the original data; ``sft_winners``: SFT on SHAPE's winners;
* ``seva``: DPO on SeVa pairs (answer on the image vs on a cutout view);
* ``shuffled``: DPO on SHAPE's winners against other images' terse captions;
* ``shape``: DPO on SHAPE triplets (consensus of ``views`` augmented views vs the terse
  caption), each round rebuilding the triplets with, and taking as reference, the previous
  round's model (pairs whose winner equals the terse loser are dropped, as SeVa drops
  identical pairs: they carry no preference).

Each method's learning rate is tuned on the first seed's validation split (score: POPE F1 minus
CHAIR_i), the same grid for all. Reported on test scenes drawn *without* the bias: POPE F1 (mean
of the random / popular / adversarial splits, 2 probes per scene each), CHAIR_i and recall of
``"describe the image ."`` captions, preference accuracy on held-out SHAPE triplets (implicit
reward against ``base`` > 0), a ground-truth preference accuracy (true caption vs one with the
partner swapped in), and a blank-image control (yes-rate, preference accuracy on white images).

Claim tested per seed: SHAPE's POPE F1 is above and its CHAIR_i below those of SFT and SeVa.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
from flax import nnx

from jaxtrust.eval.stats import claim_count, seed_summary
from jaxtrust.experiments.registry import (
    ExperimentResult,
    RunContext,
    Table,
    check_config,
    pyplot,
    register,
)
from jaxtrust.models import EncoderConfig, LMConfig, ViTConfig
from jaxtrust.multimodal.shape.evaluate import POPE_SPLITS, chair, pope_probes, pope_scores
from jaxtrust.multimodal.shape.triplets import (
    Triplets,
    build_triplets,
    preference_data,
    seva_pairs,
    shuffle_losers,
    vlm_logits,
)
from jaxtrust.multimodal.shape.world import BiasedSceneWorld, BiasedWorldConfig
from jaxtrust.multimodal.vlm import (
    VisionLanguageModel,
    VLMConfig,
    answer,
    encode_qa,
    image_features,
    vlm_loss_fn,
)
from jaxtrust.training import adamw_cosine, dpo_finetune, finetune, reference_logprobs

METHODS = ("base", "sft", "sft_winners", "seva", "shuffled", "shape")
DESCRIBE, DETAIL = "describe the image .", "what is in the image ?"
EXIST = "is there a {} in the image ?"


@dataclasses.dataclass(frozen=True)
class ShapeExperimentConfig:
    world: BiasedWorldConfig = BiasedWorldConfig()
    num_seeds: int = 3
    train_scenes: int = 400
    val_scenes: int = 50
    test_scenes: int = 100
    dpo_scenes: int = 128
    width: int = 64
    layers: int = 2
    patch: int = 8
    pool: int = 1
    base_steps: int = 600
    base_learning_rate: float = 3e-3
    batch_size: int = 32
    rounds: int = 2
    round_steps: int = 40
    learning_rates: tuple[float, ...] = (1e-4, 4e-4)
    beta: float = 0.1
    sft_weight: float = 0.0
    views: int = 4
    min_votes: int = 2
    seq_len: int = 24


PRESETS = {
    "smoke": ShapeExperimentConfig(
        num_seeds=1,
        train_scenes=64,
        val_scenes=16,
        test_scenes=16,
        dpo_scenes=16,
        width=32,
        layers=1,
        base_steps=8,
        batch_size=16,
        rounds=2,
        round_steps=3,
        learning_rates=(1e-4,),
        views=2,
    ),
    "quick": ShapeExperimentConfig(),
    "full": ShapeExperimentConfig(
        num_seeds=5,
        train_scenes=2000,
        val_scenes=100,
        test_scenes=200,
        dpo_scenes=600,
        base_steps=4000,
        round_steps=150,
        rounds=3,
    ),
}


def build_vlm(world: BiasedSceneWorld, config: ShapeExperimentConfig, seed: int):
    """A fresh VLM for ``world``'s tokenizer: ViT (patch 4) + projector + causal LM, both
    ``config.width`` wide and ``config.layers`` deep."""
    w = config.width
    enc = EncoderConfig(dim=w, num_layers=config.layers, num_heads=4, mlp_dim=2 * w)
    size = config.world.image_size
    vit = ViTConfig(
        input_shape=(size, size), patch=config.patch, channels=3, num_classes=0, encoder=enc
    )
    lm = LMConfig.for_tokenizer(
        world.tokenizer,
        hidden_size=w,
        intermediate_size=2 * w,
        num_layers=config.layers,
        num_heads=4,
        num_kv_heads=2,
        max_position_embeddings=128,
    )
    return VisionLanguageModel(VLMConfig(vision=vit, lm=lm, pool=config.pool), rngs=nnx.Rngs(seed))


def sft_data(world, scenes, images_or_feats, key, config, seed):
    """The supervised pool of ``scenes``: a terse caption per scene (``DESCRIBE``), the full
    caption for a ``detail_fraction`` (``DETAIL``), one yes and one no object question; the
    visual input (``images`` or ``features``, per ``key``) repeated per row. Returns
    ``(pool, terse captions)``."""
    rng = np.random.default_rng([seed, 5])
    qs, ans, rows = [], [], []
    for i, sc in enumerate(scenes):
        qs.append(DESCRIBE)
        ans.append(world.terse_caption(sc, rng))
        rows.append(i)
        if rng.random() < config.world.detail_fraction:
            qs.append(DETAIL)
            ans.append(world.full_caption(sc))
            rows.append(i)
        present = world.present(sc)
        absent = [s for s in world.shapes if s not in present]
        for s, a in ((str(rng.choice(present)), "yes"), (str(rng.choice(absent)), "no")):
            qs.append(EXIST.format(s))
            ans.append(a)
            rows.append(i)
    pool = encode_qa(world.tokenizer, qs, ans, seq_len=config.seq_len)
    pool[key] = images_or_feats[np.asarray(rows)][:, None]
    return pool, [ans[j] for j, q in enumerate(qs) if q == DESCRIBE]


@dataclasses.dataclass
class Split:
    scenes: list
    images: np.ndarray
    feats: np.ndarray
    present: list[list[str]]
    probes: dict


def _evaluate(model, world, split: Split, blank: np.ndarray, held: dict, base_ref: dict):
    tok = world.tokenizer
    out: dict[str, float] = {}
    f1s = []
    for name, pr in split.probes.items():
        qs = [EXIST.format(s) for s in pr.shapes]
        said = answer(model, tok, qs, features=split.feats[pr.rows][:, None], max_new_tokens=1)
        sc = pope_scores([a.startswith("yes") for a in said], pr.labels)
        out[f"pope_f1_{name}"] = sc["f1"]
        out[f"pope_acc_{name}"] = sc["accuracy"]
        out[f"yes_ratio_{name}"] = sc["yes_ratio"]
        f1s.append(sc["f1"])
    out["pope_f1"] = float(np.mean(f1s))
    caps = answer(
        model, tok, [DESCRIBE] * len(split.scenes), features=split.feats[:, None], max_new_tokens=20
    )
    c = chair(caps, split.present, shapes=world.shapes)
    out.update(chair=c["chair_i"], chair_s=c["chair_s"], recall=c["recall"], mentions=c["mentions"])
    bq = [EXIST.format(s) for s in world.shapes]
    said = answer(model, tok, bq, features=np.repeat(blank, len(bq), 0)[:, None], max_new_tokens=1)
    out["blank_yes_rate"] = float(np.mean([a.startswith("yes") for a in said]))
    for tag, pool in (("", held["pool"]), ("blank_", held["blank_pool"])):
        cw, cl = _logps(model, pool)
        margin = (cw - base_ref[tag + "c"]) - (cl - base_ref[tag + "l"])
        out[f"{tag}pref_acc"] = float(np.mean((margin > 1e-4) + 0.5 * (np.abs(margin) <= 1e-4)))
    cw, cl = _logps(model, held["gt_pool"])
    out["gt_pref_acc"] = float(np.mean(cw > cl))
    out["examples"] = caps[:3]
    return out


def _logps(model, pool) -> tuple[np.ndarray, np.ndarray]:
    """Summed winner / loser log-probabilities (the compiled, chunked reference pass)."""
    out = reference_logprobs(model, pool, logits_fn=vlm_logits)
    return out["ref_chosen_logps"], out["ref_rejected_logps"]


def _score(m: dict) -> float:
    return m["pope_f1"] - m["chair"]


def _round_data(method, model, world, train, idx, config, seed, r, cache):
    """Preference or SFT data of one round for ``method`` (round-1 triplets are shared)."""
    tok = world.tokenizer
    scenes = [train.scenes[i] for i in idx]
    rng = np.random.default_rng([seed, r, 77])
    terse = [world.terse_caption(s, rng) for s in scenes]
    if method == "seva":
        key = ("seva", r) if r == 0 else None
        if key in cache:
            return cache[key]
        try:
            t = seva_pairs(model, tok, train.images[idx], seed=seed * 100 + r)
        except ValueError:  # every answer pair identical: nothing to prefer this round
            return None, None
        out = (t, train.feats[np.asarray(idx)[t.rows]])
    else:
        key = ("shape", r) if r == 0 else None
        if key in cache:
            return cache[key]
        t = build_triplets(
            model,
            tok,
            train.images[idx],
            terse,
            colors=world.colors,
            shapes=world.shapes,
            seed=seed * 100 + r,
            views=config.views,
            view_prompt=DETAIL,
            min_votes=config.min_votes,
        )
        out = (t, train.feats[idx])
    if key is not None:
        cache[key] = out
    return out


def _run_method(method, base, world, train, sft_pool, lr, config, seed, eval_fn, cache):
    model, rounds, seconds = base, [], 0.0
    tok = world.tokenizer
    rng = np.random.default_rng([seed, 3])
    for r in range(config.rounds):
        clock = time.perf_counter()
        tx = adamw_cosine(lr, config.round_steps)
        idx = np.sort(rng.choice(len(train.scenes), config.dpo_scenes, replace=False))
        common = dict(steps=config.round_steps, batch_size=config.batch_size, seed=seed + r)
        common["step_key"] = ("shape.round", lr, config.round_steps)  # one compile per recipe
        stats: dict[str, Any] = {}
        if method == "sft":
            model = finetune(model, sft_pool, tx, loss_fn=vlm_loss_fn, **common).model
        else:
            t, feats = _round_data(method, model, world, train, idx, config, seed, r, cache)
            if t is None:
                rounds.append({"round": r + 1, "pairs": 0, **eval_fn(model)})
                continue
            if method in ("shape", "shuffled"):
                # a winner equal to its loser (the views added nothing) carries no preference
                keep = [i for i in range(len(t)) if t.winners[i] != t.losers[i]]
                if len(keep) < 2:
                    rounds.append({"round": r + 1, "pairs": len(keep), **eval_fn(model)})
                    continue
                t, feats = t.subset(keep), feats[keep]
            if method == "shuffled":
                t = shuffle_losers(t, seed=seed + r)
            stats["winner_objects"] = float(np.mean([w.count(" a ") + 1 for w in t.winners]))
            stats["pairs"] = len(t)
            if method == "sft_winners":
                pool = encode_qa(tok, t.prompts, t.winners, seq_len=config.seq_len)
                pool["features"] = feats[:, None]
                model = finetune(model, pool, tx, loss_fn=vlm_loss_fn, **common).model
            else:
                pool = preference_data(tok, t, seq_len=config.seq_len, features=feats[:, None])
                model = dpo_finetune(
                    model,
                    pool,
                    tx,
                    beta=config.beta,
                    sft_weight=config.sft_weight,
                    logits_fn=vlm_logits,
                    **common,
                ).model
        seconds += time.perf_counter() - clock
        rounds.append({"round": r + 1, **stats, **eval_fn(model)})
    return model, rounds, seconds


def _split(world, n, seed, base, biased, freq, co):
    scenes = world.scenes(n, seed=seed, biased=biased)
    images = world.images(scenes, seed=seed)
    present = [world.present(s) for s in scenes]
    probes = pope_probes(present, shapes=world.shapes, frequency=freq, cooccurrence=co, seed=seed)
    return Split(scenes, images, image_features(base, images), present, probes)


def _held_out(world, base, split: Split, blank, config, seed):
    tok = world.tokenizer
    rng = np.random.default_rng([seed, 9])
    terse = [world.terse_caption(s, rng) for s in split.scenes]
    t = build_triplets(
        base,
        tok,
        split.images,
        terse,
        colors=world.colors,
        shapes=world.shapes,
        seed=seed + 555,
        views=config.views,
        view_prompt=DETAIL,
        min_votes=config.min_votes,
    )
    feats = split.feats[:, None]
    pool = preference_data(tok, t, seq_len=config.seq_len, features=feats)
    blank_pool = {**pool, "features": np.repeat(blank, len(t), 0)[:, None]}
    true, fake, rows = [], [], []
    for i, sc in enumerate(split.scenes):
        present = world.present(sc)
        trig = [s for s in present if world.partner[s] not in present]
        if not trig or len(present) < 2:
            continue
        mate = world.partner[trig[0]]
        other = next(o for o in sc.objects if o.shape != trig[0])
        full = world.full_caption(sc)
        true.append(full)
        fake.append(full.replace(f"{other.color} {other.shape}", f"{other.color} {mate}"))
        rows.append(i)
    gt = preference_data(
        tok,
        Triplets(split.images[rows], [DESCRIBE] * len(rows), true, fake, [[]] * len(rows)),
        seq_len=config.seq_len,
        features=feats[rows],
    )
    return {"pool": pool, "blank_pool": blank_pool, "gt_pool": gt, "triplets": t}


def _seed_trial(config, seed, ctx, stages):
    clock = time.perf_counter()
    world = BiasedSceneWorld(config.world, seed=seed)
    train_scenes = world.scenes(config.train_scenes, seed=seed, biased=True)
    train_images = world.images(train_scenes, seed=seed)
    pool, _ = sft_data(world, train_scenes, train_images, "images", config, seed)
    base0 = build_vlm(world, config, seed)
    base = finetune(
        base0,
        pool,
        adamw_cosine(config.base_learning_rate, config.base_steps, warmup_steps=50),
        steps=config.base_steps,
        batch_size=config.batch_size,
        seed=seed,
        loss_fn=vlm_loss_fn,
        step_key=("shape.base", config.base_learning_rate, config.base_steps, "vlm_loss"),
    ).model
    stages[f"base_{seed}"] = time.perf_counter() - clock
    freq, co = world.statistics(train_scenes)
    train = Split(train_scenes, train_images, image_features(base, train_images), [], {})
    sft_pool, _ = sft_data(world, train_scenes, train.feats, "features", config, seed)
    val = _split(world, config.val_scenes, seed + 10_000, base, False, freq, co)
    test = _split(world, config.test_scenes, seed + 20_000, base, False, freq, co)
    blank = image_features(base, np.ones((1, *train_images.shape[1:]), np.float32))
    helds = {}
    for name, sp in (("val", val), ("test", test)):
        h = _held_out(world, base, sp, blank, config, seed)
        c, l = _logps(base, h["pool"])
        bc, bl = _logps(base, h["blank_pool"])
        ref = {"c": c, "l": l, "blank_c": bc, "blank_l": bl}
        helds[name] = (h, ref)
    return world, base, train, sft_pool, val, test, blank, helds


@register(
    "shape",
    description="SHAPE: holistic-winner DPO vs SFT / SeVa / shuffled losers on a biased scene VLM",
    config_cls=ShapeExperimentConfig,
    presets=PRESETS,
)
def run(config: ShapeExperimentConfig, ctx: RunContext) -> ExperimentResult:
    check_config(
        config,
        positive=("num_seeds", "train_scenes", "val_scenes", "test_scenes", "dpo_scenes"),
        nonnegative=("base_steps", "round_steps"),
    )
    if config.dpo_scenes > config.train_scenes or not config.learning_rates:
        raise ValueError("need dpo_scenes <= train_scenes and at least one learning rate")
    stages: dict[str, float] = {}
    seeds = [ctx.seed + i for i in range(config.num_seeds)]
    per_seed, rounds_all, tuned = [], [], {}
    for si, seed in enumerate(seeds):
        world, base, train, sft_pool, val, test, blank, helds = _seed_trial(
            config, seed, ctx, stages
        )

        def ev(model, split, h, world=world, blank=blank):
            return _evaluate(model, world, split, blank, h[0], h[1])

        row = {"base": ev(base, test, helds["test"])}
        ctx.log(f"seed {seed} base: {_fmt(row['base'])}")
        cache: dict = {}
        for method in METHODS[1:]:
            clock = time.perf_counter()
            if si == 0:  # tune on the first seed's validation split, same grid for all
                scores = {}
                for lr in config.learning_rates:
                    m, _, _ = _run_method(
                        method, base, world, train, sft_pool, lr, config, seed,
                        lambda _m: {}, cache,
                    )  # fmt: skip
                    scores[lr] = _score(ev(m, val, helds["val"]))
                tuned[method] = {"chosen": max(scores, key=scores.get), "val_scores": scores}
            lr = tuned[method]["chosen"]
            _, rounds, seconds = _run_method(
                method, base, world, train, sft_pool, lr, config, seed,
                lambda m, t=test, h=helds["test"], e=ev: _strip(e(m, t, h)), cache,
            )  # fmt: skip
            row[method] = {**rounds[-1], "train_seconds": seconds}
            rounds_all += [{"seed": seed, "method": method, **r} for r in rounds]
            stages[f"{method}_{seed}"] = time.perf_counter() - clock
            ctx.log(f"seed {seed} {method} (lr {lr:g}): {_fmt(row[method])}")
        per_seed.append(row)

    methods = {n: seed_summary([_strip(r[n]) for r in per_seed]) for n in METHODS}
    claims = {}
    for other in ("sft", "seva"):
        claims[f"pope_f1_above_{other}"] = claim_count(
            [r["shape"]["pope_f1"] > r[other]["pope_f1"] for r in per_seed]
        )
        claims[f"chair_below_{other}"] = claim_count(
            [r["shape"]["chair"] < r[other]["chair"] for r in per_seed]
        )
    tables = [_table(methods, seeds), _claims_table(claims, len(seeds))]
    _plot(ctx, rounds_all, config)
    examples = {n: per_seed[0][n].get("examples", []) for n in METHODS}
    n_probe = 2 * config.test_scenes
    metrics = {
        "methods": methods,
        "rounds": rounds_all,
        "claims": claims,
        "tuning": {"grid": list(config.learning_rates), "score": "val pope_f1 - chair", **tuned},
        "probes_per_split": n_probe,
        "examples": examples,
        "seeds": seeds,
        "stage_seconds": stages,
    }
    s, b = methods["shape"], methods["base"]
    summary = (
        f"POPE F1 (mean of {', '.join(POPE_SPLITS)}; {n_probe} probes per split) base "
        f"{b['pope_f1']:.3f}, SFT {methods['sft']['pope_f1']:.3f}, SeVa "
        f"{methods['seva']['pope_f1']:.3f}, SHAPE {s['pope_f1']:.3f}; CHAIR_i base "
        f"{b['chair']:.3f}, SFT {methods['sft']['chair']:.3f}, SeVa {methods['seva']['chair']:.3f}"
        f", SHAPE {s['chair']:.3f}; recall SHAPE {s['recall']:.3f} vs base {b['recall']:.3f}. "
        + "; ".join(f"{k}: {v['holds']}/{v['seeds']} seeds" for k, v in claims.items())
        + ". The summariser is a consensus merge standing in for SHAPE's LLM summariser; the VLM"
        " is a small in-house model on rendered scenes, not LLaVA."
    )
    return ExperimentResult(metrics=metrics, tables=tables, summary=summary)


def _strip(m: dict) -> dict:
    return {
        k: float(v) for k, v in m.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _fmt(m: dict) -> str:
    return ", ".join(f"{k} {m[k]:.3f}" for k in ("pope_f1", "chair", "recall", "pref_acc"))


KEYS = ("pope_f1", "pope_f1_adversarial", "chair", "recall", "pref_acc", "gt_pref_acc")
KEYS += ("blank_yes_rate", "blank_pref_acc")


def _table(methods, seeds) -> Table:
    return Table(
        f"test split, mean ± std over seeds {seeds}",
        ["method", *KEYS],
        [[n, *[f"{m[k]:.3f} ± {m[k + '_std']:.3f}" for k in KEYS]] for n, m in methods.items()],
    )


def _claims_table(claims, n) -> Table:
    return Table(
        "claims per seed",
        ["claim", "holds", "seeds"],
        [[k, v["holds"], n] for k, v in claims.items()],
    )


def _plot(ctx, rounds_all, config):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key in zip(axes, ("pope_f1", "chair", "recall"), strict=True):
        for method in METHODS[1:]:
            rows = [r for r in rounds_all if r["method"] == method]
            xs = sorted({r["round"] for r in rows})
            ys = [np.mean([r[key] for r in rows if r["round"] == x]) for x in xs]
            ax.plot(xs, ys, marker="o", label=method)
        ax.set_xlabel("round")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    ctx.save_figure(fig, "rounds")
