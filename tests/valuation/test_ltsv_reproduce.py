"""The ``ltsv`` reproduction in its smoke preset (metrics.json schema of the issue) and the
forecaster's cache round trip."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrust.experiments.registry import get_experiment, run_experiment
from jaxtrust.models.tsfm import TSFMConfig, forecast
from jaxtrust.valuation.ltsv.reproduce import VALUERS
from jaxtrust.zoo.forecaster import PretrainConfig, pretrained_forecaster


@pytest.mark.slow
def test_smoke_preset_writes_the_issue_schema(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXTRUST_CACHE", str(tmp_path / "cache"))
    run_experiment("ltsv", preset="smoke", out_dir=tmp_path / "out", progress=False)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    metrics = metrics.get("metrics", metrics)
    for name in VALUERS:
        assert set(metrics["valuers"][name]) >= {"auroc", "auroc_std", "spearman_loo", "seconds"}
    assert metrics["valuers"]["loo"]["spearman_loo"] == pytest.approx(1.0)
    assert set(metrics["forecaster"]) >= {"mase", "seasonal_naive_mase"}
    assert "ltsv" in metrics["curves"]


@pytest.mark.slow
def test_forecaster_cache_round_trip(tmp_path):
    config = PretrainConfig.tiny(
        steps=3, synthetic_count=2, batch_size=4, model=TSFMConfig.tiny(context_len=32)
    )
    built = pretrained_forecaster(config, 0, cache_dir=tmp_path)
    loaded = pretrained_forecaster(config, 0, cache_dir=tmp_path)
    assert not built.from_cache and loaded.from_cache
    x = jnp.asarray(np.sin(np.arange(64.0))[None])
    np.testing.assert_allclose(
        forecast(built.model, x, 16).mean, forecast(loaded.model, x, 16).mean, atol=1e-6
    )


def test_registered_with_presets():
    exp = get_experiment("ltsv")
    assert {"smoke", "quick", "full"} <= set(exp.presets)
    with pytest.raises(ValueError, match="loo_subset"):
        exp.config_cls(num_train=10, loo_subset=20)
