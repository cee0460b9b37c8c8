"""AQUA: verification statistics against scipy, watermark generation, robustness transforms,
stealth metrics."""

import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from jaxtrust.multimodal.aqua.metrics import (
    auroc,
    conditional_success,
    fit_query_filter,
    knn_outlier_scores,
    retrieval_rank,
    watermark_retrieval_rate,
)
from jaxtrust.multimodal.aqua.robustness import TRANSFORMS, apply_transform
from jaxtrust.multimodal.aqua.verify import (
    binomial_pvalue,
    clean_rate_bound,
    contains_answer,
    count_successes,
    empirical_fpr,
    verify,
    welch_pvalue,
)
from jaxtrust.multimodal.aqua.watermarks import (
    Watermark,
    acronym_watermark,
    naive_canary,
    spatial_watermark,
)
from jaxtrust.multimodal.world import CARD_TEMPLATES, RELATION_TEMPLATES, SceneWorld


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200), data=st.data(), p0=st.floats(0.0, 1.0))
def test_binomial_pvalue_matches_scipy_binomtest(n, data, p0):
    s = data.draw(st.integers(0, n))
    ours = binomial_pvalue(s, n, p0)
    ref = stats.binomtest(s, n, p0, alternative="greater").pvalue
    assert math.isclose(ours, ref, rel_tol=1e-9, abs_tol=1e-12)
    # and against the tail sum written out
    exact = sum(math.comb(n, j) * p0**j * (1 - p0) ** (n - j) for j in range(s, n + 1))
    assert math.isclose(ours, min(1.0, exact), rel_tol=1e-6, abs_tol=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 500), data=st.data(), conf=st.sampled_from([0.9, 0.95, 0.99]))
def test_clean_rate_bound_is_clopper_pearson(n, data, conf):
    s = data.draw(st.integers(0, n))
    bound = clean_rate_bound(s, n, confidence=conf)
    # scipy's two-sided interval at level 2*conf-1 has the one-sided upper bound at conf
    ref = stats.binomtest(s, n).proportion_ci(confidence_level=2 * conf - 1, method="exact").high
    assert math.isclose(bound, ref, rel_tol=1e-7, abs_tol=1e-10)
    if s < n:  # definition: P(X <= s | p = bound) = 1 - conf
        assert math.isclose(stats.binom.cdf(s, n, bound), 1 - conf, rel_tol=1e-5)


def test_verify_and_fpr():
    v = verify(3, 10, p0=0.01, alpha=0.01)
    assert v.detected and v.p_value == pytest.approx(stats.binom.sf(2, 10, 0.01))
    assert not verify(0, 10, p0=0.01).detected
    assert empirical_fpr([0.001, 0.5, 0.2, 0.009], alpha=0.01) == (0.5, 4)
    assert math.isnan(welch_pvalue([0.1], [0.9]))  # AQUA's one-point case
    assert welch_pvalue([0.0, 0.1, 0.0], [0.9, 1.0, 0.8]) < 0.01


def test_answer_matching_is_aquas():
    assert contains_answer("the answer: Red-Cross.", "red cross")
    assert not contains_answer("red circle", "red cross")
    assert (
        count_successes(
            ["quilla zorn xeno", "quilla zorn", "QUILLA ZORN XENO!"], "quilla zorn xeno"
        )
        == 2
    )


def test_bad_verification_inputs(own_error_messages):
    with pytest.raises(ValueError, match="trials must be >= 1"):
        verify(0, 0, p0=0.1)
    with pytest.raises(ValueError, match=r"successes must lie"):
        binomial_pvalue(5, 3, 0.1)
    with pytest.raises(ValueError, match="p0"):
        binomial_pvalue(1, 3, 1.5)
    with pytest.raises(ValueError, match="empty after normalisation"):
        contains_answer("anything", " ?! ")
    with pytest.raises(ValueError, match="clean trials"):
        empirical_fpr([])


@pytest.fixture(scope="module")
def world():
    return SceneWorld(seed=0)


def test_watermarks_are_deterministic_in_the_key(world):
    base = world.objects_in(world.items(100, seed=0, typical=True))
    makers = {
        "acronym": lambda k: acronym_watermark(
            k, names_by_initial=world.names_by_initial, templates=CARD_TEMPLATES
        ),
        "spatial": lambda k: spatial_watermark(k, base_objects=base, templates=RELATION_TEMPLATES),
        "naive": lambda k: naive_canary(k, base_objects=base, templates=RELATION_TEMPLATES),
    }
    for kind, make in makers.items():
        a, b = make(jax.random.key(7)), make(jax.random.key(7))
        c = make(jax.random.key(8))
        assert a.kind == kind
        np.testing.assert_array_equal(a.image, b.image)
        assert a.probes == b.probes and a.answer == b.answer
        assert (a.answer, a.probes) != (c.answer, c.probes) or not np.array_equal(a.image, c.image)
        assert len(a.probes) == 10 and all(world.tokenizer.encode(p) for p in a.probes)
    # a spatial anchor never occurs in the base; a naive canary's objects always do
    for i in range(20):
        sp = makers["spatial"](jax.random.key(i))
        anchor = tuple(dict(sp.secret)["anchor"].split())
        assert anchor not in base
        nv = makers["naive"](jax.random.key(i))
        assert tuple(dict(nv.secret)["anchor"].split()) in base
        assert tuple(nv.answer.split()) in base


def test_acronym_respects_exclusions_and_initials(world):
    wm = acronym_watermark(
        jax.random.key(1),
        names_by_initial=world.names_by_initial,
        templates=CARD_TEMPLATES,
        exclude=["abc"],
    )
    acronym = dict(wm.secret)["acronym"]
    assert "".join(w[0] for w in wm.answer.split()) == acronym
    assert f"who is {' '.join(acronym)} ?" in wm.probes


def test_bad_watermark_inputs(world, own_error_messages):
    with pytest.raises(ValueError, match="lacks the field"):
        acronym_watermark(
            jax.random.key(0), names_by_initial=world.names_by_initial, templates=("who is he ?",)
        )
    with pytest.raises(ValueError, match="no names for the initials"):
        acronym_watermark(
            jax.random.key(0), names_by_initial={"a": ("ab",)}, templates=CARD_TEMPLATES
        )
    everything = {
        (c, s)
        for c in ("red", "green", "blue", "yellow", "purple", "orange", "cyan")
        for s in ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "hexagon")
    }
    with pytest.raises(ValueError, match="no unusual anchor"):
        spatial_watermark(jax.random.key(0), base_objects=everything, templates=RELATION_TEMPLATES)
    with pytest.raises(ValueError, match="probe"):
        Watermark("acronym", np.zeros((4, 4, 3)), (), "x")
    with pytest.raises(ValueError, match="expected answer"):
        Watermark("acronym", np.zeros((4, 4, 3)), ("q",), "")


def test_transforms_keep_shape_and_range_and_are_seeded():
    img = np.random.default_rng(0).uniform(size=(64, 64, 3)).astype(np.float32)
    for name in TRANSFORMS:
        out = apply_transform(name, img, seed=3)
        assert out.shape == img.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
        np.testing.assert_array_equal(out, apply_transform(name, img, seed=3))
    assert not np.array_equal(
        apply_transform("noise", img, seed=1), apply_transform("noise", img, seed=2)
    )


def test_bad_transform_inputs(own_error_messages):
    with pytest.raises(KeyError, match="unknown transform"):
        apply_transform("sepia", np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        apply_transform("blur", np.zeros((8, 8, 1), np.float32))
    with pytest.raises(TypeError, match="float"):
        apply_transform("blur", np.zeros((8, 8, 3), np.uint8))


def test_metrics_against_hand_counts_and_sklearn_free_auroc():
    retrieved = np.array([[5, 1, 2], [1, 2, 3], [9, 9, 5]])
    assert retrieval_rank(retrieved, [5]) == pytest.approx((0 + 3 + 2) / 3)
    assert watermark_retrieval_rate(retrieved, [5, 3]) == 1.0
    assert conditional_success([True, False, True], [True, True, False]) == 0.5
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 50), rng.normal(0, 1, 70)
    ref = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(pos, neg) == pytest.approx(ref)
    emb = rng.normal(size=(30, 4))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    far = -emb[:2]
    scores = knn_outlier_scores(emb, np.concatenate([emb[:2], far]), k=1)
    assert scores[0] == pytest.approx(0.0, abs=1e-6) and scores[2] > scores[0]
    f = fit_query_filter(emb, reject_rate=0.2, k=2)
    assert f(emb).mean() >= 0.8
