"""`python -m jaxtrust.zoo --v2` asks the zoo for the version-2 model (no build here)."""

from __future__ import annotations

import pytest

import jaxtrust.zoo.__main__ as cli
from jaxtrust.zoo.safety_lm import ZooConfig


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("flag", "expected"), [([], ZooConfig()), (["--v2"], ZooConfig.v2())])
def test_the_flag_chooses_the_world(monkeypatch, flag, expected):
    seen = {}

    def fake_aligned_model(config, *, seed, cache_dir):
        seen.update(config=config, seed=seed, cache_dir=cache_dir)
        raise _Stop

    monkeypatch.setattr(cli, "aligned_model", fake_aligned_model)
    with pytest.raises(_Stop):
        cli.main([*flag, "--seed", "2"])
    assert seen["config"].to_json() == expected.to_json() and seen["seed"] == 2
