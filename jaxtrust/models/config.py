"""Model configuration: one frozen dataclass for every supported causal-LM family.

``LMConfig`` is hashable (it is a static argument of jitted functions) and is built from a
Hugging Face ``config.json`` by :meth:`LMConfig.from_hf`, which accepts both the pre-v5 keys
(``rope_theta``, ``rope_scaling``) and the transformers-v5 ``rope_parameters`` dict.

Supported ``model_type`` values and what they switch on:

========== ==========================================================================
llama      RMSNorm, RoPE (default / ``llama3`` / ``linear`` scaling), GQA, SwiGLU
           (also SmolLM2 and every Llama-architecture checkpoint)
mistral    as llama, plus sliding-window attention
qwen2      as llama, plus bias on the q/k/v projections
qwen3      as llama, plus per-head RMSNorm on queries and keys, explicit head_dim
gpt_neox   Pythia: LayerNorm with bias, parallel (or sequential) residual, partial rotary,
           fused interleaved query_key_value, GELU MLP with biases, untied ``embed_out``
========== ==========================================================================
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from pathlib import Path
from typing import Any

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")
SUPPORTED_MODEL_TYPES = (*LLAMA_LIKE, "gpt_neox")
SUPPORTED_ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "gelu_new", "gelu_pytorch_tanh", "relu")
SUPPORTED_ROPE_TYPES = ("default", "llama3", "linear")
_REQUIRED_HF_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
)
_HF_KEY_OF_FIELD = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "max_position_embeddings": "max_position_embeddings",
    "norm_eps": "rms_norm_eps / layer_norm_eps",
    "rope_theta": "rope_theta",
    "rope_scaling": "rope_scaling / rope_parameters",
    "partial_rotary_factor": "partial_rotary_factor / rotary_pct",
    "activation": "hidden_act",
    "sliding_window": "sliding_window",
}


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _eos_tuple(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """Architecture of a causal LM (see the module docstring for the families).

    Attributes:
      arch: "llama" (every Llama-like family) or "gpt_neox".
      model_type: the Hugging Face ``model_type`` it came from (kept for export).
      rope_scaling: frozen (sorted items) form of the HF scaling dict, or None.
      qkv_bias / o_bias / mlp_bias: biases on the q/k/v, output and MLP projections.
      qk_norm: per-head RMSNorm on queries and keys (Qwen3).
      parallel_residual: GPT-NeoX ``x + attn(ln1 x) + mlp(ln2 x)``.
      sliding_window: attend only to the last ``sliding_window`` slots (Mistral), or None.
    """

    arch: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int = 2048
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: tuple | None = None
    partial_rotary_factor: float = 1.0
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    tie_word_embeddings: bool = False
    parallel_residual: bool = False
    sliding_window: int | None = None
    activation: str = "silu"
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    pad_token_id: int | None = None
    model_type: str = ""

    def __post_init__(self):
        if self.arch not in ("llama", "gpt_neox"):
            raise ValueError(f"arch must be 'llama' or 'gpt_neox', got {self.arch!r}")
        if not self.model_type:  # so that from_hf(to_hf(c)) == c also for configs built directly
            object.__setattr__(
                self, "model_type", "gpt_neox" if self.arch == "gpt_neox" else "llama"
            )
        if self.model_type not in SUPPORTED_MODEL_TYPES or (self.model_type == "gpt_neox") != (
            self.arch == "gpt_neox"
        ):
            raise ValueError(
                f"model_type {self.model_type!r} does not fit arch {self.arch!r}; supported: "
                f"{SUPPORTED_MODEL_TYPES}"
            )
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})"
            )
        if self.activation not in SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {SUPPORTED_ACTIVATIONS}, got {self.activation!r}"
            )
        if not 0.0 < self.partial_rotary_factor <= 1.0:
            raise ValueError(
                f"partial_rotary_factor must be in (0, 1], got {self.partial_rotary_factor}"
            )
        if self.rotary_dim % 2:
            raise ValueError(
                f"rotary dimension head_dim * partial_rotary_factor = {self.rotary_dim} must be "
                "even"
            )
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"rope_scaling type must be one of {SUPPORTED_ROPE_TYPES}, got {self.rope_type!r}"
            )
        if self.rope_type != "default":
            factor = self.rope_scaling_dict.get("factor")
            if not isinstance(factor, (int, float)) or factor <= 0:
                raise ValueError(
                    f"rope_scaling of type {self.rope_type!r} needs a positive 'factor', got "
                    f"{factor!r}"
                )
        if not isinstance(self.max_position_embeddings, int) or self.max_position_embeddings <= 0:
            raise ValueError(
                "max_position_embeddings must be a positive integer, got "
                f"{self.max_position_embeddings!r}"
            )
        if not isinstance(self.norm_eps, (int, float)) or not self.norm_eps >= 0:
            raise ValueError(f"norm_eps must be a non-negative number, got {self.norm_eps!r}")
        if not isinstance(self.rope_theta, (int, float)) or not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be a positive number, got {self.rope_theta!r}")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ValueError(f"sliding_window must be positive or None, got {self.sliding_window}")
        if not isinstance(self.eos_token_id, tuple):
            object.__setattr__(self, "eos_token_id", _eos_tuple(self.eos_token_id))

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def rope_scaling_dict(self) -> dict[str, Any]:
        return dict(self.rope_scaling) if self.rope_scaling else {}

    @property
    def rope_type(self) -> str:
        scaling = self.rope_scaling_dict
        return scaling.get("rope_type", scaling.get("type", "default"))

    # ------------------------------------------------------------------ Hugging Face
    @classmethod
    def from_hf(cls, config: dict | str | os.PathLike) -> LMConfig:
        """Build from a Hugging Face config dict, a ``config.json`` path, or a model directory."""
        if not isinstance(config, dict):
            path = Path(config)
            if path.is_dir():
                path = path / "config.json"
            if not path.is_file():
                raise FileNotFoundError(f"config: no config.json at {path}")
            config = json.loads(path.read_text())
        model_type = config.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"config['model_type'] = {model_type!r} is not supported; supported: "
                f"{SUPPORTED_MODEL_TYPES}"
            )
        missing = [k for k in _REQUIRED_HF_KEYS if config.get(k) is None]
        if missing:
            raise KeyError(
                f"config: required key(s) {missing} missing for model_type {model_type!r}"
            )
        config = dict(config)
        for key in (
            *_REQUIRED_HF_KEYS,
            "num_key_value_heads",
            "head_dim",
            "max_position_embeddings",
            "sliding_window",
        ):
            value = config.get(key)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                    raise ValueError(f"config[{key!r}] must be an integer, got {value!r}")
                config[key] = int(value)  # NumPy integers (e.g. from GGUF metadata) too
        try:
            return cls._from_hf_dict(config, model_type)
        except ValueError as err:
            field = str(err).split(" ", 1)[0]
            hf_key = _HF_KEY_OF_FIELD.get(field)
            if hf_key is None:
                raise
            raise ValueError(f"config[{hf_key!r}]: {err}") from err
        except TypeError as err:  # e.g. a string where a number belongs
            raise ValueError(f"config: a value has the wrong type ({err})") from err

    @classmethod
    def _from_hf_dict(cls, config: dict, model_type: str) -> LMConfig:
        rope_params = dict(config.get("rope_parameters") or {})
        rope_theta = config.get(
            "rope_theta", rope_params.get("rope_theta", config.get("rotary_emb_base", 10000.0))
        )
        scaling = config.get("rope_scaling") or {
            k: v for k, v in rope_params.items() if k not in ("rope_theta", "partial_rotary_factor")
        }
        if scaling and scaling.get("rope_type", scaling.get("type", "default")) == "default":
            scaling = None
        common = dict(
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            max_position_embeddings=config.get("max_position_embeddings", 2048),
            rope_theta=float(rope_theta),
            rope_scaling=_freeze(scaling) if scaling else None,
            tie_word_embeddings=bool(config.get("tie_word_embeddings", model_type != "gpt_neox")),
            bos_token_id=config.get("bos_token_id"),
            eos_token_id=_eos_tuple(config.get("eos_token_id")),
            pad_token_id=config.get("pad_token_id"),
            model_type=model_type,
        )
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        if model_type == "gpt_neox":
            partial = config.get(
                "partial_rotary_factor",
                rope_params.get("partial_rotary_factor", config.get("rotary_pct", 1.0)),
            )
            return cls(
                arch="gpt_neox",
                num_kv_heads=config["num_attention_heads"],
                head_dim=head_dim,
                norm_eps=config.get("layer_norm_eps", 1e-5),
                partial_rotary_factor=float(partial),
                qkv_bias=bool(config.get("attention_bias", True)),
                o_bias=bool(config.get("attention_bias", True)),
                mlp_bias=True,
                parallel_residual=bool(config.get("use_parallel_residual", True)),
                activation=config.get("hidden_act", "gelu"),
                **common,
            )
        attention_bias = bool(config.get("attention_bias", False))
        sliding = config.get("sliding_window") if model_type == "mistral" else None
        if model_type == "qwen2" and config.get("use_sliding_window"):
            sliding = config.get("sliding_window")
        return cls(
            arch="llama",
            num_kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
            head_dim=head_dim,
            norm_eps=config.get("rms_norm_eps", 1e-6 if model_type.startswith("qwen") else 1e-5),
            partial_rotary_factor=float(
                config.get("partial_rotary_factor", rope_params.get("partial_rotary_factor", 1.0))
            ),
            qkv_bias=model_type == "qwen2" or attention_bias,
            o_bias=attention_bias and model_type != "qwen2",
            mlp_bias=bool(config.get("mlp_bias", False)),
            qk_norm=model_type == "qwen3",
            sliding_window=sliding,
            activation=config.get("hidden_act", "silu"),
            **common,
        )

    def to_hf(self) -> dict[str, Any]:
        """A Hugging Face config dict that :meth:`from_hf` maps back to this config."""
        model_type = self.model_type or ("gpt_neox" if self.arch == "gpt_neox" else "llama")
        out: dict[str, Any] = dict(
            model_type=model_type,
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            max_position_embeddings=self.max_position_embeddings,
            rope_theta=self.rope_theta,
            tie_word_embeddings=self.tie_word_embeddings,
            hidden_act=self.activation,
            bos_token_id=self.bos_token_id,
            eos_token_id=list(self.eos_token_id)
            if len(self.eos_token_id) != 1
            else self.eos_token_id[0],
            pad_token_id=self.pad_token_id,
            head_dim=self.head_dim,
        )
        if self.rope_scaling:
            out["rope_scaling"] = self.rope_scaling_dict
        if self.arch == "gpt_neox":
            out.update(
                layer_norm_eps=self.norm_eps,
                rotary_pct=self.partial_rotary_factor,
                use_parallel_residual=self.parallel_residual,
                attention_bias=self.qkv_bias,
            )
        else:
            out.update(
                num_key_value_heads=self.num_kv_heads,
                rms_norm_eps=self.norm_eps,
                attention_bias=self.o_bias,
                mlp_bias=self.mlp_bias,
            )
            if self.partial_rotary_factor != 1.0:
                out["partial_rotary_factor"] = self.partial_rotary_factor
            if self.sliding_window is not None:
                out["sliding_window"] = self.sliding_window
                if model_type == "qwen2":
                    out["use_sliding_window"] = True
        back = LMConfig.from_hf(out)
        if back != self:  # e.g. q/k/v bias without o bias on "llama": no HF config says that
            lost = [
                f.name
                for f in dataclasses.fields(self)
                if getattr(back, f.name) != getattr(self, f.name)
            ]
            raise ValueError(
                f"to_hf: fields {lost} of this config cannot be expressed in a Hugging Face "
                f"{model_type!r} config.json (set model_type to a family that has them)"
            )
        return out

    # ------------------------------------------------------------------ presets
    @classmethod
    def tiny(cls, arch: str = "llama", **overrides: Any) -> LMConfig:
        """A 2-layer, 64-wide model with a 256-token vocabulary, for tests and examples."""
        base: dict[str, Any] = dict(
            arch=arch,
            vocab_size=256,
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            head_dim=16,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            model_type="llama",
        )
        if arch == "gpt_neox":
            base.update(
                num_kv_heads=4,
                activation="gelu",
                qkv_bias=True,
                o_bias=True,
                mlp_bias=True,
                parallel_residual=True,
                partial_rotary_factor=0.25,
                tie_word_embeddings=False,
                model_type="gpt_neox",
            )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def for_tokenizer(
        cls,
        tokenizer: Any,
        *,
        hidden_size: int,
        intermediate_size: int,
        num_layers: int,
        num_heads: int,
        num_kv_heads: int,
        max_position_embeddings: int = 512,
    ) -> LMConfig:
        """A small tied-embedding Llama for an in-house world's tokenizer.

        ``tokenizer`` needs ``vocab_size``, ``bos_id``, ``eos_id`` and ``pad_id`` (e.g.
        :class:`jaxtrust.data.WordTokenizer`); ``head_dim = hidden_size // num_heads``.
        """
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})"
            )
        return cls(
            arch="llama",
            vocab_size=tokenizer.vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=hidden_size // num_heads,
            max_position_embeddings=max_position_embeddings,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_id,
            eos_token_id=(tokenizer.eos_id,),
            pad_token_id=tokenizer.pad_id,
            model_type="llama",
        )

    @classmethod
    def smollm2_135m(cls) -> LMConfig:
        """SmolLM2-135M(-Instruct): 30 layers, d=576, GQA 9/3, SwiGLU 1536, RoPE theta 1e5, tied."""
        return cls(
            arch="llama",
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_layers=30,
            num_heads=9,
            num_kv_heads=3,
            head_dim=64,
            max_position_embeddings=8192,
            norm_eps=1e-5,
            rope_theta=100000.0,
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=(2,),
            pad_token_id=2,
            model_type="llama",
        )
