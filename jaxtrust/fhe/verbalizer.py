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

import os
import time
from typing import Any

import numpy as np

from jaxtrust.fhe._backend import insecure_key_cache_options, require_concrete
from jaxtrust.fhe.registry import entry_point
from jaxtrust.fhe.results import EncryptedVerbalizerResult

__all__ = ["check_inputs", "run_encrypted_verbalizer"]


def check_inputs(
    hidden: Any, weights: Any, bias: Any, labels: Any, n_bits: int, fhe_mode: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Validate and convert the arguments of :func:`jaxtrust.fhe.encrypted_verbalizer`."""
    hidden = np.asarray(hidden, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if hidden.ndim < 2:
        raise ValueError(
            f"hidden must have shape [..., d] with at least one leading axis, got {hidden.shape}"
        )
    if weights.ndim != 2 or weights.shape[0] < 2 or weights.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weights must have shape [k >= 2, d={hidden.shape[-1]}] (label-word rows), got "
            f"{weights.shape}"
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


def run_encrypted_verbalizer(
    hidden: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    labels: np.ndarray | None = None,
    n_bits: int = 6,
    fhe_mode: str = "execute",
    key_cache_dir: str | os.PathLike | None = None,
) -> EncryptedVerbalizerResult:
    """Compile, key-generate and run the quantized verbalizer layer here (needs Concrete-ML).

    Args, Returns: as :func:`jaxtrust.fhe.encrypted_verbalizer`, which validates them.
    """
    hidden, weights, bias, labels = check_inputs(hidden, weights, bias, labels, n_bits, fhe_mode)
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
    configuration = fhe.Configuration(**insecure_key_cache_options(key_cache_dir))
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


@entry_point("encrypted_verbalizer")
def _verbalizer_entry(arrays: dict[str, np.ndarray], kwargs: dict[str, Any]):
    labels = kwargs.pop("labels", None)
    return run_encrypted_verbalizer(
        arrays["hidden"],
        arrays["weights"],
        arrays.get("bias"),
        labels=None if labels is None else np.asarray(labels),
        **kwargs,
    ).to_payload()
