"""Retriever towers and training, and the RAG service built from retriever + generator."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxtrust.data.vocab import WordTokenizer
from jaxtrust.models import EncoderConfig, LMConfig, ViTConfig
from jaxtrust.models.bert import BertConfig
from jaxtrust.multimodal.rag import build_system, insert, rag_answer
from jaxtrust.multimodal.retriever import (
    Retriever,
    RetrieverConfig,
    embed_images,
    embed_texts,
    retriever_loss,
    tokenize_texts,
    train_retriever,
)
from jaxtrust.multimodal.vlm import VisionLanguageModel, VLMConfig
from jaxtrust.training.contrastive import clip_loss

TOK = WordTokenizer(["red", "green", "blue", "image", "a", "what", "color", "?"])
ENC = EncoderConfig(dim=16, num_layers=1, num_heads=2, mlp_dim=32)
VIT = ViTConfig(input_shape=(16, 16), patch=4, channels=3, encoder=ENC)
COLOURS = {"red": (230, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 230)}


def _retriever(text="word", loss="clip", seed=0):
    cfg = RetrieverConfig(
        image=VIT,
        text=text,
        text_encoder=ENC,
        vocab_size=TOK.vocab_size,
        max_len=8,
        embed_dim=8,
        loss=loss,
        bert=BertConfig(
            vocab_size=TOK.vocab_size,
            hidden_size=16,
            num_layers=1,
            num_heads=2,
            intermediate_size=32,
            max_position_embeddings=8,
        ),
    )
    return Retriever(cfg, rngs=nnx.Rngs(seed))


def _colour_data(n, seed=0):
    rng = np.random.default_rng(seed)
    names = rng.choice(list(COLOURS), n)
    imgs = np.stack([np.full((16, 16, 3), COLOURS[c], np.uint8) for c in names])
    imgs = np.clip(imgs.astype(int) + rng.integers(-15, 15, imgs.shape), 0, 255).astype(np.uint8)
    return imgs, [f"a {c} image" for c in names], names


def test_embeddings_are_unit_norm_and_loss_is_clip_of_them():
    r = _retriever()
    imgs, texts, names = _colour_data(6)
    text = tokenize_texts(TOK, texts, max_len=8)
    v, t = embed_images(r, imgs), embed_texts(r, text)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    loss, _ = retriever_loss(r, {"images": imgs, **text})
    ref, _ = clip_loss(v, t, logit_scale=r.logit_scale[...])
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-5)


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_training_aligns_colours(loss):
    imgs, texts, names = _colour_data(96)
    pool = {
        "images": imgs,
        **tokenize_texts(TOK, texts, max_len=8),
        "groups": np.searchsorted(sorted(COLOURS), names).astype(np.int32),
    }
    r = _retriever(loss=loss)
    trained = train_retriever(
        r, pool, steps=60, batch_size=32, learning_rate=3e-3, seed=0, warmup_steps=5
    ).model
    queries = tokenize_texts(TOK, [f"a {c} image" for c in COLOURS], max_len=8)
    test_imgs, _, test_names = _colour_data(30, seed=1)
    sims = embed_texts(trained, queries) @ embed_images(trained, test_imgs).T
    predicted = np.array(list(COLOURS))[np.argmax(sims, axis=0)]
    assert np.mean(predicted == test_names) >= 0.9


def test_minilm_tower_body_stays_frozen():
    r = _retriever(text="minilm")
    imgs, texts, _ = _colour_data(32)
    ids = np.asarray(tokenize_texts(TOK, texts, max_len=8)["tokens"])
    pool = {"images": imgs, "tokens": ids, "text_mask": ids > 0}
    before = jax.tree.leaves(nnx.state(r.text_tower.bert))
    trained = train_retriever(
        r, pool, steps=3, batch_size=8, learning_rate=1e-2, seed=0, warmup_steps=0, weight_decay=0.5
    ).model
    for a, b in zip(before, jax.tree.leaves(nnx.state(trained.text_tower.bert)), strict=True):
        np.testing.assert_array_equal(a, b)
    moved = trained.text_tower.proj.kernel[...] - r.text_tower.proj.kernel[...]
    assert float(np.abs(moved).max()) > 0


def _system(n=5):
    lm = LMConfig.for_tokenizer(
        TOK,
        hidden_size=16,
        intermediate_size=32,
        num_layers=1,
        num_heads=2,
        num_kv_heads=2,
        max_position_embeddings=128,
    )
    vit = ViTConfig(input_shape=(16, 16), patch=4, channels=3, num_classes=0, encoder=ENC)
    gen = VisionLanguageModel(VLMConfig(vision=vit, lm=lm), rngs=nnx.Rngs(1))
    imgs, _, _ = _colour_data(n)
    return build_system(
        _retriever(),
        gen,
        imgs,
        query_tokenizer=TOK,
        answer_tokenizer=TOK,
        k=2,
        max_query_len=8,
        max_new_tokens=3,
    )


def test_rag_retrieves_the_inserted_image_and_answers():
    system = _system()
    marker = np.zeros((1, 16, 16, 3), np.uint8)
    system2, ids = insert(system, marker)
    assert system2.size == system.size + 1 and ids.tolist() == [system.size]
    np.testing.assert_array_equal(system2.images[-1], marker[0])
    out = rag_answer(system2, ["what color ?", "a red image"])
    assert len(out.answers) == 2 and out.search.ids.shape == (2, 2)
    refused = rag_answer(
        system2, ["what color ?"], query_filter=lambda q: np.zeros(len(q), bool), refusal="no"
    )
    assert refused.answers == ["no"]


def test_bad_inputs(own_error_messages):
    system = _system()
    with pytest.raises(ValueError, match="empty"):
        build_system(
            system.retriever,
            system.generator,
            np.zeros((0, 16, 16, 3), np.uint8),
            query_tokenizer=TOK,
            answer_tokenizer=TOK,
        )
    with pytest.raises(ValueError, match="16x16"):
        insert(system, np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        insert(system, np.zeros((1, 16, 16, 1), np.float32))
    with pytest.raises(ValueError, match="k must be"):
        build_system(
            system.retriever,
            system.generator,
            system.images[:1],
            query_tokenizer=TOK,
            answer_tokenizer=TOK,
            k=2,
        )
    with pytest.raises(ValueError, match="max_len"):
        tokenize_texts(TOK, ["a red image " * 5], max_len=8)
    with pytest.raises(ValueError, match="non-empty"):
        rag_answer(system, [])
