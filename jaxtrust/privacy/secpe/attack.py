"""Robustness of single prompts and of the ensemble to greedy token substitutions in the input.

SecPE (Zhang et al., ECAI 2024, arXiv:2502.00847) argues that a prompt ensemble is more robust
than a single prompt. :func:`attack` measures it: greedy token substitutions in the *input text*
(shared by all prompts), budget ``b`` substitutions at distinct positions. Each step ranks
substitutions ``(position t, token v)`` by the first-order estimate of HotFlip (Ebrahimi, Rao,
Lowd, Dou, ACL 2018) of the change of the margin ``M = y*_true - y*_rival``,
``(E_v - E_cur) . dM/de_t`` (``dM/de_t`` summed over the positions of ``t`` in every attacked
prompt), verifies the best ``c`` per position with exact forward passes and keeps the one that
lowers the margin most (``c=None``: all allowed tokens, exhaustive search). The attacked
objective is one prompt's scores (a single-prompt attack) or the soft vote (an attack on the
ensemble). Label-preserving constraints come from the caller: ``protected_tokens`` are never
edited (the words that carry the label) and substitutes come only from ``allowed_tokens``.

Example::

    result = attack(model, ens, texts, labels, target="ensemble", budget=2,
                    allowed_tokens=fillers, protected_tokens=cue_words)
    result.clean_accuracy, result.robust_accuracy
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Int

from jaxtrust.privacy.secpe.ensemble import (
    _margin_embedding_grad,
    check_labels,
    check_model,
    pad_rows,
    scores_of,
)
from jaxtrust.privacy.secpe.prompts import PromptEnsemble

__all__ = ["AttackResult", "attack", "robust_accuracy"]


@dataclasses.dataclass(frozen=True)
class AttackResult:
    """Outcome of :func:`attack` on ``n`` inputs.

    Attributes:
      text_ids: ``[n, T]`` adversarial input ids (clean ids where nothing was substituted).
      lengths: ``[n]`` input lengths (substitutions keep them).
      clean_correct / robust_correct: ``[n]`` the attacked objective's prediction is right
        before / after the attack.
      substitutions: ``[n]`` number of tokens changed.
      clean_margin / robust_margin: ``[n]`` margin ``y_true - max_{c != true} y_c``.
      target: the attacked prompts (``"ensemble"`` or a template index).
    """

    text_ids: np.ndarray
    lengths: np.ndarray
    clean_correct: np.ndarray
    robust_correct: np.ndarray
    substitutions: np.ndarray
    clean_margin: np.ndarray
    robust_margin: np.ndarray
    target: Any

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.mean())

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust_correct.mean())


def _margin(agg: np.ndarray, labels: np.ndarray) -> np.ndarray:
    rows = np.arange(agg.shape[0])
    others = agg.copy()
    others[rows, labels] = -np.inf
    return agg[rows, labels] - others.max(axis=-1)


def _correct(agg: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.argmax(agg, axis=-1) == labels


def attack(
    model,
    ensemble: PromptEnsemble,
    texts: Sequence[str],
    labels: Int[np.ndarray, " n"],
    *,
    target: str | int = "ensemble",
    budget: int = 2,
    allowed_tokens: Sequence[int] | None = None,
    protected_tokens: Sequence[int] = (),
    candidates_per_position: int | None = 8,
    batch_size: int = 256,
) -> AttackResult:
    """Greedy adversarial token substitutions in the inputs (module docstring: HotFlip + search).

    Args:
      model: a jaxtrust causal LM.
      ensemble: the prompts.
      texts: ``n`` inputs; labels: their classes ``[n]``.
      target: ``"ensemble"`` (attack the soft vote of every prompt) or a template index (attack
        that prompt alone).
      budget: at most this many substituted tokens per input (distinct positions).
      allowed_tokens: substitute token ids (default: every id of the model's vocabulary that is
        not protected, not a label token and not ``pad_id``). The caller makes them
        label-preserving.
      protected_tokens: input tokens that are never substituted (and never substitutes).
      candidates_per_position: substitutions per position verified exactly, chosen by the
        first-order estimate; ``None`` verifies every allowed token (exhaustive search).
      batch_size: rows per forward chunk.

    Returns:
      an :class:`AttackResult`; inputs the target already misclassifies are left unchanged.

    Raises:
      ValueError: bad ``target``, ``budget``, ``labels``, ``candidates_per_position`` or token ids.
    """
    check_model(model, ensemble)
    k = ensemble.num_classes
    encoded = ensemble.encode_texts(texts)
    n, width = encoded.ids.shape
    labels = check_labels(labels, n, k)
    if target == "ensemble":
        prompts = list(range(ensemble.num_prompts))
    elif (
        isinstance(target, int | np.integer)
        and not isinstance(target, bool)
        and 0 <= target < ensemble.num_prompts
    ):
        prompts = [int(target)]
    else:
        raise ValueError(
            f"target must be 'ensemble' or a template index in [0, {ensemble.num_prompts}), got "
            f"{target!r}"
        )
    if not isinstance(budget, int | np.integer) or budget < 0:
        raise ValueError(f"budget must be a non-negative int, got {budget!r}")
    if candidates_per_position is not None and (
        not isinstance(candidates_per_position, int | np.integer) or candidates_per_position < 1
    ):
        raise ValueError(
            "candidates_per_position must be a positive int or None, got "
            f"{candidates_per_position!r}"
        )
    vocab = model.config.vocab_size
    protected = np.asarray(sorted({int(t) for t in protected_tokens}), np.int64)
    label_ids = {t for g in ensemble.verbalizer.token_ids for t in g}
    if allowed_tokens is None:
        allowed = np.array(
            [t for t in range(vocab) if t not in label_ids and t != ensemble.pad_id], np.int64
        )
    else:
        allowed = np.asarray(sorted({int(t) for t in allowed_tokens}), np.int64)
        if allowed.size and (allowed.min() < 0 or allowed.max() >= vocab):
            raise ValueError(
                f"allowed_tokens must be token ids in [0, {vocab}), got range [{allowed.min()}, "
                f"{allowed.max()}]"
            )
    allowed = allowed[~np.isin(allowed, protected)]
    if allowed.size == 0:
        raise ValueError("no substitute tokens: allowed_tokens minus protected_tokens is empty")

    ids = encoded.ids.copy()
    lengths = encoded.lengths
    editable = encoded.valid & ~np.isin(ids, protected)
    scores, _ = scores_of(model, ensemble, ids, lengths, prompts, batch_size=batch_size)
    agg = scores.sum(axis=1)
    clean_correct = _correct(agg, labels)
    clean_margin = _margin(agg, labels)
    margin = clean_margin.copy()
    active = clean_correct & editable.any(axis=1)
    substitutions = np.zeros(n, np.int32)
    table = np.asarray(model.embed.embedding[...], np.float32)
    graphdef, state = nnx.split(model)
    class_ids, class_mask = ensemble.verbalizer.id_matrix()

    for _ in range(int(budget)):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        sub_ids, sub_len = ids[idx], lengths[idx]
        # Candidate (position, token) pairs per attacked input.
        if candidates_per_position is None or candidates_per_position >= allowed.size:
            per_pos = np.broadcast_to(allowed, (idx.size, width, allowed.size))
        else:
            rival = np.argmax(
                np.where(np.arange(k)[None, :] == labels[idx, None], -np.inf, agg[idx]), axis=-1
            )
            grads = _text_gradients(
                graphdef,
                state,
                ensemble,
                sub_ids,
                sub_len,
                prompts,
                labels[idx],
                rival,
                class_ids,
                class_mask,
                batch_size,
            )
            estimate = (
                grads @ table[allowed].T - np.sum(grads * table[sub_ids], axis=-1)[..., None]
            )  # [a, T, A]
            estimate = np.where(allowed[None, None, :] == sub_ids[..., None], np.inf, estimate)
            top = np.argsort(estimate, axis=-1, kind="stable")[..., :candidates_per_position]
            per_pos = allowed[top]
        cand_rows, cand_owner = [], []
        for a, i in enumerate(idx):
            for t in np.flatnonzero(editable[i]):
                for v in per_pos[a, t]:
                    if v == ids[i, t]:
                        continue
                    row = ids[i].copy()
                    row[t] = v
                    cand_rows.append(row)
                    cand_owner.append((i, t))
        if not cand_rows:
            break
        cand_ids = np.stack(cand_rows)
        owners = np.array([o[0] for o in cand_owner])
        cand_scores, _ = scores_of(
            model, ensemble, cand_ids, lengths[owners], prompts, batch_size=batch_size
        )
        cand_agg = cand_scores.sum(axis=1)
        cand_margin = _margin(cand_agg, labels[owners])
        for i in idx:
            mine = np.flatnonzero(owners == i)
            best = mine[np.argmin(cand_margin[mine])]
            if (
                cand_margin[best] < margin[i]
                or not _correct(cand_agg[best : best + 1], labels[i : i + 1])[0]
            ):
                ids[i] = cand_ids[best]
                editable[i, cand_owner[best][1]] = False
                margin[i] = cand_margin[best]
                agg[i] = cand_agg[best]
                substitutions[i] += 1
            else:
                active[i] = False  # no substitution helps: a local optimum
        active &= _correct(agg, labels) & editable.any(axis=1)

    return AttackResult(
        ids,
        lengths,
        clean_correct,
        _correct(agg, labels),
        substitutions,
        clean_margin,
        _margin(agg, labels),
        target,
    )


def _text_gradients(
    graphdef,
    state,
    ensemble,
    text_ids,
    lengths,
    prompts,
    labels,
    rival,
    class_ids,
    class_mask,
    batch_size,
) -> np.ndarray:
    """``dM/de_t`` for every input token: ``[n, T, dim]``, summed over the attacked prompts."""
    tokens, mask, text_pos = ensemble.assemble(text_ids, lengths, prompts)
    p, n, length = tokens.shape
    rows_tokens = tokens.reshape(p * n, length)
    rows_mask = mask.reshape(p * n, length)
    true_rows = np.tile(labels, p).astype(np.int32)
    rival_rows = np.tile(rival, p).astype(np.int32)
    pt, pm, chunk = pad_rows(rows_tokens, rows_mask, ensemble.pad_id, batch_size)
    total, seq = pt.shape
    weight = np.zeros(total, np.float32)
    weight[: p * n] = 1.0
    tr = np.zeros(total, np.int32)
    rr = np.zeros(total, np.int32)
    tr[: p * n], rr[: p * n] = true_rows, rival_rows
    grads = []
    for s in range(0, total, chunk):
        sl = slice(s, s + chunk)
        g = _margin_embedding_grad(
            graphdef,
            state,
            jnp.asarray(pt[sl]),
            jnp.asarray(pm[sl]),
            jnp.asarray(class_ids),
            jnp.asarray(class_mask),
            jnp.asarray(tr[sl]),
            jnp.asarray(rr[sl]),
            jnp.asarray(weight[sl]),
            score=ensemble.score,
        )
        grads.append(np.asarray(g))
    grads = np.concatenate(grads)[: p * n, seq - length :].reshape(p, n, length, -1)
    out = np.zeros((n, text_ids.shape[1], grads.shape[-1]), np.float32)
    for a in range(p):
        for i in range(n):
            valid = text_pos[a, i] >= 0
            out[i, valid] += grads[a, i, text_pos[a, i, valid]]
    return out


def robust_accuracy(
    model,
    ensemble: PromptEnsemble,
    texts: Sequence[str],
    labels: Int[np.ndarray, " n"],
    **attack_kwargs,
) -> dict[str, Any]:
    """Clean and robust accuracy of every single prompt (each attacked on its own) and of the
    ensemble (its soft vote attacked), with the same budget.

    Returns:
      ``{"clean": {"single": [m], "ensemble"}, "robust": {"single": [m], "ensemble"},
      "results": {"single": [AttackResult], "ensemble": AttackResult}}``.
    """
    singles = [
        attack(model, ensemble, texts, labels, target=j, **attack_kwargs)
        for j in range(ensemble.num_prompts)
    ]
    joint = attack(model, ensemble, texts, labels, target="ensemble", **attack_kwargs)
    return {
        "clean": {"single": [r.clean_accuracy for r in singles], "ensemble": joint.clean_accuracy},
        "robust": {
            "single": [r.robust_accuracy for r in singles],
            "ensemble": joint.robust_accuracy,
        },
        "results": {"single": singles, "ensemble": joint},
    }
