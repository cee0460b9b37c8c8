"""Read GGUF checkpoints (llama.cpp's format) into Hugging Face-named float32 tensors.

A GGUF file holds a key/value metadata table (architecture hyper-parameters, the tokenizer,
the chat template) and a list of tensors, many of them block-quantized (Q4_1, Q8_0, ...).
:func:`read_gguf` turns one into what a Hugging Face checkpoint would be: an HF ``config.json``
style dict and a ``{hf_name: np.ndarray}`` state in torch ``(out, in)`` layout, dequantized to
float32. :func:`load_gguf` builds a :class:`jaxtrust.models.transformer.CausalLM` from it.

Three things differ from a HF checkpoint and are undone here:

* GGUF stores dimensions innermost-first (``ne[0]`` is the row length), so a tensor whose GGUF
  shape is ``[in, out]`` is a row-major ``(out, in)`` array: the dims are reversed.
* llama.cpp's converter permutes the rows of the Q and K projections of *llama* models so that
  its interleaved ("GPT-J style") RoPE matches HF's ``rotate_half`` RoPE. For a weight
  ``W`` of shape ``(n_heads * head_dim, d)`` it applies
  ``W.reshape(n, 2, head_dim // 2, d).swapaxes(1, 2)``; the inverse, applied here, is
  ``W.reshape(n, head_dim // 2, 2, d).swapaxes(1, 2).reshape(W.shape)`` with ``n = n_heads``
  for Q and ``n = n_kv_heads`` for K. Qwen2/Qwen3/GPT-NeoX files are not permuted.
* GPT-NeoX's fused QKV is stored as ``[q; k; v]`` blocks instead of HF's per-head interleaving
  ``(heads, 3, head_dim)``.

Example::

    config, tensors = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    config["num_hidden_layers"], tensors["model.embed_tokens.weight"].shape   # 30, (49152, 576)
    model = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")

References:
    GGUF specification, https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "load_gguf",
    "read_gguf",
    "read_gguf_metadata",
    "unpermute_qk",
    "permute_qk",
]

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gptneox")


def _import_gguf():
    try:
        import gguf
    except ImportError as err:  # pragma: no cover - gguf is a core dependency
        raise ImportError("reading GGUF files needs the `gguf` package: pip install gguf") from err
    return gguf


def _open_reader(path: str | os.PathLike):
    gguf = _import_gguf()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file not found: {path!r}")
    try:
        return gguf.GGUFReader(path, "r")
    except Exception as err:  # the reader raises ValueError/struct/index errors on junk
        raise ValueError(
            f"{path!r} is not a readable GGUF file ({type(err).__name__}: {err})"
        ) from err


def _field_value(field) -> Any:
    """Python value of one metadata field (works with gguf versions without ``contents()``)."""
    if hasattr(field, "contents"):
        return field.contents()
    gguf = _import_gguf()  # pragma: no cover - old gguf releases
    types = field.types
    if types[0] == gguf.GGUFValueType.ARRAY:
        if types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    return field.parts[field.data[0]].tolist()[0]


def read_gguf_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """All metadata key/values of a GGUF file as plain Python values.

    Args:
      path: a ``.gguf`` file.

    Returns:
      ``{key: value}``, e.g. ``{"general.architecture": "llama", "llama.block_count": 30,
      "tokenizer.ggml.tokens": [...], ...}``.

    Raises:
      FileNotFoundError: no such file. ValueError: not a GGUF file.
    """
    reader = _open_reader(path)
    return _metadata_of(reader)


def _metadata_of(reader) -> dict[str, Any]:
    return {
        key: _field_value(field)
        for key, field in reader.fields.items()
        if not key.startswith("GGUF.")
    }


def unpermute_qk(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (see the module docstring).

    Args:
      weight: ``(n_heads * head_dim, ...)`` projection weight (or bias) from a llama GGUF.
      n_heads: number of heads of that projection (``num_kv_heads`` for K).

    Returns:
      The weight in HF ``rotate_half`` row order, same shape.
    """
    if weight.shape[0] % (2 * n_heads):
        raise ValueError(
            f"weight rows {weight.shape[0]} are not divisible by 2 * n_heads = {2 * n_heads}"
        )
    head_dim = weight.shape[0] // n_heads
    return (
        weight.reshape(n_heads, head_dim // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def permute_qk(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's forward Q/K permutation (HF -> GGUF row order), inverse of `unpermute_qk`."""
    if weight.shape[0] % (2 * n_heads):
        raise ValueError(
            f"weight rows {weight.shape[0]} are not divisible by 2 * n_heads = {2 * n_heads}"
        )
    head_dim = weight.shape[0] // n_heads
    return (
        weight.reshape(n_heads, 2, head_dim // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _fused_qkv_to_hf(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """GPT-NeoX: GGUF ``[q; k; v]`` blocks -> HF per-head ``(heads, 3, head_dim)`` interleaving."""
    q, k, v = np.split(weight, 3, axis=0)
    head_dim = q.shape[0] // n_heads
    stacked = np.stack([x.reshape(n_heads, head_dim, *x.shape[1:]) for x in (q, k, v)], axis=1)
    return stacked.reshape(weight.shape)


# GGUF tensor name -> HF name, per architecture family ("{i}" is the block index).
_LLAMA_LIKE_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.attn_q.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "blk.{i}.attn_k.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "blk.{i}.attn_v.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
_GPTNEOX_NAMES = {
    "token_embd.weight": "gpt_neox.embed_in.weight",
    "output_norm.weight": "gpt_neox.final_layer_norm.weight",
    "output_norm.bias": "gpt_neox.final_layer_norm.bias",
    "output.weight": "embed_out.weight",
    "blk.{i}.attn_norm.weight": "gpt_neox.layers.{i}.input_layernorm.weight",
    "blk.{i}.attn_norm.bias": "gpt_neox.layers.{i}.input_layernorm.bias",
    "blk.{i}.ffn_norm.weight": "gpt_neox.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_norm.bias": "gpt_neox.layers.{i}.post_attention_layernorm.bias",
    "blk.{i}.attn_qkv.weight": "gpt_neox.layers.{i}.attention.query_key_value.weight",
    "blk.{i}.attn_qkv.bias": "gpt_neox.layers.{i}.attention.query_key_value.bias",
    "blk.{i}.attn_output.weight": "gpt_neox.layers.{i}.attention.dense.weight",
    "blk.{i}.attn_output.bias": "gpt_neox.layers.{i}.attention.dense.bias",
    "blk.{i}.ffn_up.weight": "gpt_neox.layers.{i}.mlp.dense_h_to_4h.weight",
    "blk.{i}.ffn_up.bias": "gpt_neox.layers.{i}.mlp.dense_h_to_4h.bias",
    "blk.{i}.ffn_down.weight": "gpt_neox.layers.{i}.mlp.dense_4h_to_h.weight",
    "blk.{i}.ffn_down.bias": "gpt_neox.layers.{i}.mlp.dense_4h_to_h.bias",
}


def _name_mapper(table: dict[str, str]) -> Callable[[str], str | None]:
    exact = {k: v for k, v in table.items() if "{i}" not in k}
    per_block = {k.replace("blk.{i}.", ""): v for k, v in table.items() if k.startswith("blk.{i}.")}
    block_re = re.compile(r"^blk\.(\d+)\.(.+)$")

    def mapper(name: str) -> str | None:
        if name in exact:
            return exact[name]
        match = block_re.match(name)
        if match and match.group(2) in per_block:
            return per_block[match.group(2)].replace("{i}", match.group(1))
        return None

    return mapper


def _config_from_metadata(
    meta: dict[str, Any], tensor_names: set[str], embed_rows: int | None
) -> dict:
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"unsupported GGUF general.architecture {arch!r}; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )

    def get(key: str, default: Any = KeyError) -> Any:
        full = f"{arch}.{key}"
        if full in meta:
            return meta[full]
        if default is KeyError:
            raise KeyError(f"GGUF metadata lacks required key {full!r}")
        return default

    hidden = int(get("embedding_length"))
    n_heads = int(get("attention.head_count"))
    n_kv = int(get("attention.head_count_kv", n_heads))
    head_dim = int(get("attention.key_length", hidden // n_heads))
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = get("vocab_size", None)
    if vocab is None:
        vocab = len(tokens) if tokens is not None else embed_rows
    if vocab is None:
        raise KeyError(
            f"cannot tell the vocabulary size: no {arch}.vocab_size, tokens or token_embd"
        )
    eos = meta.get("tokenizer.ggml.eos_token_id")
    tied = "output.weight" not in tensor_names
    common = dict(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length")),
        num_hidden_layers=int(get("block_count")),
        num_attention_heads=n_heads,
        max_position_embeddings=int(get("context_length", 2048)),
        tie_word_embeddings=tied,
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=eos,
        pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
        torch_dtype="float32",
    )
    rope_theta = float(get("rope.freq_base", 10000.0))
    rope_dim = get("rope.dimension_count", None)

    if arch == "gptneox":
        rotary_pct = (int(rope_dim) / head_dim) if rope_dim is not None else 1.0
        return dict(
            model_type="gpt_neox",
            architectures=["GPTNeoXForCausalLM"],
            **common,
            rotary_pct=rotary_pct,
            partial_rotary_factor=rotary_pct,
            rotary_emb_base=rope_theta,
            rope_theta=rope_theta,
            layer_norm_eps=float(get("attention.layer_norm_epsilon", 1e-5)),
            use_parallel_residual=bool(get("use_parallel_residual", True)),
            hidden_act="gelu",
            attention_bias=True,
        )

    if "rope_freqs.weight" in tensor_names:
        raise ValueError(
            "this GGUF uses llama3-style RoPE frequency scaling (a rope_freqs tensor), "
            "which is not supported"
        )
    rope_scaling = None
    scaling_type = get("rope.scaling.type", None)
    if scaling_type not in (None, "none"):
        rope_scaling = {"rope_type": scaling_type, "factor": float(get("rope.scaling.factor", 1.0))}
        original = get("rope.scaling.original_context_length", None)
        if original is not None:
            rope_scaling["original_max_position_embeddings"] = int(original)
    model_type, architecture = {
        "llama": ("llama", "LlamaForCausalLM"),
        "qwen2": ("qwen2", "Qwen2ForCausalLM"),
        "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    }[arch]
    config = dict(
        model_type=model_type,
        architectures=[architecture],
        **common,
        num_key_value_heads=n_kv,
        head_dim=head_dim,
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        hidden_act="silu",
        attention_bias="blk.0.attn_q.bias" in tensor_names,
    )
    if rope_dim is not None and int(rope_dim) != head_dim:
        config["partial_rotary_factor"] = int(rope_dim) / head_dim
    sliding = get("attention.sliding_window", None)
    if sliding:
        config["sliding_window"] = int(sliding)
    return config


def read_gguf(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a GGUF checkpoint as an HF-style config dict and HF-named float32 tensors.

    Every tensor is dequantized with ``gguf.quants.dequantize`` (any GGML type that gguf-py
    implements: F32, F16, BF16, Q4_0/1, Q5_0/1, Q8_0, K-quants, ...), reshaped from GGUF's
    reversed dims to torch ``(out, in)`` layout, renamed to the HF name, and (llama) Q/K rows
    un-permuted: ``W_hf = W.reshape(n, hd/2, 2, d).swapaxes(1, 2).reshape(W.shape)``.

    Args:
      path: a ``.gguf`` file whose ``general.architecture`` is one of
        :data:`SUPPORTED_ARCHITECTURES` (``llama``, ``qwen2``, ``qwen3``, ``gptneox``).

    Returns:
      ``(config, tensors)``: ``config`` has HF ``config.json`` keys (``model_type``,
      ``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``,
      ``head_dim``, ``rope_theta``, ``rms_norm_eps``, ``max_position_embeddings``,
      ``vocab_size``, ``tie_word_embeddings`` (True when ``output.weight`` is absent), token
      ids, ...); ``tensors`` maps HF names to ``np.float32`` arrays.

    Raises:
      FileNotFoundError: missing file. ValueError: not a GGUF file, unsupported architecture,
      or a tensor that has no HF counterpart. KeyError: required metadata missing.

    Example::

      config, tensors = read_gguf(path)
      tensors["model.layers.0.self_attn.q_proj.weight"].shape  # (576, 576) for SmolLM2-135M
    """
    gguf = _import_gguf()
    reader = _open_reader(path)
    meta = _metadata_of(reader)
    names = {t.name for t in reader.tensors}
    embed = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    embed_rows = int(embed.shape[-1]) if embed is not None else None
    config = _config_from_metadata(meta, names, embed_rows)
    arch = meta["general.architecture"]
    mapper = _name_mapper(_GPTNEOX_NAMES if arch == "gptneox" else _LLAMA_LIKE_NAMES)
    n_heads = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_heads)

    tensors: dict[str, np.ndarray] = {}
    unknown = []
    for tensor in reader.tensors:
        hf_name = mapper(tensor.name)
        if hf_name is None:
            unknown.append(tensor.name)
            continue
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        try:
            values = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
        except NotImplementedError as err:
            raise ValueError(
                f"tensor {tensor.name!r} has GGML type {tensor.tensor_type.name}, "
                "which gguf-py cannot dequantize"
            ) from err
        values = np.asarray(values, dtype=np.float32).reshape(shape)
        if arch == "llama":
            if tensor.name.endswith(("attn_q.weight", "attn_q.bias")):
                values = unpermute_qk(values, n_heads)
            elif tensor.name.endswith(("attn_k.weight", "attn_k.bias")):
                values = unpermute_qk(values, n_kv)
        elif arch == "gptneox" and tensor.name.endswith(("attn_qkv.weight", "attn_qkv.bias")):
            values = _fused_qkv_to_hf(values, n_heads)
        tensors[hf_name] = values
    if unknown:
        raise ValueError(f"GGUF tensors with no HF counterpart for {arch!r}: {unknown[:8]}")
    return config, tensors


def load_gguf(path: str | os.PathLike, *, dtype=None):
    """Build a :class:`~jaxtrust.models.transformer.CausalLM` from a GGUF checkpoint.

    Args:
      path: a ``.gguf`` file (see :func:`read_gguf`).
      dtype: parameter dtype of the JAX model (default ``jnp.float32``).

    Returns:
      The model, with ``LMConfig.from_hf(config)`` as its config.

    Example::

      model = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
      logits = model(jnp.array([[1, 2, 3]])).logits
    """
    import jax.numpy as jnp

    from jaxtrust.models.config import LMConfig
    from jaxtrust.models.convert import model_from_hf_tensors

    hf_config, tensors = read_gguf(path)
    config = LMConfig.from_hf(hf_config)
    return model_from_hf_tensors(config, tensors, dtype=jnp.float32 if dtype is None else dtype)
