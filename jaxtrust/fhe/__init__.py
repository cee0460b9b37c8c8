"""Fully homomorphic encryption (FHE) backends for SecPE-style private prompt ensembling.

The package is layered, and each layer imports only the ones below it:

1. ``_backend`` (lazy Concrete import), ``_messages`` (wire format), ``quantize`` (client-side
   integers), ``environment`` (finding ``.venv-fhe`` / ``.venv-ckks``), ``registry`` (named
   entry points), ``results``;
2. ``circuits``: the argmax circuit variants (TFHE, Concrete);
3. ``client`` and ``server``: the deployment split (the server never holds a secret key);
4. ``protocol`` and ``verbalizer`` (TFHE) and ``ckks`` (OpenFHE): in-process runs, registered
   as entry points;
5. ``delegation``: runs an entry point here or, by name, in its backend's environment
   (``_worker`` is the process it starts there); ``api``: the validated public functions.

Concrete pins numpy 1.26, and OpenFHE's wheel is built for CPython 3.10, so neither shares the
main environment (jax 0.10, numpy 2); ``make setup`` builds ``.venv-fhe`` (and ``.venv-ckks``
where a Python 3.10 exists). Importing :mod:`jaxtrust` or this package never imports Concrete or
OpenFHE; the public functions run in process when the backend imports, else they delegate.
"""

from jaxtrust.fhe._backend import (
    ConcreteUnavailableError,
    concrete_available,
    concrete_versions,
    encrypted_max_smoke,
    require_concrete,
)
from jaxtrust.fhe.api import argmax_grid, encrypted_ensemble_argmax, encrypted_verbalizer
from jaxtrust.fhe.circuits import (
    ARGMAX_VARIANTS,
    DEFAULT_ARGMAX_VARIANT,
    NAIVE_ARGMAX_VARIANT,
    STRATEGIES,
    STRUCTURES,
    is_exact,
    parse_variant,
)
from jaxtrust.fhe.environment import (
    CKKS,
    FHE,
    EnvironmentNotFoundError,
    environment_status,
    find_python,
)
from jaxtrust.fhe.quantize import QuantSpec, plaintext_argmax, quantize_scores
from jaxtrust.fhe.results import EncryptedEnsembleResult, EncryptedVerbalizerResult

__all__ = [
    "ARGMAX_VARIANTS",
    "CKKS",
    "DEFAULT_ARGMAX_VARIANT",
    "FHE",
    "NAIVE_ARGMAX_VARIANT",
    "STRATEGIES",
    "STRUCTURES",
    "ConcreteUnavailableError",
    "EncryptedEnsembleResult",
    "EncryptedVerbalizerResult",
    "EnvironmentNotFoundError",
    "QuantSpec",
    "argmax_grid",
    "concrete_available",
    "concrete_versions",
    "encrypted_ensemble_argmax",
    "encrypted_max_smoke",
    "encrypted_verbalizer",
    "environment_status",
    "find_python",
    "is_exact",
    "parse_variant",
    "plaintext_argmax",
    "quantize_scores",
    "require_concrete",
]
