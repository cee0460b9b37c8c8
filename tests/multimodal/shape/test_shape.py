"""SHAPE's pieces: augmentations (deterministic, order-preserving), the summariser's merge,
the probes and scores against hand counts, triplets through a tiny VLM, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from jaxtrust.models import EncoderConfig, LMConfig, ViTConfig
from jaxtrust.multimodal.shape import (
    AUGMENTATIONS,
    Triplets,
    augment,
    augment_views,
    build_triplets,
    chair,
    consensus,
    mentions,
    pope_probes,
    pope_scores,
    preference_data,
    shuffle_losers,
    summarise,
    vlm_logits,
)
from jaxtrust.multimodal.shape.world import BiasedSceneWorld, BiasedWorldConfig
from jaxtrust.multimodal.vlm import VisionLanguageModel, VLMConfig
from jaxtrust.training import pair_logprobs

COLORS = ("red", "blue", "green", "cyan")
SHAPES = ("star", "ring", "cross", "circle")


def _two_blocks(n=3, size=32):
    """A red block left of a blue block on white."""
    img = np.ones((n, size, size, 3), np.float32)
    img[:, 12:20, 4:12] = (0.9, 0.1, 0.1)
    img[:, 12:20, 20:28] = (0.1, 0.1, 0.9)
    return img


def test_augmentations_are_deterministic_and_seed_dependent():
    imgs = np.random.default_rng(0).uniform(size=(3, 16, 16, 3)).astype(np.float32)
    a = augment_views(imgs, views=5, seed=3)
    np.testing.assert_array_equal(a, augment_views(imgs, views=5, seed=3))
    b = augment_views(imgs, views=5, seed=4)
    for v in range(5):  # every kind draws its parameters from the seed
        assert not np.allclose(a[:, v], b[:, v])
    assert a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0


@pytest.mark.parametrize("kind", AUGMENTATIONS)
def test_no_augmentation_swaps_left_and_right(kind):
    out = augment(_two_blocks(), kind, seed=0)
    for img in out:
        red = img[..., 0] - img[..., 2] > 0.4
        blue = img[..., 2] - img[..., 0] > 0.4
        cols = np.arange(img.shape[1])[None, :]
        if red.any() and blue.any():
            assert (cols * red).sum() / red.sum() < (cols * blue).sum() / blue.sum()


def test_summariser_merges_views_by_votes_with_the_anchor_trusted():
    answers = [
        "a red star and a blue ring .",
        "a red star , a blue ring and a cyan cross .",
        "a green star and a cyan cross .",
        "a blue ring and a red circle .",
    ]
    kw = dict(colors=COLORS, shapes=SHAPES)
    # star 3 votes (red 2 : green 1), ring 3, cross 2, circle 1 (dropped at min_votes=2)
    assert summarise(answers, **kw) == "a red star , a blue ring and a cyan cross ."
    assert summarise(answers, min_votes=3, **kw) == "a red star and a blue ring ."
    assert summarise(answers, min_votes=4, anchor="a green circle .", **kw) == "a green circle ."
    assert consensus(answers, min_votes=1, **kw)[-1] == ("red", "circle")
    assert mentions("a star and a red star and a ring", **kw) == [(None, "star"), (None, "ring")]
    assert summarise(["no objects ."], anchor="a red ring .", **kw) == "a red ring ."


def test_pope_probes_pick_the_split_negatives():
    freq = np.array([5, 5, 1, 9])
    co = np.array([[0, 2, 8, 1], [2, 0, 1, 1], [8, 1, 0, 0], [1, 1, 0, 0]])
    present = [["star"], ["star", "ring"], ["cross", "circle"]]
    probes = pope_probes(present, shapes=SHAPES, frequency=freq, cooccurrence=co, seed=0)
    assert probes["popular"].shapes[3:] == ["circle", "circle", "star"]
    # adversarial: absent shape with the largest summed co-occurrence with the present ones
    assert probes["adversarial"].shapes[3:] == ["cross", "cross", "star"]
    for p in probes.values():
        assert p.labels.tolist() == [1, 1, 1, 0, 0, 0]
        for r, s, y in zip(p.rows, p.shapes, p.labels, strict=True):
            assert (s in present[r]) == bool(y)


def test_pope_scores_and_chair_against_hand_counts():
    s = pope_scores([True, True, False, True, False], np.array([1, 0, 1, 1, 0]))
    # tp 2, fp 1, fn 1
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3) and s["yes_ratio"] == pytest.approx(0.6)
    c = chair(
        ["a red star and a blue cross .", "a ring .", "a star , a ring and a cross ."],
        [["star", "ring"], ["ring"], ["star", "ring", "cross"]],
        shapes=SHAPES,
    )
    assert c["chair_i"] == pytest.approx(1 / 6) and c["chair_s"] == pytest.approx(1 / 3)
    assert c["recall"] == pytest.approx(5 / 6)


def test_shuffled_losers_are_a_derangement():
    n = 7
    t = Triplets(
        np.zeros((n, 4, 4, 3)), ["q"] * n, [f"w{i}" for i in range(n)], [f"l{i}" for i in range(n)],
        [[]] * n,
    )  # fmt: skip
    s = shuffle_losers(t, seed=1)
    assert sorted(s.losers) == sorted(t.losers)
    assert all(a != b for a, b in zip(s.losers, t.losers, strict=True))
    assert s.winners == t.winners


def test_biased_world_has_the_bias_and_unbiased_scenes_do_not():
    w = BiasedSceneWorld(BiasedWorldConfig(bias=0.9), seed=0)

    def rate(scenes):
        both = sum(sum(w.partner[o.shape] in w.present(s) for o in s.objects) for s in scenes)
        return both / sum(len(s.objects) for s in scenes)

    biased, plain = (
        rate(w.scenes(400, seed=0, biased=True)),
        rate(w.scenes(400, seed=0, biased=False)),
    )
    assert biased > plain + 0.3


def _vlm(world):
    enc = EncoderConfig(dim=16, num_layers=1, num_heads=2, mlp_dim=32)
    vit = ViTConfig(input_shape=(32, 32), patch=8, channels=3, num_classes=0, encoder=enc)
    lm = LMConfig.for_tokenizer(
        world.tokenizer, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
        num_kv_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return VisionLanguageModel(VLMConfig(vision=vit, lm=lm, pool=2), rngs=nnx.Rngs(0))


@pytest.mark.slow
def test_triplets_through_a_vlm_and_bad_input(own_error_messages):
    world = BiasedSceneWorld(seed=0)
    scenes = world.scenes(3, seed=0, biased=True)
    images = world.images(scenes, seed=0)
    rng = np.random.default_rng(0)
    terse = [world.terse_caption(s, rng) for s in scenes]
    vlm = _vlm(world)
    kw = dict(colors=world.colors, shapes=world.shapes, seed=0, views=2, max_new_tokens=4)
    t = build_triplets(vlm, world.tokenizer, images, terse, **kw)
    assert t.losers == terse and len(t.view_answers[0]) == 2
    # the anchor's objects are always in the winner
    for w, lo in zip(t.winners, t.losers, strict=True):
        assert all(m in mentions(w, colors=world.colors, shapes=world.shapes) for m in
                   mentions(lo, colors=world.colors, shapes=world.shapes))  # fmt: skip
    pool = preference_data(world.tokenizer, t, seq_len=24)
    c, r = pair_logprobs(vlm, pool, logits_fn=vlm_logits)
    assert c.shape == (3,) and np.all(np.isfinite(np.asarray(r)))
    with pytest.raises(ValueError, match=r"captions\[1\] is empty"):
        build_triplets(vlm, world.tokenizer, images, [terse[0], " ", terse[2]], **kw)
    with pytest.raises(ValueError, match="one caption per image"):
        build_triplets(vlm, world.tokenizer, images, terse[:2], **kw)
    with pytest.raises(ValueError, match="images has 3 rows"):
        Triplets(images, t.prompts, t.winners[:2], t.losers, t.view_answers)
    with pytest.raises(KeyError, match="unknown augmentation"):
        augment(images, "flip", seed=0)
    with pytest.raises(ValueError, match="anchor is an empty caption"):
        summarise(["a red star ."], colors=COLORS, shapes=SHAPES, anchor="")
    with pytest.raises(ValueError, match="answers must be a non-empty"):
        summarise([], colors=COLORS, shapes=SHAPES)
