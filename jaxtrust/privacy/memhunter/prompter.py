# ruff: noqa: F722
r"""MemHunter's memory-inducing prompter: a small LM trained in rounds of rejection sampling.

The auditor holds candidate texts. Each text is split into a *hint* :math:`h` (what the
prompter sees: its opening tokens) and a *reference* :math:`r` (the rest: what a memorising
target would reproduce). The prompter :math:`\pi` is a causal LM over the target's tokenizer
that maps ``<bos> h <sep>`` to a prompt :math:`q`; the target :math:`T` greedy-decodes a
continuation :math:`c = T(\text{<bos>}\, q)` and the memorization score is ROUGE-L precision
:math:`s(c, r) = \mathrm{LCS}(c, r)/|c|` (:mod:`~jaxtrust.privacy.memhunter.memorization`).

Training (:func:`train_prompter`), on texts known to be in the target's training data and
disjoint from any dataset later tested:

1. for every hint, sample :math:`K` prompts :math:`q_k \sim \pi(\cdot \mid h)`;
2. query the target and score each continuation against the reference;
3. keep the best prompt of each hint when its score is at least ``keep_threshold``
   (rejection sampling);
4. fine-tune :math:`\pi` on the kept ``(h, q)`` pairs (:func:`jaxtrust.training.finetune`);
5. repeat for ``rounds`` rounds.

:func:`seed_pairs` gives the round-0 supervision: contiguous windows of the hint (the family
of prompts rejection sampling starts from; the prompter is free to generate anything once it
samples). :func:`memhunter_scores` then scores any dataset: one greedy and :math:`K-1` sampled
prompts per text, the best score kept — the per-sample statistic of the dataset-level test.

The prompter's conditioning on the opening tokens is this implementation's choice: the paper
(Wu, Lou, Zheng, Chen, *MemHunter: Automated and Verifiable Memorization Detection at
Dataset-scale in LLMs*, 2024) gives no code and its summaries do not say what the prompter is
conditioned on.

Example::

    pairs = seed_pairs(hints, seed=0)
    prompter = finetune(CausalLM(cfg, rngs=nnx.Rngs(0)), sft_pool(tok, *pairs), ...).model
    trace = train_prompter(prompter, target, tok, tok, hints, refs, PrompterConfig(), seed=0)
    scores = memhunter_scores(trace.model, target, tok, tok, hints2, refs2, num_prompts=4,
                              key=jax.random.key(0))
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from jaxtrust.data.batching import collate
from jaxtrust.eval.responses import generate_responses
from jaxtrust.models.config import LMConfig
from jaxtrust.models.transformer import CausalLM
from jaxtrust.privacy.memhunter.memorization import (
    MemorizationScores,
    memorization_scores,
    word_ids,
)
from jaxtrust.training.finetune import finetune
from jaxtrust.training.recipes import adamw_cosine

UNITS = ("tokens", "words")

__all__ = [
    "UNITS",
    "MemHunterScores",
    "PrompterConfig",
    "PrompterTrace",
    "check_tokenizers",
    "continuation_scores",
    "init_prompter",
    "memhunter_scores",
    "respond",
    "sample_prompts",
    "seed_pairs",
    "sft_pool",
    "train_prompter",
]


@dataclasses.dataclass(frozen=True)
class PrompterConfig:
    """Hyper-parameters of :func:`train_prompter`.

    Attributes:
      prompt_len: most prompt tokens the prompter writes.
      continuation_len: tokens the target decodes after a prompt.
      num_candidates: prompts sampled per hint per round (:math:`K`).
      rounds: rejection-sampling rounds.
      keep_threshold: the least ROUGE-L precision of a kept prompt.
      steps_per_round: prompter fine-tuning steps per round.
      batch_size: prompter fine-tuning batch size (and generation chunk size).
      learning_rate: AdamW peak step size of each round.
      temperature: sampling temperature of the prompter.
      units: score overlap in ``"tokens"`` or in ``"words"`` (decoded text split into words).
    """

    prompt_len: int = 32
    continuation_len: int = 48
    num_candidates: int = 4
    rounds: int = 3
    keep_threshold: float = 0.3
    steps_per_round: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-3
    temperature: float = 1.0
    units: str = "tokens"

    def __post_init__(self):
        if self.units not in UNITS:
            raise ValueError(f"units must be one of {UNITS}, got {self.units!r}")
        for name in ("prompt_len", "continuation_len", "num_candidates", "rounds"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("steps_per_round", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= self.keep_threshold <= 1.0:
            raise ValueError(f"keep_threshold must be in [0, 1], got {self.keep_threshold!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")


def check_tokenizers(
    prompter: nnx.Module, target: nnx.Module, prompter_tokenizer: Any, target_tokenizer: Any
) -> None:
    """Raise ``ValueError`` unless prompter and target share one tokenizer and vocabulary.

    The prompter's output ids are fed to the target unchanged, so a different tokenizer (or a
    model whose vocabulary does not match its tokenizer) would query the target with garbage.
    """
    if prompter_tokenizer != target_tokenizer:
        raise ValueError(
            "tokenizer mismatch: the prompter's tokenizer "
            f"({type(prompter_tokenizer).__name__}) differs from the target's "
            f"({type(target_tokenizer).__name__}); the prompter must write the target's ids"
        )
    for name, model in (("prompter", prompter), ("target", target)):
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        if vocab is None:
            raise TypeError(f"{name} must be a causal LM with .config.vocab_size")
        if vocab < target_tokenizer.vocab_size:
            raise ValueError(
                f"tokenizer mismatch: {name} has vocab_size {vocab} < the tokenizer's "
                f"{target_tokenizer.vocab_size}"
            )


def sft_pool(
    tokenizer: Any,
    hints: Sequence[Sequence[int | np.integer]],
    prompts: Sequence[Sequence[int | np.integer]],
    *,
    seq_len: int | None = None,
) -> dict[str, np.ndarray]:
    """The prompter's fine-tuning pool: ``<bos> hint <sep> prompt <eos>``, loss on the prompt.

    Args:
      tokenizer: has ``bos_id``, ``sep_id``, ``eos_id``, ``pad_id``.
      hints: hint ids per example.
      prompts: target prompt ids per example.
      seq_len: pad every row to this length (default: the longest, rounded up to 8).

    Returns:
      ``{"tokens", "attention_mask", "loss_mask"}``.
    """
    if len(hints) != len(prompts):
        raise ValueError(f"hints ({len(hints)}) and prompts ({len(prompts)}) must pair up")
    if not hints:
        raise ValueError("hints is empty (nothing to fine-tune the prompter on)")
    sources = [[tokenizer.bos_id, *h, tokenizer.sep_id] for h in hints]
    targets = [[*p, tokenizer.eos_id] for p in prompts]
    return collate(sources, targets, pad_id=tokenizer.pad_id, seq_len=seq_len).as_dict()


def seed_pairs(
    hints: Sequence[Sequence[int | np.integer]],
    *,
    seed: int,
    per_hint: int = 4,
    min_len: int = 8,
    max_len: int | None = None,
) -> tuple[list[list[int]], list[list[int]]]:
    """Round-0 supervision: each hint paired with itself and random contiguous windows of it.

    Args:
      hints: hint ids.
      seed: host seed of the windows.
      per_hint: windows per hint (the first is the whole hint, or its last ``max_len`` ids).
      min_len: the shortest window.
      max_len: the longest window (default: the hint's length).

    Returns:
      ``(hints, prompts)`` lists of equal length ``len(hints) * per_hint``.
    """
    if not hints:
        raise ValueError("hints is empty")
    rng = np.random.default_rng(seed)
    hs, ps = [], []
    for h in hints:
        h = list(map(int, h))
        top = len(h) if max_len is None else min(len(h), max_len)
        for j in range(per_hint):
            if j == 0 or top <= min_len:
                window = h[len(h) - top :]
            else:
                length = int(rng.integers(min_len, top + 1))
                start = int(rng.integers(0, len(h) - length + 1))
                window = h[start : start + length]
            hs.append(h)
            ps.append(window)
    return hs, ps


def init_prompter(
    tokenizer: Any,
    hints: Sequence[Sequence[int | np.integer]],
    *,
    hidden: int = 64,
    layers: int = 2,
    steps: int = 150,
    prompt_len: int = 32,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> nnx.Module:
    """A fresh small Llama-layout prompter fine-tuned on :func:`seed_pairs` of ``hints``.

    Args:
      tokenizer: the target's tokenizer (``vocab_size``, ``bos_id``, ``sep_id``, ``eos_id``,
        ``pad_id``).
      hints: hint ids of texts the target is known to have seen.
      hidden, layers: the prompter's width and depth (4 heads).
      steps: fine-tuning steps.
      prompt_len: the longest prompt it will write (sets the sequence length).
      learning_rate: AdamW peak step size.
      seed: initialisation, window and batching seed.

    Returns:
      The round-0 prompter (a :class:`~jaxtrust.models.CausalLM`).
    """
    if not hints:
        raise ValueError("hints is empty")
    config = LMConfig.for_tokenizer(
        tokenizer,
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_layers=layers,
        num_heads=4,
        num_kv_heads=2,
        max_position_embeddings=256,
    )
    hs, ps = seed_pairs(hints, seed=seed, min_len=min(8, prompt_len), max_len=prompt_len)
    seq_len = _bucket(max(len(h) for h in hints) + prompt_len + 3)
    return finetune(
        CausalLM(config, rngs=nnx.Rngs(seed + 5)),
        sft_pool(tokenizer, hs, ps, seq_len=seq_len),
        adamw_cosine(learning_rate, steps),
        steps=steps,
        batch_size=min(64, len(hs)),
        seed=seed,
    ).model


def respond(
    model: nnx.Module,
    tokenizer: Any,
    prompts: Sequence[Sequence[int | np.integer]],
    *,
    max_new_tokens: int,
    batch_size: int,
    prompt_bucket: int,
    temperature: float = 0.0,
    key: jax.Array | None = None,
) -> list[list[int]]:
    """Generated ids (without the stop token) for every prompt, in fixed-shape chunks.

    The list is padded to a multiple of ``batch_size`` so that every call of one model with
    one bucket compiles once, whatever the number of prompts.
    """
    n = len(prompts)
    if n == 0:
        raise ValueError("prompts is empty")
    padded = list(prompts) + [prompts[-1]] * (-n % batch_size)
    out = generate_responses(
        model,
        tokenizer,
        padded,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        temperature=temperature,
        key=key,
        prompt_bucket=prompt_bucket,
        return_ids=True,
    )
    eos = tokenizer.eos_id
    return [[t for t in ids if t != eos] for ids in out.ids[:n]]


def _bucket(n: int) -> int:
    return max(8, -(-n // 8) * 8)


def sample_prompts(
    prompter: nnx.Module,
    tokenizer: Any,
    hints: Sequence[Sequence[int | np.integer]],
    *,
    num: int,
    key: jax.Array,
    prompt_len: int,
    temperature: float = 1.0,
    batch_size: int = 64,
) -> list[list[list[int]]]:
    """``num`` prompts per hint: the first greedy, the others sampled at ``temperature``.

    Returns:
      ``prompts[i][k]``: the ``k``-th prompt ids of hint ``i`` (at most ``prompt_len``).
    """
    if not hints:
        raise ValueError("hints is empty")
    sources = [[tokenizer.bos_id, *h, tokenizer.sep_id] for h in hints]
    bucket = _bucket(max(len(s) for s in sources))
    out: list[list[list[int]]] = [[] for _ in hints]
    for k in range(num):
        ids = respond(
            prompter,
            tokenizer,
            sources,
            max_new_tokens=prompt_len,
            batch_size=batch_size,
            prompt_bucket=bucket,
            temperature=0.0 if k == 0 else temperature,
            key=None if k == 0 else jax.random.fold_in(key, k),
        )
        for i, p in enumerate(ids):
            out[i].append(p[:prompt_len])
    return out


def continuation_scores(
    target: nnx.Module,
    tokenizer: Any,
    prompts: Sequence[Sequence[int | np.integer]],
    references: Sequence[Sequence[int | np.integer]],
    *,
    continuation_len: int,
    prompt_len: int,
    batch_size: int = 64,
    temperature: float = 0.0,
    key: jax.Array | None = None,
    units: str = "tokens",
) -> tuple[MemorizationScores, list[list[int]]]:
    """The target's continuation of ``<bos> prompt`` scored against each reference.

    Args:
      units: ``"tokens"`` (ids as generated) or ``"words"`` (:func:`word_ids` of the decoded
        continuation and reference).

    Returns:
      ``(scores, continuations)`` (continuations as token ids).
    """
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}, got {units!r}")
    if len(prompts) != len(references):
        raise ValueError(f"prompts ({len(prompts)}) and references ({len(references)}) differ")
    queries = [[tokenizer.bos_id, *list(p)[:prompt_len]] for p in prompts]
    cont = respond(
        target,
        tokenizer,
        queries,
        max_new_tokens=continuation_len,
        batch_size=batch_size,
        prompt_bucket=_bucket(prompt_len + 1),
        temperature=temperature,
        key=key,
    )
    if units == "words":
        words = [word_ids(tokenizer.decode(c)) for c in cont]
        refs = [word_ids(tokenizer.decode(r)) for r in references]
        return memorization_scores(words, refs), cont
    return memorization_scores(cont, references), cont


class MemHunterScores(NamedTuple):
    """Per-text best scores over the prompter's prompts.

    Attributes:
      precision: best ROUGE-L precision of a continuation against the reference.
      substring: the longest common substring of that same best continuation.
      best_prompt: the prompt that reached it (ids).
      seconds: wall time (prompting and querying).
    """

    precision: np.ndarray
    substring: np.ndarray
    best_prompt: list[list[int]]
    seconds: float


def memhunter_scores(
    prompter: nnx.Module,
    target: nnx.Module,
    prompter_tokenizer: Any,
    target_tokenizer: Any,
    hints: Sequence[Sequence[int | np.integer]],
    references: Sequence[Sequence[int | np.integer]],
    *,
    num_prompts: int,
    key: jax.Array,
    prompt_len: int = 32,
    continuation_len: int = 48,
    temperature: float = 1.0,
    batch_size: int = 64,
    units: str = "tokens",
) -> MemHunterScores:
    """Score each text by the best continuation the prompter's prompts elicit from the target.

    Args:
      prompter, target: causal LMs over one tokenizer.
      prompter_tokenizer, target_tokenizer: must be equal (:func:`check_tokenizers`).
      hints: opening ids of each text (what the prompter reads).
      references: the rest of each text (what a memorising target would reproduce).
      num_prompts: prompts per text (one greedy, the rest sampled).
      key: a ``jax.random`` key of the sampling.
      prompt_len, continuation_len, temperature, batch_size, units: as in
        :class:`PrompterConfig`.

    Returns:
      :class:`MemHunterScores`.

    Raises:
      ValueError: empty or unpaired hints/references, a tokenizer mismatch.
    """
    check_tokenizers(prompter, target, prompter_tokenizer, target_tokenizer)
    if len(hints) == 0:
        raise ValueError("hints is empty: an empty dataset cannot be scored")
    if len(hints) != len(references):
        raise ValueError(f"hints ({len(hints)}) and references ({len(references)}) differ")
    if not isinstance(num_prompts, int) or num_prompts < 1:
        raise ValueError(f"num_prompts must be a positive int, got {num_prompts!r}")
    start = time.perf_counter()
    prompts = sample_prompts(
        prompter,
        target_tokenizer,
        hints,
        num=num_prompts,
        key=key,
        prompt_len=prompt_len,
        temperature=temperature,
        batch_size=batch_size,
    )
    flat = [p for ps in prompts for p in ps]
    refs = [r for r in references for _ in range(num_prompts)]
    scores, _ = continuation_scores(
        target,
        target_tokenizer,
        flat,
        refs,
        continuation_len=continuation_len,
        prompt_len=prompt_len,
        batch_size=batch_size,
        units=units,
    )
    prec = scores.precision.reshape(len(hints), num_prompts)
    sub = scores.substring.reshape(len(hints), num_prompts)
    best = prec.argmax(1)
    rows = np.arange(len(hints))
    return MemHunterScores(
        prec[rows, best],
        sub[rows, best],
        [prompts[i][int(best[i])] for i in rows],
        time.perf_counter() - start,
    )


class PrompterTrace(NamedTuple):
    """What :func:`train_prompter` returns.

    Attributes:
      model: the trained prompter.
      rounds: per round ``{"round", "mean_best", "mean_sampled", "kept", "seconds"}``; round
        ``r``'s scores are those of the prompter *before* its ``r``-th fine-tune.
      seconds: total wall time.
    """

    model: nnx.Module
    rounds: list[dict[str, float]]
    seconds: float


def train_prompter(
    prompter: nnx.Module,
    target: nnx.Module,
    prompter_tokenizer: Any,
    target_tokenizer: Any,
    hints: Sequence[Sequence[int | np.integer]],
    references: Sequence[Sequence[int | np.integer]],
    config: PrompterConfig,
    *,
    seed: int,
) -> PrompterTrace:
    """Rounds of sample → query → keep the best prompts → fine-tune (module docstring).

    Args:
      prompter: the initial prompter (e.g. fine-tuned on :func:`seed_pairs`); not modified.
      target: the target LM.
      prompter_tokenizer, target_tokenizer: must be equal.
      hints, references: the training texts (known members of the target's training data).
      config: :class:`PrompterConfig`.
      seed: seed of sampling and fine-tuning.

    Returns:
      :class:`PrompterTrace` (the history ends with a scoring-only entry of the final model).
    """
    if not isinstance(config, PrompterConfig):
        raise TypeError(f"config must be a PrompterConfig, got {type(config).__name__}")
    check_tokenizers(prompter, target, prompter_tokenizer, target_tokenizer)
    if len(hints) == 0 or len(hints) != len(references):
        raise ValueError(
            f"hints ({len(hints)}) and references ({len(references)}) must pair up, non-empty"
        )
    start = time.perf_counter()
    key = jax.random.key(seed)
    seq_len = _bucket(max(len(h) for h in hints) + config.prompt_len + 3)
    history: list[dict[str, float]] = []
    kept_h: list[list[int]] = []
    kept_p: list[list[int]] = []
    for r in range(config.rounds + 1):
        clock = time.perf_counter()
        prompts = sample_prompts(
            prompter,
            target_tokenizer,
            hints,
            num=config.num_candidates,
            key=jax.random.fold_in(key, r),
            prompt_len=config.prompt_len,
            temperature=config.temperature,
            batch_size=config.batch_size,
        )
        flat = [p for ps in prompts for p in ps]
        refs = [x for x in references for _ in range(config.num_candidates)]
        scores, _ = continuation_scores(
            target,
            target_tokenizer,
            flat,
            refs,
            continuation_len=config.continuation_len,
            prompt_len=config.prompt_len,
            batch_size=config.batch_size,
            units=config.units,
        )
        prec = scores.precision.reshape(len(hints), config.num_candidates)
        best = prec.argmax(1)
        keep = prec.max(1) >= config.keep_threshold
        entry = {
            "round": float(r),
            "mean_best": float(prec.max(1).mean()),
            "mean_sampled": float(prec.mean()),
            "mean_greedy": float(prec[:, 0].mean()),
            "kept": float(keep.sum()),
        }
        if r == config.rounds:  # the final prompter is scored, not trained further
            entry["seconds"] = time.perf_counter() - clock
            history.append(entry)
            break
        # The kept set accumulates over rounds (as rejection-sampling fine-tuning does), so a
        # round with few hits does not make the prompter forget earlier ones.
        for i in np.flatnonzero(keep):
            kept_h.append(list(hints[i]))
            kept_p.append(prompts[i][int(best[i])])
        if kept_h:
            pool = sft_pool(target_tokenizer, kept_h, kept_p, seq_len=seq_len)
            prompter = finetune(
                prompter,
                pool,
                adamw_cosine(config.learning_rate, config.steps_per_round),
                steps=config.steps_per_round,
                batch_size=config.batch_size,
                seed=seed + 1000 * (r + 1),
                step_key=("memhunter.prompter", config.learning_rate, config.steps_per_round),
            ).model
        entry["seconds"] = time.perf_counter() - clock
        history.append(entry)
    return PrompterTrace(prompter, history, time.perf_counter() - start)
