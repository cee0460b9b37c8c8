"""Models in Flax NNX: the causal LM (configuration, KV cache, hooks, checkpoint loading,
tokenizers, generation), a Transformer encoder with a text classifier, and a ViT.

Example::

    from jaxtrust.data.assets import asset_path
    from jaxtrust.models import load_pretrained, load_tokenizer, generate_text
    model = load_pretrained(asset_path("smollm2"))
"""

from jaxtrust.models.cache import KVCache
from jaxtrust.models.config import LMConfig
from jaxtrust.models.convert import hf_tensors_from_model, model_from_hf_tensors
from jaxtrust.models.encoder import EncoderConfig, TextClassifier, TransformerEncoder
from jaxtrust.models.generation import (
    GenerationOutput,
    generate,
    generate_from_embeds,
    generate_text,
)
from jaxtrust.models.hooks import ModelHooks
from jaxtrust.models.loading import load_pretrained, save_pretrained
from jaxtrust.models.tokenizer import format_chat, load_tokenizer
from jaxtrust.models.transformer import CausalLM, LMOutput
from jaxtrust.models.vit import ViT, ViTConfig

__all__ = [
    "CausalLM",
    "EncoderConfig",
    "GenerationOutput",
    "KVCache",
    "LMConfig",
    "LMOutput",
    "ModelHooks",
    "TextClassifier",
    "TransformerEncoder",
    "ViT",
    "ViTConfig",
    "format_chat",
    "generate",
    "generate_from_embeds",
    "generate_text",
    "hf_tensors_from_model",
    "load_pretrained",
    "load_tokenizer",
    "model_from_hf_tensors",
    "save_pretrained",
]
