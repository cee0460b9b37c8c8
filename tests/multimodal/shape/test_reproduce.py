"""`jaxtrust reproduce shape` at its smoke size: the metrics schema of the issue, every method
and round present, probabilities in range."""

from __future__ import annotations

import json

import pytest

from jaxtrust.experiments import run_experiment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
KEYS = ("pope_f1", "pope_f1_std", "chair", "recall", "pref_acc")
METHODS = {"base", "sft", "sft_winners", "seva", "shuffled", "shape"}


def test_smoke_schema(tmp_path):
    overrides = ["train_scenes=48", "val_scenes=8", "test_scenes=8", "dpo_scenes=8", "rounds=2"]
    run_experiment(
        "shape", preset="smoke", seed=0, out_dir=tmp_path, overrides=overrides, progress=False
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["methods"]) == METHODS
    for entry in m["methods"].values():
        for k in KEYS:
            assert 0.0 <= entry[k] <= 1.0, (k, entry[k])
    assert {(r["method"], r["round"]) for r in m["rounds"]} == {
        (n, r) for n in METHODS - {"base"} for r in (1, 2)
    }
    assert m["probes_per_split"] == 16
    # pairs whose winner equals the loser are dropped, never more than were built
    assert all(0 <= r["pairs"] <= 8 for r in m["rounds"] if r["method"] == "shape")
    assert (tmp_path / "rounds.png").exists()
