"""jaxtrust: JAX-native trustworthy-ML methods.

Subpackages follow the architecture: ``models`` (Flax NNX causal LMs and checkpoint loading),
``data`` (generated worlds and packaged assets), ``training`` (train steps, losses,
checkpointing, sharding), then one subpackage per field: ``safety``, ``unlearning``,
``valuation``, ``privacy``, ``fhe`` and ``multimodal``. Subpackages are imported lazily so
that ``import jaxtrust`` stays cheap and works without optional backends (torch, Concrete).
"""

from __future__ import annotations

import importlib
from typing import Any

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
    "eval",
    "zoo",
    "experiments",
)

__all__ = ["__version__", *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"jaxtrust.{name}")
    raise AttributeError(f"module 'jaxtrust' has no attribute {name!r}")
