"""LMConfig: Hugging Face config dicts (v4 and v5 rope keys), round trip, presets, errors."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from jaxtrust.models import CausalLM, LMConfig

LLAMA_V4 = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
}


def _v5(config: dict) -> dict:
    """The same config as transformers v5 writes it: rope keys moved into ``rope_parameters``."""
    out = {k: v for k, v in config.items() if k not in ("rope_theta", "rope_scaling", "rotary_pct", "partial_rotary_factor")}
    params = {"rope_theta": config.get("rope_theta", 10000.0), **(config.get("rope_scaling") or {"rope_type": "default"})}
    if "rotary_pct" in config:
        params["partial_rotary_factor"] = config["rotary_pct"]
    out["rope_parameters"] = params
    return out


@pytest.mark.smoke
def test_llama3_v4_dict():
    c = LMConfig.from_hf(LLAMA_V4)
    assert (c.arch, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim) == ("llama", 16, 32, 8, 64)
    assert c.rope_theta == 500000.0 and c.rope_type == "llama3" and c.rope_scaling_dict["factor"] == 32.0
    assert c.tie_word_embeddings and c.eos_token_id == (128001, 128008, 128009)
    assert not c.qkv_bias and not c.qk_norm and c.sliding_window is None


@pytest.mark.smoke
def test_v5_rope_parameters_give_the_same_config():
    assert LMConfig.from_hf(_v5(LLAMA_V4)) == LMConfig.from_hf(LLAMA_V4)
    plain = {**LLAMA_V4, "rope_scaling": None}
    assert LMConfig.from_hf(_v5(plain)).rope_scaling is None  # rope_type "default" = no scaling
    neox = {"model_type": "gpt_neox", "vocab_size": 50304, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 6, "num_attention_heads": 8, "rotary_pct": 0.25, "rotary_emb_base": 10000, "use_parallel_residual": True, "layer_norm_eps": 1e-5, "hidden_act": "gelu", "tie_word_embeddings": False}
    assert LMConfig.from_hf(_v5(neox)) == LMConfig.from_hf(neox)
    assert LMConfig.from_hf(neox).partial_rotary_factor == 0.25


@pytest.mark.smoke
def test_family_switches():
    base = {k: LLAMA_V4[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")}
    qwen2 = LMConfig.from_hf({**base, "model_type": "qwen2"})
    assert qwen2.qkv_bias and not qwen2.o_bias and qwen2.norm_eps == 1e-6
    qwen3 = LMConfig.from_hf({**base, "model_type": "qwen3", "head_dim": 128})
    assert qwen3.qk_norm and qwen3.head_dim == 128 and not qwen3.qkv_bias
    mistral = LMConfig.from_hf({**base, "model_type": "mistral", "sliding_window": 4096})
    assert mistral.sliding_window == 4096
    assert LMConfig.from_hf({**base, "model_type": "mistral", "sliding_window": None}).sliding_window is None
    neox = LMConfig.from_hf({**base, "model_type": "gpt_neox", "rotary_pct": 0.5, "use_parallel_residual": False})
    assert neox.arch == "gpt_neox" and neox.num_kv_heads == neox.num_heads and not neox.parallel_residual
    assert neox.qkv_bias and neox.mlp_bias and not neox.tie_word_embeddings and neox.rotary_dim == 32


@pytest.mark.smoke
@pytest.mark.parametrize(
    "config",
    [
        LMConfig.from_hf(LLAMA_V4),
        LMConfig.tiny(),
        LMConfig.tiny("gpt_neox"),
        LMConfig.tiny(model_type="mistral", sliding_window=3, tie_word_embeddings=False),
        LMConfig.tiny(model_type="qwen2", qkv_bias=True),
        LMConfig.tiny(model_type="qwen3", qk_norm=True, head_dim=24),
        LMConfig.tiny(rope_scaling=(("factor", 4.0), ("rope_type", "linear"))),
        LMConfig.smollm2_135m(),
    ],
)
def test_to_hf_round_trip(config, tmp_path):
    assert LMConfig.from_hf(config.to_hf()) == config
    (tmp_path / "config.json").write_text(json.dumps(config.to_hf()))
    assert LMConfig.from_hf(tmp_path) == config  # directory
    assert LMConfig.from_hf(tmp_path / "config.json") == config  # file


@pytest.mark.smoke
def test_hashable_static_argument():
    c = LMConfig.tiny()
    assert hash(c) == hash(LMConfig.tiny()) and c != LMConfig.tiny(num_layers=3)
    f = jax.jit(lambda x, config: x * config.num_layers, static_argnums=1)
    assert float(f(1.5, c)) == 3.0


def test_smollm2_preset_has_the_published_parameter_count():
    # 134.5 M parameters (SmolLM2-135M model card / its GGUF: 134,515,008 with the tied head).
    model = nnx.eval_shape(lambda: CausalLM(LMConfig.smollm2_135m(), rngs=nnx.Rngs(0)))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert count == 134_515_008


@pytest.mark.smoke
def test_unknown_model_type_names_key_and_supported_values():
    with pytest.raises(ValueError, match=r"model_type.*'bert'.*llama.*gpt_neox"):
        LMConfig.from_hf({**LLAMA_V4, "model_type": "bert"})
    with pytest.raises(ValueError, match="rope_scaling type"):
        LMConfig.from_hf({**LLAMA_V4, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})


@pytest.mark.smoke
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_heads=4, num_kv_heads=3), "multiple of num_kv_heads"),
        (dict(hidden_size=0), "hidden_size must be a positive integer"),
        (dict(activation="swish2"), "activation must be one of"),
        (dict(partial_rotary_factor=1.5), "partial_rotary_factor"),
        (dict(arch="bert"), "arch must be"),
        (dict(sliding_window=0), "sliding_window"),
    ],
)
def test_invalid_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        LMConfig.tiny(**overrides)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        LMConfig.from_hf(tmp_path)
