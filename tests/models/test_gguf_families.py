"""GGUF loading for the non-llama families (qwen2, qwen3, gpt-neox) against torch.

Each tiny random Hugging Face model is written as GGUF the way llama.cpp's
``convert_hf_to_gguf.py`` writes that family (tensor names, metadata keys, no Q/K permutation for
qwen, the fused GPT-NeoX QKV re-ordered from per-head interleaving to ``[q; k; v]``); then
:func:`load_gguf` must rebuild the config and give the same logits as the torch model. A wrong
name map, a missed re-ordering or a config key read wrongly (head_dim, partial rotary, parallel
residual, tied head) changes the logits far beyond the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import HAS_TORCH

gguf = pytest.importorskip("gguf")

pytestmark = [
    pytest.mark.torch,
    pytest.mark.skipif(not HAS_TORCH, reason="needs torch + transformers"),
]

VOCAB = 96
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=128,
)

FAMILIES = {
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        dict(num_key_value_heads=2, tie_word_embeddings=True),
    ),
    "qwen3": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        dict(num_key_value_heads=2, head_dim=24, tie_word_embeddings=False),
    ),
    "gptneox": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(
            rotary_pct=0.25,
            use_parallel_residual=True,
            hidden_act="gelu",
            tie_word_embeddings=False,
        ),
    ),
    "gptneox_sequential": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(
            rotary_pct=0.5,
            use_parallel_residual=False,
            hidden_act="gelu",
            tie_word_embeddings=False,
        ),
    ),
}

# HF name (without the "model.layers.{i}." / "gpt_neox.layers.{i}." prefix) -> GGUF block name.
QWEN_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
QWEN_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
NEOX_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "input_layernorm.bias": "attn_norm.bias",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "post_attention_layernorm.bias": "ffn_norm.bias",
    "attention.query_key_value.weight": "attn_qkv.weight",
    "attention.query_key_value.bias": "attn_qkv.bias",
    "attention.dense.weight": "attn_output.weight",
    "attention.dense.bias": "attn_output.bias",
    "mlp.dense_h_to_4h.weight": "ffn_up.weight",
    "mlp.dense_h_to_4h.bias": "ffn_up.bias",
    "mlp.dense_4h_to_h.weight": "ffn_down.weight",
    "mlp.dense_4h_to_h.bias": "ffn_down.bias",
}
NEOX_GLOBAL = {
    "gpt_neox.embed_in.weight": "token_embd.weight",
    "gpt_neox.final_layer_norm.weight": "output_norm.weight",
    "gpt_neox.final_layer_norm.bias": "output_norm.bias",
    "embed_out.weight": "output.weight",  # transformers < 5
    "lm_head.weight": "output.weight",  # transformers >= 5
}


def _hf_model(family: str):
    import torch
    import transformers

    config_name, model_name, extra = FAMILIES[family]
    config = getattr(transformers, config_name)(**{**COMMON, **extra})
    torch.manual_seed(1)
    model = getattr(transformers, model_name)(config).eval()
    with torch.no_grad():  # random norms and biases, so that a wrong mapping cannot hide
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _neox_fused_to_gguf(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's GPT-NeoX conversion: per-head ``(heads, 3, head_dim)`` rows -> ``[q; k; v]``."""
    per_head = w.reshape(n_heads, 3, w.shape[0] // (3 * n_heads), *w.shape[1:])
    return np.concatenate([per_head[:, j].reshape(-1, *w.shape[1:]) for j in range(3)], axis=0)


def _gguf_name(name: str, block: dict, global_: dict) -> str | None:
    if name in global_:
        return global_[name]
    parts = name.split(".")
    if "layers" in parts:
        i = parts.index("layers")
        rest = ".".join(parts[i + 2 :])
        return f"blk.{parts[i + 1]}.{block[rest]}" if rest in block else None
    return None


def _rope(config, v5_key: str, v4_attribute: str):
    """A RoPE setting from transformers v5 ``rope_parameters`` or the v4 attribute."""
    params = getattr(config, "rope_parameters", None) or {}
    return params[v5_key] if v5_key in params else getattr(config, v4_attribute)


def _write_gguf(path, family: str, model) -> None:
    c = model.config
    arch = "gptneox" if family.startswith("gptneox") else family
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_vocab_size(c.vocab_size)
    if arch == "gptneox":
        rotary_pct = _rope(c, "partial_rotary_factor", "rotary_pct")
        writer.add_rope_dimension_count(int(rotary_pct * head_dim))
        writer.add_parallel_residual(bool(c.use_parallel_residual))
        writer.add_layer_norm_eps(c.layer_norm_eps)
        block, global_ = NEOX_BLOCK, NEOX_GLOBAL
    else:
        writer.add_head_count_kv(c.num_key_value_heads)
        writer.add_layer_norm_rms_eps(c.rms_norm_eps)
        if arch == "qwen3":
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        block, global_ = QWEN_BLOCK, QWEN_GLOBAL
    writer.add_rope_freq_base(float(_rope(c, "rope_theta", "rope_theta")))
    for name, tensor in model.state_dict().items():
        target = _gguf_name(name, block, global_)
        if target is None:
            continue  # buffers such as rotary inv_freq
        if c.tie_word_embeddings and target == "output.weight":
            continue  # llama.cpp writes no output tensor for a tied head
        w = tensor.detach().numpy().astype(np.float32)
        if target.endswith(("attn_qkv.weight", "attn_qkv.bias")):
            w = _neox_fused_to_gguf(w, c.num_attention_heads)
        writer.add_tensor(target, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gguf_family_loads_with_torch_logits(tmp_path, family):
    import jax.numpy as jnp
    import torch

    from jaxtrust.models.gguf import load_gguf, read_gguf

    hf = _hf_model(family)
    path = tmp_path / f"{family}.gguf"
    _write_gguf(path, family, hf)
    config, _ = read_gguf(path)
    model = load_gguf(path, dtype=jnp.float32)
    c = model.config
    assert c.num_layers == hf.config.num_hidden_layers and c.vocab_size == VOCAB
    assert c.tie_word_embeddings == hf.config.tie_word_embeddings
    if family == "qwen3":
        assert c.head_dim == 24  # read from attention.key_length, not hidden // heads
    tokens = np.array([[5, 17, 90, 3, 64, 12, 7, 33]], dtype=np.int64)
    with torch.no_grad():
        expected = hf(torch.from_numpy(tokens)).logits.numpy()
    got = np.asarray(model(jnp.asarray(tokens, jnp.int32)).logits)
    assert np.abs(expected).max() > 0.1  # a non-degenerate model
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
