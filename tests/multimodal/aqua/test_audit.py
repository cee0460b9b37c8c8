"""AQUA's audit on a tiny RAG service: insertion ids, probe counts and hits against brute force,
the pooled test against scipy, calibration as Clopper-Pearson, and bad inputs."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from jaxtrust.data.vocab import WordTokenizer
from jaxtrust.models import EncoderConfig, LMConfig, ViTConfig
from jaxtrust.multimodal.aqua.audit import audit, calibrate, insert_watermarks, probe
from jaxtrust.multimodal.aqua.verify import clean_rate_bound, count_successes
from jaxtrust.multimodal.aqua.watermarks import Watermark, acronym_watermark
from jaxtrust.multimodal.index import search
from jaxtrust.multimodal.rag import build_system, embed_queries
from jaxtrust.multimodal.retriever import Retriever, RetrieverConfig
from jaxtrust.multimodal.vlm import VisionLanguageModel, VLMConfig

LETTERS = "abcdefghijklmnopqrstuvwxyz"
NAMES = {c: (c + "ala", c + "orn") for c in LETTERS}
TEMPLATES = ("who is {a} ?", "name {a} .", "{a} is who ?")
WORDS = [*LETTERS, *[w for v in NAMES.values() for w in v], "who", "is", "?", "name", "."]
TOK = WordTokenizer(WORDS)
ENC = EncoderConfig(dim=16, num_layers=1, num_heads=2, mlp_dim=32)


def _system(n=6, seed=0):
    vit = ViTConfig(input_shape=(16, 16), patch=4, channels=3, encoder=ENC, pool="mean")
    retriever = Retriever(
        RetrieverConfig(
            image=vit, text_encoder=ENC, vocab_size=TOK.vocab_size, max_len=8, embed_dim=8
        ),
        rngs=nnx.Rngs(seed),
    )
    lm = LMConfig.for_tokenizer(
        TOK,
        hidden_size=16,
        intermediate_size=32,
        num_layers=1,
        num_heads=2,
        num_kv_heads=2,
        max_position_embeddings=128,
    )
    gen = VisionLanguageModel(
        VLMConfig(vision=dataclasses.replace(vit, num_classes=0), lm=lm, pool=2),
        rngs=nnx.Rngs(seed + 1),
    )
    imgs = np.random.default_rng(seed).uniform(size=(n, 16, 16, 3)).astype(np.float32)
    return build_system(
        retriever,
        gen,
        imgs,
        query_tokenizer=TOK,
        answer_tokenizer=TOK,
        k=2,
        max_query_len=8,
        max_new_tokens=3,
    )


def _wm(i):
    return acronym_watermark(
        jax.random.key(i), names_by_initial=NAMES, templates=TEMPLATES, size=16
    )


@pytest.fixture(scope="module")
def system():
    return _system()


def test_insert_and_probe_agree_with_brute_force(system):
    wms = [_wm(0), _wm(1)]
    marked, ids = insert_watermarks(system, wms, copies=2)
    assert marked.size == system.size + 4
    assert [i.tolist() for i in ids] == [[6, 7], [8, 9]]
    np.testing.assert_array_equal(marked.images[6], marked.images[7])
    r = probe(marked, wms, watermark_ids=ids)
    assert r.trials.tolist() == [3, 3]
    for w, answers, s in zip(wms, r.answers, r.successes, strict=True):
        assert count_successes(answers, w.answer) == s
    top = search(marked.index, embed_queries(marked, [q for w in wms for q in w.probes]), k=2).ids
    for i in range(2):
        rows = top[3 * i : 3 * i + 3]
        hit = np.isin(rows, ids[i])
        np.testing.assert_array_equal(r.hits[i], hit.any(axis=1))
        np.testing.assert_array_equal(r.ranks[i], np.where(hit.any(1), hit.argmax(1), 2))


def test_audit_is_the_pooled_binomial_test(system):
    wms = [_wm(3), _wm(4)]
    r = probe(system, wms)
    forced = r._replace(successes=np.array([2, 1]))
    v = audit(forced, p0=0.05, alpha=0.01)
    ref = stats.binomtest(3, 6, 0.05, alternative="greater").pvalue
    assert v.p_value == pytest.approx(ref, rel=1e-9) and v.detected == (ref < 0.01)
    p0 = calibrate(system, wms, confidence=0.9)
    assert p0 == pytest.approx(
        clean_rate_bound(int(r.successes.sum()), int(r.trials.sum()), confidence=0.9)
    )


def test_transform_is_applied_per_copy(system):
    seen = []

    def tf(img, c):
        seen.append(c)
        return np.clip(img * 0 + 0.1 * c, 0, 1)

    marked, ids = insert_watermarks(system, [_wm(5)], copies=3, transform=tf)
    assert seen == [0, 1, 2]
    np.testing.assert_allclose(marked.images[ids[0][2]] / 255.0, 0.2, atol=1 / 255)


def test_bad_inputs(system, own_error_messages):
    with pytest.raises(ValueError, match="watermarks is empty"):
        insert_watermarks(system, [])
    with pytest.raises(TypeError, match="not one Watermark"):
        probe(system, _wm(0))
    with pytest.raises(ValueError, match="copies must be"):
        insert_watermarks(system, [_wm(0)], copies=0)
    big = Watermark("acronym", np.zeros((32, 32, 3), np.float32), ("who is a ?",), "a b c")
    with pytest.raises(ValueError, match="16x16"):
        insert_watermarks(system, [big])
    rgba = Watermark("acronym", np.zeros((16, 16, 4), np.float32), ("who is a ?",), "a b c")
    with pytest.raises(ValueError, match="RGB"):
        insert_watermarks(system, [rgba])
    with pytest.raises(ValueError, match="expected answer"):
        Watermark("acronym", np.zeros((16, 16, 3), np.float32), ("who is a ?",), " ")
    with pytest.raises(ValueError, match="probe"):
        Watermark("acronym", np.zeros((16, 16, 3), np.float32), (), "a b c")
    with pytest.raises(ValueError, match="watermark_ids has"):
        probe(system, [_wm(0)], watermark_ids=[])
    with pytest.raises(ValueError, match="empty"):
        build_system(
            system.retriever,
            system.generator,
            np.zeros((0, 16, 16, 3), np.float32),
            query_tokenizer=TOK,
            answer_tokenizer=TOK,
        )
