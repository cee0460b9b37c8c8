"""Test configuration shared by the whole suite.

* 8 host CPU devices, so multi-device code is tested against the single-device result
  (single-device code still runs on device 0).
* Strict rank promotion: silent broadcasting bugs raise instead of producing wrong numbers.
* Offline: no hub access, ever (tests that need an asset skip when its package is absent).
"""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


HAS_TORCH = has_module("torch") and has_module("transformers")
HAS_CONCRETE = has_module("concrete")

requires_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs torch + transformers (pip install jaxtrust[torch])")
requires_concrete = pytest.mark.skipif(not HAS_CONCRETE, reason="needs Concrete (pip install jaxtrust[fhe])")
