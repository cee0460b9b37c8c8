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
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
}


def _v5(config: dict) -> dict:
    """The same config as transformers v5 writes it: rope keys moved into ``rope_parameters``."""
    out = {
        k: v
        for k, v in config.items()
        if k not in ("rope_theta", "rope_scaling", "rotary_pct", "partial_rotary_factor")
    }
    params = {
        "rope_theta": config.get("rope_theta", 10000.0),
        **(config.get("rope_scaling") or {"rope_type": "default"}),
    }
    if "rotary_pct" in config:
        params["partial_rotary_factor"] = config["rotary_pct"]
    out["rope_parameters"] = params
    return out


@pytest.mark.smoke
def test_llama3_v4_dict():
    c = LMConfig.from_hf(LLAMA_V4)
    assert (c.arch, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim) == (
        "llama",
        16,
        32,
        8,
        64,
    )
    assert (
        c.rope_theta == 500000.0
        and c.rope_type == "llama3"
        and c.rope_scaling_dict["factor"] == 32.0
    )
    assert c.tie_word_embeddings and c.eos_token_id == (128001, 128008, 128009)
    assert not c.qkv_bias and not c.qk_norm and c.sliding_window is None


@pytest.mark.smoke
def test_v5_rope_parameters_give_the_same_config():
    assert LMConfig.from_hf(_v5(LLAMA_V4)) == LMConfig.from_hf(LLAMA_V4)
    plain = {**LLAMA_V4, "rope_scaling": None}
    assert LMConfig.from_hf(_v5(plain)).rope_scaling is None  # rope_type "default" = no scaling
    neox = {
        "model_type": "gpt_neox",
        "vocab_size": 50304,
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "rotary_pct": 0.25,
        "rotary_emb_base": 10000,
        "use_parallel_residual": True,
        "layer_norm_eps": 1e-5,
        "hidden_act": "gelu",
        "tie_word_embeddings": False,
    }
    assert LMConfig.from_hf(_v5(neox)) == LMConfig.from_hf(neox)
    assert LMConfig.from_hf(neox).partial_rotary_factor == 0.25


@pytest.mark.smoke
def test_family_switches():
    base = {
        k: LLAMA_V4[k]
        for k in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
        )
    }
    qwen2 = LMConfig.from_hf({**base, "model_type": "qwen2"})
    assert qwen2.qkv_bias and not qwen2.o_bias and qwen2.norm_eps == 1e-6
    qwen3 = LMConfig.from_hf({**base, "model_type": "qwen3", "head_dim": 128})
    assert qwen3.qk_norm and qwen3.head_dim == 128 and not qwen3.qkv_bias
    mistral = LMConfig.from_hf({**base, "model_type": "mistral", "sliding_window": 4096})
    assert mistral.sliding_window == 4096
    assert (
        LMConfig.from_hf({**base, "model_type": "mistral", "sliding_window": None}).sliding_window
        is None
    )
    neox = LMConfig.from_hf(
        {**base, "model_type": "gpt_neox", "rotary_pct": 0.5, "use_parallel_residual": False}
    )
    assert (
        neox.arch == "gpt_neox"
        and neox.num_kv_heads == neox.num_heads
        and not neox.parallel_residual
    )
    assert (
        neox.qkv_bias and neox.mlp_bias and not neox.tie_word_embeddings and neox.rotary_dim == 32
    )


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


# ------------------------------------------------------------------ every family, v4 and v5
_BASE = dict(
    vocab_size=1000,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=3,
    num_attention_heads=8,
    max_position_embeddings=4096,
    hidden_act="silu",
    rope_theta=250000.0,
    bos_token_id=1,
    eos_token_id=2,
)
FAMILY_DICTS = {
    "llama": {
        **_BASE,
        "model_type": "llama",
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "rope_scaling": {"rope_type": "linear", "factor": 2.0},
        "tie_word_embeddings": False,
    },
    "mistral": {
        **_BASE,
        "model_type": "mistral",
        "num_key_value_heads": 4,
        "rms_norm_eps": 1e-5,
        "sliding_window": 1024,
        "tie_word_embeddings": False,
    },
    "qwen2": {
        **_BASE,
        "model_type": "qwen2",
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "use_sliding_window": False,
        "sliding_window": 4096,
        "tie_word_embeddings": True,
    },
    "qwen3": {
        **_BASE,
        "model_type": "qwen3",
        "num_key_value_heads": 4,
        "head_dim": 32,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
    "gpt_neox": {
        **{k: v for k, v in _BASE.items() if k != "hidden_act"},
        "model_type": "gpt_neox",
        "hidden_act": "gelu",
        "rotary_pct": 0.25,
        "layer_norm_eps": 1e-5,
        "use_parallel_residual": False,
        "tie_word_embeddings": False,
    },
}
# (arch, num_kv_heads, head_dim, rope_type, sliding_window, qkv_bias, qk_norm, tied, rotary_dim,
#  norm_eps)
EXPECTED = {
    "llama": ("llama", 2, 16, "linear", None, False, False, False, 16, 1e-5),
    "mistral": ("llama", 4, 16, "default", 1024, False, False, False, 16, 1e-5),
    "qwen2": (
        "llama",
        2,
        16,
        "default",
        None,
        True,
        False,
        True,
        16,
        1e-6,
    ),  # use_sliding_window False
    "qwen3": ("llama", 4, 32, "default", None, False, True, True, 32, 1e-6),
    "gpt_neox": ("gpt_neox", 8, 16, "default", None, True, False, False, 4, 1e-5),
}


@pytest.mark.parametrize("family", list(FAMILY_DICTS))
def test_v4_and_v5_dicts_of_every_family(family, tmp_path):
    v4 = FAMILY_DICTS[family]
    c = LMConfig.from_hf(v4)
    got = (
        c.arch,
        c.num_kv_heads,
        c.head_dim,
        c.rope_type,
        c.sliding_window,
        c.qkv_bias,
        c.qk_norm,
        c.tie_word_embeddings,
        c.rotary_dim,
        c.norm_eps,
    )
    assert got == EXPECTED[family]
    assert (
        c.model_type,
        c.rope_theta,
        c.num_layers,
        c.max_position_embeddings,
        c.eos_token_id,
    ) == (family, 250000.0, 3, 4096, (2,))
    assert c.activation == v4["hidden_act"]
    assert LMConfig.from_hf(_v5(v4)) == c
    for i, variant in enumerate((v4, _v5(v4))):  # from a directory and from a config.json path
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "config.json").write_text(json.dumps(variant))
        assert LMConfig.from_hf(tmp_path / str(i)) == c
        assert LMConfig.from_hf(str(tmp_path / str(i) / "config.json")) == c
    assert LMConfig.from_hf(c.to_hf()) == c


def test_v5_rope_parameters_carry_theta_and_scaling():
    v5 = {k: v for k, v in FAMILY_DICTS["llama"].items() if k not in ("rope_theta", "rope_scaling")}
    v5["rope_parameters"] = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    c = LMConfig.from_hf(v5)
    assert c.rope_theta == 500000.0 and c.rope_type == "llama3"
    assert c.rope_scaling_dict == {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }


def test_config_built_directly_round_trips():
    # model_type left empty (as jaxtrust.experiments.lm does) is filled in from arch
    direct = LMConfig(
        arch="llama",
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=4,
        head_dim=8,
        tie_word_embeddings=True,
        eos_token_id=(3,),
    )
    assert direct.model_type == "llama"
    assert LMConfig.from_hf(direct.to_hf()) == direct
    neox = LMConfig(
        arch="gpt_neox",
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=4,
        head_dim=8,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        activation="gelu",
        parallel_residual=True,
    )
    assert neox.model_type == "gpt_neox" and LMConfig.from_hf(neox.to_hf()) == neox


@pytest.mark.parametrize(
    "overrides, lost",
    [
        (dict(qkv_bias=True), "qkv_bias"),  # llama's attention_bias covers q, k, v AND o
        (dict(qk_norm=True), "qk_norm"),  # only qwen3 has q/k norms
        (dict(sliding_window=16), "sliding_window"),  # only mistral (and qwen2) have a window
    ],
)
def test_to_hf_refuses_configs_hugging_face_cannot_express(overrides, lost):
    with pytest.raises(ValueError, match=rf"to_hf: fields \['{lost}'\].*'llama'"):
        LMConfig.tiny(**overrides).to_hf()


# ---------------------------------------------------------------------------- errors name the key
def test_missing_required_keys_are_named():
    partial = {
        k: v
        for k, v in FAMILY_DICTS["llama"].items()
        if k not in ("hidden_size", "num_hidden_layers")
    }
    with pytest.raises(KeyError, match=r"\['hidden_size', 'num_hidden_layers'\]"):
        LMConfig.from_hf(partial)
    with pytest.raises(ValueError, match=r"model_type.*None"):
        LMConfig.from_hf({k: v for k, v in FAMILY_DICTS["llama"].items() if k != "model_type"})


@pytest.mark.parametrize(
    "family, key, value, message",
    [
        (
            "llama",
            "num_hidden_layers",
            0,
            r"config\['num_hidden_layers'\]: num_layers must be a positive integer, got 0",
        ),
        ("llama", "hidden_size", "128", r"config\['hidden_size'\]"),
        (
            "llama",
            "num_key_value_heads",
            3,
            r"config\['num_key_value_heads'\].*multiple of num_kv_heads "
            r"\(3\)|config\['num_attention_heads'\]",
        ),
        (
            "llama",
            "hidden_act",
            "swish2",
            r"config\['hidden_act'\]: activation must be one of .*'swish2'",
        ),
        (
            "llama",
            "rope_theta",
            -1.0,
            r"config\['rope_theta'\]: rope_theta must be a positive number",
        ),
        (
            "llama",
            "rope_scaling",
            {"rope_type": "linear"},
            r"config\['rope_scaling / rope_parameters'\].*'factor'",
        ),
        (
            "llama",
            "rope_scaling",
            {"rope_type": "yarn", "factor": 4.0},
            r"rope_scaling type must be one of .*'yarn'",
        ),
        ("llama", "rms_norm_eps", -1e-5, r"config\['rms_norm_eps / layer_norm_eps'\]: norm_eps"),
        (
            "gpt_neox",
            "rotary_pct",
            1.5,
            r"config\['partial_rotary_factor / rotary_pct'\]: partial_rotary_factor must be in "
            r"\(0, 1\]",
        ),
        (
            "mistral",
            "sliding_window",
            0,
            r"config\['sliding_window'\]: sliding_window must be positive",
        ),
    ],
)
def test_bad_values_name_the_hf_key(family, key, value, message):
    with pytest.raises(ValueError, match=message):
        LMConfig.from_hf({**FAMILY_DICTS[family], key: value})


# ---------------------------------------------------------------------------- SmolLM2 preset
# config.json of HuggingFaceTB/SmolLM2-135M-Instruct (as published; the 135M base model differs
# only in its special token ids, bos = eos = 0).
SMOLLM2_135M_INSTRUCT = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 576,
    "initializer_range": 0.041666666666666664,
    "intermediate_size": 1536,
    "is_llama_config": True,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "pad_token_id": 2,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_interleaved": False,
    "rope_scaling": None,
    "rope_theta": 100000,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 49152,
}


@pytest.mark.smoke
def test_smollm2_preset_matches_the_published_config():
    preset = LMConfig.smollm2_135m()
    assert preset == LMConfig.from_hf(SMOLLM2_135M_INSTRUCT)
    assert (
        preset.num_layers,
        preset.hidden_size,
        preset.num_heads,
        preset.num_kv_heads,
        preset.head_dim,
    ) == (30, 576, 9, 3, 64)
    assert (preset.intermediate_size, preset.vocab_size, preset.rope_theta, preset.norm_eps) == (
        1536,
        49152,
        100000.0,
        1e-5,
    )
    assert (
        preset.tie_word_embeddings and preset.rope_scaling is None and preset.sliding_window is None
    )


def test_for_tokenizer_builds_a_tied_llama_with_the_tokenizer_ids():
    from jaxtrust.data import WordTokenizer

    tok = WordTokenizer(["a", "b", "c"])
    c = LMConfig.for_tokenizer(
        tok, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
    )
    assert (c.vocab_size, c.head_dim, c.tie_word_embeddings) == (8, 8, True)
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (
        tok.bos_id,
        (tok.eos_id,),
        tok.pad_id,
    )
    assert LMConfig.from_hf(c.to_hf()) == c
    with pytest.raises(ValueError, match="hidden_size"):
        LMConfig.for_tokenizer(
            tok, hidden_size=30, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
        )
