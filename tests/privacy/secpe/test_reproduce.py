"""`jaxtrust reproduce secpe` with tiny overrides: metrics schema and properties of the numbers
(the attack never raises accuracy; the encrypted vote equals the quantized plaintext vote)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxtrust.experiments import run_experiment

# A small zoo recipe (trained once per test session into a temporary cache).
TINY = [
    "zoo_base_steps=300",
    "zoo_align_steps=30",
    "num_examples=16",
    "attack_examples=16",
    "attack_budgets=[1]",
    "attack_candidates=4",
]


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("JAXTRUST_CACHE", str(tmp_path_factory.mktemp("zoo")))
    yield
    mp.undo()


def _concrete_reachable() -> bool:
    from jaxtrust import fhe

    status = fhe.environment_status("fhe")
    return bool(status["in_process"] or status["delegation"])


@pytest.mark.slow
def test_secpe_plaintext_accuracy_and_robustness(tmp_path, zoo_cache):
    run_experiment(
        "secpe",
        preset="quick",
        seed=1,
        out_dir=tmp_path,
        overrides=[*TINY, "encrypted=false"],
        progress=False,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    acc, robust = metrics["accuracy"], metrics["robust_accuracy"]
    m = metrics["setup"]["prompts"]
    assert len(acc["single"]) == len(robust["single"]) == m == 5
    assert (
        acc["encrypted"] is None
        and metrics["encrypted_matches_plaintext"] is None
        and metrics["argmax_grid"] == []
    )
    # Same inputs attacked as evaluated: the attack can only remove correct answers.
    budget = metrics["robust_accuracy_by_budget"]["1"]
    np.testing.assert_allclose(budget["clean"]["single"], acc["single"])
    assert budget["clean"]["ensemble"] == pytest.approx(acc["ensemble"])
    assert all(r <= c + 1e-9 for r, c in zip(robust["single"], acc["single"], strict=True))
    assert robust["ensemble"] <= acc["ensemble"] + 1e-9
    # Accuracies are fractions of 16 inputs.
    for value in [*acc["single"], acc["ensemble"], *robust["single"], robust["ensemble"]]:
        assert (value * 16) == pytest.approx(round(value * 16))
    assert (tmp_path / "accuracy.png").exists() and "soft vote" in (
        tmp_path / "report.md"
    ).read_text()


@pytest.mark.slow
def test_secpe_encrypted_vote_equals_plaintext(tmp_path, zoo_cache):
    if not _concrete_reachable():
        pytest.skip("Concrete is neither importable nor reachable through the fhe environment")
    overrides = [
        *TINY,
        "attack_budgets=[]",
        "encrypted=true",
        "encrypted_examples=6",
        "bits=4",
        "verbalizer_examples=0",
        "grid_ks=[2]",
        "grid_bits=[4]",
        'grid_variants=["tree:promoted"]',
        "grid_inputs=3",
    ]
    run_experiment(
        "secpe", preset="quick", seed=1, out_dir=tmp_path, overrides=overrides, progress=False
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["encrypted_matches_plaintext"] is True
    enc = metrics["encrypted"]
    assert enc["inputs"] == 6 and enc["bits"] == 4
    assert metrics["accuracy"]["encrypted"] == pytest.approx(enc["quantized_plaintext_accuracy"])
    assert enc["one_prompt_matches"] is True and enc["overhead"]["run_s"] > 0
    (row,) = metrics["argmax_grid"]
    assert {
        "variant",
        "k",
        "bits",
        "compile_s",
        "keygen_s",
        "run_s",
        "pbs",
        "max_bit_width",
        "exact",
    } <= set(row)
    assert row["exact"] is True and (row["variant"], row["k"], row["bits"]) == (
        "tree:promoted",
        2,
        4,
    )
