"""Encrypted ensemble argmax: the client's quantization (both envs) and every circuit variant
against numpy's argmax on random and tie-heavy inputs (fhe env; k=4, 4 bits, cached test keys)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust import fhe
from jaxtrust.fhe import circuits as A
from jaxtrust.fhe import quantize as Q

M, K, BITS = 3, 4, 4


@pytest.fixture(scope="module")
def key_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp().parent / "concrete-keys"


def tie_heavy_inputs(count: int, seed: int) -> np.ndarray:
    """[count, M, K] per-prompt integers: random, all tied, two-way ties at the top, near-ties."""
    rng = np.random.default_rng(seed)
    levels = Q.levels_for(BITS, M)
    q = rng.integers(0, levels + 1, size=(count, M, K))
    q[0::4] = rng.integers(0, 2, size=(len(q[0::4]), M, K))  # tiny values: many exact ties
    q[1] = levels  # all classes tied at the maximum
    q[2] = 0  # all tied at zero
    q[3] = [[levels, 0, levels, 0]] * M  # classes 0 and 2 tied at the top
    q[5] = [[0, 1, 0, 1]] * M  # classes 1 and 3 tied
    return q


# ---- quantization (no Concrete needed) -------------------------------------------------------


@pytest.mark.smoke
def test_quantize_scores_known_case_and_spec():
    scores = np.array([[[0.1, 0.9], [0.4, 0.2]], [[1.0, 1.0], [1.0, 1.0]]])
    q, spec = fhe.quantize_scores(scores, bits=4)
    assert spec.levels == 7 and spec.prompts == 2 and spec.classes == 2
    # input 0: lo=0.1, step=0.8/7; (0.4-0.1)/step = 2.625 -> 3; (0.2-0.1)/step = 0.875 -> 1
    np.testing.assert_array_equal(q, [[[0, 7], [3, 1]], [[0, 0], [0, 0]]])
    np.testing.assert_array_equal(fhe.plaintext_argmax(q), [1, 0])


@pytest.mark.smoke
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(2, 9), st.integers(2, 8), st.integers(0, 2**31 - 1))
def test_quantized_sum_fits_the_bits_and_dequantizes_within_half_a_step(m, k, bits, seed):
    if (2**bits - 1) // m < 1:
        with pytest.raises(ValueError, match="bits"):
            fhe.quantize_scores(np.zeros((2, m, k)), bits)
        return
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(5, m, k)) * rng.uniform(0.01, 100)
    q, spec = fhe.quantize_scores(scores, bits)
    assert q.dtype == np.int64 and q.min() >= 0 and q.max() <= spec.levels
    assert q.sum(axis=1).max() <= 2**bits - 1
    assert np.all(np.abs(spec.dequantize(q) - scores) <= spec.scale[:, None, None] / 2 + 1e-9)
    # When the float soft vote has a clear winner (gap above the worst-case rounding m*step),
    # the quantized argmax agrees with it.
    total = scores.sum(axis=1)
    top2 = np.sort(total, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > m * spec.scale
    np.testing.assert_array_equal(fhe.plaintext_argmax(q)[clear], np.argmax(total, axis=1)[clear])


@pytest.mark.smoke
@pytest.mark.parametrize(
    "scores, bits, err, match",
    [
        (np.zeros((2, 3)), 4, ValueError, r"\[n, m, k\]"),
        (np.zeros((2, 3, 1)), 4, ValueError, "k >= 2"),
        (np.full((1, 2, 2), np.nan), 4, ValueError, "finite"),
        (np.zeros((1, 2, 2)), 9, ValueError, "bits"),
        (np.zeros((1, 2, 2)), 1, ValueError, "bits"),
        (np.zeros((1, 2, 2)), 4.0, ValueError, "bits"),
        (np.zeros((1, 20, 2)), 4, ValueError, "20 prompts"),
        (np.array([[["a", "b"]]]), 4, TypeError, "real"),
    ],
)
def test_quantize_scores_rejects_bad_input(scores, bits, err, match, own_error_messages):
    with pytest.raises(err, match=match):
        fhe.quantize_scores(scores, bits)


@pytest.mark.smoke
def test_variant_names_and_bad_variants(own_error_messages):
    assert (
        fhe.DEFAULT_ARGMAX_VARIANT in fhe.ARGMAX_VARIANTS
        and fhe.NAIVE_ARGMAX_VARIANT in fhe.ARGMAX_VARIANTS
    )
    assert len(fhe.ARGMAX_VARIANTS) == len(fhe.STRUCTURES) * len(fhe.STRATEGIES)
    assert fhe.parse_variant("tree") == ("tree", "promoted")
    assert fhe.is_exact("pairs:casted") and not fhe.is_exact("tree_round1")
    with pytest.raises(ValueError, match="structure"):
        fhe.parse_variant("bitonic:promoted")
    with pytest.raises(ValueError, match="strategy"):
        fhe.parse_variant("tree:fast")
    with pytest.raises(TypeError, match="variant"):
        fhe.parse_variant(3)
    with pytest.raises(ValueError, match="structure"):
        fhe.encrypted_ensemble_argmax(np.zeros((1, 2, 4)), bits=4, variant="nope")


@pytest.mark.smoke
def test_check_quantized_names_the_circuit_shape_and_range(own_error_messages):
    good = np.zeros((M, K), np.int64)
    Q.check_quantized(good, prompts=M, classes=K, bits=BITS)
    with pytest.raises(ValueError, match="k=4"):
        Q.check_quantized(np.zeros((M, K + 1), np.int64), prompts=M, classes=K, bits=BITS)
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        Q.check_quantized(good + 6, prompts=M, classes=K, bits=BITS)
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        Q.check_quantized(good - 1, prompts=M, classes=K, bits=BITS)
    with pytest.raises(TypeError, match="integers"):
        Q.check_quantized(good.astype(float), prompts=M, classes=K, bits=BITS)


# ---- circuits (Concrete) ---------------------------------------------------------------------

EXACT = ["sequential:promoted", "tree:promoted", "pairs:promoted", "packed:promoted", "tree:casted"]


@pytest.fixture(scope="module")
def circuits(key_cache):
    return {}


def _circuit(circuits, variant, key_cache):
    if variant not in circuits:
        circuits[variant] = A.compile_argmax(
            prompts=M, classes=K, bits=BITS, variant=variant, key_cache_dir=key_cache
        )
    return circuits[variant]


@pytest.mark.fhe
@pytest.mark.parametrize("variant", EXACT)
def test_exact_variants_equal_numpy_argmax_with_ties(circuits, key_cache, variant):
    circuit = _circuit(circuits, variant, key_cache)
    structure, _ = A.parse_variant(variant)
    q = tie_heavy_inputs(24, seed=7)
    reference = np.argmax(q.sum(axis=1), axis=1)
    # Concrete's simulation runs the compiled circuit's integer semantics (TLUs included) without
    # encryption; real encryption is exercised by the end-to-end and client/server tests.
    simulated = [A.decode_output(circuit.simulate(x), structure) for x in q]
    np.testing.assert_array_equal(simulated, reference)


@pytest.mark.fhe
def test_pbs_counts_follow_the_structures(circuits, key_cache):
    # 1-TLU comparisons: tree and the chain both need k-1 max + k equalities; all-pairs
    # k(k-1)/2 comparisons + k equalities; packing k-1 max + one modulo.
    pbs = {v: _circuit(circuits, v, key_cache).programmable_bootstrap_count for v in EXACT[:4]}
    assert pbs == {
        "sequential:promoted": 2 * K - 1,
        "tree:promoted": 2 * K - 1,
        "pairs:promoted": K * (K - 1) // 2 + K,
        "packed:promoted": K,
    }
    width = {
        v: _circuit(circuits, v, key_cache).graph.maximum_integer_bit_width()
        for v in ("tree:promoted", "packed:promoted")
    }
    assert width["packed:promoted"] == width["tree:promoted"] + 2  # log2(k) index bits


@pytest.mark.fhe
@pytest.mark.slow
def test_naive_default_strategy_is_exact_and_costs_more_bootstraps(circuits, key_cache):
    naive = _circuit(circuits, fhe.NAIVE_ARGMAX_VARIANT, key_cache)
    q = tie_heavy_inputs(16, seed=3)
    got = [A.decode_output(naive.simulate(x), "sequential") for x in q]
    np.testing.assert_array_equal(got, np.argmax(q.sum(axis=1), axis=1))
    assert (
        naive.programmable_bootstrap_count
        > 3 * _circuit(circuits, fhe.DEFAULT_ARGMAX_VARIANT, key_cache).programmable_bootstrap_count
    )


@pytest.mark.fhe
def test_rounded_tree_is_exact_when_the_winner_is_clear():
    circuit = A.compile_argmax(prompts=M, classes=K, bits=BITS, variant="tree_round1")
    rng = np.random.default_rng(0)
    q = rng.integers(0, 3, size=(20, M, K))
    q[np.arange(20), :, rng.integers(0, K, size=20)] = Q.levels_for(BITS, M)  # one class leads
    sums = q.sum(axis=1)
    top2 = np.sort(sums, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= 4  # a lead of two rounding steps survives rounding 1 LSB
    assert clear.sum() >= 15
    got = np.array([A.decode_output(circuit.simulate(x), "tree_round1") for x in q])
    np.testing.assert_array_equal(got[clear], np.argmax(sums, axis=1)[clear])


@pytest.mark.fhe
def test_encrypted_ensemble_argmax_end_to_end_on_float_scores(key_cache):
    rng = np.random.default_rng(11)
    scores = rng.normal(size=(5, M, K))
    scores[1] = 0.5  # every score equal: quantized all-zero, argmax 0
    scores[2, :, 3] = scores[2, :, 1]  # an exact tie between classes 1 and 3
    result = fhe.encrypted_ensemble_argmax(scores, bits=BITS, key_cache_dir=key_cache)
    q, _ = fhe.quantize_scores(scores, BITS)
    np.testing.assert_array_equal(result.plaintext_argmax, np.argmax(q.sum(axis=1), axis=1))
    np.testing.assert_array_equal(result.argmax, result.plaintext_argmax)
    assert result.matches and result.argmax[1] == 0
    assert result.stats["pbs"] == 2 * K - 1 and result.stats["evaluation_key_bytes"] > 10**6
    for key in (
        "compile_s",
        "keygen_s",
        "encrypt_s",
        "run_s",
        "decrypt_s",
        "max_bit_width",
        "input_message_bytes",
    ):
        assert key in result.stats
