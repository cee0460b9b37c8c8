"""The model zoo: in-house fixture models, built once, cached and checksummed.

* :mod:`jaxtrust.zoo.safety_lm` — the safety world's base model (complies with everything) and
  its safety-aligned fine-tune: :func:`base_model`, :func:`aligned_model`,
  :func:`evaluate_model`, :func:`respond`.
* :mod:`jaxtrust.zoo.cache` — the sealed cache entries every zoo model is kept in
  (:func:`cached_entry`), reusable for any model a method needs to build once.

Run ``python -m jaxtrust.zoo --seed 0`` to build (or load) and evaluate the aligned model.
"""

from jaxtrust.zoo.cache import FORMAT_VERSION, CachedEntry, cached_entry, default_cache_dir
from jaxtrust.zoo.safety_lm import (
    ZooConfig,
    ZooModel,
    aligned_model,
    base_model,
    cache_key,
    evaluate_model,
    respond,
    safety_summary,
)

__all__ = [
    "FORMAT_VERSION",
    "CachedEntry",
    "ZooConfig",
    "ZooModel",
    "aligned_model",
    "base_model",
    "cache_key",
    "cached_entry",
    "default_cache_dir",
    "evaluate_model",
    "respond",
    "safety_summary",
]
