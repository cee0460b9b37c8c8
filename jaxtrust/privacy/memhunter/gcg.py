# ruff: noqa: F722
r"""Per-sample prompt optimisation (GCG-style) for extraction, batched over samples.

For each text, a prompt :math:`q \in V^L` is optimised to make the target emit the reference
:math:`r`: :math:`\min_q \mathcal L(q) = -\sum_t \log p_T(r_t \mid \text{<bos>}\, q\, r_{<t})`.
One step of Greedy Coordinate Gradient (Zou et al., *Universal and Transferable Adversarial
Attacks on Aligned Language Models*, 2023): the gradient of :math:`\mathcal L` with respect to
the one-hot prompt gives, per position, the ``top_k`` tokens of most negative gradient; ``B``
candidates each replace one random position by one of its top-``k`` tokens; all candidates
(and the current prompt) are evaluated exactly and the best is kept. Every sample of a batch
takes its step in the same compiled program.

MemHunter's plug-in mode (Wu et al., 2024) initialises this search with the prompter's
prompt instead of a fixed filler; :func:`gcg_search` takes any initial prompts and records
the extraction rate along the way, so the time to reach a given extraction is read off both.

Example::

    trace = gcg_search(target, init, refs, steps=20, key=jax.random.key(0),
                       eval_every=5, eval_fn=lambda prompts: extraction(prompts))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import ArrayLike, Int

from jaxtrust.training.memo import memoize

__all__ = ["GCGTrace", "gcg_search", "reference_loss"]


def _loss_rows(model, bos, prompt_embeds, ref_tokens):
    """Summed NLL of ``ref_tokens`` after ``<bos> prompt`` for each row (embeddings input)."""
    b = prompt_embeds.shape[0]
    emb = model.embed.embedding[...]
    bos_e = jnp.broadcast_to(emb[bos][None, None], (b, 1, emb.shape[1]))
    ref_e = emb[ref_tokens]
    x = jnp.concatenate([bos_e, prompt_embeds.astype(emb.dtype), ref_e], axis=1)
    logits = model(inputs_embeds=x).logits.astype(jnp.float32)
    lp = jax.nn.log_softmax(logits, -1)
    start = prompt_embeds.shape[1]  # logits at position start predict the first ref token
    pred = lp[:, start : start + ref_tokens.shape[1]]
    picked = jnp.take_along_axis(pred, ref_tokens[..., None], -1)[..., 0]
    return -picked.sum(1)


def _step_program(graphdef, top_k: int, num_candidates: int, bos: int, min_id: int):
    def build():
        @jax.jit
        def step(state, prompts, refs, key):
            model = nnx.merge(graphdef, state)
            emb = model.embed.embedding[...]
            vocab = emb.shape[0]

            def loss_of_onehot(onehot):
                return _loss_rows(model, bos, onehot @ emb, refs).sum()

            onehot = jax.nn.one_hot(prompts, vocab, dtype=emb.dtype)
            grads = jax.grad(loss_of_onehot)(onehot)  # [s, L, V]
            grads = grads.at[..., :min_id].set(jnp.inf)  # never propose special tokens
            top = jax.lax.top_k(-grads, top_k)[1]  # [s, L, k]
            s, length = prompts.shape
            kp, kt = jax.random.split(key)
            pos = jax.random.randint(kp, (s, num_candidates), 0, length)
            pick = jax.random.randint(kt, (s, num_candidates), 0, top_k)
            new_tok = jnp.take_along_axis(top[jnp.arange(s)[:, None], pos], pick[..., None], -1)[
                ..., 0
            ]
            cands = jnp.repeat(prompts[:, None], num_candidates, 1)
            onehot_pos = jax.nn.one_hot(pos, length, dtype=bool)
            cands = jnp.where(onehot_pos, new_tok[..., None], cands)
            cands = jnp.concatenate([prompts[:, None], cands], 1)  # keep the current one too
            flat = cands.reshape(-1, length)
            refs_rep = jnp.repeat(refs, num_candidates + 1, 0)
            losses = _loss_rows(model, bos, emb[flat], refs_rep).reshape(s, num_candidates + 1)
            best = jnp.argmin(losses, 1)
            return cands[jnp.arange(s), best], losses[jnp.arange(s), best]

        return step

    return memoize("memhunter.gcg", (graphdef, top_k, num_candidates, bos, min_id), build)


def reference_loss(
    target: nnx.Module,
    prompts: Int[ArrayLike, "s L"],
    references: Int[ArrayLike, "s C"],
    *,
    bos_id: int,
) -> np.ndarray:
    """:math:`\\mathcal L(q)` of each row: summed NLL of the reference after ``<bos> prompt``."""
    p, r = jnp.asarray(prompts), jnp.asarray(references)
    emb = target.embed.embedding[...]
    return np.asarray(_loss_rows(target, bos_id, emb[p], r))


class GCGTrace(NamedTuple):
    """What :func:`gcg_search` returns.

    Attributes:
      prompts: the final prompts ``[s, L]``.
      losses: their reference losses ``[s]``.
      curve: ``(step, seconds, eval_fn value)`` at step 0 and every ``eval_every`` steps.
      seconds: wall time of the search (evaluation excluded).
    """

    prompts: np.ndarray
    losses: np.ndarray
    curve: list[tuple[int, float, Any]]
    seconds: float


def gcg_search(
    target: nnx.Module,
    init_prompts: Int[ArrayLike, "s L"],
    references: Int[ArrayLike, "s C"],
    *,
    steps: int,
    key: jax.Array,
    bos_id: int = 1,
    top_k: int = 16,
    num_candidates: int = 16,
    min_token_id: int = 5,
    seconds_budget: float | None = None,
    eval_every: int = 0,
    eval_fn: Callable[[np.ndarray], Any] | None = None,
) -> GCGTrace:
    """Run up to ``steps`` GCG steps (or until ``seconds_budget``) on every row at once.

    Args:
      target: a causal LM with an ``embed`` table (:class:`~jaxtrust.models.CausalLM`).
      init_prompts: ``[s, L]`` initial prompt ids (all rows one length).
      references: ``[s, C]`` texts to elicit (one length; cut or pad them beforehand).
      steps: most optimisation steps.
      key: a ``jax.random`` key.
      bos_id: the beginning-of-sequence id put before every prompt.
      top_k: candidate tokens per position.
      num_candidates: candidates evaluated per row and step.
      min_token_id: ids below this (special tokens) are never proposed.
      seconds_budget: stop once the search time passes this.
      eval_every: call ``eval_fn(prompts)`` every this many steps (0: only at start and end).
      eval_fn: host-side evaluation of the current prompts (e.g. extraction rate).

    Returns:
      :class:`GCGTrace`.

    Raises:
      ValueError: shapes disagree or bad counts.
    """
    prompts = jnp.asarray(init_prompts, jnp.int32)
    refs = jnp.asarray(references, jnp.int32)
    if prompts.ndim != 2 or refs.ndim != 2 or prompts.shape[0] != refs.shape[0]:
        raise ValueError(
            f"init_prompts [s, L] and references [s, C] must share s, got {prompts.shape}, "
            f"{refs.shape}"
        )
    if prompts.shape[0] == 0:
        raise ValueError("init_prompts is empty")
    for name, value in (("steps", steps), ("top_k", top_k), ("num_candidates", num_candidates)):
        if not isinstance(value, int) or value < (0 if name == "steps" else 1):
            raise ValueError(
                f"{name} must be a {'non-negative' if name == 'steps' else 'positive'}"
                f" int, got {value!r}"
            )
    graphdef, state = nnx.split(target)
    program = _step_program(graphdef, top_k, num_candidates, int(bos_id), int(min_token_id))
    curve: list[tuple[int, float, Any]] = []
    if eval_fn is not None:
        curve.append((0, 0.0, eval_fn(np.asarray(prompts))))
    searched = 0.0
    losses = jnp.zeros(prompts.shape[0])
    done = 0
    for i in range(steps):
        clock = time.perf_counter()
        prompts, losses = program(state, prompts, refs, jax.random.fold_in(key, i))
        losses.block_until_ready()
        searched += time.perf_counter() - clock
        done = i + 1
        if eval_fn is not None and eval_every and done % eval_every == 0:
            curve.append((done, searched, eval_fn(np.asarray(prompts))))
        if seconds_budget is not None and searched >= seconds_budget:
            break
    if eval_fn is not None and (not curve or curve[-1][0] != done):
        curve.append((done, searched, eval_fn(np.asarray(prompts))))
    if done == 0:
        losses = jnp.asarray(reference_loss(target, prompts, refs, bos_id=bos_id))
    return GCGTrace(np.asarray(prompts), np.asarray(losses), curve, searched)
