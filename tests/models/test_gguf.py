"""GGUF reading: a tiny llama GGUF written here with gguf.GGUFWriter (llama.cpp's conventions)
must read back to the original HF-named tensors and config."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from jaxtrust.models.gguf import permute_qk, read_gguf, read_gguf_metadata, unpermute_qk  # noqa: E402

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, LAYERS, VOCAB = 64, 4, 2, 16, 96, 2, 128


def tiny_llama_state(seed: int = 0, tied: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = {"model.embed_tokens.weight": rng.normal(size=(VOCAB, HIDDEN)).astype(np.float32)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        state[p + "self_attn.q_proj.weight"] = rng.normal(size=(HEADS * HEAD_DIM, HIDDEN))
        state[p + "self_attn.k_proj.weight"] = rng.normal(size=(KV_HEADS * HEAD_DIM, HIDDEN))
        state[p + "self_attn.v_proj.weight"] = rng.normal(size=(KV_HEADS * HEAD_DIM, HIDDEN))
        state[p + "self_attn.o_proj.weight"] = rng.normal(size=(HIDDEN, HEADS * HEAD_DIM))
        state[p + "mlp.gate_proj.weight"] = rng.normal(size=(FFN, HIDDEN))
        state[p + "mlp.up_proj.weight"] = rng.normal(size=(FFN, HIDDEN))
        state[p + "mlp.down_proj.weight"] = rng.normal(size=(HIDDEN, FFN))
        state[p + "input_layernorm.weight"] = 1 + 0.1 * rng.normal(size=(HIDDEN,))
        state[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.normal(size=(HIDDEN,))
    state["model.norm.weight"] = 1 + 0.1 * rng.normal(size=(HIDDEN,))
    if not tied:
        state["lm_head.weight"] = rng.normal(size=(VOCAB, HIDDEN))
    return {k: np.asarray(v, np.float32) for k, v in state.items()}


HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Verbatim logic of llama.cpp's convert_hf_to_gguf.py LlamaModel.permute."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def gguf_name(hf_name: str) -> str:
    if hf_name in HF_TO_GGUF:
        return HF_TO_GGUF[hf_name]
    _, _, i, rest = hf_name.split(".", 3)
    return f"blk.{i}.{HF_TO_GGUF[rest]}"


def write_tiny_llama_gguf(path, state, *, quant=None, arch="llama", extra=None):
    """Write `state` as llama.cpp would: permuted Q/K, 2-D weights optionally quantized."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(50000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(VOCAB)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    for key, value in (extra or {}).items():
        writer.add_uint32(key, value)
    for name, w in state.items():
        if name.endswith("q_proj.weight"):
            w = llama_cpp_permute(w, HEADS)
        elif name.endswith("k_proj.weight"):
            w = llama_cpp_permute(w, KV_HEADS)
        if quant is not None and w.ndim == 2:
            writer.add_tensor(gguf_name(name), gguf.quants.quantize(w, quant), raw_dtype=quant)
        else:
            writer.add_tensor(gguf_name(name), w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_permutation_inverse_and_matches_llama_cpp():
    w = np.random.default_rng(1).normal(size=(HEADS * HEAD_DIM, 7))
    np.testing.assert_array_equal(permute_qk(w, HEADS), llama_cpp_permute(w, HEADS))
    np.testing.assert_array_equal(unpermute_qk(llama_cpp_permute(w, HEADS), HEADS), w)
    assert not np.array_equal(permute_qk(w, HEADS), w)
    with pytest.raises(ValueError, match="divisible"):
        unpermute_qk(np.zeros((10, 3)), 4)


def _rope_rotate_half(x, pos, theta=10000.0):
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2) / d)
    ang = pos * inv
    cos, sin = np.concatenate([np.cos(ang)] * 2), np.concatenate([np.sin(ang)] * 2)
    rot = np.concatenate([-x[d // 2 :], x[: d // 2]])
    return x * cos + rot * sin


def _rope_interleaved(x, pos, theta=10000.0):
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2) / d)
    ang = pos * inv
    even, odd = x[0::2], x[1::2]
    out = np.empty_like(x)
    out[0::2] = even * np.cos(ang) - odd * np.sin(ang)
    out[1::2] = even * np.sin(ang) + odd * np.cos(ang)
    return out


def test_unpermuted_weights_make_hf_rope_match_llama_cpp_rope():
    """Why the permutation exists: llama.cpp's interleaved RoPE on permuted rows gives the same
    attention scores as HF's rotate_half RoPE on the original rows."""
    rng = np.random.default_rng(2)
    wq, wk = rng.normal(size=(HEAD_DIM, HIDDEN)), rng.normal(size=(HEAD_DIM, HIDDEN))
    x1, x2 = rng.normal(size=HIDDEN), rng.normal(size=HIDDEN)
    hf = _rope_rotate_half(wq @ x1, 5.0) @ _rope_rotate_half(wk @ x2, 2.0)
    cpp = _rope_interleaved(permute_qk(wq, 1) @ x1, 5.0) @ _rope_interleaved(
        permute_qk(wk, 1) @ x2, 2.0
    )
    np.testing.assert_allclose(cpp, hf, rtol=1e-10)
    wrong = _rope_interleaved(wq @ x1, 5.0) @ _rope_interleaved(wk @ x2, 2.0)
    assert abs(wrong - hf) > 1e-3


@pytest.mark.smoke
def test_f32_round_trip_exact_and_config(tmp_path):
    state = tiny_llama_state()
    path = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(path, state)
    config, tensors = read_gguf(path)
    assert set(tensors) == set(state)
    for name, w in state.items():
        assert tensors[name].dtype == np.float32
        np.testing.assert_array_equal(tensors[name], w, err_msg=name)
    expected = dict(
        model_type="llama",
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=256,
        vocab_size=VOCAB,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    for key, value in expected.items():
        assert config[key] == value, key
    assert config["rope_theta"] == pytest.approx(50000.0)
    assert config["rms_norm_eps"] == pytest.approx(1e-5)
    assert read_gguf_metadata(path)["general.architecture"] == "llama"


def test_q8_0_round_trip_within_quantization_error_and_tied(tmp_path):
    state = tiny_llama_state(seed=3, tied=True)
    path = tmp_path / "tiny_q8.gguf"
    write_tiny_llama_gguf(path, state, quant=gguf.GGMLQuantizationType.Q8_0)
    assert {t.tensor_type for t in gguf.GGUFReader(str(path)).tensors} >= {
        gguf.GGMLQuantizationType.Q8_0
    }
    config, tensors = read_gguf(path)
    assert config["tie_word_embeddings"] is True
    assert "lm_head.weight" not in tensors
    for name, w in state.items():
        got = tensors[name]
        assert got.shape == w.shape, name
        if w.ndim == 1:
            np.testing.assert_array_equal(got, w)
            continue
        # Q8_0: blocks of 32 along the row, scale d = max|w| / 127 stored as float16, so
        # |error| <= d / 2 (rounding) + 127 * d * 2**-11 (the float16 scale's rounding).
        blocks = w.reshape(w.shape[0], -1, 32)
        scale = np.abs(blocks).max(-1, keepdims=True) / 127
        bound = scale * (0.5 + 127 * 2.0**-11)
        err = np.abs(got.reshape(blocks.shape) - blocks)
        assert np.all(err <= bound + 1e-6), name
        assert err.max() > 0  # it really was quantized


def test_load_gguf_builds_model_with_same_logits_as_hf_tensors(tmp_path):
    pytest.importorskip("jaxtrust.models.convert")
    import jax.numpy as jnp

    from jaxtrust.models.config import LMConfig
    from jaxtrust.models.convert import model_from_hf_tensors
    from jaxtrust.models.gguf import load_gguf

    state = tiny_llama_state(seed=4)
    path = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(path, state)
    config, _ = read_gguf(path)
    model = load_gguf(path)
    reference = model_from_hf_tensors(LMConfig.from_hf(config), state, dtype=jnp.float32)
    tokens = jnp.array([[3, 17, 99, 5, 64]], dtype=jnp.int32)
    np.testing.assert_allclose(model(tokens).logits, reference(tokens).logits, rtol=1e-5, atol=1e-5)
    assert model.config.num_kv_heads == KV_HEADS


def test_corrupt_file_errors(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"NOTAGGUF" + bytes(64))
    with pytest.raises(ValueError, match="not a readable GGUF"):
        read_gguf(junk)
    good = tmp_path / "good.gguf"
    write_tiny_llama_gguf(good, tiny_llama_state())
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable GGUF"):
        read_gguf(truncated)
    with pytest.raises(FileNotFoundError):
        read_gguf(tmp_path / "missing.gguf")


def test_unknown_architecture_error_names_it(tmp_path):
    path = tmp_path / "mamba.gguf"
    writer = gguf.GGUFWriter(str(path), "mamba")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="unsupported GGUF general.architecture 'mamba'"):
        read_gguf(path)


def test_missing_required_metadata_is_key_error(tmp_path):
    path = tmp_path / "nometa.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(KeyError, match="llama.embedding_length"):
        read_gguf(path)
