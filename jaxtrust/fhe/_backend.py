"""Lazy access to Concrete, and the smallest end-to-end circuit that proves the backend works."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import time
from types import ModuleType
from typing import Any

import numpy as np

INSTALL_HINT = (
    "Concrete is not installed in this environment. It pins numpy 1.26, so install it in its own "
    "environment: `python3.11 -m venv .venv-fhe && .venv-fhe/bin/pip install 'jaxtrust[fhe]'` "
    "(or `make setup-fhe` in a checkout)."
)


class ConcreteUnavailableError(ImportError):
    """Raised when an FHE entry point is used in an environment without Concrete."""


def concrete_available() -> bool:
    """Whether ``concrete.fhe`` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec("concrete.fhe") is not None
    except ModuleNotFoundError:
        return False


def require_concrete() -> ModuleType:
    """Import and return ``concrete.fhe``, or raise :class:`ConcreteUnavailableError` with the
    fix."""
    try:
        return importlib.import_module("concrete.fhe")
    except ImportError as err:  # also pkg_resources missing with setuptools >= 81
        raise ConcreteUnavailableError(f"{INSTALL_HINT} (import failed: {err})") from err


def insecure_key_cache_options(key_cache_dir: str | os.PathLike | None) -> dict[str, Any]:
    """``fhe.Configuration`` options of Concrete's *insecure* key cache (tests only: the same
    keys every run, which is unsafe for real data); empty when ``key_cache_dir`` is None."""
    if key_cache_dir is None:
        return {}
    return {
        "enable_unsafe_features": True,
        "use_insecure_key_cache": True,
        "insecure_key_cache_location": str(key_cache_dir),
    }


def concrete_versions() -> dict[str, str]:
    """Installed versions of the FHE stack, for ``jaxtrust info`` and reports."""
    versions = {}
    for dist in ("concrete-python", "concrete-ml"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def encrypted_max_smoke(
    values: np.ndarray,
    *,
    bits: int = 4,
    key_cache_dir: str | os.PathLike | None = None,
) -> tuple[int, dict[str, float]]:
    """Compile, key-generate, encrypt, run and decrypt ``max(values)`` under TFHE.

    The circuit is a k-way maximum of unsigned ``bits``-bit integers, the reduction at the core of
    an encrypted argmax. It exists to prove that the FHE environment works end to end.

    Args:
      values: 1-D integer array of length k >= 2, entries in ``[0, 2**bits)``.
      bits: bit width of the inputs, 1..8.
      key_cache_dir: when set, Concrete's *insecure* key cache is used (tests only: keys are
        reused across runs, which is unsafe for real data).

    Returns:
      The decrypted maximum and a dict of timings in seconds (compile, keygen, encrypt, run,
      decrypt).
    """
    values = np.asarray(values)
    if values.ndim != 1 or values.shape[0] < 2:
        raise ValueError(f"values must be a 1-D array of length >= 2, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"values must be integers, got dtype {values.dtype}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in [1, 8], got {bits}")
    if values.min() < 0 or values.max() >= 2**bits:
        raise ValueError(
            f"values must lie in [0, {2**bits}) for bits={bits}, got {values.min()}..{values.max()}"
        )
    fhe = require_concrete()
    k = values.shape[0]

    @fhe.compiler({"x": "encrypted"})
    def circuit_max(x):
        return np.max(x)

    configuration = fhe.Configuration(**insecure_key_cache_options(key_cache_dir))
    rng = np.random.default_rng(0)
    inputset = [rng.integers(0, 2**bits, size=k) for _ in range(32)]
    inputset += [np.zeros(k, dtype=np.int64), np.full(k, 2**bits - 1, dtype=np.int64)]
    timings = {}
    t = time.perf_counter()
    circuit = circuit_max.compile(inputset, configuration)
    timings["compile"] = time.perf_counter() - t
    t = time.perf_counter()
    circuit.keygen()
    timings["keygen"] = time.perf_counter() - t
    t = time.perf_counter()
    encrypted = circuit.encrypt(values.astype(np.int64))
    timings["encrypt"] = time.perf_counter() - t
    t = time.perf_counter()
    result = circuit.run(encrypted)
    timings["run"] = time.perf_counter() - t
    t = time.perf_counter()
    decrypted = circuit.decrypt(result)
    timings["decrypt"] = time.perf_counter() - t
    return int(decrypted), timings
