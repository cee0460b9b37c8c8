"""Fully homomorphic encryption (FHE) backends: SecPE-style private prompt ensembling.

Concrete (``concrete-python`` / Concrete-ML) pins numpy 1.26 and an old torch, so it cannot
share an environment with the newest jax; it lives behind the ``fhe`` extra, installed in its
own environment (``make setup`` builds ``.venv-fhe``). Importing :mod:`jaxtrust` never imports
Concrete: FHE entry points call :func:`require_concrete`, which explains how to install it.
"""

from jaxtrust.fhe._backend import (
    ConcreteUnavailableError,
    concrete_available,
    concrete_versions,
    encrypted_max_smoke,
    require_concrete,
)

__all__ = [
    "ConcreteUnavailableError",
    "concrete_available",
    "concrete_versions",
    "encrypted_max_smoke",
    "require_concrete",
]
