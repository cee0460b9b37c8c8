"""Geometry tools (spectra, cosines, subspace overlap) against NumPy and known values."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrust.safety.spf import (
    basis_overlap_table,
    basis_svd,
    effective_rank,
    gradient_cosine,
    matrices,
    random_subspace_overlap,
    spectrum_table,
    subspace_overlap,
)


def with_spectrum(rng, m: int, n: int, s) -> np.ndarray:
    s = np.asarray(s, np.float64)
    qa, _ = np.linalg.qr(rng.normal(size=(m, len(s))))
    qb, _ = np.linalg.qr(rng.normal(size=(n, len(s))))
    return (qa * s) @ qb.T


def test_spectrum_table_known_spectra():
    rng = np.random.default_rng(0)
    flat = with_spectrum(rng, 6, 8, [1.0] * 4)  # 4 equal singular values
    decaying = with_spectrum(rng, 6, 8, [3.0, 1.0])  # energies 9, 1
    stacked = np.stack([flat, decaying])
    table = spectrum_table(
        {"a": flat, "b": decaying, "s": stacked, "bias": np.ones(3)}, ks=(1, 2), ratio=0.9
    )
    assert set(table) == {"a", "b", "s[0]", "s[1]", "mean", "energy_weighted"}
    assert table["a"]["cer@1"] == pytest.approx(0.25, abs=1e-5)
    assert table["a"]["effective_rank"] == pytest.approx(4.0, rel=1e-5)
    assert table["a"]["k@0.9"] == 4
    assert table["b"]["cer@1"] == pytest.approx(0.9, abs=1e-5)
    p = np.array([0.75, 0.25])
    assert table["b"]["effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-5)
    assert table["b"]["k@0.9"] == 1
    assert table["s[1]"] == table["b"]
    assert table["mean"]["cer@1"] == pytest.approx((0.25 + 0.9 + 0.25 + 0.9) / 4, abs=1e-5)
    # Energy weighting: ||a||^2 = 4, ||b||^2 = 10; CER of the whole tree at rank 1.
    assert table["energy_weighted"]["cer@1"] == pytest.approx((1 + 9 + 1 + 9) / 28, abs=1e-5)


def test_effective_rank_bounds():
    assert effective_rank(np.array([2.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(np.ones(7)) == pytest.approx(7.0)
    assert effective_rank(np.zeros(3)) == 0.0


def test_gradient_cosine_matches_numpy():
    rng = np.random.default_rng(1)
    a = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    b = {"w": rng.normal(size=(3, 4)), "b": -a["b"]}
    glob, per_leaf = gradient_cosine(a, b)
    fa = np.concatenate([a["b"].ravel(), a["w"].ravel()])
    fb = np.concatenate([b["b"].ravel(), b["w"].ravel()])
    assert glob == pytest.approx(fa @ fb / np.linalg.norm(fa) / np.linalg.norm(fb), rel=1e-9)
    assert per_leaf["b"] == pytest.approx(-1.0)
    w = a["w"].ravel() @ b["w"].ravel() / np.linalg.norm(a["w"]) / np.linalg.norm(b["w"])
    assert per_leaf["w"] == pytest.approx(w, rel=1e-9)
    with pytest.raises(ValueError, match="same structure"):
        gradient_cosine(a, {"w": a["w"], "c": a["b"]})


def test_subspace_overlap_identity_orthogonal_and_angles():
    eye = np.eye(6)
    assert subspace_overlap(eye[:, :2], eye[:, :2]) == pytest.approx(1.0)
    assert subspace_overlap(eye[:, :2], eye[:, 2:4]) == pytest.approx(0.0)
    theta = 0.3  # one principal angle theta, one 0: mean cos^2 = (1 + cos^2 theta) / 2
    rotated = np.stack(
        [eye[:, 0], math.cos(theta) * eye[:, 1] + math.sin(theta) * eye[:, 5]], axis=1
    )
    assert subspace_overlap(eye[:, :2], rotated) == pytest.approx((1 + math.cos(theta) ** 2) / 2)
    # Zero (inactive) columns of a jaxtrust basis are ignored.
    padded = np.concatenate([eye[:, :2], np.zeros((6, 1))], axis=1)
    assert subspace_overlap(padded, eye[:, :2]) == pytest.approx(1.0)


def test_random_subspace_overlap_baseline_matches_monte_carlo():
    rng = np.random.default_rng(2)
    k, n = 3, 24
    draws = [
        subspace_overlap(
            np.linalg.qr(rng.normal(size=(n, k)))[0], np.linalg.qr(rng.normal(size=(n, k)))[0]
        )
        for _ in range(400)
    ]
    assert np.mean(draws) == pytest.approx(random_subspace_overlap(k, n), abs=0.015)
    with pytest.raises(ValueError, match="k <= n"):
        random_subspace_overlap(5, 4)


def test_basis_overlap_table_detects_shared_subspace():
    rng = np.random.default_rng(3)
    shared = with_spectrum(rng, 16, 12, [4.0, 2.0])
    a = {"w": shared + 0.01 * rng.normal(size=(16, 12))}
    b = {"w": 2.0 * shared + 0.01 * rng.normal(size=(16, 12))}
    c = {"w": rng.normal(size=(16, 12))}
    same = basis_overlap_table(a, b, k=2)
    other = basis_overlap_table(a, c, k=2)
    assert same["w"]["left"] > 0.99 and same["w"]["right"] > 0.99
    assert other["w"]["left"] < 0.6
    assert same["w"]["random_left"] == pytest.approx(2 / 16) and same["w"][
        "random_right"
    ] == pytest.approx(2 / 12)
    # Agrees with the overlap of the transform's own (JAX) bases.
    ba = basis_svd(jnp.asarray(a["w"], jnp.float32), 2)
    bb = basis_svd(jnp.asarray(b["w"], jnp.float32), 2)
    assert subspace_overlap(ba.u, bb.u) == pytest.approx(same["w"]["left"], abs=1e-4)


def test_matrices_selection_follows_spf_rules():
    tree = {"emb": np.ones((5, 2)), "blocks": {"w": np.ones((2, 3, 4))}, "ln": np.ones(4)}
    got = matrices(tree, exclude="emb")
    assert list(got) == ["blocks/w[0]", "blocks/w[1]"] and got["blocks/w[0]"].shape == (3, 4)
    assert matrices(tree, stacked=False, include="blocks")["blocks/w"].shape == (6, 4)
