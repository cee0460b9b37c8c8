"""Responses of a causal LM to a set of prompts: the one chunked generation loop.

:func:`generate_responses` takes prompts as token-id lists (however a world or a chat template
made them), decodes in fixed-size chunks with one prompt width, so that a whole evaluation set
compiles one prefill and one decode program, and returns the decoded texts. It serves the
in-house word tokenizer and ``transformers`` tokenizers alike.

Example:
  >>> from flax import nnx
  >>> from jaxtrust.data import WordTokenizer
  >>> from jaxtrust.models import CausalLM, LMConfig
  >>> tok = WordTokenizer(["a", "b", "c"])
  >>> model = CausalLM(LMConfig.for_tokenizer(tok, hidden_size=16, intermediate_size=32,
  ...                  num_layers=1, num_heads=2, num_kv_heads=1), rngs=nnx.Rngs(0))
  >>> out = generate_responses(model, tok, [tok.encode("a b"), tok.encode("c")],
  ...                          max_new_tokens=3)
  >>> len(out), all(isinstance(r, str) for r in out)
  (2, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = ["Responses", "generate_responses", "special_ids"]


class Responses(NamedTuple):
    """Decoded texts and the generated ids (up to and including a stop token)."""

    texts: list[str]
    ids: list[list[int]]


def special_ids(tokenizer: Any) -> tuple[int, int]:
    """``(eos_id, pad_id)`` of a jaxtrust :class:`~jaxtrust.data.WordTokenizer` or a
    ``transformers`` tokenizer (whose missing pad falls back to eos)."""
    if hasattr(tokenizer, "eos_id") and hasattr(tokenizer, "pad_id"):
        return int(tokenizer.eos_id), int(tokenizer.pad_id)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError(
            "tokenizer has neither eos_id/pad_id (jaxtrust WordTokenizer) nor eos_token_id "
            f"(transformers tokenizer): got {type(tokenizer).__name__}"
        )
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(eos), int(eos if pad is None else pad)


def _decode(tokenizer: Any, ids: list[int]) -> str:
    if hasattr(tokenizer, "eos_id"):
        return tokenizer.decode(ids)
    return tokenizer.decode(ids, skip_special_tokens=True)


def generate_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int | np.integer]],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 256,
    temperature: float = 0.0,
    top_p: float | None = None,
    key: jax.Array | None = None,
    prompt_bucket: int | None = None,
    hooks: Any = None,
    stop_tokens: Sequence[int] | None = None,
    return_ids: bool = False,
) -> list[str] | Responses:
    """Greedy (or sampled) KV-cache responses of ``model`` to ``prompts``.

    Prompts are processed in chunks of ``batch_size``; a short last chunk is filled with
    copies of its last prompt, and every chunk is padded to one width (``prompt_bucket``, else
    the longest prompt rounded up to a multiple of 64, at least 64, when there are several
    chunks), so a whole set costs one compilation.

    Args:
      model: a :class:`~jaxtrust.models.CausalLM` (or anything
        :func:`jaxtrust.models.generate` accepts).
      tokenizer: a :class:`~jaxtrust.data.WordTokenizer` or a ``transformers`` tokenizer.
      prompts: token ids of each prompt (non-empty).
      max_new_tokens: tokens generated per prompt.
      batch_size: prompts per chunk.
      temperature: 0 for greedy decoding, > 0 to sample (then ``key`` is required).
      top_p: nucleus sampling mass.
      key: a ``jax.random`` key for sampling; chunk ``i`` uses ``fold_in(key, i)``.
      prompt_bucket: pad prompts to this width.
      hooks: a hashable :class:`~jaxtrust.models.ModelHooks` applied during generation.
      stop_tokens: ids that end a response (default: the tokenizer's eos).
      return_ids: also return the generated ids.

    Returns:
      The decoded responses (special tokens removed, cut at the stop token), or
      :class:`Responses` with ``return_ids=True``.
    """
    from jaxtrust.models import generate

    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError("prompts must be a sequence of token-id lists")
    if len(prompts) == 0:
        raise ValueError("prompts is empty")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if temperature > 0 and key is None:
        raise ValueError("key (a jax.random key) is required when temperature > 0")
    eos, pad = special_ids(tokenizer)
    stops = (eos,) if stop_tokens is None else tuple(int(t) for t in stop_tokens)
    encoded = [list(map(int, p)) for p in prompts]
    if prompt_bucket is None and len(encoded) > batch_size:
        prompt_bucket = max(64, -(-max(len(e) for e in encoded) // 64) * 64)
    texts: list[str] = []
    ids_out: list[list[int]] = []
    for i, lo in enumerate(range(0, len(encoded), batch_size)):
        chunk = encoded[lo : lo + batch_size]
        real = len(chunk)
        if len(encoded) > batch_size:
            chunk = chunk + [chunk[-1]] * (batch_size - real)
        out = generate(
            model,
            chunk,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stop_tokens=stops,
            pad_id=pad,
            key=None if key is None else jax.random.fold_in(key, i),
            prompt_bucket=prompt_bucket,
            hooks=hooks,
        )
        tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        for row, n in zip(tokens[:real], lengths[:real], strict=True):
            ids = row[: int(n)].tolist()
            ids_out.append(ids)
            texts.append(_decode(tokenizer, ids))
    return Responses(texts, ids_out) if return_ids else texts
