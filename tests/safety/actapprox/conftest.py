"""Shared fixtures of the activation-approximation tests."""

import pytest
from flax import nnx

from jaxtrust.data import SafetyWorld
from jaxtrust.models import CausalLM, LMConfig


@pytest.fixture
def world_model():
    """``make(num_layers=2) -> (world, model)``: a tiny untrained LM over the safety world."""

    def make(num_layers: int = 2):
        world = SafetyWorld()
        config = LMConfig.for_tokenizer(
            world.tokenizer,
            hidden_size=16,
            intermediate_size=32,
            num_layers=num_layers,
            num_heads=2,
            num_kv_heads=1,
            max_position_embeddings=64,
        )
        return world, CausalLM(config, rngs=nnx.Rngs(0))

    return make
