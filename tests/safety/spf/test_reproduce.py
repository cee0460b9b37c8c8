"""`jaxtrust reproduce spf` / `oneshot` with tiny overrides on the zoo's seed-0 aligned model:
the metrics schema of the issue, and measured effects that must show even at this size."""

from __future__ import annotations

import json

import pytest

from jaxtrust.experiments import run_experiment

# timeout: SPF's step once deadlocked in batched LAPACK kernels (fixed: see
# jaxtrust/safety/spf/transform.py);
# should anything hang again, it must fail the test, not stall CI.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
RATES = ("refusal_rate", "refusal_rate_std", "utility", "utility_std")


def test_spf_schema_and_harmful_sft_erodes_refusal(tmp_path):
    run_experiment("spf", preset="smoke", seed=0, out_dir=tmp_path, progress=False)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["aligned"]) >= {"refusal_rate", "utility"} and m["seeds"] == [0]
    assert set(m["runs"]) == {"benign", "harmful"}
    for attack in m["runs"].values():
        assert set(attack) == {"sft", "spf", "pcgrad_full"}
        for entry in attack.values():
            assert all(0.0 <= entry[k] <= 1.0 for k in RATES)
    assert m["aligned"]["refusal_rate"] >= 0.9
    # 30 steps of purely harmful fine-tuning erase most refusals of the tiny aligned model
    assert m["runs"]["harmful"]["sft"]["refusal_rate"] <= m["aligned"]["refusal_rate"] - 0.5
    geometry = m["geometry"]
    assert geometry["overlap"]["left"] > 3 * geometry["overlap"]["random_left"]  # one sample ~ many
    assert (tmp_path / "refusal_vs_utility.png").exists()
    # the schema the safety-world issue added
    assert set(m["model"]) == {"layers", "d_model", "params"} and m["model"]["params"] > 10_000
    assert set(m["eval_sizes"]) == {"forbidden", "benign", "utility"}
    assert set(m["sample_curve"]) == {"1", "4"} and set(m["sample_curve"]["1"]) == {"4"}
    for claim in m["claims"].values():
        assert set(claim) == {"holds", "seeds"} and claim["seeds"] == 1
    assert set(m["lr"]) == {"sft", "spf", "pcgrad_full"}
    assert 0.0 <= m["harmful_share"]["harmful"]["harmful_token_share"] <= 1.0


def test_oneshot_schema_and_recovery_restores_refusal(tmp_path):
    run_experiment("oneshot", preset="smoke", seed=0, out_dir=tmp_path, progress=False)
    m = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("aligned", "attacked", "recovered"):
        assert set(m[key]) >= {"refusal_rate", "utility"}
    assert "steps" in m
    assert m["attacked"]["refusal_rate"] <= m["aligned"]["refusal_rate"] - 0.5
    assert m["recovered"]["refusal_rate"] >= m["attacked"]["refusal_rate"] + 0.5
    (seed,) = m["per_seed"]
    assert set(seed["selections"]) == {"bilevel", "first"} and set(seed["steps_sweep"]) == {
        "2",
        "10",
    }
    assert m["claims"]["recovery_within_0.05_at_small_utility_cost"]["seeds"] == 1


def test_demo_spf_keeps_refusal_where_sft_loses_it(tmp_path):
    # the headline job (make demo), shortened: 150 steps of benign fine-tuning on the seed-0
    # zoo model; measured at 300 steps: SFT refusal 1.00 -> 0.00 by step 150, SPF 1.00 throughout
    run_experiment(
        "spf",
        preset="demo",
        seed=0,
        out_dir=tmp_path,
        overrides=["deep_steps=150", "eval_examples=20", "trajectory_examples=8"],
        progress=False,
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    aligned = m["aligned"]["refusal_rate"]
    assert m["runs"]["deep"]["sft"]["refusal_rate"] <= aligned - 0.5
    assert m["runs"]["deep"]["spf"]["refusal_rate"] >= aligned - 0.1
    for method in ("sft", "spf"):
        (trajectory,) = m["trajectories"]["deep"][method]
        assert [t["step"] for t in trajectory] == [0, 50, 100, 150]
    assert (tmp_path / "refusal_over_steps.png").exists()
