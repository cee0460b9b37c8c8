"""The encrypted ensemble argmax run end to end in one process: client, server and the grid.

SecPE (Zhang et al., ECAI 2024, arXiv:2502.00847) sums the m per-prompt class-score vectors of a
prompt ensemble under encryption and returns the argmax as an encrypted one-hot vector. Here the
protocol runs in TFHE (Concrete) with the real client/server split of :mod:`jaxtrust.fhe.client`
and :mod:`jaxtrust.fhe.server`::

    client:  q = quantize(scores); keys; ct = Enc(q)          (secret key stays here)
    server:  y = ARGMAX_VARIANT(sum_j ct[j])                   (evaluation keys only)
    client:  argmax = first index of Dec(y)                    (numpy's tie rule)

These functions need Concrete and are the registered entry points ``encrypted_ensemble_argmax``
and ``argmax_grid`` (:mod:`jaxtrust.fhe.registry`); users call the wrappers of
:mod:`jaxtrust.fhe.api`, which run them here or in the fhe environment.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxtrust.fhe.circuits import (
    EXACT_STRUCTURES,
    circuit_stats,
    compile_argmax,
    decode_output,
    parse_variant,
)
from jaxtrust.fhe.client import ArgmaxClient
from jaxtrust.fhe.quantize import levels_for, plaintext_argmax, quantize_scores
from jaxtrust.fhe.registry import entry_point
from jaxtrust.fhe.results import EncryptedEnsembleResult
from jaxtrust.fhe.server import ArgmaxServer, build_deployment

__all__ = ["run_argmax_grid", "run_ensemble_argmax"]


def run_ensemble_argmax(
    scores: np.ndarray,
    *,
    bits: int,
    variant: str,
    key_cache_dir: str | os.PathLike | None = None,
) -> EncryptedEnsembleResult:
    """Quantize, deploy, generate keys, encrypt, run and decrypt every input (needs Concrete).

    Args, Returns: as :func:`jaxtrust.fhe.encrypted_ensemble_argmax`, which validates them.
    """
    q, _ = quantize_scores(scores, bits)
    n, m, k = q.shape
    structure, _ = parse_variant(variant)
    with tempfile.TemporaryDirectory(prefix="jaxtrust-fhe-") as tmp:
        t0 = time.perf_counter()
        deployment = build_deployment(
            Path(tmp) / "deploy", prompts=m, classes=k, bits=bits, variant=variant
        )
        compile_s = time.perf_counter() - t0
        server = ArgmaxServer.load(deployment)
        client = ArgmaxClient(server.client_specs(), key_cache_dir=key_cache_dir)
        t0 = time.perf_counter()
        client.generate_keys()
        keygen_s = time.perf_counter() - t0
        evaluation_keys = client.evaluation_keys()
        server.set_evaluation_keys(evaluation_keys)
        decrypted = np.zeros(n, np.int64)
        times = {"encrypt_s": 0.0, "run_s": 0.0, "decrypt_s": 0.0}
        in_bytes = out_bytes = 0
        for i in range(n):
            t0 = time.perf_counter()
            ct = client.encrypt(q[i])
            t1 = time.perf_counter()
            result = server.run(ct)
            t2 = time.perf_counter()
            decrypted[i] = client.decrypt(result)
            t3 = time.perf_counter()
            times["encrypt_s"] += t1 - t0
            times["run_s"] += t2 - t1
            times["decrypt_s"] += t3 - t2
            in_bytes, out_bytes = len(ct), len(result)
        stats: dict[str, Any] = {
            "variant": variant,
            "exact": structure in EXACT_STRUCTURES,
            "n": n,
            "m": m,
            "k": k,
            "bits": int(bits),
        }
        stats.update(
            compile_s=compile_s, keygen_s=keygen_s, **{key: v / n for key, v in times.items()}
        )
        stats.update(server.stats)
        stats.update(
            evaluation_key_bytes=len(evaluation_keys),
            input_message_bytes=in_bytes,
            output_message_bytes=out_bytes,
        )
    reference = plaintext_argmax(q)
    return EncryptedEnsembleResult(
        decrypted, reference, bool(np.array_equal(decrypted, reference)), stats
    )


@entry_point("encrypted_ensemble_argmax")
def _ensemble_entry(arrays: dict[str, np.ndarray], kwargs: dict[str, Any]):
    return run_ensemble_argmax(arrays["scores"], **kwargs).to_payload()


def _grid_inputs(prompts: int, classes: int, bits: int, count: int, seed: int) -> np.ndarray:
    """Random per-prompt integers plus tie-heavy ones (equal maxima, 1-LSB gaps)."""
    levels = levels_for(bits, prompts)
    rng = np.random.default_rng(seed)
    q = rng.integers(0, levels + 1, size=(count, prompts, classes))
    if count >= 2:
        q[1] = levels  # everything tied: the answer is class 0
    if count >= 3:
        q[2] = rng.integers(0, 2, size=(prompts, classes))  # many ties at small values
    return q


def run_argmax_grid(
    ks: list[int],
    bits: list[int],
    variants: list[str],
    *,
    repeats: int,
    prompts: int,
    inputs: int,
    seed: int,
    key_cache_dir: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Every (variant, k, bits) cell of :func:`jaxtrust.fhe.argmax_grid`, in this process."""
    rows = []
    for variant in variants:
        structure, _ = parse_variant(variant)
        for k in ks:
            for b in bits:
                rows.append(
                    _grid_cell(
                        variant, structure, k, b, repeats, prompts, inputs, seed, key_cache_dir
                    )
                )
    return rows


@entry_point("argmax_grid")
def _grid_entry(arrays: dict[str, np.ndarray], kwargs: dict[str, Any]):
    return {}, {"rows": run_argmax_grid(**kwargs)}


def _grid_cell(
    variant, structure, k, bits, repeats, prompts, inputs, seed, key_cache_dir
) -> dict[str, Any]:
    t0 = time.perf_counter()
    circuit = compile_argmax(
        prompts=prompts, classes=k, bits=bits, variant=variant, key_cache_dir=key_cache_dir
    )
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    circuit.keygen()
    keygen_s = time.perf_counter() - t0
    q = _grid_inputs(prompts, k, bits, inputs, seed)
    reference = plaintext_argmax(q)
    enc, run, dec, errors = [], [], [], 0
    for i in range(inputs):
        for _ in range(repeats):
            t0 = time.perf_counter()
            ct = circuit.encrypt(q[i])
            t1 = time.perf_counter()
            out = circuit.run(ct)
            t2 = time.perf_counter()
            got = decode_output(circuit.decrypt(out), structure)
            t3 = time.perf_counter()
            enc.append(t1 - t0)
            run.append(t2 - t1)
            dec.append(t3 - t2)
        errors += int(got != reference[i])
    row = {
        "variant": variant,
        "k": k,
        "bits": bits,
        "prompts": prompts,
        "compile_s": compile_s,
        "keygen_s": keygen_s,
    }
    row.update(
        encrypt_s=float(np.median(enc)),
        run_s=float(np.median(run)),
        decrypt_s=float(np.median(dec)),
    )
    row.update(circuit_stats(circuit))
    row.update(
        exact=errors == 0, errors=errors, inputs=inputs, exact_variant=structure in EXACT_STRUCTURES
    )
    return row
