"""Tokenizers for jaxtrust language models: HF directories and GGUF-embedded vocabularies.

:func:`load_tokenizer` returns a ``transformers`` fast tokenizer either way, so
``encode``/``decode``/``apply_chat_template`` behave as for any HF model:

* a directory with ``tokenizer.json`` / ``tokenizer_config.json`` is loaded with
  ``AutoTokenizer.from_pretrained(path, local_files_only=True)``;
* a ``.gguf`` file carries its vocabulary in the metadata (``tokenizer.ggml.tokens``,
  ``tokenizer.ggml.merges``, ``tokenizer.ggml.token_type``, special-token ids and
  ``tokenizer.chat_template``); a byte-level BPE is rebuilt from it with the ``tokenizers``
  library. Control tokens (type 3, e.g. ``<|im_start|>``) become special tokens, which are
  never split by the BPE -- without that the chat markers would be encoded as 6+ ordinary
  pieces and a chat model would not recognise its own template.

Example::

    tok = load_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")
    text = format_chat(tok, "What is the capital of France?")
    ids = tok.encode(text, add_special_tokens=False)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["format_chat", "load_tokenizer", "tokenizer_from_gguf_metadata"]

# GGUF token types (llama.cpp's llama_token_type).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

# llama.cpp pre-tokenizer names (tokenizer.ggml.pre) -> split regex applied before byte-level BPE.
_GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_LLAMA3_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| "
    r"?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
_QWEN2_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def _pre_tokenizer(pre: str | None):
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in (None, "default", "gpt2", "gpt-2"):
        return byte_level
    if pre == "smollm":  # SmolLM/StarCoder: every digit is its own pre-token, then GPT-2 splitting
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in ("starcoder", "refact"):
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    regex = {"llama-bpe": _LLAMA3_REGEX, "llama3": _LLAMA3_REGEX, "qwen2": _QWEN2_REGEX}.get(pre)
    if regex is None:
        warnings.warn(
            f"GGUF tokenizer.ggml.pre={pre!r} is not known here; using GPT-2 byte-level splitting, "
            "so some texts may tokenize differently from llama.cpp",
            stacklevel=3,
        )
        return byte_level
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )


def tokenizer_from_gguf_metadata(meta: dict[str, Any]):
    """Build a ``transformers`` fast tokenizer from GGUF metadata (see :func:`load_tokenizer`).

    Args:
      meta: the GGUF key/values, e.g. from :func:`jaxtrust.models.gguf.read_gguf_metadata`.

    Returns:
      A ``PreTrainedTokenizerFast`` with bos/eos/pad/unk tokens and the chat template set.

    Raises:
      KeyError: ``tokenizer.ggml.tokens`` missing. ValueError: a tokenizer model other than
      byte-level BPE (``tokenizer.ggml.model == "gpt2"``), or merges missing.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    if "tokenizer.ggml.tokens" not in meta:
        raise KeyError("GGUF metadata has no tokenizer.ggml.tokens: this file carries no tokenizer")
    kind = meta.get("tokenizer.ggml.model", "gpt2")
    if kind != "gpt2":
        raise ValueError(
            f"GGUF tokenizer.ggml.model={kind!r} is not supported (only byte-level BPE, 'gpt2'); "
            "load the tokenizer from the model's HF directory instead"
        )
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    merges_raw = meta.get("tokenizer.ggml.merges")
    if not merges_raw:
        raise ValueError("GGUF metadata has no tokenizer.ggml.merges, needed for a BPE tokenizer")
    types = list(meta.get("tokenizer.ggml.token_type", [_NORMAL] * len(tokens)))
    if len(types) != len(tokens):
        raise ValueError(
            f"tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens"
        )

    vocab = {token: index for index, token in enumerate(tokens)}
    merges = [tuple(merge.split(" ", 1)) for merge in merges_raw]
    bpe = models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
    backend = Tokenizer(bpe)
    backend.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre"))
    backend.decoder = decoders.ByteLevel()

    control = [
        AddedToken(tokens[i], special=True, normalized=False)
        for i, t in enumerate(types)
        if t == _CONTROL
    ]
    user = [
        AddedToken(tokens[i], special=False, normalized=False)
        for i, t in enumerate(types)
        if t == _USER_DEFINED
    ]
    if control:
        backend.add_special_tokens(control)
    if user:
        backend.add_tokens(user)

    def token_of(key: str) -> str | None:
        index = meta.get(key)
        return tokens[index] if index is not None and 0 <= index < len(tokens) else None

    bos, eos = token_of("tokenizer.ggml.bos_token_id"), token_of("tokenizer.ggml.eos_token_id")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False)) and eos is not None
    if add_bos or add_eos:
        head, tail = ([bos] if add_bos else []), ([eos] if add_eos else [])
        single = " ".join([*head, "$A", *tail])
        pair = " ".join(
            [*head, "$A", *tail, *[f"{t}:1" for t in head], "$B:1", *[f"{t}:1" for t in tail]]
        )
        backend.post_processor = processors.TemplateProcessing(
            single=single,
            pair=pair,
            special_tokens=[(t, vocab[t]) for t in dict.fromkeys(head + tail)],
        )

    kwargs = {
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": token_of("tokenizer.ggml.unknown_token_id"),
        "pad_token": token_of("tokenizer.ggml.padding_token_id"),
    }
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        clean_up_tokenization_spaces=False,
        **{k: v for k, v in kwargs.items() if v is not None},
    )
    template = meta.get("tokenizer.chat_template")
    if template:
        tokenizer.chat_template = template
    return tokenizer


# What transformers' AutoTokenizer can build a tokenizer from (fast JSON, sentencepiece,
# byte-level BPE, WordPiece); without any of them it fails with a sentencepiece message.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "spiece.model",
)


def load_tokenizer(path: str | os.PathLike):
    """Load a tokenizer from a local HF directory or a ``.gguf`` file (never from a hub).

    Args:
      path: a directory with HF tokenizer files, or a ``.gguf`` file with an embedded
        byte-level BPE vocabulary.

    Returns:
      A ``transformers`` fast tokenizer; for GGUF with its control tokens registered as special
      tokens, bos/eos/pad/unk set from the metadata and the GGUF's chat template.

    Raises:
      FileNotFoundError: ``path`` does not exist, or is a directory without tokenizer files
        (:data:`TOKENIZER_FILES`). ValueError: neither a directory nor ``.gguf``.

    Example::

      tok = load_tokenizer(gguf_path)
      tok.decode(tok.encode("Hello world"))  # 'Hello world'
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"tokenizer path not found: {path!r}")
    if os.path.isdir(path):
        present = [name for name in TOKENIZER_FILES if os.path.isfile(os.path.join(path, name))]
        if not present:
            raise FileNotFoundError(
                f"path: {path!r} holds no tokenizer files; looked for any of "
                f"{', '.join(TOKENIZER_FILES)}"
            )
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    if path.endswith(".gguf"):
        from jaxtrust.models.gguf import read_gguf_metadata

        return tokenizer_from_gguf_metadata(read_gguf_metadata(path))
    raise ValueError(
        f"load_tokenizer expects an HF tokenizer directory or a .gguf file, got {path!r}"
    )


def format_chat(
    tokenizer,
    messages: str | Sequence[dict[str, str]],
    add_generation_prompt: bool = True,
) -> str:
    """Render a conversation with the tokenizer's chat template.

    Args:
      tokenizer: a ``transformers`` tokenizer with a ``chat_template``.
      messages: a single user message, or ``[{"role": ..., "content": ...}, ...]``.
      add_generation_prompt: append the assistant turn header so the model answers next.

    Returns:
      The prompt text (encode it with ``add_special_tokens=False``: the template already holds
      the special tokens it needs).

    Raises:
      ValueError: the tokenizer has no chat template. TypeError: malformed ``messages``.

    Example::

      format_chat(tok, "Hi")
      # '<|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n'
      #   '<|im_start|>assistant\\n'
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, Sequence) or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in messages
    ):
        raise TypeError(
            "messages must be a str or a sequence of {'role': ..., 'content': ...} dicts"
        )
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this tokenizer has no chat_template; pass raw text (chat=False) instead")
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )
