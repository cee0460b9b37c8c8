"""Rendering, image validation and the scene world."""

import numpy as np
import pytest
from PIL import Image

from jaxtrust.multimodal.render import (
    SceneObject,
    check_images,
    from_array,
    render_card,
    render_scene,
    to_array,
)
from jaxtrust.multimodal.world import Card, Scene, SceneWorld, SceneWorldConfig


def test_scene_pixels_follow_the_layout():
    img = render_scene([SceneObject("square", "red", 0, 0), SceneObject("square", "blue", 2, 2)])
    # the centre of cell (0, 0) is red, of (2, 2) blue, of (1, 1) white
    c = 64 / 3
    np.testing.assert_allclose(
        img[int(c / 2), int(c / 2)], np.array([215, 40, 40]) / 255, atol=1e-6
    )
    np.testing.assert_allclose(
        img[int(2.5 * c), int(2.5 * c)], np.array([40, 80, 220]) / 255, atol=1e-6
    )
    np.testing.assert_allclose(img[32, 32], 1.0)


def test_card_has_ink_in_title_and_lines():
    img = render_card("QZX", ["Quilla", "Zorn", "Xeno"])
    dark = img.mean(-1) < 0.5
    assert dark[:14].any() and dark[18:30].any() and dark[44:].any()
    assert not render_card("QZX").mean(-1)[20:].min() < 0.99


def test_array_round_trip():
    img = render_scene([SceneObject("star", "green", 1, 1)])
    np.testing.assert_allclose(to_array(from_array(img)), img, atol=1 / 255)


def test_bad_images(own_error_messages):
    with pytest.raises(ValueError, match="mode 'RGB'"):
        to_array(Image.new("L", (64, 64)))
    with pytest.raises(ValueError, match="64x64"):
        to_array(Image.new("RGB", (32, 64)), size=64)
    with pytest.raises(ValueError, match="must be 64x64 pixels"):
        check_images(np.zeros((2, 32, 32, 3), np.float32), size=64)
    with pytest.raises(ValueError, match="RGB"):
        check_images(np.zeros((2, 64, 64, 4), np.float32), size=64)
    with pytest.raises(TypeError, match="float"):
        check_images(np.zeros((2, 64, 64, 3), np.uint8), size=64)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_images(np.full((1, 64, 64, 3), 2.0, np.float32), size=64)
    with pytest.raises(ValueError, match="empty"):
        check_images(np.zeros((0, 64, 64, 3), np.float32), size=64)
    with pytest.raises(ValueError, match="distinct cells"):
        render_scene([SceneObject("star", "red", 0, 0), SceneObject("ring", "red", 0, 0)])
    with pytest.raises(ValueError, match="shape must be"):
        SceneObject("fish", "red", 0, 0)


def test_world_is_deterministic_and_consistent():
    a, b = SceneWorld(seed=3), SceneWorld(seed=3)
    assert a.names_by_initial == b.names_by_initial and a.tokenizer == b.tokenizer
    items = a.items(30, seed=5)
    assert items == b.items(30, seed=5)
    np.testing.assert_array_equal(a.render_items(items, seed=1), b.render_items(items, seed=1))
    for it in items:
        for q, ans in a.questions(it, kinds=("card", "relation", "color", "exist", "describe")):
            assert a.tokenizer.decode(a.tokenizer.encode(q)) == q
            a.tokenizer.encode(ans)
        if isinstance(it, Scene):
            for x, rel, y in it.relations():  # relations agree with the cells
                dr, dc = {
                    "above": (-1, 0),
                    "below": (1, 0),
                    "left of": (0, -1),
                    "right of": (0, 1),
                }[rel]
                assert (x.row, x.col) == (y.row + dr, y.col + dc)
        else:
            assert "".join(w[0] for w in it.name) == "".join(it.acronym)


def test_typical_bases_only_hold_typical_objects():
    world = SceneWorld(SceneWorldConfig(), seed=0)
    items = world.items(200, seed=2, typical=True, card_fraction=0.0)
    for it in items:
        first = it.objects[0]
        for o in it.objects:
            assert o.color in world.typical_colors[o.shape]
        assert all(o.shape in world.partners[first.shape] for o in it.objects[1:])
    cards = [it for it in world.items(100, seed=3, card_fraction=1.0) if isinstance(it, Card)]
    assert len({c.acronym for c in cards}) == len(cards)
