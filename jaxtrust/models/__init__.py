"""Causal LMs in Flax NNX: configuration, the model, KV cache, hooks, checkpoint loading,
tokenizers and generation.

    >>> from jaxtrust.models import load_pretrained, load_tokenizer, generate_text   # doctest: +SKIP
    >>> model = load_pretrained("SmolLM2-135M-Instruct.Q4_1.gguf")                  # doctest: +SKIP
"""

from jaxtrust.models.cache import KVCache
from jaxtrust.models.config import LMConfig
from jaxtrust.models.convert import hf_tensors_from_model, model_from_hf_tensors
from jaxtrust.models.generation import GenerationOutput, generate, generate_text
from jaxtrust.models.hooks import ModelHooks
from jaxtrust.models.loading import load_pretrained, save_pretrained
from jaxtrust.models.tokenizer import format_chat, load_tokenizer
from jaxtrust.models.transformer import CausalLM, LMOutput

__all__ = [
    "CausalLM",
    "GenerationOutput",
    "KVCache",
    "LMConfig",
    "LMOutput",
    "ModelHooks",
    "format_chat",
    "generate",
    "generate_text",
    "hf_tensors_from_model",
    "load_pretrained",
    "load_tokenizer",
    "model_from_hf_tensors",
    "save_pretrained",
]
