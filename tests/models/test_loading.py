"""Checkpoint loading and saving: safetensors round trips, shards, bfloat16, errors, export
parity."""

import functools
import json
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from jaxtrust.models import (
    CausalLM,
    LMConfig,
    hf_tensors_from_model,
    load_pretrained,
    model_from_hf_tensors,
    save_pretrained,
)
from tests.conftest import HAS_TORCH

CONFIGS = {
    "llama": LMConfig.tiny(tie_word_embeddings=False),
    "llama_tied": LMConfig.tiny(),
    "gpt_neox": LMConfig.tiny("gpt_neox"),
    "qwen3": LMConfig.tiny(model_type="qwen3", qk_norm=True, head_dim=24),
}


def _random_model(config: LMConfig, seed: int = 0) -> CausalLM:
    """Every parameter random (norm scales and biases too), so that any mix-up shows."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: CausalLM(config, rngs=nnx.Rngs(seed))))
    rng = np.random.default_rng(seed)
    pure = jax.tree.map(
        lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.3, x.dtype), nnx.to_pure_dict(state)
    )
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def _params(model: CausalLM) -> dict:
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _assert_same_params(a: CausalLM, b: CausalLM, exact: bool = True):
    pa, pb = _params(a), _params(b)
    assert jax.tree.structure(pa) == jax.tree.structure(pb)
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        assert x.shape == y.shape
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-2, atol=1e-2)


@pytest.fixture(scope="module")
def models():
    return {name: _random_model(config, seed=i) for i, (name, config) in enumerate(CONFIGS.items())}


def _write_checkpoint(directory: Path, config: LMConfig, tensors: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config.to_hf()))
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


# ---------------------------------------------------------------------------- round trips
@pytest.mark.smoke
@pytest.mark.parametrize("name", ["llama", "gpt_neox"])
def test_save_load_round_trip_is_exact(models, tmp_path, name):
    model = models[name]
    save_pretrained(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_pretrained(tmp_path)
    assert loaded.config == model.config
    _assert_same_params(model, loaded)


@pytest.mark.parametrize("name", ["llama_tied", "qwen3"])
def test_hf_tensors_round_trip(models, name):
    model = models[name]
    tensors = hf_tensors_from_model(model)
    if name == "llama_tied":
        assert "lm_head.weight" not in tensors
        # tied checkpoints sometimes carry a copy of the embedding as lm_head.weight: tolerated
        with_head = {**tensors, "lm_head.weight": tensors["model.embed_tokens.weight"]}
        _assert_same_params(model, model_from_hf_tensors(model.config, with_head))
    else:
        assert tensors["model.layers.1.self_attn.q_norm.weight"].shape == (24,)
        assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (
            4 * 24,
            64,
        )  # torch layout [out, in]
    _assert_same_params(model, model_from_hf_tensors(model.config, tensors))


def test_gpt_neox_fused_qkv_is_interleaved_per_head(models):
    """query_key_value rows are [head, (q, k, v), head_dim]: head 1's key rows follow head 1's
    query rows."""
    model = models["gpt_neox"]
    tensors = hf_tensors_from_model(model)
    fused = tensors["gpt_neox.layers.1.attention.query_key_value.weight"]
    hd = model.config.head_dim
    k_kernel = np.asarray(model.layers.attn.k_proj.kernel[...])[1]  # [in, out]
    np.testing.assert_array_equal(fused[3 * hd + hd : 3 * hd + 2 * hd], k_kernel[:, hd : 2 * hd].T)


def test_sharded_checkpoint_loads(models, tmp_path):
    model = models["llama"]
    tensors = hf_tensors_from_model(model)
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / file))
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_hf()))
    _assert_same_params(model, load_pretrained(tmp_path))


def test_sharded_checkpoint_with_a_missing_shard(models, tmp_path):
    tensors = hf_tensors_from_model(models["llama"])
    save_file(tensors, str(tmp_path / "model-00001-of-00002.safetensors"))
    weight_map = {
        k: f"model-0000{1 + i % 2}-of-00002.safetensors" for i, k in enumerate(sorted(tensors))
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(models["llama"].config.to_hf()))
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        load_pretrained(tmp_path)


def test_shard_index_cannot_point_outside_the_directory(models, tmp_path):
    inner = tmp_path / "model"
    _write_checkpoint(inner, models["llama"].config, hf_tensors_from_model(models["llama"]))
    (inner / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    weight_map = {k: "../elsewhere.safetensors" for k in hf_tensors_from_model(models["llama"])}
    (inner / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ValueError, match=r"outside the directory.*\.\./elsewhere"):
        load_pretrained(inner)


def test_bfloat16_safetensors(models, tmp_path):
    model = models["gpt_neox"]
    tensors = {k: v.astype(ml_dtypes.bfloat16) for k, v in hf_tensors_from_model(model).items()}
    _write_checkpoint(tmp_path, model.config, tensors)
    as_f32 = load_pretrained(tmp_path)  # bf16 values are exactly representable in fp32
    expected = model_from_hf_tensors(
        model.config, {k: v.astype(np.float32) for k, v in tensors.items()}
    )
    _assert_same_params(expected, as_f32)
    assert as_f32.layers.attn.q_proj.kernel[...].dtype == jnp.float32
    _assert_same_params(model, as_f32, exact=False)  # and close to the fp32 original
    as_bf16 = load_pretrained(tmp_path, dtype=jnp.bfloat16)
    assert as_bf16.layers.attn.q_proj.kernel[...].dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(as_bf16.embed.embedding[...]).astype(np.float32),
        tensors["gpt_neox.embed_in.weight"].astype(np.float32),
    )


# ---------------------------------------------------------------------------- errors
@pytest.mark.smoke
def test_missing_and_unexpected_keys_are_all_listed(models, tmp_path):
    model = models["llama"]
    tensors = hf_tensors_from_model(model)
    del tensors["model.layers.1.mlp.up_proj.weight"], tensors["model.norm.weight"]
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(
        8, np.float32
    )  # ignorable buffer
    tensors["model.layers.2.mlp.up_proj.weight"] = np.zeros((128, 64), np.float32)
    tensors["score.weight"] = np.zeros((2, 64), np.float32)
    _write_checkpoint(tmp_path, model.config, tensors)
    with pytest.raises(KeyError) as info:
        load_pretrained(tmp_path)
    message = str(info.value)
    for key in (
        "model.layers.1.mlp.up_proj.weight",
        "model.norm.weight",
        "model.layers.2.mlp.up_proj.weight",
        "score.weight",
    ):
        assert key in message, key
    assert "inv_freq" not in message


def test_wrong_shapes_are_all_named(models):
    model = models["llama"]
    tensors = hf_tensors_from_model(model)
    tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((33, 64), np.float32)
    tensors["model.embed_tokens.weight"] = np.zeros((255, 64), np.float32)
    with pytest.raises(ValueError) as info:
        model_from_hf_tensors(model.config, tensors)
    message = str(info.value)
    assert "model.layers.0.self_attn.k_proj.weight: shape (33, 64), expected (32, 64)" in message
    assert "model.embed_tokens.weight: shape (255, 64), expected (256, 64)" in message
    assert "layers.1" not in message  # the intact layer is not blamed


def test_gpt_neox_qkv_of_wrong_size_is_named(models):
    model = models["gpt_neox"]
    tensors = hf_tensors_from_model(model)
    tensors["gpt_neox.layers.0.attention.query_key_value.weight"] = np.zeros((100, 64), np.float32)
    with pytest.raises(ValueError, match=r"gpt_neox.layers.0.attention.query_key_value.weight"):
        model_from_hf_tensors(model.config, tensors)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_safetensors_names_the_file(models, tmp_path, damage):
    model = models["llama"]
    save_pretrained(model, tmp_path)
    file = tmp_path / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": b"\x07" * 64, "empty": b""}[damage]
    )
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        load_pretrained(tmp_path)


class _Tripwire:
    """Unpickling this object creates a file: proof that a loader ran pickle."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth"])
def test_pickle_files_are_refused_unopened(tmp_path, suffix):
    tripwire = tmp_path / "unpickled"
    file = tmp_path / f"pytorch_model{suffix}"
    file.write_bytes(pickle.dumps(_Tripwire(tripwire)))
    with pytest.raises(ValueError, match=r"pytorch_model.*never unpickled"):
        load_pretrained(file)
    assert not tripwire.exists()


def test_directory_with_only_pytorch_model_bin_is_refused(tmp_path):
    tripwire = tmp_path / "unpickled"
    (tmp_path / "config.json").write_text(json.dumps(LMConfig.tiny().to_hf()))
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(_Tripwire(tripwire)))
    with pytest.raises(
        ValueError, match=r"pytorch_model\.bin.*only safetensors and GGUF.*never unpickled"
    ):
        load_pretrained(tmp_path)
    assert not tripwire.exists()


def test_nonexistent_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path)  # an empty directory
    (tmp_path / "config.json").write_text(json.dumps(LMConfig.tiny().to_hf()))
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_pretrained(tmp_path)  # a config but no weights


# ---------------------------------------------------------------------------- export parity
@functools.partial(jax.jit, static_argnames="graphdef")
def _logits(graphdef, state, tokens, mask):
    return nnx.merge(graphdef, state)(tokens, attention_mask=mask).logits


@pytest.mark.torch
@pytest.mark.skipif(not HAS_TORCH, reason="needs torch + transformers")
@pytest.mark.parametrize(
    "name, hf_class", [("llama_tied", "LlamaForCausalLM"), ("gpt_neox", "GPTNeoXForCausalLM")]
)
def test_saved_model_loads_in_transformers_with_the_same_logits(models, tmp_path, name, hf_class):
    import torch
    import transformers

    model = models[name]
    save_pretrained(model, tmp_path)
    hf = getattr(transformers, hf_class).from_pretrained(tmp_path).eval()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, model.config.vocab_size, size=(2, 8))
    mask = np.ones((2, 8), bool)
    mask[0, :3] = False  # left padding
    with torch.no_grad():
        ref = hf(
            input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask, dtype=torch.long)
        ).logits.numpy()
    ours = np.asarray(_logits(*nnx.split(model), jnp.asarray(tokens, jnp.int32), jnp.asarray(mask)))
    np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-4, rtol=0)
    assert np.abs(ref[mask]).max() > 0.1  # not trivially near zero


def test_gpt_neox_qkv_with_wrong_input_dim_names_the_fused_tensor(models):
    model = models["gpt_neox"]
    tensors = hf_tensors_from_model(model)
    tensors["gpt_neox.layers.1.attention.query_key_value.weight"] = np.zeros((192, 63), np.float32)
    with pytest.raises(
        ValueError, match=r"split from gpt_neox\.layers\.1\.attention\.query_key_value\.weight"
    ):
        model_from_hf_tensors(model.config, tensors)
