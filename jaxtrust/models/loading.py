"""Loading (and saving) checkpoints: Hugging Face safetensors directories and GGUF files.

Only safetensors and GGUF are read. Pickle-based formats (``.bin``, ``.pt``, ``.pth``,
``.ckpt``, ``.pkl``) can execute code when loaded and are refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxtrust.models.config import LMConfig
from jaxtrust.models.convert import hf_tensors_from_model, model_from_hf_tensors
from jaxtrust.models.transformer import CausalLM

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _refuse_pickle(path: Path) -> None:
    raise ValueError(
        f"{path}: only safetensors and GGUF checkpoints are loaded; pickle-based files "
        "(.bin/.pt/.pth/...) are never unpickled because loading them can run code. Convert it "
        "to safetensors (e.g. `model.save_pretrained(dir, safe_serialization=True)`) or GGUF"
    )


def read_safetensors(files: list[Path]) -> dict[str, np.ndarray]:
    """All tensors of the given safetensors files as NumPy arrays (bfloat16 stays ml_dtypes)."""
    from safetensors import SafetensorError, safe_open

    tensors: dict[str, np.ndarray] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="numpy") as f:
                for name in f.keys():
                    if name in tensors:
                        raise ValueError(f"{file}: tensor {name!r} also appears in another shard")
                    tensors[name] = f.get_tensor(name)
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{file}: not a readable safetensors file ({err})") from err
    return tensors


def _safetensors_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise ValueError(f"{index}: not a valid safetensors index ({err})") from err
        names = sorted(set(weight_map.values()))
        outside = [n for n in names if Path(n).is_absolute() or len(Path(n).parts) != 1]
        if outside:  # shards live next to the index; never read files elsewhere
            raise ValueError(
                f"{index}: weight_map names shard files outside the directory: {outside}"
            )
        files = [directory / name for name in names]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise FileNotFoundError(f"{index} names shards that are missing: {absent}")
        return files
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    others = sorted(p.name for p in directory.glob("*.safetensors"))
    if others:
        return [directory / n for n in others]
    pickles = [p for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        _refuse_pickle(pickles[0])
    raise FileNotFoundError(
        f"{directory}: no model.safetensors, sharded index or *.safetensors file"
    )


def load_pretrained(path: str | os.PathLike, *, dtype=jnp.float32) -> CausalLM:
    """Load a causal LM from a Hugging Face directory (config.json + safetensors) or a GGUF file.

    Args:
      path: a directory with ``config.json`` and ``model.safetensors`` (or a sharded
        ``model.safetensors.index.json``), or a ``.gguf`` file (dequantized to float).
      dtype: the model's computation and parameter dtype.

    Returns:
      The model; ``model.config`` is its :class:`LMConfig`.
    """
    path = Path(path)
    if path.suffix == ".gguf":
        from jaxtrust.models.gguf import load_gguf

        return load_gguf(path, dtype=dtype)
    if path.suffix in PICKLE_SUFFIXES:
        _refuse_pickle(path)
    if not path.is_dir():
        raise FileNotFoundError(f"path: {path} is neither a model directory nor a .gguf file")
    config = LMConfig.from_hf(path)
    tensors = read_safetensors(_safetensors_files(path))
    return model_from_hf_tensors(config, tensors, dtype=dtype)


def save_pretrained(model: CausalLM, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` in Hugging Face layout (loadable by
    transformers)."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = hf_tensors_from_model(model)
    if model.config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    tmp = directory / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(directory / "model.safetensors")
    hf = model.config.to_hf()
    hf["architectures"] = [
        "GPTNeoXForCausalLM"
        if model.config.arch == "gpt_neox"
        else {
            "mistral": "MistralForCausalLM",
            "qwen2": "Qwen2ForCausalLM",
            "qwen3": "Qwen3ForCausalLM",
        }.get(hf["model_type"], "LlamaForCausalLM")
    ]
    (directory / "config.json").write_text(json.dumps(hf, indent=2))
    return directory
