"""The FHE functions users call: validated here, run in this process or in the fhe environment.

Each function checks its arguments in the caller's environment (so a bad argument fails fast
with a clear message, without starting a process), then runs its entry point through
:func:`jaxtrust.fhe.delegation.call`: in process when Concrete imports here, else in the fhe
environment (:mod:`jaxtrust.fhe.environment`). Their in-process bodies are
:mod:`jaxtrust.fhe.protocol` and :mod:`jaxtrust.fhe.verbalizer`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from jaxtyping import Float

from jaxtrust.fhe.circuits import DEFAULT_ARGMAX_VARIANT, parse_variant
from jaxtrust.fhe.delegation import call
from jaxtrust.fhe.quantize import check_bits, quantize_scores
from jaxtrust.fhe.results import EncryptedEnsembleResult, EncryptedVerbalizerResult
from jaxtrust.fhe.verbalizer import check_inputs

__all__ = ["argmax_grid", "encrypted_ensemble_argmax", "encrypted_verbalizer"]


def _path_or_none(path: str | os.PathLike | None) -> str | None:
    return None if path is None else str(path)


def encrypted_ensemble_argmax(
    scores: Float[np.ndarray, "n m k"],
    *,
    bits: int,
    variant: str = DEFAULT_ARGMAX_VARIANT,
    key_cache_dir: str | os.PathLike | None = None,
    timeout: float | None = None,
) -> EncryptedEnsembleResult:
    """Private soft-vote argmax of a prompt ensemble with the real client/server split.

    SecPE (Zhang et al., ECAI 2024, arXiv:2502.00847): the client quantizes
    (:func:`~jaxtrust.fhe.quantize_scores`) and encrypts each input's [m, k] integers ``q``; the
    server, holding only the compiled circuit and the evaluation keys, computes
    ``y = ARGMAX(sum_j q[j])`` (the variant of :mod:`jaxtrust.fhe.circuits`); the client decrypts
    and takes the first set index (numpy's tie rule). Keys, circuit and ciphertexts cross the
    boundary as Concrete-serialized bytes (:mod:`jaxtrust.fhe.client`, :mod:`jaxtrust.fhe.server`).

    Args:
      scores: float [n, m, k] per-prompt class scores (e.g. verbalizer log-probabilities).
      bits: bit width of the encrypted sum (2..8); 4 is fast, 8 needs minutes and GBs of keys.
      variant: ``"structure:strategy"`` from :data:`~jaxtrust.fhe.ARGMAX_VARIANTS`.
      key_cache_dir: Concrete's insecure key cache, for tests only.
      timeout: seconds before a delegated run is killed.

    Returns:
      :class:`~jaxtrust.fhe.EncryptedEnsembleResult`.

    Raises:
      ValueError / TypeError: bad scores, bits or variant. EnvironmentNotFoundError: Concrete is
      neither here nor in a findable fhe environment.

    Example:
      >>> r = encrypted_ensemble_argmax(np.random.randn(3, 2, 4), bits=4)  # doctest: +SKIP
      >>> r.matches
      True
    """
    parse_variant(variant)
    quantize_scores(scores, bits)  # validates scores and bits here, before any process starts
    arrays, meta = call(
        "encrypted_ensemble_argmax",
        {"scores": np.asarray(scores, np.float64)},
        {"bits": int(bits), "variant": variant, "key_cache_dir": _path_or_none(key_cache_dir)},
        timeout=timeout,
    )
    return EncryptedEnsembleResult.from_payload(arrays, meta)


def argmax_grid(
    ks: Any,
    bits: Any,
    variants: Any,
    *,
    repeats: int = 1,
    prompts: int = 3,
    inputs: int = 4,
    seed: int = 0,
    key_cache_dir: str | os.PathLike | None = None,
    timeout: float | None = None,
) -> list[dict[str, Any]]:
    """Cost and exactness of each argmax variant over k classes x bit widths (TFHE).

    For each (variant, k, bits): compile, generate keys, then run ``inputs`` random and tie-heavy
    [prompts, k] integer inputs ``repeats`` times (median run time per input), and compare with
    :func:`~jaxtrust.fhe.plaintext_argmax`.

    Args:
      ks: class counts, each >= 2.
      bits: bit widths of the encrypted sum, each 2..8.
      variants: names from :data:`~jaxtrust.fhe.ARGMAX_VARIANTS` (a bare structure means
        ``promoted``).
      repeats: timed repetitions per input.
      prompts: m, the prompts summed inside the circuit.
      inputs: inputs evaluated per cell (>= 3 includes the tie cases).
      seed: seed of the random inputs.
      key_cache_dir: Concrete's insecure key cache, for tests only.
      timeout: seconds before a delegated run is killed.

    Returns:
      One dict per cell: variant, k, bits, compile_s, keygen_s, encrypt_s, run_s, decrypt_s, pbs,
      max_bit_width, key and ciphertext bytes, exact (all inputs matched), errors, exact_variant.

    Example::

      rows = argmax_grid([4, 8], [4], ["sequential:default", "tree:promoted"])
    """
    ks = [int(k) for k in np.atleast_1d(ks)]
    bits_list = [int(b) for b in np.atleast_1d(bits)]
    variants = [variants] if isinstance(variants, str) else list(variants)
    for v in variants:
        parse_variant(v)
    for b in bits_list:
        check_bits(b)
    if any(k < 2 for k in ks):
        raise ValueError(f"ks must all be >= 2, got {ks}")
    if repeats < 1 or inputs < 1:
        raise ValueError(f"repeats and inputs must be >= 1, got {repeats}, {inputs}")
    _, meta = call(
        "argmax_grid",
        {},
        {
            "ks": ks,
            "bits": bits_list,
            "variants": variants,
            "repeats": int(repeats),
            "prompts": int(prompts),
            "inputs": int(inputs),
            "seed": int(seed),
            "key_cache_dir": _path_or_none(key_cache_dir),
        },
        timeout=timeout,
    )
    return meta["rows"]


def encrypted_verbalizer(
    hidden: Float[np.ndarray, "*batch d"],
    weights: Float[np.ndarray, "k d"],
    bias: Float[np.ndarray, " k"] | None = None,
    *,
    labels: np.ndarray | None = None,
    n_bits: int = 6,
    fhe_mode: str = "execute",
    key_cache_dir: str | os.PathLike | None = None,
    timeout: float | None = None,
) -> EncryptedVerbalizerResult:
    """Label-word scores ``hidden @ weights.T + bias`` computed by Concrete-ML over encrypted
    ``hidden`` (a post-training-quantized linear layer; see :mod:`jaxtrust.fhe.verbalizer`).

    Args:
      hidden: answer hidden states [..., d] (e.g. [n, m, d] for n inputs x m prompts); they also
        calibrate the quantization.
      weights: [k, d] label-word rows of the output embedding (e.g.
        :func:`jaxtrust.privacy.secpe.verbalizer_weights`).
      bias: optional [k].
      labels: optional true classes [...] for the accuracy drop.
      n_bits: bits of the layer's inputs, weights and outputs (Concrete-ML ``n_bits``), 2..8.
      fhe_mode: ``"execute"`` (real encryption) or ``"simulate"`` (Concrete's exact simulation).
      key_cache_dir: insecure key cache, tests only.
      timeout: seconds before a delegated run is killed.

    Returns:
      :class:`~jaxtrust.fhe.EncryptedVerbalizerResult`.

    Example:
      >>> r = encrypted_verbalizer(np.random.randn(4, 16), np.random.randn(2, 16))  # doctest: +SKIP
      >>> r.scores.shape
      (4, 2)
    """
    hidden, weights, bias, labels = check_inputs(hidden, weights, bias, labels, n_bits, fhe_mode)
    arrays = {"hidden": hidden, "weights": weights}
    if bias is not None:
        arrays["bias"] = bias
    out_arrays, meta = call(
        "encrypted_verbalizer",
        arrays,
        {
            "labels": None if labels is None else labels.tolist(),
            "n_bits": int(n_bits),
            "fhe_mode": fhe_mode,
            "key_cache_dir": _path_or_none(key_cache_dir),
        },
        timeout=timeout,
    )
    return EncryptedVerbalizerResult.from_payload(out_arrays, meta)
