"""What the encrypted entry points return, and their plain-data form for crossing processes.

Each result converts to ``(arrays, meta)`` (NumPy arrays + JSON values, :meth:`to_payload`) and
back (:meth:`from_payload`), which is all :mod:`jaxtrust.fhe.delegation` ever moves between
environments: no pickle.

Example:
  >>> r = EncryptedEnsembleResult(np.array([1]), np.array([1]), True, {"pbs": 7})
  >>> EncryptedEnsembleResult.from_payload(*r.to_payload()).stats
  {'pbs': 7}
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["EncryptedEnsembleResult", "EncryptedVerbalizerResult"]


@dataclasses.dataclass(frozen=True)
class EncryptedEnsembleResult:
    """Outcome of :func:`jaxtrust.fhe.encrypted_ensemble_argmax`.

    Attributes:
      argmax: decrypted class index per input, [n].
      plaintext_argmax: argmax of the quantized sum in the clear (numpy tie rule), [n].
      matches: whether the two agree on every input.
      stats: compile_s, keygen_s, encrypt_s/run_s/decrypt_s (mean per input), pbs,
        max_bit_width, evaluation_key_bytes, input/output message bytes, variant, exact, ...
    """

    argmax: np.ndarray
    plaintext_argmax: np.ndarray
    matches: bool
    stats: dict[str, Any]

    def to_payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, meta)``: the plain-data form."""
        return {"argmax": self.argmax, "plaintext_argmax": self.plaintext_argmax}, {
            "matches": self.matches,
            "stats": self.stats,
        }

    @classmethod
    def from_payload(
        cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> EncryptedEnsembleResult:
        """The inverse of :meth:`to_payload`."""
        return cls(
            np.asarray(arrays["argmax"]),
            np.asarray(arrays["plaintext_argmax"]),
            bool(meta["matches"]),
            dict(meta["stats"]),
        )


@dataclasses.dataclass(frozen=True)
class EncryptedVerbalizerResult:
    """Outcome of :func:`jaxtrust.fhe.encrypted_verbalizer`.

    Attributes:
      scores: de-quantized FHE scores, hidden's leading shape + [k].
      float_scores: ``hidden @ weights.T + bias`` in float64, same shape.
      argmax_agreement: fraction of rows whose FHE argmax equals the float argmax.
      accuracy_loss: float accuracy minus FHE accuracy against ``labels`` when given, else
        ``1 - argmax_agreement``.
      max_abs_error: max ``|scores - float_scores|``.
      stats: n_bits, fhe mode, compile/keygen/run seconds, pbs, max_bit_width.
    """

    scores: np.ndarray
    float_scores: np.ndarray
    argmax_agreement: float
    accuracy_loss: float
    max_abs_error: float
    stats: dict[str, Any]

    def to_payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, meta)``: the plain-data form."""
        meta = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("scores", "float_scores")
        }
        return {"scores": self.scores, "float_scores": self.float_scores}, meta

    @classmethod
    def from_payload(
        cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> EncryptedVerbalizerResult:
        """The inverse of :meth:`to_payload`."""
        return cls(scores=arrays["scores"], float_scores=arrays["float_scores"], **meta)
