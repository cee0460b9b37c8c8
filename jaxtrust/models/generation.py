"""Batched autoregressive generation with a fixed-size KV cache, compiled once per shape.

Prompts of different lengths are LEFT-padded to a bucketed length ``L`` (so that every row's
last prompt token sits in the same column and all rows decode in lock-step), then

1. one jitted *prefill* runs the model over the ``[batch, L]`` prompt block, writing keys and
   values into slots ``[0, L)`` of a :class:`~jaxtrust.models.cache.KVCache` of
   ``L + max_new_tokens`` slots (padding slots are marked invalid, so no row attends to them);
   positions are ``cumsum(mask) - 1``, so every row's first real token has position 0;
2. one jitted *decode* runs a ``lax.while_loop``: each step feeds the previous token of every
   row, appends its key/value at the next slot and picks the next token, until
   ``max_new_tokens`` tokens are produced or every row has emitted a stop token. A row that has
   stopped emits ``pad_id`` from then on.

Token choice at temperature ``T``: greedy ``argmax(z)`` when ``T == 0``; otherwise a sample from
``softmax(z / T)`` restricted to the ``top_k`` largest logits and/or the smallest set of tokens
whose probability mass reaches ``top_p`` (nucleus sampling, Holtzman et al. 2020).

The model is ``nnx.split`` once per call and its state passed to the compiled functions, which
are cached by JAX: calling :func:`generate` again with the same shapes and options re-uses the
compiled code (no re-trace per token, nor per call).

Example::

    out = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=8, stop_tokens=(2,))
    out.tokens.shape, out.lengths      # (2, 8), e.g. [8, 3]

References:
    Holtzman et al., `The Curious Case of Neural Text Degeneration
    <https://arxiv.org/abs/1904.09751>`_, ICLR 2020 (top-p sampling).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from jaxtrust.models.hooks import ModelHooks

__all__ = ["GenerationOutput", "bucket_length", "generate", "generate_text"]

# Incremented while tracing (Python side effect), so tests can check that a second call with the
# same shapes compiles nothing.
_TRACE_COUNTS: collections.Counter = collections.Counter()


class GenerationOutput(NamedTuple):
    """Result of :func:`generate`.

    Attributes:
      tokens: ``[batch, max_new_tokens]`` generated token ids (the stop token included, then
        ``pad_id``).
      lengths: ``[batch]`` number of generated tokens per row, stop token included.
      stopped: ``[batch]`` whether the row emitted a stop token.
      prompt_lengths: ``[batch]`` number of real prompt tokens per row.
      num_steps: how many tokens the decode loop produced (``< max_new_tokens`` when every row
        stopped early).
    """

    tokens: Int[Array, "batch new"]
    lengths: Int[Array, " batch"]
    stopped: Bool[Array, " batch"]
    prompt_lengths: Int[Array, " batch"]
    num_steps: Int[Array, ""]


def bucket_length(n: int, minimum: int = 8) -> int:
    """Smallest bucket ``>= n``: powers of two up to 512, then multiples of 512.

    Bucketing bounds the number of distinct prompt shapes, hence of compilations.
    """
    if n <= 0:
        raise ValueError(f"length must be positive, got {n}")
    if n > 512:
        return -(-n // 512) * 512
    size = minimum
    while size < n:
        size *= 2
    return size


def _sample(logits, key, temperature, top_p, *, greedy: bool, top_k: int | None, use_top_p: bool):
    """Next token ids from ``[batch, vocab]`` float32 logits."""
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    neg_inf = jnp.finfo(logits.dtype).min
    logits = logits / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, neg_inf, logits)
    if use_top_p:
        ordered = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(ordered, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        n_keep = jnp.sum(mass_before < top_p, axis=-1, keepdims=True)  # >= 1: first has 0 before
        cutoff = jnp.take_along_axis(ordered, n_keep - 1, axis=-1)
        logits = jnp.where(logits < cutoff, neg_inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@partial(jax.jit, static_argnames=("graphdef", "hooks"))
def _prefill(graphdef, state, tokens, positions, mask, cache, hooks=None):
    _TRACE_COUNTS["prefill"] += 1
    model = nnx.merge(graphdef, state)
    out = model(
        tokens,
        positions=positions,
        attention_mask=mask,
        cache=cache,
        last_logits_only=True,
        hooks=hooks,
    )
    return out.logits[:, -1, :].astype(jnp.float32), out.cache


@partial(
    jax.jit,
    static_argnames=(
        "graphdef",
        "max_new_tokens",
        "stop_tokens",
        "pad_id",
        "greedy",
        "top_k",
        "use_top_p",
        "hooks",
    ),
)
def _decode(
    graphdef,
    state,
    first_logits,
    cache,
    next_positions,
    rng,
    temperature,
    top_p,
    *,
    max_new_tokens: int,
    stop_tokens: tuple[int, ...],
    pad_id: int,
    greedy: bool,
    top_k: int | None,
    use_top_p: bool,
    hooks=None,
):
    _TRACE_COUNTS["decode"] += 1
    sample = partial(_sample, greedy=greedy, top_k=top_k, use_top_p=use_top_p)
    batch = first_logits.shape[0]
    stops = jnp.asarray(stop_tokens if stop_tokens else (-1,), jnp.int32)

    def is_stop(token):
        return jnp.any(token[:, None] == stops[None, :], axis=-1)

    rng, key = jax.random.split(rng)
    first = sample(first_logits, key, temperature, top_p)
    out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    done = is_stop(first)
    lengths = jnp.ones((batch,), jnp.int32)
    real = jnp.ones((batch, 1), bool)

    def cond(carry):
        step, _, _, _, done, _, _, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        step, cache, previous, positions, done, out, lengths, rng = carry
        model = nnx.merge(graphdef, state)
        result = model(
            previous[:, None],
            positions=positions[:, None],
            attention_mask=real,
            cache=cache,
            hooks=hooks,
        )
        rng, key = jax.random.split(rng)
        token = sample(result.logits[:, -1, :].astype(jnp.float32), key, temperature, top_p)
        token = jnp.where(done, jnp.int32(pad_id), token)
        out = jax.lax.dynamic_update_slice(out, token[:, None], (jnp.int32(0), step))
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | is_stop(token)
        return step + 1, result.cache, token, positions + 1, done, out, lengths, rng

    carry = (jnp.int32(1), cache, first, next_positions, done, out, lengths, rng)
    step, _, _, _, done, out, lengths, _ = jax.lax.while_loop(cond, body, carry)
    return out, lengths, done, step


def _check_sampling(max_new_tokens, temperature, top_k, top_p, key) -> bool:
    """Validate the decoding options shared by the generators; returns whether greedy."""
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    greedy = temperature == 0.0
    if not greedy and key is None:
        raise ValueError("key (a jax.random key) is required when temperature > 0")
    return greedy


def _as_prompt_lists(prompt_tokens, prompt_mask) -> list[list[int]]:
    if isinstance(prompt_tokens, (jax.Array, np.ndarray)):
        tokens = np.asarray(prompt_tokens)
        if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(
                f"prompt_tokens must be an int array [batch, seq], got {tokens.dtype}{tokens.shape}"
            )
        mask = np.ones(tokens.shape, bool) if prompt_mask is None else np.asarray(prompt_mask)
        if mask.shape != tokens.shape or mask.dtype != np.bool_:
            raise ValueError(
                f"prompt_mask must be bool with shape {tokens.shape}, got {mask.dtype}{mask.shape}"
            )
        return [row[m].tolist() for row, m in zip(tokens, mask, strict=True)]
    if prompt_mask is not None:
        raise ValueError("prompt_mask is only used with an array of prompt_tokens")
    if isinstance(prompt_tokens, (str, bytes)) or not isinstance(prompt_tokens, Sequence):
        raise TypeError("prompt_tokens must be list[list[int]] or an int array [batch, seq]")
    prompts = []
    for row in prompt_tokens:
        if isinstance(row, (str, bytes)) or not isinstance(row, (Sequence, np.ndarray)):
            raise TypeError(
                "prompt_tokens must be list[list[int]]; tokenize text first (see generate_text)"
            )
        prompts.append([int(t) for t in row])
    return prompts


def _cache_dtype(model) -> Any:
    """The parameters' floating dtype (keys/values are stored like the activations)."""
    for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.dtype
    return jnp.float32


def generate(
    model,
    prompt_tokens: list[list[int]] | Int[Array, "batch seq"],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Sequence[int] = (),
    pad_id: int = 0,
    key: jax.Array | None = None,
    prompt_mask: Bool[Array, "batch seq"] | None = None,
    prompt_bucket: int | None = None,
    hooks: ModelHooks | None = None,
) -> GenerationOutput:
    """Generate continuations of a batch of prompts with a KV cache (greedy or sampled).

    Args:
      model: a :class:`~jaxtrust.models.transformer.CausalLM` (anything with ``.config`` and the
        cache-aware call signature).
      prompt_tokens: ragged ``list[list[int]]``, or an int array ``[batch, seq]`` whose real
        tokens are given by ``prompt_mask`` (any padding side).
      max_new_tokens: tokens to generate per row (>= 1).
      temperature: 0 for greedy decoding, > 0 to sample from ``softmax(logits / temperature)``.
      top_k: sample only among the ``top_k`` most likely tokens.
      top_p: sample only among the smallest set of most likely tokens of mass >= ``top_p``.
      stop_tokens: a row stops after emitting any of these (it is kept in ``tokens``).
      pad_id: id used for left padding of prompts and after a row stops.
      key: a ``jax.random`` key; required when ``temperature > 0``.
      prompt_mask: ``[batch, seq]`` bool, True for real tokens (array input only).
      prompt_bucket: pad prompts to this length instead of :func:`bucket_length` of the
        longest prompt.
      hooks: a hashable :class:`~jaxtrust.models.ModelHooks` applied in prefill and every decode
        step (e.g. an activation approximation). It is a static argument of the compiled
        programs, so it may not hold arrays: hooks with a traced key (noise) belong in a caller's
        own jitted loop.

    Returns:
      :class:`GenerationOutput` with ``tokens [batch, max_new_tokens]`` and ``lengths``.

    Raises:
      ValueError / TypeError: empty prompts, out-of-vocabulary ids, bad sampling options.

    Example::

      out = generate(model, [[5, 6, 7], [8]], max_new_tokens=4)          # greedy
      out = generate(model, [[5, 6, 7]], max_new_tokens=4, temperature=0.8, top_p=0.9,
                     key=jax.random.key(0))
    """
    from jaxtrust.models.cache import KVCache

    greedy = _check_sampling(max_new_tokens, temperature, top_k, top_p, key)
    config = model.config
    vocab = config.vocab_size
    if not 0 <= pad_id < vocab:
        raise ValueError(f"pad_id must be in [0, {vocab}), got {pad_id}")
    stop_tokens = tuple(sorted({int(t) for t in stop_tokens}))
    if hooks is not None:
        if not isinstance(hooks, ModelHooks):
            raise TypeError(
                f"hooks must be a jaxtrust.models.ModelHooks, got {type(hooks).__name__}"
            )
        try:
            hash(hooks)
        except TypeError as err:
            raise TypeError(
                "hooks must be hashable (a frozen dataclass without array fields) to be compiled "
                f"into generate; {type(hooks).__name__} is not: {err}"
            ) from None

    prompts = _as_prompt_lists(prompt_tokens, prompt_mask)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    flat = [t for p in prompts for t in p]
    if min(flat) < 0 or max(flat) >= vocab:
        raise ValueError(
            f"prompt token ids must be in [0, {vocab}), got range [{min(flat)}, {max(flat)}]"
        )
    longest = max(len(p) for p in prompts)
    width = bucket_length(longest) if prompt_bucket is None else int(prompt_bucket)
    if width < longest:
        raise ValueError(f"prompt_bucket={width} is shorter than the longest prompt ({longest})")
    total = width + max_new_tokens
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions is not None and longest + max_new_tokens > max_positions:
        raise ValueError(
            f"prompt ({longest}) + max_new_tokens ({max_new_tokens}) exceeds "
            f"max_position_embeddings={max_positions}"
        )

    batch = len(prompts)
    tokens = np.full((batch, width), pad_id, np.int32)
    mask = np.zeros((batch, width), bool)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = True
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    prompt_lengths = mask.sum(axis=1).astype(np.int32)

    graphdef, state = nnx.split(model)
    cache = KVCache.init(config, batch, total, _cache_dtype(model))
    first_logits, cache = _prefill(
        graphdef,
        state,
        jnp.asarray(tokens),
        jnp.asarray(positions),
        jnp.asarray(mask),
        cache,
        hooks=hooks,
    )
    key = jax.random.key(0) if key is None else key
    out, lengths, stopped, steps = _decode(
        graphdef,
        state,
        first_logits,
        cache,
        jnp.asarray(prompt_lengths),
        key,
        jnp.float32(temperature if not greedy else 1.0),
        jnp.float32(1.0 if top_p is None else top_p),
        max_new_tokens=int(max_new_tokens),
        stop_tokens=stop_tokens,
        pad_id=int(pad_id),
        greedy=greedy,
        top_k=None if top_k is None else int(top_k),
        use_top_p=top_p is not None and top_p < 1.0,
        hooks=hooks,
    )
    return GenerationOutput(out, lengths, stopped, jnp.asarray(prompt_lengths), steps)


@partial(jax.jit, static_argnames=("graphdef",))
def _prefill_embeds(graphdef, state, embeds, positions, mask, prefix, cache):
    _TRACE_COUNTS["prefill"] += 1
    model = nnx.merge(graphdef, state)
    out = model(
        None,
        inputs_embeds=embeds,
        positions=positions,
        attention_mask=mask,
        prefix_mask=prefix,
        cache=cache,
        last_logits_only=True,
    )
    return out.logits[:, -1, :].astype(jnp.float32), out.cache


def generate_from_embeds(
    model,
    inputs_embeds: Float[Array, "batch seq dim"],
    attention_mask: Bool[Array, "batch seq"],
    *,
    max_new_tokens: int,
    prefix_mask: Bool[Array, "batch seq"] | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Sequence[int] = (),
    pad_id: int = 0,
    key: jax.Array | None = None,
) -> GenerationOutput:
    """Generate from a block of input *embeddings* (soft prompts, image tokens + text).

    The same two compiled phases as :func:`generate`: one prefill over the ``[batch, seq]``
    embedding block (``model(None, inputs_embeds=...)``, with an optional bidirectional
    ``prefix_mask``), then the shared token-by-token decode loop with the KV cache. The caller
    lays the block out itself: rows must be LEFT-padded (the last column is a real position in
    every row), and padding marked False in ``attention_mask``. Positions are
    ``cumsum(attention_mask) - 1``, as in training on right-padded rows.

    Args:
      model: a :class:`~jaxtrust.models.transformer.CausalLM`.
      inputs_embeds: ``[batch, seq, hidden]`` input embeddings.
      attention_mask: ``[batch, seq]`` True on real positions; the last column must be True.
      max_new_tokens: tokens to generate per row (>= 1).
      prefix_mask: ``[batch, seq]`` True on the bidirectional prefix (see
        :meth:`CausalLM.__call__`).
      temperature, top_k, top_p, stop_tokens, pad_id, key: as in :func:`generate`.

    Returns:
      :class:`GenerationOutput` (``prompt_lengths`` counts real input positions).

    Example::

      embeds = model.embed(jnp.asarray([[5, 6, 7]]))
      out = generate_from_embeds(model, embeds, jnp.ones((1, 3), bool), max_new_tokens=4)
      # == generate(model, [[5, 6, 7]], max_new_tokens=4).tokens
    """
    from jaxtrust.models.cache import KVCache

    greedy = _check_sampling(max_new_tokens, temperature, top_k, top_p, key)
    config = model.config
    embeds = jnp.asarray(inputs_embeds)
    if embeds.ndim != 3 or embeds.shape[-1] != config.hidden_size:
        raise ValueError(
            f"inputs_embeds must have shape [batch, seq, {config.hidden_size}], "
            f"got {tuple(embeds.shape)}"
        )
    batch, width = embeds.shape[:2]
    mask = np.asarray(attention_mask)
    if mask.shape != (batch, width) or mask.dtype != np.bool_:
        raise ValueError(
            f"attention_mask must be bool with shape {(batch, width)}, got {mask.dtype}{mask.shape}"
        )
    if not mask[:, -1].all():
        raise ValueError("inputs must be left-padded: attention_mask[:, -1] must be True")
    prefix = None
    if prefix_mask is not None:
        prefix = np.asarray(prefix_mask)
        if prefix.shape != (batch, width) or prefix.dtype != np.bool_:
            raise ValueError(
                f"prefix_mask must be bool with shape {(batch, width)}, "
                f"got {prefix.dtype}{prefix.shape}"
            )
        prefix = jnp.asarray(prefix & mask)
    if not 0 <= pad_id < config.vocab_size:
        raise ValueError(f"pad_id must be in [0, {config.vocab_size}), got {pad_id}")
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions is not None and int(mask.sum(axis=1).max()) + max_new_tokens > max_positions:
        raise ValueError(
            f"inputs + max_new_tokens ({max_new_tokens}) exceed "
            f"max_position_embeddings={max_positions}"
        )
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    lengths = mask.sum(axis=1).astype(np.int32)
    graphdef, state = nnx.split(model)
    cache = KVCache.init(config, batch, width + max_new_tokens, _cache_dtype(model))
    first_logits, cache = _prefill_embeds(
        graphdef, state, embeds, jnp.asarray(positions), jnp.asarray(mask), prefix, cache
    )
    key = jax.random.key(0) if key is None else key
    out, out_lengths, stopped, steps = _decode(
        graphdef,
        state,
        first_logits,
        cache,
        jnp.asarray(lengths),
        key,
        jnp.float32(temperature if not greedy else 1.0),
        jnp.float32(1.0 if top_p is None else top_p),
        max_new_tokens=int(max_new_tokens),
        stop_tokens=tuple(sorted({int(t) for t in stop_tokens})),
        pad_id=int(pad_id),
        greedy=greedy,
        top_k=None if top_k is None else int(top_k),
        use_top_p=top_p is not None and top_p < 1.0,
    )
    return GenerationOutput(out, out_lengths, stopped, jnp.asarray(lengths), steps)


def generate_text(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    chat: bool = True,
    max_new_tokens: int = 64,
    stop_tokens: Sequence[int] | None = None,
    skip_special_tokens: bool = True,
    **kwargs,
) -> list[str]:
    """Generate text continuations for a list of prompts.

    Args:
      model: a causal LM (see :func:`generate`).
      tokenizer: a ``transformers`` tokenizer (e.g. from
        :func:`jaxtrust.models.tokenizer.load_tokenizer`).
      prompts: the prompts, as plain text.
      chat: wrap each prompt as a user turn with the tokenizer's chat template (and the
        assistant header); otherwise continue the raw text.
      max_new_tokens: tokens to generate per prompt.
      stop_tokens: default: the tokenizer's eos id and the model config's eos ids.
      skip_special_tokens: drop special tokens when decoding.
      **kwargs: passed to :func:`generate` (``temperature``, ``top_k``, ``top_p``, ``key``, ...).

    Returns:
      One decoded continuation per prompt (without the prompt).

    Example::

      generate_text(model, tok, ["What is the capital of France?"], max_new_tokens=16)
    """
    from jaxtrust.models.tokenizer import format_chat

    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not a single string")
    if chat:
        encoded = [
            tokenizer.encode(format_chat(tokenizer, p), add_special_tokens=False) for p in prompts
        ]
    else:
        encoded = [tokenizer.encode(p) for p in prompts]
    if stop_tokens is None:
        stops = set()
        if tokenizer.eos_token_id is not None:
            stops.add(int(tokenizer.eos_token_id))
        config_eos = getattr(model.config, "eos_token_id", None)
        if config_eos is not None:
            stops.update(int(t) for t in np.atleast_1d(np.asarray(config_eos)).tolist())
        stop_tokens = tuple(stops)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    kwargs.setdefault("pad_id", int(pad))
    out = generate(model, encoded, max_new_tokens=max_new_tokens, stop_tokens=stop_tokens, **kwargs)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    return [
        tokenizer.decode(row[:n].tolist(), skip_special_tokens=skip_special_tokens)
        for row, n in zip(tokens, lengths, strict=True)
    ]
