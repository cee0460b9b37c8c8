"""The vision-language generator: paths agree, the prefix is bidirectional, training learns,
answers are the greedy continuation."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrust.data.vocab import WordTokenizer
from jaxtrust.models import EncoderConfig, LMConfig, ViTConfig
from jaxtrust.multimodal.vlm import (
    VisionLanguageModel,
    VLMConfig,
    answer,
    encode_qa,
    image_features,
    vlm_loss_fn,
)
from jaxtrust.training import adamw_cosine, finetune

TOK = WordTokenizer(["is", "it", "red", "blue", "?", "what", "color"])


def _vlm(seed=0):
    enc = EncoderConfig(dim=16, num_layers=1, num_heads=2, mlp_dim=32)
    vit = ViTConfig(input_shape=(16, 16), patch=4, channels=3, num_classes=0, encoder=enc)
    lm = LMConfig.for_tokenizer(
        TOK,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=2,
        max_position_embeddings=128,
    )
    return VisionLanguageModel(VLMConfig(vision=vit, lm=lm, pool=2), rngs=nnx.Rngs(seed))


def _images(n, k, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, k, 16, 16, 3)).astype(np.float32)


def test_images_and_features_paths_agree_and_pooling_is_a_mean():
    vlm = _vlm()
    imgs = _images(2, 3)
    batch = encode_qa(TOK, ["what color is it ?"] * 2, ["red", "blue"], seq_len=12)
    feats = image_features(vlm, imgs.reshape(6, 16, 16, 3)).reshape(2, 3, 5, 16)
    a = vlm(batch["tokens"], batch["attention_mask"], images=imgs)
    b = vlm(batch["tokens"], batch["attention_mask"], features=feats)
    np.testing.assert_allclose(a, b, atol=1e-5)
    tokens = vlm.vision.features(jnp.asarray(imgs[0]), tokens=True)  # [3, 17, 16]
    grid = np.asarray(tokens[:, 1:]).reshape(3, 4, 4, 16)
    np.testing.assert_allclose(feats[0, :, 1], grid[:, :2, :2].mean(axis=(1, 2)), atol=1e-5)


def test_question_is_in_the_bidirectional_prefix():
    vlm = _vlm()
    imgs = _images(1, 2)
    batch = encode_qa(TOK, ["what color is it ?"], ["red"], seq_len=10)
    tokens, mask = batch["tokens"], batch["attention_mask"]
    prompt = mask & (batch["loss_mask"] == 0)
    changed = tokens.copy()
    changed[0, 3] = TOK.encode("blue")[0]  # a later question token
    causal = [vlm(t, mask, images=imgs)[0, 0] for t in (tokens, changed)]
    prefix = [vlm(t, mask, images=imgs, prompt_mask=prompt)[0, 0] for t in (tokens, changed)]
    np.testing.assert_allclose(causal[0], causal[1], atol=1e-6)  # causal: position 0 blind
    assert float(jnp.max(jnp.abs(prefix[0] - prefix[1]))) > 1e-5


@pytest.mark.slow
def test_training_reads_the_image_colour():
    # answer = colour of the (only) image: red or blue; the question is the same for both
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 2, 256)
    imgs = np.zeros((256, 1, 16, 16, 3), np.uint8)
    imgs[colours == 0, ..., 0] = 230
    imgs[colours == 1, ..., 2] = 230
    answers = ["red" if c == 0 else "blue" for c in colours]
    pool = {**encode_qa(TOK, ["what color is it ?"] * 256, answers, seq_len=10), "images": imgs}
    result = finetune(
        _vlm(1),
        pool,
        adamw_cosine(3e-3, 150, warmup_steps=10),
        steps=150,
        batch_size=32,
        seed=0,
        loss_fn=vlm_loss_fn,
    )
    out = answer(result.model, TOK, ["what color is it ?"] * 8, images=imgs[:8])
    assert out == answers[:8]


def test_answer_is_the_greedy_continuation():
    vlm = _vlm(2)
    imgs = _images(3, 2)
    questions = ["what color is it ?", "is it red ?", "what ?"]
    out = answer(vlm, TOK, questions, images=imgs, max_new_tokens=1, batch_size=2)
    for q, img, text in zip(questions, imgs, out, strict=True):
        batch = encode_qa(TOK, [q], ["red"], seq_len=12)
        n_prompt = len(TOK.encode(q)) + 1
        prompt = batch["attention_mask"] & (batch["loss_mask"] == 0)
        logits = vlm(batch["tokens"], batch["attention_mask"], images=img[None], prompt_mask=prompt)
        first = int(jnp.argmax(logits[0, n_prompt - 1]))
        expected = "" if first in (TOK.eos_id, TOK.pad_id) else TOK.decode([first])
        assert text == expected


def test_bad_inputs(own_error_messages):
    vlm = _vlm()
    with pytest.raises(ValueError, match="exactly one"):
        vlm.image_embeds()
    with pytest.raises(ValueError, match="images must have shape"):
        image_features(vlm, np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        encode_qa(TOK, ["is it red ?"], [""], seq_len=8)
    with pytest.raises(ValueError, match="questions but"):
        encode_qa(TOK, ["is it red ?"], [], seq_len=8)
    with pytest.raises(ValueError, match="rows of images"):
        answer(vlm, TOK, ["is it red ?"], images=_images(2, 1))
    with pytest.raises(ValueError, match="pool must be"):
        VLMConfig(vision=vlm.config.vision, lm=vlm.config.lm, pool=3)
