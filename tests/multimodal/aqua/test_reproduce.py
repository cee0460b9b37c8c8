"""The AQUA reproduction end to end on its smoke preset: metrics.json schema, report, resume."""

import dataclasses
import json

import pytest

from jaxtrust.experiments.registry import get_experiment, run_experiment
from jaxtrust.multimodal.aqua.reproduce import METHODS, PRESETS, AquaConfig

KEYS = (
    "detection_rate",
    "fpr",
    "fpr_trials",
    "p_value_median",
    "retrieval_rank",
    "harmless_rate",
    "stealth_auroc",
)


@pytest.mark.slow
def test_smoke_run_writes_the_issue_schema(tmp_path):
    out = tmp_path / "run"
    run_experiment("aqua", preset="smoke", out_dir=out, progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["methods"]) == set(METHODS)
    for name in METHODS:
        entry = metrics["methods"][name]
        for key in KEYS:
            assert key in entry, (name, key)
        assert 0.0 <= entry["detection_rate"] <= 1.0 and 0.0 <= entry["fpr"] <= 1.0
        assert entry["fpr_trials"] == PRESETS["smoke"].fpr_trials * PRESETS["smoke"].num_seeds
        assert 0.0 <= entry["stealth_auroc"] <= 1.0
    assert set(metrics["substrate"]) >= {"retrieval_recall_at_5", "vqa_accuracy"}
    assert "aqua_acronym" in metrics["robustness"]
    assert "query_filter" in metrics["robustness"]["aqua_acronym"]
    report = (out / "report.md").read_text()
    assert "watermark_examples.png" in report and "holds on" in report
    assert (out / "watermark_examples.png").exists()
    # a rerun resumes from the saved seed and substrate instead of recomputing
    first = (out / "seeds" / "seed_0.json").stat().st_mtime
    run_experiment("aqua", preset="smoke", out_dir=out, progress=False)
    assert (out / "seeds" / "seed_0.json").stat().st_mtime == first


def test_registered_with_presets_and_config_checks():
    exp = get_experiment("aqua")
    assert {"smoke", "quick", "full"} <= set(exp.presets)
    assert exp.presets["quick"].num_seeds >= 3 and exp.presets["full"].num_seeds >= 3
    with pytest.raises(ValueError, match="methods: unknown value"):
        AquaConfig(methods=("aqua_acronym", "ward"))
    with pytest.raises(ValueError, match="kb_size"):
        dataclasses.replace(PRESETS["quick"], kb_size=10_000)
    with pytest.raises(ValueError, match="clean_systems"):
        AquaConfig(clean_systems=1)
