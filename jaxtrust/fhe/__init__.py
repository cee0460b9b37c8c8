"""Fully homomorphic encryption (FHE) backends: SecPE-style private prompt ensembling.

Concrete (``concrete-python`` / Concrete-ML) pins numpy 1.26 and an old torch, so it cannot
share an environment with the newest jax; it lives behind the ``fhe`` extra, installed in its
own environment (``make setup`` builds ``.venv-fhe``). Importing :mod:`jaxtrust` never imports
Concrete: FHE entry points call :func:`require_concrete`, which explains how to install it, and
without Concrete they run themselves in the fhe environment (:mod:`jaxtrust.fhe._subprocess`).
"""

from jaxtrust.fhe._backend import (
    ConcreteUnavailableError,
    concrete_available,
    concrete_versions,
    encrypted_max_smoke,
    require_concrete,
)
from jaxtrust.fhe.argmax import (
    ARGMAX_VARIANTS,
    DEFAULT_ARGMAX_VARIANT,
    NAIVE_ARGMAX_VARIANT,
    STRATEGIES,
    STRUCTURES,
    EncryptedEnsembleResult,
    QuantSpec,
    argmax_grid,
    encrypted_ensemble_argmax,
    is_exact,
    parse_variant,
    plaintext_argmax,
    quantize_scores,
)
from jaxtrust.fhe.verbalizer import EncryptedVerbalizerResult, encrypted_verbalizer

__all__ = [
    "ARGMAX_VARIANTS",
    "DEFAULT_ARGMAX_VARIANT",
    "NAIVE_ARGMAX_VARIANT",
    "STRATEGIES",
    "STRUCTURES",
    "ConcreteUnavailableError",
    "EncryptedEnsembleResult",
    "EncryptedVerbalizerResult",
    "QuantSpec",
    "argmax_grid",
    "concrete_available",
    "concrete_versions",
    "encrypted_ensemble_argmax",
    "encrypted_max_smoke",
    "encrypted_verbalizer",
    "is_exact",
    "parse_variant",
    "plaintext_argmax",
    "quantize_scores",
    "require_concrete",
]
