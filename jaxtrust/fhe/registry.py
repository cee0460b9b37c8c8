"""Named entry points of the FHE backends: what :mod:`jaxtrust.fhe.delegation` can run.

An entry point is a function ``fn(arrays, kwargs) -> (arrays, meta)`` of plain data (NumPy arrays
and JSON values), so it runs the same in this process or in another environment's process. The
modules that define entry points register them with :func:`entry_point`; :data:`ENTRY_POINTS`
names, for each entry point, its module and the backend environment it needs. A worker process
resolves a name by importing only that module (:func:`resolve`), the way
:data:`jaxtrust.experiments.registry.EXPERIMENT_MODULES` works, so the package's layers import
downwards only: circuits <- client, server <- protocol <- delegation (which knows names, not
modules).

Example:
  >>> ENTRY_POINTS["encrypted_ensemble_argmax"]
  EntryPointSpec(module='jaxtrust.fhe.protocol', backend='fhe')
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

__all__ = ["ENTRY_POINTS", "EntryPoint", "EntryPointSpec", "entry_point", "resolve"]

Payload = tuple[dict[str, np.ndarray], dict[str, Any]]
EntryPoint = Callable[[dict[str, np.ndarray], dict[str, Any]], Payload]


class EntryPointSpec(NamedTuple):
    """Where an entry point is defined and which backend environment it needs."""

    module: str
    backend: str


ENTRY_POINTS: dict[str, EntryPointSpec] = {
    "encrypted_ensemble_argmax": EntryPointSpec("jaxtrust.fhe.protocol", "fhe"),
    "argmax_grid": EntryPointSpec("jaxtrust.fhe.protocol", "fhe"),
    "encrypted_verbalizer": EntryPointSpec("jaxtrust.fhe.verbalizer", "fhe"),
    "ckks_argmax": EntryPointSpec("jaxtrust.fhe.ckks", "ckks"),
}

_REGISTERED: dict[str, EntryPoint] = {}


def entry_point(name: str) -> Callable[[EntryPoint], EntryPoint]:
    """Register ``fn(arrays, kwargs) -> (arrays, meta)`` under ``name`` (listed in
    :data:`ENTRY_POINTS`)."""
    if name not in ENTRY_POINTS:
        raise KeyError(f"entry point {name!r} is not listed in ENTRY_POINTS")

    def decorator(fn: EntryPoint) -> EntryPoint:
        _REGISTERED[name] = fn
        return fn

    return decorator


def resolve(name: str) -> EntryPoint:
    """The registered function of entry point ``name``, importing its module by name.

    Raises:
      KeyError: an unknown name (the message lists the known ones).
    """
    if name not in ENTRY_POINTS:
        raise KeyError(f"unknown FHE entry point {name!r}; known: {sorted(ENTRY_POINTS)}")
    if name not in _REGISTERED:
        importlib.import_module(ENTRY_POINTS[name].module)
    if name not in _REGISTERED:
        raise RuntimeError(
            f"{ENTRY_POINTS[name].module} is listed for entry point {name!r} but does not "
            "register it"
        )
    return _REGISTERED[name]
