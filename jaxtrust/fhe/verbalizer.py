"""The verbalizer projection over encrypted hidden states, as a Concrete-ML quantized linear layer.

In SecPE's pipeline the per-prompt class scores come from the LM's answer hidden state ``h``
(dimension d) and the verbalizer's label-word rows of the output embedding ``W`` (k x d):
``scores = h W^T (+ b)``. Here that projection runs under FHE with Concrete-ML: the client
quantizes and encrypts ``h``; the server evaluates the quantized linear layer (integer weights,
``n_bits`` bits for inputs/weights/outputs, post-training quantization calibrated on the given
hidden states); the client decrypts and de-quantizes the scores. The scores then feed
:func:`jaxtrust.fhe.encrypted_ensemble_argmax` after a client-side re-quantization (two circuits
with a client round trip between them, not one composed circuit).

The cost of quantization is reported two ways: the scores' max absolute error against the float
projection, and the argmax agreement with it (and the accuracy drop when labels are given).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np
from jaxtyping import Float

from jaxtrust.fhe._backend import concrete_available, require_concrete


@dataclasses.dataclass
class EncryptedVerbalizerResult:
    """Outcome of :func:`encrypted_verbalizer`.

    Attributes:
      scores: de-quantized FHE scores, hidden's leading shape + [k].
      float_scores: ``hidden @ weights.T + bias`` in float64, same shape.
      argmax_agreement: fraction of rows whose FHE argmax equals the float argmax.
      accuracy_loss: float accuracy minus FHE accuracy against ``labels`` when given, else
        ``1 - argmax_agreement``.
      max_abs_error: max |scores - float_scores|.
      stats: n_bits, fhe mode, compile/keygen/run seconds, pbs, max_bit_width.
    """

    scores: np.ndarray
    float_scores: np.ndarray
    argmax_agreement: float
    accuracy_loss: float
    max_abs_error: float
    stats: dict[str, Any]

    def to_payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
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
        return cls(scores=arrays["scores"], float_scores=arrays["float_scores"], **meta)


def _check(hidden: Any, weights: Any, bias: Any, labels: Any, n_bits: int, fhe_mode: str):
    hidden = np.asarray(hidden, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if hidden.ndim < 2:
        raise ValueError(
            f"hidden must have shape [..., d] with at least one leading axis, got {hidden.shape}"
        )
    if weights.ndim != 2 or weights.shape[0] < 2 or weights.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weights must have shape [k >= 2, d={hidden.shape[-1]}] (label-word rows), got {weights.shape}"
        )
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float64)
        if bias.shape != (weights.shape[0],):
            raise ValueError(f"bias must have shape [k={weights.shape[0]}], got {bias.shape}")
    if labels is not None:
        labels = np.asarray(labels)
        if (
            labels.shape != hidden.shape[:-1]
            or not np.issubdtype(labels.dtype, np.integer)
            or labels.min() < 0
            or labels.max() >= weights.shape[0]
        ):
            raise ValueError(
                f"labels must be integers in [0, {weights.shape[0]}) of shape {hidden.shape[:-1]}"
            )
    if not all(np.all(np.isfinite(a)) for a in (hidden, weights)):
        raise ValueError("hidden and weights must be finite")
    if (
        isinstance(n_bits, bool)
        or not isinstance(n_bits, (int, np.integer))
        or not 2 <= n_bits <= 8
    ):
        raise ValueError(f"n_bits must be an integer in [2, 8], got {n_bits!r}")
    if fhe_mode not in ("execute", "simulate"):
        raise ValueError(f"fhe_mode must be 'execute' or 'simulate', got {fhe_mode!r}")
    return hidden, weights, bias, labels


def encrypted_verbalizer(
    hidden: Float[np.ndarray, "*batch d"],
    weights: Float[np.ndarray, "k d"],
    bias: Float[np.ndarray, " k"] | None = None,
    *,
    labels: np.ndarray | None = None,
    n_bits: int = 6,
    fhe_mode: str = "execute",
    key_cache_dir: str | os.PathLike | None = None,
) -> EncryptedVerbalizerResult:
    """Label-word scores ``hidden @ weights.T + bias`` computed by Concrete-ML over encrypted ``hidden``.

    Args:
      hidden: answer hidden states [..., d] (e.g. [n, m, d] for n inputs x m prompts); they also
        calibrate the post-training quantization.
      weights: [k, d] label-word (class) rows of the output embedding, e.g.
        ``jaxtrust.fhe.ensemble.verbalizer_weights``.
      bias: optional [k].
      labels: optional true classes [...] for the accuracy drop.
      n_bits: bits for inputs, weights and outputs of the quantized layer (Concrete-ML ``n_bits``).
      fhe_mode: ``"execute"`` (real encryption) or ``"simulate"`` (Concrete's exact simulation).
      key_cache_dir: insecure key cache, tests only.

    Returns:
      :class:`EncryptedVerbalizerResult`.

    Example:
      >>> r = encrypted_verbalizer(np.random.randn(4, 16), np.random.randn(2, 16))  # doctest: +SKIP
      >>> r.scores.shape
      (4, 2)
    """
    hidden, weights, bias, labels = _check(hidden, weights, bias, labels, n_bits, fhe_mode)
    if not concrete_available():
        from jaxtrust.fhe._subprocess import delegate

        arrays = {"hidden": hidden, "weights": weights}
        if bias is not None:
            arrays["bias"] = bias
        kwargs = {
            "labels": None if labels is None else labels.tolist(),
            "n_bits": int(n_bits),
            "fhe_mode": fhe_mode,
            "key_cache_dir": None if key_cache_dir is None else str(key_cache_dir),
        }
        out_arrays, meta = delegate("encrypted_verbalizer", arrays, kwargs)
        return EncryptedVerbalizerResult.from_payload(out_arrays, meta)

    fhe = require_concrete()
    import torch
    from concrete.ml.torch.compile import compile_torch_model

    k, d = weights.shape
    rows = hidden.reshape(-1, d)
    layer = torch.nn.Linear(d, k, bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weights, dtype=torch.float32))
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    config_kwargs: dict[str, Any] = {}
    if key_cache_dir is not None:
        config_kwargs = dict(
            enable_unsafe_features=True,
            use_insecure_key_cache=True,
            insecure_key_cache_location=str(key_cache_dir),
        )
    configuration = fhe.Configuration(**config_kwargs)
    t0 = time.perf_counter()
    module = compile_torch_model(
        layer, rows.astype(np.float32), n_bits=int(n_bits), configuration=configuration
    )
    compile_s = time.perf_counter() - t0
    circuit = module.fhe_circuit
    keygen_s = 0.0
    if fhe_mode == "execute":
        t0 = time.perf_counter()
        circuit.keygen()
        keygen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = np.asarray(module.forward(rows.astype(np.float32), fhe=fhe_mode), dtype=np.float64)
    run_s = (time.perf_counter() - t0) / len(rows)
    float_scores = rows @ weights.T + (0.0 if bias is None else bias)
    fhe_arg, float_arg = scores.argmax(-1), float_scores.argmax(-1)
    agreement = float(np.mean(fhe_arg == float_arg))
    if labels is not None:
        flat = labels.reshape(-1)
        loss = float(np.mean(float_arg == flat) - np.mean(fhe_arg == flat))
    else:
        loss = 1.0 - agreement
    stats = {
        "n_bits": int(n_bits),
        "fhe_mode": fhe_mode,
        "rows": len(rows),
        "compile_s": compile_s,
        "keygen_s": keygen_s,
        "run_s_per_row": run_s,
    }
    stats.update(
        pbs=int(circuit.programmable_bootstrap_count),
        max_bit_width=int(circuit.graph.maximum_integer_bit_width()),
    )
    shape = hidden.shape[:-1] + (k,)
    return EncryptedVerbalizerResult(
        scores=scores.reshape(shape),
        float_scores=float_scores.reshape(shape),
        argmax_agreement=agreement,
        accuracy_loss=loss,
        max_abs_error=float(np.max(np.abs(scores - float_scores))),
        stats=stats,
    )
