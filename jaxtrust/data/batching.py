"""Collating prompt/response examples into fixed-shape batches.

Fixed shapes matter on accelerators and on CPU alike: every new shape is a new XLA compilation.
So sequences are padded to a bucket length (a multiple of ``pad_to_multiple``) or to an explicit
``seq_len``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Batch(NamedTuple):
    """A padded batch of token sequences (NumPy; moved to devices by the train step).

    Attributes:
      tokens: int32 [batch, seq] token ids (prompt then response then padding).
      attention_mask: bool [batch, seq], True on real tokens.
      loss_mask: float32 [batch, seq], 1 on tokens that are prediction *targets*
        (the response and its end-of-sequence token), 0 on the prompt and on padding.
    """

    tokens: np.ndarray
    attention_mask: np.ndarray
    loss_mask: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        """``{"tokens", "attention_mask", "loss_mask"}``: the batch layout every loss takes.

        Example:
          >>> b = collate([[1, 2]], [[3]])
          >>> sorted(b.as_dict())
          ['attention_mask', 'loss_mask', 'tokens']
        """
        return {
            "tokens": self.tokens,
            "attention_mask": self.attention_mask,
            "loss_mask": self.loss_mask,
        }


def collate(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]] | None = None,
    *,
    pad_id: int = 0,
    seq_len: int | None = None,
    pad_to_multiple: int = 8,
    padding_side: str = "right",
    train_on_prompt: bool = False,
) -> Batch:
    """Concatenate prompt and response ids, pad, and build attention and loss masks.

    Args:
      prompts: token ids of each prompt.
      responses: token ids of each response (include the end-of-sequence id yourself), or None
        for prompt-only batches (generation, perplexity).
      pad_id: the padding token id.
      seq_len: pad to exactly this length (error if a sequence is longer); default: the longest
        sequence rounded up to ``pad_to_multiple``.
      pad_to_multiple: bucket size for the default length.
      padding_side: "right" for training, "left" for batched generation.
      train_on_prompt: also put prompt tokens in the loss mask (plain LM training).

    Returns:
      A :class:`Batch`.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if responses is not None and len(responses) != len(prompts):
        raise ValueError(f"responses has {len(responses)} items but prompts has {len(prompts)}")
    if len(prompts) == 0:
        raise ValueError("prompts is empty")
    if pad_to_multiple < 1:
        raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
    sequences, targets = [], []
    for i, prompt in enumerate(prompts):
        response = list(responses[i]) if responses is not None else []
        seq = list(prompt) + response
        sequences.append(seq)
        targets.append([1.0 if train_on_prompt else 0.0] * len(prompt) + [1.0] * len(response))
    longest = max(len(s) for s in sequences)
    if seq_len is None:
        seq_len = max(pad_to_multiple, -(-longest // pad_to_multiple) * pad_to_multiple)
    elif longest > seq_len:
        raise ValueError(
            f"seq_len={seq_len} is shorter than the longest sequence ({longest} tokens)"
        )
    n = len(sequences)
    tokens = np.full((n, seq_len), pad_id, dtype=np.int32)
    attention = np.zeros((n, seq_len), dtype=bool)
    loss = np.zeros((n, seq_len), dtype=np.float32)
    for i, (seq, tgt) in enumerate(zip(sequences, targets, strict=True)):
        sl = slice(0, len(seq)) if padding_side == "right" else slice(seq_len - len(seq), seq_len)
        tokens[i, sl] = seq
        attention[i, sl] = True
        loss[i, sl] = tgt
    return Batch(tokens, attention, loss)
