"""Combining single-seed runs: means and standard errors against NumPy, claims summed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxtrust.experiments.combine import combine, main


def _write(root, name, metrics):
    (root / name).mkdir()
    (root / name / "metrics.json").write_text(json.dumps(metrics))
    return root / name


def test_combine_means_ses_and_claims_match_numpy(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.uniform(size=(3, 2))
    dirs = [
        _write(
            tmp_path,
            f"s{i}",
            {
                "seeds": [i],
                "runs": {"benign": {"sft": {"refusal_rate": v[0], "per_seed": [1]}}},
                "lr": {"sft": v[1]},
                "note": "text is skipped",
                "only_here": i if i == 0 else "x",
                "claims": {"c": {"holds": int(i != 1), "seeds": 1, "per_seed": [i != 1]}},
            },
        )
        for i, v in enumerate(values)
    ]
    out = combine(tmp_path / "all", dirs)
    got = out["runs"]["benign"]["sft"]["refusal_rate"]
    np.testing.assert_allclose(got["mean"], values[:, 0].mean())
    np.testing.assert_allclose(got["se"], values[:, 0].std(ddof=1) / np.sqrt(3))
    assert got["values"] == list(values[:, 0])
    assert "per_seed" not in out["runs"]["benign"]["sft"] and "only_here" not in out
    assert out["claims"] == {"c": {"holds": 2, "seeds": 3}} and out["seeds"] == [0, 1, 2]
    assert json.loads((tmp_path / "all" / "metrics.json").read_text()) == out
    assert "holds on 2 of 3 seeds" in (tmp_path / "all" / "report.md").read_text()


def test_combine_bad_input(tmp_path):
    with pytest.raises(ValueError, match="run_dirs is empty"):
        combine(tmp_path / "out", [])
    with pytest.raises(FileNotFoundError, match="metrics.json not found"):
        combine(tmp_path / "out", [tmp_path])
    with pytest.raises(SystemExit, match="usage"):
        main([str(tmp_path)])
