"""The one asset lookup: names, install hints, and every packaged asset the suite has."""

from __future__ import annotations

import pytest

from jaxtrust.data import assets


def test_unknown_name_is_a_key_error_listing_the_known_ones():
    with pytest.raises(KeyError, match="known: .*smollm2"):
        assets.asset_path("smollm3")
    with pytest.raises(KeyError, match="unknown asset"):
        assets.asset_available("smollm3")
    with pytest.raises(TypeError, match="name must be a str"):
        assets.asset_path(3)


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(
        assets.ASSETS,
        "ghost",
        assets.Asset("no_such_package_jaxtrust_xyz", "x.bin", "pip install ghost==1", "test"),
    )
    with pytest.raises(ModuleNotFoundError, match="pip install ghost==1"):
        assets.asset_path("ghost")
    assert assets.asset_available("ghost") is False


@pytest.mark.parametrize("name", ["smollm2", "harmbench", "donotanswer"])
def test_installed_assets_resolve(name):
    # make setup installs these three in .venv; a missing one must fail here, not skip
    path = assets.asset_path(name)
    assert path.exists()
    assert assets.asset_available(name)


def test_smollm2_is_a_gguf_file():
    path = assets.asset_path("smollm2")
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
