"""jaxtrust: JAX-native trustworthy-ML methods.

Subpackages follow the architecture: ``models`` (Flax NNX causal LMs and checkpoint loading),
``data`` (generated worlds and packaged assets), ``training`` (train steps, losses,
checkpointing, sharding), then one subpackage per field: ``safety``, ``unlearning``,
``valuation``, ``privacy``, ``fhe`` and ``multimodal``. Subpackages are imported lazily so
that ``import jaxtrust`` stays cheap and works without optional backends (torch, Concrete).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

# jax's CPU linear algebra (eigh, svd, qr custom calls) runs on scipy's OpenBLAS. When XLA runs
# two of them concurrently on its thread pool (SPF's per-layer basis under vmap), OpenBLAS's own
# threads deadlocked the jitted step: every thread idle in a futex wait, intermittently
# (jax 0.10.2, 2 CPU cores). Single-threaded OpenBLAS avoids it at no cost to XLA's own
# parallelism. Only a default: it applies if OpenBLAS is not loaded yet and the user set nothing.
if "scipy" not in sys.modules and "jax" not in sys.modules:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0.dev0"

_SUBPACKAGES = (
    "models",
    "data",
    "training",
    "safety",
    "unlearning",
    "valuation",
    "privacy",
    "fhe",
    "multimodal",
    "experiments",
)

__all__ = ["__version__", *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"jaxtrust.{name}")
    raise AttributeError(f"module 'jaxtrust' has no attribute {name!r}")
