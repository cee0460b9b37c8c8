"""Mapping between Hugging Face parameter names and the jaxtrust NNX state.

Hugging Face stores a linear layer's weight as ``[out, in]`` per layer; jaxtrust stores kernels
as ``[in, out]`` stacked over layers. GPT-NeoX fuses q/k/v into one ``query_key_value`` matrix
interleaved per head (``[heads, 3, head_dim]`` along the output axis); it is split on load and
fused again on export.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtrust.models.config import LMConfig
from jaxtrust.models.transformer import CausalLM

# Buffers some checkpoints carry that are recomputed here.
_IGNORABLE = re.compile(
    r"(rotary_emb\.inv_freq|attention\.bias|attention\.masked_bias|\.attn\.bias)$"
)


def _layer_table(config: LMConfig) -> dict[tuple[str, ...], str]:
    """jaxtrust path (inside ``layers``) -> Hugging Face name template with ``{i}``."""
    if config.arch == "gpt_neox":
        p = "gpt_neox.layers.{i}."
        table = {
            ("attn_norm", "scale"): p + "input_layernorm.weight",
            ("attn_norm", "bias"): p + "input_layernorm.bias",
            ("mlp_norm", "scale"): p + "post_attention_layernorm.weight",
            ("mlp_norm", "bias"): p + "post_attention_layernorm.bias",
            ("attn", "o_proj", "kernel"): p + "attention.dense.weight",
            ("attn", "o_proj", "bias"): p + "attention.dense.bias",
            ("mlp", "up_proj", "kernel"): p + "mlp.dense_h_to_4h.weight",
            ("mlp", "up_proj", "bias"): p + "mlp.dense_h_to_4h.bias",
            ("mlp", "down_proj", "kernel"): p + "mlp.dense_4h_to_h.weight",
            ("mlp", "down_proj", "bias"): p + "mlp.dense_4h_to_h.bias",
        }
        for proj in ("q", "k", "v"):  # virtual names, produced by _split_neox_qkv
            table[("attn", f"{proj}_proj", "kernel")] = p + f"attention.{proj}_proj.weight"
            table[("attn", f"{proj}_proj", "bias")] = p + f"attention.{proj}_proj.bias"
        return table
    p = "model.layers.{i}."
    table = {
        ("attn_norm", "scale"): p + "input_layernorm.weight",
        ("mlp_norm", "scale"): p + "post_attention_layernorm.weight",
        ("attn", "q_norm", "scale"): p + "self_attn.q_norm.weight",
        ("attn", "k_norm", "scale"): p + "self_attn.k_norm.weight",
    }
    for proj in ("q", "k", "v", "o"):
        table[("attn", f"{proj}_proj", "kernel")] = p + f"self_attn.{proj}_proj.weight"
        table[("attn", f"{proj}_proj", "bias")] = p + f"self_attn.{proj}_proj.bias"
    for proj in ("gate", "up", "down"):
        table[("mlp", f"{proj}_proj", "kernel")] = p + f"mlp.{proj}_proj.weight"
        table[("mlp", f"{proj}_proj", "bias")] = p + f"mlp.{proj}_proj.bias"
    return table


def _top_table(config: LMConfig) -> dict[tuple[str, ...], str]:
    if config.arch == "gpt_neox":
        return {
            ("embed", "embedding"): "gpt_neox.embed_in.weight",
            ("final_norm", "scale"): "gpt_neox.final_layer_norm.weight",
            ("final_norm", "bias"): "gpt_neox.final_layer_norm.bias",
            ("lm_head", "kernel"): "embed_out.weight",
        }
    return {
        ("embed", "embedding"): "model.embed_tokens.weight",
        ("final_norm", "scale"): "model.norm.weight",
        ("lm_head", "kernel"): "lm_head.weight",
    }


def _split_neox_qkv(config: LMConfig, tensors: dict[str, np.ndarray]) -> None:
    """Replace each fused ``query_key_value`` by virtual q/k/v entries (in place)."""
    h, hd = config.num_heads, config.head_dim
    for name in [
        n
        for n in tensors
        if n.endswith("attention.query_key_value.weight")
        or n.endswith("attention.query_key_value.bias")
    ]:
        fused = tensors.pop(name)
        kind = name.rsplit(".", 1)[1]
        try:
            parts = fused.reshape(h, 3, hd, *fused.shape[1:])
        except ValueError as err:
            raise ValueError(
                f"{name}: shape {fused.shape} does not split into {h} heads x 3 x {hd}"
            ) from err
        for j, proj in enumerate("qkv"):
            tensors[name.replace("query_key_value", f"{proj}_proj")] = parts[:, j].reshape(
                h * hd, *fused.shape[1:]
            )
        del kind


def _fuse_neox_qkv(config: LMConfig, tensors: dict[str, np.ndarray]) -> None:
    h, hd = config.num_heads, config.head_dim
    for name in [n for n in tensors if ".attention.q_proj." in n]:
        q, k, v = (tensors.pop(name.replace("q_proj", p)) for p in ("q_proj", "k_proj", "v_proj"))
        fused = np.stack([x.reshape(h, hd, *x.shape[1:]) for x in (q, k, v)], axis=1)
        tensors[name.replace("q_proj", "query_key_value")] = fused.reshape(3 * h * hd, *q.shape[1:])


def _checkpoint_name(config: LMConfig, name: str) -> str:
    """The checkpoint tensor a (possibly virtual, split-from-fused) name came from."""
    if (
        config.arch == "gpt_neox"
        and ".attention." in name
        and any(f".{p}_proj." in name for p in "qkv")
    ):
        fused = (
            name.replace(".q_proj.", ".query_key_value.")
            .replace(".k_proj.", ".query_key_value.")
            .replace(".v_proj.", ".query_key_value.")
        )
        return f"{name} (split from {fused})"
    return name


def _to_jax_layout(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
    # torch Linear weights are [out, in]; kernels here are [in, out]. Embeddings stay [V, D].
    return array.T if path[-1] == "kernel" else array


def model_from_hf_tensors(
    config: LMConfig, tensors: Mapping[str, np.ndarray], *, dtype=jnp.float32, param_dtype=None
) -> CausalLM:
    """Build a :class:`CausalLM` from Hugging Face-named tensors (torch layout).

    Every problem (missing keys, unexpected keys, wrong shapes) is collected and reported in one
    error; nothing half-loaded is returned.

    Args:
      config: the architecture.
      tensors: HF parameter name -> array (NumPy, any float dtype incl. bfloat16).
      dtype: computation dtype of the model.
      param_dtype: parameter dtype (default: ``dtype``).

    Raises:
      KeyError: missing or unexpected parameter names (all listed).
      ValueError: shape mismatches (all listed).
    """
    param_dtype = dtype if param_dtype is None else param_dtype
    tensors = dict(tensors)
    if config.arch == "gpt_neox":
        _split_neox_qkv(config, tensors)
    abstract = nnx.eval_shape(
        lambda: CausalLM(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype)
    )
    graphdef, state = nnx.split(abstract)
    target = nnx.to_pure_dict(state)
    flat_target = {path: leaf for path, leaf in _flatten(target)}
    used: set[str] = set()
    missing, shape_errors = [], []
    values: dict[tuple[str, ...], np.ndarray] = {}
    top, per_layer = _top_table(config), _layer_table(config)
    for path, leaf in flat_target.items():
        if path[0] == "layers":
            template = per_layer.get(path[1:])
            names = [template.format(i=i) for i in range(config.num_layers)] if template else []
        else:
            names = [top[path]] if path in top else []
        if not names:
            missing.append("/".join(path) + " (no Hugging Face name known)")
            continue
        absent = [n for n in names if n not in tensors]
        if absent:
            missing += absent
            continue
        used.update(names)
        # Check each layer's tensor before stacking, so that the error names the exact tensor
        # (np.stack would only say that the shapes differ). Shapes are reported in torch layout.
        expected = tuple(leaf.shape[1:] if path[0] == "layers" else leaf.shape)
        expected_torch = expected[::-1] if path[-1] == "kernel" else expected
        bad = [n for n in names if tuple(np.shape(tensors[n])) != expected_torch]
        if bad:
            shape_errors += [
                f"{_checkpoint_name(config, n)}: shape {tuple(np.shape(tensors[n]))}, expected "
                f"{expected_torch}"
                for n in bad
            ]
            continue
        arrays = [_to_jax_layout(path, np.asarray(tensors[n])) for n in names]
        values[path] = np.stack(arrays) if path[0] == "layers" else arrays[0]
    unexpected = sorted(
        n
        for n in tensors
        if n not in used
        and not _IGNORABLE.search(n)
        and not (config.tie_word_embeddings and n in ("lm_head.weight", "embed_out.weight"))
    )
    if missing or unexpected:
        raise KeyError(
            f"checkpoint does not match the {config.model_type or config.arch} architecture: "
            f"missing {sorted(missing)}; unexpected {unexpected}"
        )
    if shape_errors:
        raise ValueError("checkpoint shapes do not match the config: " + "; ".join(shape_errors))
    loaded = _unflatten(
        {path: jnp.asarray(values[path], dtype=flat_target[path].dtype) for path in flat_target}
    )
    nnx.replace_by_pure_dict(state, loaded)
    return nnx.merge(graphdef, state)


def hf_tensors_from_model(model: CausalLM) -> dict[str, np.ndarray]:
    """The inverse of :func:`model_from_hf_tensors`: HF names, torch layout, float32 NumPy."""
    config = model.config
    flat = dict(_flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param))))
    top, per_layer = _top_table(config), _layer_table(config)
    out: dict[str, np.ndarray] = {}
    for path, value in flat.items():
        array = np.asarray(jax.device_get(value), dtype=np.float32)
        if path[0] == "layers":
            for i in range(config.num_layers):
                out[per_layer[path[1:]].format(i=i)] = _to_jax_layout(path, array[i]).copy()
        else:
            out[top[path]] = _to_jax_layout(path, array).copy()
    if config.arch == "gpt_neox":
        _fuse_neox_qkv(config, out)
    return out


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            yield from _flatten(value, path)
        else:
            yield path, value


def _unflatten(flat: Mapping[tuple[str, ...], object]) -> dict:
    root: dict = {}
    for path, value in flat.items():
        node = root
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return root
