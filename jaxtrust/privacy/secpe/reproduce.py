"""``jaxtrust reproduce secpe``: private prompt ensembling (SecPE) with the vote under FHE.

SecPE (Zhang et al., ECAI 2024, arXiv:2502.00847) classifies with ``m`` prompt templates and a
verbalizer, sums the per-prompt class-score vectors (soft vote) and takes the argmax under
homomorphic encryption; it claims the ensemble is more robust than a single prompt at a small
overhead, and a 35.4x faster encrypted argmax than the best prior one. On an 8-topic task
(:mod:`~jaxtrust.privacy.secpe.topics`) this measures, per seed:

1. clean accuracy of every single prompt, of their mean, of the best one (chosen on a validation
   split) and of the soft vote, on ``num_examples`` held-out test sentences;
2. the same under the label-preserving token-substitution attack
   (:func:`~jaxtrust.privacy.secpe.attack.robust_accuracy`: each prompt attacked alone, the soft
   vote attacked as a whole, same budget);
3. (first seed) the encrypted soft vote in TFHE (:func:`jaxtrust.fhe.encrypted_ensemble_argmax`),
   which must equal the quantized plaintext vote, its overhead over one prompt, the encrypted
   verbalizer, and the TFHE argmax cost grid (:func:`jaxtrust.fhe.argmax_grid`);
4. SecPE's CKKS tournament against the sequential (Phoenix-style) argmax and OpenFHE's
   scheme-switching argmax on the quantized sums (:mod:`jaxtrust.fhe.ckks`, in ``.venv-ckks``).

Presets: ``quick`` trains the in-house model (3 seeds); ``full`` runs SmolLM2-135M-Instruct
zero-shot (the packaged GGUF) on the same sentences, with the larger grids.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from jaxtrust import fhe
from jaxtrust.experiments.registry import ExperimentResult, RunContext, register
from jaxtrust.fhe.delegation import call
from jaxtrust.privacy.secpe import ensemble as ens_lib
from jaxtrust.privacy.secpe.attack import robust_accuracy
from jaxtrust.privacy.secpe.report import build_report, summarize
from jaxtrust.privacy.secpe.testbeds import inhouse_testbed, smollm2_testbed
from jaxtrust.privacy.secpe.topics import TopicTask


@dataclasses.dataclass(frozen=True)
class SecPEConfig:
    """Configuration of the ``secpe`` experiment.

    Attributes:
      model: ``"inhouse"`` (trained here) or ``"smollm2"`` (zero-shot).
      num_seeds: seeds ``seed .. seed + num_seeds - 1`` (model init, data draws).
      train_steps / train_examples / trained_templates: the in-house model's training.
      confusion: share of distractor cue words in a sentence (the task's difficulty).
      num_examples / val_examples: test and validation sentences per seed.
      score: class scores, ``"logprob"`` or ``"logit"``.
      batch_size: prompt rows per forward chunk.
      attack_examples / attack_budgets / attack_candidates: the substitution attack (0
        candidates: exhaustive search).
      encrypted: run the TFHE ensemble, overhead, verbalizer and grid on the first seed.
      encrypted_examples / bits / variant: the encrypted soft vote ("" = library default).
      verbalizer_examples / verbalizer_bits: the Concrete-ML verbalizer (0: skip).
      grid_ks / grid_bits / grid_variants / grid_inputs: the TFHE argmax cost grid.
      ckks: run the CKKS argmax variants; ckks_ks / ckks_variants / ckks_inputs / ckks_security.
    """

    model: str = "inhouse"
    num_seeds: int = 3
    train_steps: int = 300
    train_examples: int = 2000
    trained_templates: int = 1
    confusion: float = 0.2
    num_examples: int = 200
    val_examples: int = 200
    score: str = "logprob"
    batch_size: int = 256
    attack_examples: int = 200
    attack_budgets: tuple[int, ...] = (1, 2)
    attack_candidates: int = 4
    encrypted: bool = True
    encrypted_examples: int = 32
    bits: int = 6
    variant: str = ""
    verbalizer_examples: int = 8
    verbalizer_bits: int = 6
    grid_ks: tuple[int, ...] = (2, 4, 8)
    grid_bits: tuple[int, ...] = (4,)
    grid_variants: tuple[str, ...] = ("sequential:default", "tree:promoted", "pairs:promoted")
    grid_inputs: int = 3
    ckks: bool = True
    ckks_ks: tuple[int, ...] = (8,)
    ckks_variants: tuple[str, ...] = ("tournament", "sequential", "scheme_switching")
    ckks_inputs: int = 16
    ckks_security: str = "128"


PRESETS = {
    "quick": SecPEConfig(),
    "full": SecPEConfig(
        model="smollm2",
        num_seeds=3,
        batch_size=32,
        attack_examples=200,
        attack_budgets=(1, 2),
        encrypted_examples=64,
        grid_ks=(2, 4, 8, 16),
        grid_bits=(4, 6),
        grid_variants=(
            "sequential:default",
            "sequential:promoted",
            "tree:promoted",
            "pairs:promoted",
            "tree_round1:promoted",
        ),
        ckks_ks=(8, 16, 32),
    ),
}


def _acc(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(pred == labels))


def _seed_run(config: SecPEConfig, ctx: RunContext, task: TopicTask, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    if config.model == "inhouse":
        bed = inhouse_testbed(
            task,
            seed=seed,
            steps=config.train_steps,
            examples=config.train_examples,
            trained_templates=config.trained_templates,
            score=config.score,
        )
    else:
        bed = smollm2_testbed(task, score=config.score)
    times = {"model_s": time.perf_counter() - t0}
    texts, labels = task.sample(config.num_examples, split="test", seed=seed)
    val_texts, val_labels = task.sample(config.val_examples, split="val", seed=seed)
    t0 = time.perf_counter()
    kw = {"batch_size": config.batch_size}
    scores, hidden = ens_lib.prompt_scores(bed.model, bed.ensemble, texts, return_hidden=True, **kw)
    val_scores = ens_lib.prompt_scores(bed.model, bed.ensemble, val_texts, **kw)
    single = [_acc(p, labels) for p in ens_lib.prompt_predictions(scores).T]
    best = int(np.argmax([_acc(p, val_labels) for p in ens_lib.prompt_predictions(val_scores).T]))
    clean = {
        "single": single,
        "mean_single": float(np.mean(single)),
        "best_single": single[best],
        "ensemble": _acc(ens_lib.ensemble_argmax(scores), labels),
    }
    times["score_s"] = time.perf_counter() - t0
    ctx.log(f"seed {seed}: {bed.description}; clean {np.round(single, 3).tolist()} -> {clean}")
    n_attack = min(config.attack_examples, len(texts))
    by_budget, examples = {}, []
    t0 = time.perf_counter()
    for budget in sorted(set(config.attack_budgets)):
        rep = robust_accuracy(
            bed.model,
            bed.ensemble,
            texts[:n_attack],
            labels[:n_attack],
            budget=budget,
            allowed_tokens=bed.allowed,
            protected_tokens=bed.protected,
            candidates_per_position=config.attack_candidates or None,
            batch_size=config.batch_size,
        )
        rob = rep["robust"]
        by_budget[str(budget)] = {
            "clean": rep["clean"],
            "robust": {
                **rob,
                "mean_single": float(np.mean(rob["single"])),
                "best_single": rob["single"][best],
            },
        }
        ctx.log(
            f"  budget {budget}: robust single {np.round(rob['single'], 3).tolist()}, "
            f"ensemble {rob['ensemble']:.3f}"
        )
        joint = rep["results"]["ensemble"]
        for i in np.flatnonzero(joint.clean_correct & ~joint.robust_correct)[:2]:
            examples.append([texts[i], bed.decode(joint.text_ids[i, : joint.lengths[i]])])
    times["attack_s"] = time.perf_counter() - t0
    return {
        "seed": seed,
        "description": bed.description,
        "best_prompt": best,
        "clean": clean,
        "by_budget": by_budget,
        "examples": examples,
        "times": {**times, "train_s": bed.train_s},
        "_bed": bed,
        "_scores": scores,
        "_hidden": hidden,
        "_labels": labels,
    }


def _encrypted(config: SecPEConfig, ctx: RunContext, first: dict[str, Any]) -> dict[str, Any]:
    scores, labels, bed = first["_scores"], first["_labels"], first["_bed"]
    n = min(config.encrypted_examples, len(labels))
    m = scores.shape[1]
    variant = config.variant or fhe.DEFAULT_ARGMAX_VARIANT
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    ctx.log(f"encrypted soft vote: {n} inputs, {config.bits}-bit sum, {variant}")
    res = fhe.encrypted_ensemble_argmax(scores[:n], bits=config.bits, variant=variant)
    one = fhe.encrypted_ensemble_argmax(scores[:n, :1], bits=config.bits, variant=variant)
    float_pred = ens_lib.ensemble_argmax(scores[:n])
    out["encrypted"] = {
        "inputs": n,
        "bits": config.bits,
        "variant": variant,
        "accuracy": _acc(res.argmax, labels[:n]),
        "quantized_plaintext_accuracy": _acc(res.plaintext_argmax, labels[:n]),
        "float_ensemble_accuracy_same_inputs": _acc(float_pred, labels[:n]),
        "agreement_with_float_ensemble": _acc(res.argmax, float_pred),
        "matches": bool(res.matches),
        "stats": res.stats,
        "one_prompt_stats": one.stats,
        "one_prompt_matches": bool(one.matches),
        "overhead": {
            key: res.stats[key] / one.stats[key] if one.stats.get(key) else None
            for key in ("run_s", "pbs", "compile_s", "keygen_s", "encrypt_s")
        },
        "seconds": time.perf_counter() - t0,
    }
    if config.verbalizer_examples > 0:
        nv = min(config.verbalizer_examples, len(labels))
        weights = ens_lib.verbalizer_weights(bed.model, bed.ensemble)
        verb_labels = np.repeat(labels[:nv, None], m, axis=1)
        verb = fhe.encrypted_verbalizer(
            first["_hidden"][:nv], weights, labels=verb_labels, n_bits=config.verbalizer_bits
        )
        out["verbalizer"] = {
            "inputs": nv,
            "n_bits": config.verbalizer_bits,
            "float_accuracy": _acc(np.argmax(first["_hidden"][:nv] @ weights.T, -1), verb_labels),
            "encrypted_accuracy": _acc(np.argmax(verb.scores, -1), verb_labels),
            "accuracy_loss": verb.accuracy_loss,
            "argmax_agreement": verb.argmax_agreement,
            "max_abs_error": verb.max_abs_error,
            "stats": verb.stats,
        }
    if config.grid_ks and config.grid_bits:
        ctx.log(f"TFHE argmax grid: k {list(config.grid_ks)} x bits {list(config.grid_bits)}")
        t0 = time.perf_counter()
        out["grid"] = fhe.argmax_grid(
            list(config.grid_ks),
            list(config.grid_bits),
            list(config.grid_variants),
            prompts=m,
            inputs=config.grid_inputs,
        )
        out["grid_s"] = time.perf_counter() - t0
    return out


def _ckks(config: SecPEConfig, ctx: RunContext, first: dict[str, Any]) -> dict[str, Any]:
    status = fhe.environment_status("ckks")
    if not (status["in_process"] or status["delegation"]):
        ctx.log("CKKS: no .venv-ckks (openfhe) found; skipped")
        return {"available": False, "grid": [], "reason": status["error"] or "not found"}
    q, spec = fhe.quantize_scores(first["_scores"], config.bits)
    rng = np.random.default_rng(first["seed"])
    grid = []
    for k in config.ckks_ks:
        # The task's own quantized votes for k = 8; wider vectors pad with random votes.
        sums = q.sum(axis=1)[: config.ckks_inputs]
        if k != sums.shape[1]:
            sums = rng.integers(0, 2**config.bits, size=(config.ckks_inputs, k))
        for variant in config.ckks_variants:
            ctx.log(f"CKKS {variant}, k={k}, {len(sums)} inputs")
            t0 = time.perf_counter()
            _, row = call(
                "ckks_argmax",
                {"sums": sums.astype(np.float64)},
                {
                    "variant": variant,
                    "security": config.ckks_security,
                    "levels": 2**config.bits - 1,
                },
            )
            row.pop("argmax", None), row.pop("reference", None)
            grid.append({**row, "wall_s": time.perf_counter() - t0})
    return {"available": True, "grid": grid, "python": status["python"]}


@register("secpe", SecPEConfig, PRESETS)
def run(config: SecPEConfig, ctx: RunContext) -> ExperimentResult:
    """Prompt ensembling, the soft vote's argmax under FHE: accuracy, robustness, cost."""

    if config.model not in ("inhouse", "smollm2"):
        raise ValueError(f"model must be 'inhouse' or 'smollm2', got {config.model!r}")
    if config.num_seeds < 1 or any(b < 0 for b in config.attack_budgets):
        raise ValueError("num_seeds must be >= 1 and attack_budgets >= 0")
    task = TopicTask(seed=ctx.seed, confusion=config.confusion)
    seeds = [_seed_run(config, ctx, task, ctx.seed + i) for i in range(config.num_seeds)]
    enc = _encrypted(config, ctx, seeds[0]) if config.encrypted else {}
    ckks = _ckks(config, ctx, seeds[0]) if config.ckks else {"available": False, "grid": []}
    metrics = summarize(config, seeds, enc, ckks)
    tables, summary = build_report(ctx, metrics)
    return ExperimentResult(metrics=metrics, tables=tables, summary=summary)
