"""`jaxtrust reproduce lm` end to end: training, checkpoints, decoding and the report."""

import json

import pytest

from jaxtrust.experiments import run_experiment


@pytest.mark.slow
def test_lm_experiment_learns_the_training_distribution(tmp_path):
    run_experiment(
        "lm",
        preset="quick",
        seed=3,
        out_dir=tmp_path,
        overrides=["steps=400", "eval_examples=64", "checkpoint_every=100"],
        progress=False,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    curve = metrics["loss_curve"]
    assert curve[-1] < curve[0] / 5, curve[:: max(1, len(curve) // 10)]
    # Seen pairs must mostly be answered (chance is about 0.04); unseen pairs are the reported
    # generalisation number. The margin allows for other CPUs' numerics (0.73 on CI's machine).
    assert metrics["exact_match"]["train"] >= 0.6, metrics["exact_match"]
    # unseen operand pairs: answers range over about 25 numbers, so chance is about 0.04
    assert metrics["exact_match"]["test"] >= 0.2, metrics["exact_match"]
    assert (tmp_path / "loss.png").exists() and "exact match" in (
        tmp_path / "report.md"
    ).read_text()
    assert any((tmp_path / "checkpoints").iterdir())

    # a rerun into the same --out resumes at the last step (0 steps to run) and must rewrite the
    # same report, not an empty plot with final_loss None
    run_experiment(
        "lm",
        preset="quick",
        seed=3,
        out_dir=tmp_path,
        overrides=["steps=400", "eval_examples=64", "checkpoint_every=100"],
        progress=False,
    )
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert again["final_loss"] == metrics["final_loss"] and again["final_loss"] is not None
    assert again["loss_curve"] == metrics["loss_curve"]
    assert again["exact_match"] == metrics["exact_match"]
