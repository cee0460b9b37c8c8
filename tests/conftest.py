"""Test configuration shared by the whole suite.

* 8 host CPU devices, so multi-device code is tested against the single-device result
  (single-device code still runs on device 0).
* Strict rank promotion: silent broadcasting bugs raise instead of producing wrong numbers.
* Offline: no hub access, ever (tests that need an asset skip when its package is absent).
* Runtime shape and dtype checks: the jaxtyping annotations of the modules in
  ``RUNTIME_CHECKED`` are enforced by beartype on every call, so a signature that lies fails the
  suite. Bad-input tests that assert the library's own error messages (which name the argument
  and the expected shape) switch the checks off with the ``own_error_messages`` fixture, since
  the annotation check would otherwise raise first.
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


RUNTIME_CHECKED = (
    "jaxtrust.models",
    "jaxtrust.training",
    "jaxtrust.data.arithmetic",
    "jaxtrust.data.batching",
    "jaxtrust.data.safety_world",
    "jaxtrust.data.vocab",
    "jaxtrust.safety.spf",
    "jaxtrust.safety.recovery",
    "jaxtrust.safety.actapprox",
    "jaxtrust.zoo",
    "jaxtrust.eval",
    "jaxtrust.privacy.secpe",
    "jaxtrust.fhe",
    "jaxtrust.data.vision",
    "jaxtrust.privacy.mia",
    "jaxtrust.unlearning",
    "jaxtrust.multimodal.shape",
    "jaxtrust.privacy.memhunter",
    "jaxtrust.data.stdlib_text",
    "jaxtrust.valuation",
    "jaxtrust.data.timeseries",
)
if importlib.util.find_spec("beartype") is not None:
    from jaxtyping import install_import_hook

    install_import_hook(list(RUNTIME_CHECKED), "beartype.beartype")

import jax  # noqa: E402
import jaxtyping  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def own_error_messages():
    """Switch the runtime annotation checks off, to test the library's own bad-input errors."""
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


HAS_TORCH = has_module("torch") and has_module("transformers")
HAS_CONCRETE = has_module("concrete")

requires_torch = pytest.mark.skipif(
    not HAS_TORCH, reason="needs torch + transformers (pip install jaxtrust[torch])"
)
requires_concrete = pytest.mark.skipif(
    not HAS_CONCRETE, reason="needs Concrete (pip install jaxtrust[fhe])"
)
