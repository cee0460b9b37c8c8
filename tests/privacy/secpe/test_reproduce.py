"""`jaxtrust reproduce secpe` with small overrides: the metrics schema, properties of the numbers
(the attack never raises accuracy; the encrypted vote equals the quantized plaintext vote), and
the paper's robustness claim in the direction it holds on the 8-topic task."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxtrust.experiments import run_experiment

N = 100
SMALL = [
    "num_seeds=1",
    f"num_examples={N}",
    "val_examples=60",
    f"attack_examples={N}",
    "attack_budgets=[1]",
    "attack_candidates=4",
    "ckks=false",
]


def _concrete_reachable() -> bool:
    from jaxtrust import fhe

    status = fhe.environment_status("fhe")
    return bool(status["in_process"] or status["delegation"])


@pytest.mark.slow
def test_secpe_plaintext_accuracy_and_robustness(tmp_path):
    run_experiment(
        "secpe",
        preset="quick",
        seed=1,
        out_dir=tmp_path,
        overrides=[*SMALL, "encrypted=false"],
        progress=False,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    acc, robust = metrics["accuracy"], metrics["robust_accuracy"]
    m = metrics["setup"]["prompts"]
    assert len(acc["single"]) == len(robust["single"]) == m == 6
    assert metrics["task"] == {"classes": 8, "n": N, "prompts": 6}
    assert metrics["ckks"]["available"] is False and metrics["ckks"]["grid"] == []
    assert (
        acc["encrypted"] is None
        and metrics["encrypted_matches_plaintext"] is None
        and metrics["argmax_grid"] == []
    )
    # Same inputs attacked as evaluated: the attack can only remove correct answers.
    budget = metrics["robust_accuracy_by_budget"]["1"]["first_seed"]
    np.testing.assert_allclose(budget["clean"]["single"], acc["single"])
    assert budget["clean"]["ensemble"] == pytest.approx(acc["ensemble"])
    assert all(r <= c + 1e-9 for r, c in zip(robust["single"], acc["single"], strict=True))
    assert robust["ensemble"] <= acc["ensemble"] + 1e-9
    # Accuracies are fractions of N inputs.
    for value in [*acc["single"], acc["ensemble"], *robust["single"], robust["ensemble"]]:
        assert (value * N) == pytest.approx(round(value * N))
    # The prompts differ in quality, and the soft vote under attack beats the mean single prompt
    # (each prompt attacked alone, the vote attacked as a whole, same budget).
    assert max(acc["single"]) - min(acc["single"]) >= 0.05
    assert robust["ensemble"] > float(np.mean(robust["single"]))
    assert (tmp_path / "accuracy.png").exists() and "soft vote" in (
        tmp_path / "report.md"
    ).read_text()


@pytest.mark.slow
def test_secpe_encrypted_vote_equals_plaintext(tmp_path):
    if not _concrete_reachable():
        pytest.skip("Concrete is neither importable nor reachable through the fhe environment")
    overrides = [
        *SMALL,
        "num_examples=16",
        "val_examples=16",
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
