"""The pieces of the SPF reproduction: one fine-tune per method, the validation learning-rate
choice, the sample curve and the geometry tables. ``reproduce.py`` orchestrates them.

Every method, baselines included, is fine-tuned by :func:`run_method` from the same aligned
model with the same data order and recipe (AdamW with linear warmup and cosine decay, the
learning rate chosen per method on validation data by :func:`choose_learning_rates`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from jaxtrust.data import FINETUNE_ATTACKS
from jaxtrust.experiments.registry import Table
from jaxtrust.safety.recovery import recover
from jaxtrust.safety.spf._reproduce_report import score_of
from jaxtrust.safety.spf.baselines import pcgrad_full, random_subspace, safe_lora
from jaxtrust.safety.spf.geometry import basis_overlap_table, gradient_cosine, spectrum_table
from jaxtrust.safety.spf.step import safety_batch, safety_extra_args
from jaxtrust.safety.spf.transform import spf
from jaxtrust.training import finetune, lm_batch_loss, lm_marginal_loss, warmup_cosine
from jaxtrust.zoo.safety_eval import forbidden_requests, safety_batch_of, summarize, task_examples

__all__ = [
    "METHODS",
    "POST_HOC",
    "SPF_MODES",
    "attack_pool",
    "choose_learning_rates",
    "geometry_tables",
    "run_method",
    "sample_curve",
]

METHODS = (
    "sft",
    "spf",
    "spf_pcgrad",
    "spf_null",
    "random_subspace",
    "pcgrad_full",
    "safe_lora",
    "oneshot",
)
SPF_MODES = {"spf": "conflict", "spf_pcgrad": "pcgrad", "spf_null": "null"}
# post-hoc methods start from the SFT fine-tune (they use its learning rate)
POST_HOC = ("safe_lora", "oneshot")
NUM_WORDINGS = 5  # refusal wordings per request in the version-2 world


def attack_pool(world, attack: str, n: int, seed: int, seq_len: int) -> tuple[dict, dict]:
    """The fine-tuning data of ``attack`` and its harmful share (as examples and as tokens)."""
    examples = world.attack_mix(n, harmful_fraction=FINETUNE_ATTACKS[attack], seed=seed + 100)
    batch = world.batch(examples, seq_len=seq_len)
    harmful = np.array([ex.kind == "forbidden" for ex in examples])
    tokens = batch.loss_mask[:, 1:].sum(axis=1)
    share = {
        "harmful_examples": int(harmful.sum()),
        "harmful_example_share": float(harmful.mean()),
        "harmful_token_share": float(tokens[harmful].sum() / max(tokens.sum(), 1.0)),
    }
    return batch.as_dict(), share


def _safety_loss(config) -> Callable:
    if config.safety_loss == "marginal":
        return functools.partial(lm_marginal_loss, group=NUM_WORDINGS)
    return lm_batch_loss


def _transform(method: str, config, lr: float, steps: int, seed: int, rank: int, placement: str):
    """AdamW (no weight decay) on a warmup-cosine schedule, with the method's projection.

    The peak learning rate lives in the optimiser state (``inject_hyperparams``), so every
    learning rate of a sweep reuses one compiled step per method."""
    if config.schedule == "constant":
        unit = optax.constant_schedule(1.0)
    else:
        unit = warmup_cosine(1.0, steps, warmup_steps=config.warmup_steps)
    tail = (
        optax.scale_by_schedule(unit),
        optax.inject_hyperparams(optax.scale)(step_size=-float(lr)),
    )
    if method in SPF_MODES:
        projection = spf(
            rank,
            mode=SPF_MODES[method],
            include=config.include,
            stacked=True,
            refresh_every=config.refresh_every,
        )
    elif method == "random_subspace":
        projection = random_subspace(rank, seed=seed, include=config.include)
    elif method == "pcgrad_full":
        projection = pcgrad_full(include=config.include)
    else:  # sft (and the post-hoc methods' SFT)
        return optax.chain(optax.scale_by_adam(), *tail)
    if placement == "post_adam":
        return optax.chain(optax.scale_by_adam(), projection, *tail)
    return optax.chain(projection, optax.scale_by_adam(), *tail)


def run_method(
    method: str,
    model,
    pool: dict,
    safety: dict,
    *,
    config,
    lr: float,
    steps: int,
    seed: int,
    rank: int | None = None,
    placement: str | None = None,
    aligned=None,
    base=None,
    recovery: dict | None = None,
    eval_fn: Callable | None = None,
) -> tuple[Any, list[dict], dict]:
    """Fine-tune a copy of ``model`` on ``pool`` with ``method``.

    Returns:
      ``(model, trajectory, extra)``: the fine-tuned (and, for post-hoc methods, projected or
      recovered) model, the ``eval_fn`` trajectory (``[]`` without one), and method facts.
    """
    rank = config.rank if rank is None else rank
    placement = config.placement if placement is None else placement
    tuned = "sft" if method in POST_HOC else method
    needs_safety = tuned in SPF_MODES or tuned in ("random_subspace", "pcgrad_full")
    tx = _transform(tuned, config, lr, steps, seed, rank, placement)
    graphdef = nnx.split(model, nnx.Param, ...)[0]
    recipe = (
        "spf.reproduce",
        tuned,
        steps,
        rank,
        placement,
        config.refresh_every,
        config.include,
        config.warmup_steps,
        config.schedule,
        config.safety_loss,
        seed if tuned == "random_subspace" else None,
    )
    result = finetune(
        model,
        pool,
        tx,
        steps=steps,
        batch_size=config.batch_size,
        seed=seed,
        data_seed=[seed, 5],
        extra_args_fn=safety_extra_args(graphdef, loss=_safety_loss(config))
        if needs_safety
        else None,
        extra_batch=safety_batch(safety) if needs_safety else None,
        step_key=recipe,
        eval_fn=eval_fn,
        eval_every=max(1, config.trajectory_every),
    )
    trajectory = []
    if eval_fn is not None:
        trajectory = [{"step": 0, **eval_fn(model)}] + [
            {"step": int(h["step"]), **{k[5:]: v for k, v in h.items() if k.startswith("eval_")}}
            for h in result.history
            if any(k.startswith("eval_") for k in h)
        ]
    tuned_model, extra = result.model, {"seconds": round(result.seconds, 2)}
    if method == "safe_lora":
        tuned_model, info = safe_lora(
            tuned_model, aligned, base, threshold=config.safe_lora_threshold
        )
        extra["projected_matrices"] = len(info["projected"])
    elif method == "oneshot":
        out = recover(
            tuned_model,
            recovery["pool"],
            steps=config.oneshot_steps,
            learning_rate=config.oneshot_learning_rate,
            select=config.oneshot_select,
            aligned=aligned,
            harmful=recovery.get("harmful"),
            task=recovery.get("task"),
        )
        tuned_model = out.model
        extra["oneshot_chosen"] = out.chosen
    return tuned_model, trajectory, extra


def recovery_inputs(world, config, seed: int) -> dict:
    """The one-shot patch's candidate pool and the two-level rule's reference batches."""
    seq = config.zoo.seq_len
    pool = safety_batch_of(world, config.oneshot_pool, seed=seed + 900, marginal=False, seq_len=seq)
    harmful = world.refusal_examples(forbidden_requests(world, 32, seed=seed + 901), seed=seed)
    task = task_examples(world, 32, seed=seed + 902)
    return {
        "pool": pool,
        "harmful": world.batch(harmful, seq_len=seq).as_dict(),
        "task": world.batch(task, seq_len=seq).as_dict(),
    }


def choose_learning_rates(
    aligned, base, world, config, seed: int, log: Callable[[str], None]
) -> tuple[dict[str, float], dict[str, dict[str, dict[str, float]]]]:
    """Per trained method, the learning rate of ``config.lr_grid`` with the best validation
    score ``utility + refusal_rate`` after ``config.tune_attack``, on validation prompts and
    task items disjoint from the test sets; post-hoc methods use SFT's choice.

    Returns:
      ``(chosen, scores)`` with ``scores[method][str(lr)]`` the validation summary.
    """
    pool, _ = attack_pool(
        world, config.tune_attack, config.train_examples, seed + 50, config.zoo.seq_len
    )
    safety = safety_batch_of(
        world,
        config.safety_samples,
        seed=seed + 50,
        marginal=config.safety_loss == "marginal",
        seq_len=config.zoo.seq_len,
    )
    chosen, scores = {}, {}
    for method in [m for m in config.methods if m not in POST_HOC]:
        scores[method] = {}
        for lr in config.lr_grid:
            model, _, _ = run_method(
                method,
                aligned,
                pool,
                safety,
                config=config,
                lr=lr,
                steps=config.steps,
                seed=seed + 50,
                aligned=aligned,
                base=base,
            )
            s = summarize(model, world, n=config.val_examples, seed=50_000)
            scores[method][str(lr)] = s
            log(
                f"validation {method} lr {lr:g}: refusal {s['refusal_rate']:.3f} utility "
                f"{s['utility']:.3f}"
            )
        best = max(config.lr_grid, key=lambda lr, m=method: score_of(scores[m][str(lr)]))
        chosen[method] = float(best)
    for method in POST_HOC:
        if method in config.methods:
            chosen[method] = chosen.get("sft", config.lr_grid[0])
    return chosen, scores


def sample_curve(aligned, world, config, seed: int, lr: float, log) -> dict[str, dict[str, float]]:
    """Refusal after ``config.curve_attack`` with SPF from ``n`` safety samples x rank x
    placement: ``{"n": {"rank" or "rank/placement": refusal}}``."""
    pool, _ = attack_pool(
        world, config.curve_attack, config.train_examples, seed, config.zoo.seq_len
    )
    out: dict[str, dict[str, float]] = {}
    for n in config.curve_samples:
        safety = safety_batch_of(
            world,
            n,
            seed=seed,
            marginal=config.safety_loss == "marginal",
            seq_len=config.zoo.seq_len,
        )
        out[str(n)] = {}
        for rank in config.curve_ranks:
            for placement in config.curve_placements:
                model, _, _ = run_method(
                    "spf",
                    aligned,
                    pool,
                    safety,
                    config=config,
                    lr=lr,
                    steps=config.steps,
                    seed=seed,
                    rank=rank,
                    placement=placement,
                )
                s = summarize(model, world, n=config.eval_examples, seed=20_000)
                key = str(rank) if placement == config.placement else f"{rank}/{placement}"
                out[str(n)][key] = s["refusal_rate"]
                log(f"sample curve n={n} rank={rank} {placement}: refusal {s['refusal_rate']:.3f}")
    return out


def geometry_tables(aligned, world, config, seed) -> tuple[dict[str, Any], list[Table]]:
    """The paper's three insights on the aligned model."""
    graphdef, params, rest = nnx.split(aligned, nnx.Param, ...)
    seq_len = config.zoo.seq_len

    def grads_of(examples):
        batch = world.batch(examples, seq_len=seq_len).as_dict()
        return jax.grad(lambda p: lm_batch_loss(nnx.merge(graphdef, p, rest), batch)[0])(params)

    forbidden = forbidden_requests(world, 64, split="train", seed=seed + 5)
    safety_many = world.refusal_examples(forbidden, seed=seed)
    harmful_many = forbidden  # compliant answers: what a harmful fine-tune trains
    utility_many = task_examples(world, 64, seed=seed + 6)
    one_safety, one_utility = grads_of(safety_many[:1]), grads_of(utility_many[:1])
    many_safety, many_utility = grads_of(safety_many), grads_of(utility_many)
    many_harmful = grads_of(harmful_many)

    def tokens_of(examples: Sequence) -> float:
        mask = np.asarray(world.batch(examples, seq_len=seq_len).loss_mask)
        return float(mask.sum() / len(examples))

    spectra, rows = {}, []
    for name, g, ex in (
        ("safety, 1 example", one_safety, safety_many[:1]),
        ("utility, 1 example", one_utility, utility_many[:1]),
        ("safety, 64 examples", many_safety, safety_many),
        ("utility, 64 examples", many_utility, utility_many),
        ("harmful compliance, 64", many_harmful, harmful_many),
    ):
        table = spectrum_table(g, ks=(1, 2, 4, 8))
        agg = table.get("mean") or next(iter(table.values()))
        spectra[name] = agg
        rows.append(
            [
                name,
                tokens_of(ex),
                agg.get("cer@1", np.nan),
                agg.get("cer@4", np.nan),
                agg.get("effective_rank", np.nan),
            ]
        )
    t1 = Table(
        "Insight I: low rank (mean over matrices)",
        ["gradient", "supervised tokens / example", "CER(1)", "CER(4)", "effective rank"],
        rows,
    )
    cos_su, _ = gradient_cosine(many_safety, many_utility)
    cos_sh, _ = gradient_cosine(many_safety, many_harmful)
    cos_1b, _ = gradient_cosine(one_safety, many_safety)
    t2 = Table(
        "Insight II: gradient cosines at the aligned model",
        ["pair", "global cosine"],
        [
            ["safety vs utility (64)", cos_su],
            ["safety vs harmful compliance (64)", cos_sh],
            ["one-example safety vs 64-example safety", cos_1b],
        ],
    )
    mean = basis_overlap_table(one_safety, many_safety, k=config.rank)["mean"]
    t3 = Table(
        f"Insight III: one-example vs 64-example safety subspace (rank {config.rank})",
        ["overlap (left)", "overlap (right)", "random (left)", "random (right)"],
        [[mean["left"], mean["right"], mean["random_left"], mean["random_right"]]],
    )
    metrics = {
        "spectra": spectra,
        "cosine": {
            "safety_utility": cos_su,
            "safety_harmful": cos_sh,
            "one_vs_many_safety": cos_1b,
        },
        "overlap": {k: float(v) for k, v in mean.items()},
    }
    return metrics, [t1, t2, t3]
