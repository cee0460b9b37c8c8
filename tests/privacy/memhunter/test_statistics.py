"""MemHunter's pieces without a model: LCS/ROUGE-L vs brute force, the dataset tests vs scipy,
FPR calibration on a null simulation, Dataset Inference, LM membership scores vs NumPy, the
stdlib corpus and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.data.stdlib_text import ByteTokenizer, Document, passages, stdlib_documents
from jaxtrust.privacy.memhunter import (
    dataset_inference,
    dataset_test,
    fit_logistic,
    memorization_scores,
    welch_t,
)
from jaxtrust.privacy.memhunter.memorization import word_ids
from jaxtrust.privacy.mia import TokenStats, lm_features, lm_membership_scores


def _lcs_brute(a, b):
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            same = a[i - 1] == b[j - 1]
            dp[i][j] = dp[i - 1][j - 1] + 1 if same else max(dp[i - 1][j], dp[i][j - 1])
    return dp[-1][-1]


def _substring_brute(a, b):
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            k = 0
            while i + k < len(a) and j + k < len(b) and a[i + k] == b[j + k]:
                k += 1
            best = max(best, k)
    return best


seqs = st.lists(st.integers(0, 4), min_size=0, max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(seqs, seqs), min_size=1, max_size=5))
def test_lcs_and_substring_match_brute_force(pairs):
    outs, refs = [p[0] for p in pairs], [p[1] for p in pairs]
    m = memorization_scores(outs, refs)
    for i, (a, b) in enumerate(pairs):
        assert m.lcs[i] == _lcs_brute(a, b)
        assert m.substring[i] == _substring_brute(a, b)
        if a:
            assert m.precision[i] == pytest.approx(_lcs_brute(a, b) / len(a))
        if b:
            assert m.recall[i] == pytest.approx(_lcs_brute(a, b) / len(b))


def test_rouge_l_f1_and_verbatim():
    m = memorization_scores([[1, 2, 3, 4], [7, 8]], [[1, 2, 3, 4], [1, 2, 3]])
    assert m.precision[0] == m.recall[0] == m.f1[0] == 1.0 and m.substring[0] == 4
    assert m.lcs[1] == 0 and m.f1[1] == 0.0
    assert word_ids("return  x.") == word_ids("return x .")


def test_welch_and_mann_whitney_match_scipy():
    rng = np.random.default_rng(0)
    for n, m, shift, sx in [(10, 30, 0.3, 1.0), (50, 20, -0.2, 3.0), (7, 7, 1.0, 0.5)]:
        x, y = rng.normal(shift, sx, n), rng.normal(0, 1, m)
        ref = scipy.stats.ttest_ind(x, y, equal_var=False, alternative="greater")
        w = welch_t(x, y)
        assert w.t == pytest.approx(ref.statistic, rel=1e-10)
        assert w.p == pytest.approx(ref.pvalue, rel=1e-8)
        out = dataset_test(x, y, test="mannwhitney")
        u = sum(float(a > b) + 0.5 * float(a == b) for a in x for b in y)
        assert out.u == pytest.approx(u)
        assert out.p == pytest.approx(scipy.stats.mannwhitneyu(x, y, alternative="greater").pvalue)


def test_false_positive_rate_is_alpha_on_a_null_simulation():
    rng = np.random.default_rng(1)
    trials, alpha = 1000, 0.05
    # Skewed, discrete-ish scores like ROUGE-L: the level must hold for them too.
    outs = [
        dataset_test(rng.beta(2, 5, 20).round(2), rng.beta(2, 5, 100).round(2), alpha=alpha)
        for _ in range(trials)
    ]
    p_w = np.array([o.p_welch for o in outs])
    p_u = np.array([o.p_mannwhitney for o in outs])
    se = np.sqrt(alpha * (1 - alpha) / trials)
    for p in (p_w, p_u):
        assert alpha - 3 * se <= np.mean(p <= alpha) <= alpha + 3 * se
    assert np.mean(2 * np.minimum(p_w, p_u) <= alpha) <= alpha + 3 * se
    # Under H0 the p-values are uniform (Kolmogorov-Smirnov, Welch's continuous statistic).
    assert scipy.stats.kstest(p_w, "uniform").pvalue > 1e-3
    power = np.mean(
        [
            dataset_test(rng.beta(3, 5, 20), rng.beta(2, 5, 100), test="both").reject
            for _ in range(200)
        ]
    )
    assert power > 0.5


def test_dataset_inference_level_and_power():
    rng = np.random.default_rng(2)
    null = [
        dataset_inference(rng.normal(0, 1, (40, 6)), rng.normal(0, 1, (80, 6)), seed=i).test.reject
        for i in range(300)
    ]
    assert np.mean(null) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 300)
    # The signal sits in one feature among noise: the learned combination finds it.
    member = rng.normal(0, 1, (40, 6))
    member[:, 3] += 1.0
    assert dataset_inference(member, rng.normal(0, 1, (80, 6)), seed=0).test.reject


def test_fit_logistic_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3))
    y = (x @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=200) > 0).astype(float)
    w, b = fit_logistic(x, y, l2=1e-2)
    ref = LogisticRegression(C=1.0 / (1e-2 * 200), tol=1e-10, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(w, ref.coef_[0], rtol=1e-3, atol=1e-4)
    assert b == pytest.approx(ref.intercept_[0], abs=1e-3)


def test_lm_scores_match_numpy():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 6, 5)) * 2
    logp_all = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    tokens = rng.integers(0, 5, (3, 6))
    logp = np.take_along_axis(logp_all, tokens[..., None], -1)[..., 0]
    p = np.exp(logp_all)
    mu = (p * logp_all).sum(-1)
    sigma = np.sqrt((p * logp_all**2).sum(-1) - mu**2)
    mask = np.ones((3, 6), bool)
    mask[2, 4:] = False
    stats = TokenStats(logp, mu, sigma, mask)
    loss = lm_membership_scores(stats, "loss")
    assert loss[2] == pytest.approx(logp[2, :4].mean())
    mk = lm_membership_scores(stats, "min_k", k=0.5)
    assert mk[0] == pytest.approx(np.sort(logp[0])[:3].mean())
    z = (logp - mu) / sigma
    mkpp = lm_membership_scores(stats, "min_k_pp", k=0.25)
    assert mkpp[2] == pytest.approx(np.sort(z[2, :4])[:1].mean())
    import zlib

    texts = ["abc" * 5, "hello world", "x"]
    zl = lm_membership_scores(stats, "zlib", texts=texts)
    assert zl[1] == pytest.approx(logp[1].sum() / len(zlib.compress(b"hello world")))
    assert lm_features(stats, texts, ks=(0.5,)).shape == (3, 4)


def test_stdlib_corpus_is_deterministic_and_tokenises():
    a = stdlib_documents(topics=False, modules=("textwrap", "json"))
    b = stdlib_documents(topics=False, modules=("textwrap", "json"))
    assert a == b and all(d.text for d in a)
    tok = ByteTokenizer()
    ps = passages(a, 64)
    assert all(tok.decode(tok.encode(p)) == p for p in ps)
    assert len(set(ps)) == len(ps)
    assert passages([Document("d", "é" * 10)], 8, min_fill=1.0)[0].startswith("é")


def test_bad_input_messages(own_error_messages):
    with pytest.raises(ValueError, match="alpha must be in"):
        dataset_test([1.0, 2.0], [0.0, 1.0], alpha=1.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        dataset_test([1.0, 2.0], [0.0, 1.0], alpha=0.0)
    with pytest.raises(ValueError, match="empty dataset"):
        dataset_test([], [0.0, 1.0])
    with pytest.raises(KeyError, match="unknown test"):
        dataset_test([1.0, 2.0], [0.0, 1.0], test="ks")
    with pytest.raises(ValueError, match="dataset too small"):
        dataset_inference(np.zeros((2, 3)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="must pair up"):
        memorization_scores([[1]], [[1], [2]])
    with pytest.raises(ValueError, match="outputs is empty"):
        memorization_scores([], [])
    with pytest.raises(KeyError, match="unknown LM score"):
        lm_membership_scores(TokenStats(*[np.zeros((1, 2))] * 3, np.ones((1, 2), bool)), "gzip")
    with pytest.raises(ValueError, match="length must be"):
        passages([Document("d", "abc")], 4)
