"""Encrypted ensemble argmax under TFHE (Concrete): quantization, circuits, and the end-to-end run.

SecPE (Zhang et al., ECAI 2024, arXiv:2502.00847) sums the m per-prompt class-score vectors of a
prompt ensemble under encryption and takes the argmax as an encrypted one-hot vector, with a
log-depth CKKS rotation tournament. Here the same aggregation runs in TFHE with exact integers:

    client:  q[j, c] = quantize(scores[j, c])            j < m prompts, c < k classes
             ct = Enc(q)                                 (secret key stays here)
    server:  s[c] = sum_j q[j, c]                        (free: additions, no bootstrapping)
             y = ARGMAX_VARIANT(s)                       (one-hot or index, still encrypted)
    client:  argmax = first index of Dec(y)              (numpy rule: the lowest tied index)

Argmax circuit structures (cost in programmable bootstraps, PBS, with 1-TLU comparisons):

* ``sequential``: running ``max`` chain ``M = max(...max(max(s0, s1), s2)...)``, then
  ``s == M`` (Phoenix-style O(k) baseline, depth k-1): k-1 + k PBS.
* ``tree``: halving tournament ``np.max`` (SecPE's log-depth idea, depth log2 k), then
  ``s == M``: also k-1 + k PBS. In TFHE the PBS count, not the depth, sets the latency on few cores.
* ``pairs``: all-pairs comparisons ``c_ij = [s_i >= s_j]`` for i < j (k(k-1)/2 PBS, depth 1),
  wins_i = sum_{j>i} c_ij + sum_{j<i} (1 - c_ji); the one-hot ``wins == k-1`` (k PBS) is exactly
  one-hot with the lowest tied index winning.
* ``packed``: index packing ``v_c = s_c * K + (K-1-c)`` (K = 2^ceil(log2 k)), ``np.max(v)``,
  then the index ``K-1 - (max mod K)`` (k-1 + 1 PBS, but every TLU is log2 K bits wider).
* ``tree_round1`` / ``tree_round2``: approximate; ``fhe.round_bit_pattern`` (approximate
  exactness) removes 1 or 2 least significant bits of the sums, a shift TLU brings them to the
  narrow width, then the tree. Not exact: near-ties (gaps below 2^lsbs) can flip. Measured: the
  rounding PBS and the overflow bit cost more than the narrower tree saves at 4-6 bits.

One-hot outputs of ``sequential``/``tree``/``tree_round*`` are multi-hot on ties; the client
takes the first one, which is numpy's tie rule (ties are the client's own information, the
server learns nothing either way).

Concrete's comparison and min/max lowering is the largest cost lever (measured ~10x at 4 bits),
so each structure is combined with a strategy: ``promoted`` (``ONE_TLU_PROMOTED`` for both:
``max(x, y) = max(x - y, 0) + y``, one TLU at one extra bit), ``casted`` (``THREE_TLU_CASTED``, no
extra bit, up to 3 TLUs) or ``default`` (Concrete's choice, which falls back to ``CHUNKED``).
A variant is named ``"structure:strategy"``; a bare structure means ``promoted``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float, Int

from jaxtrust.fhe._backend import concrete_available, require_concrete

STRUCTURES: tuple[str, ...] = (
    "sequential",
    "tree",
    "pairs",
    "packed",
    "tree_round1",
    "tree_round2",
)
STRATEGIES: tuple[str, ...] = ("promoted", "casted", "default")
EXACT_STRUCTURES: tuple[str, ...] = ("sequential", "tree", "pairs", "packed")
ARGMAX_VARIANTS: tuple[str, ...] = tuple(f"{s}:{t}" for s in STRUCTURES for t in STRATEGIES)
# The fastest exact variant on the measured grid (benchmarks/fhe_argmax.py, RESULTS.md):
# tree and sequential tie on PBS count with 1-TLU comparisons; tree's log depth makes it the
# one that benefits from more cores, so it is the default.
DEFAULT_ARGMAX_VARIANT: str = "tree:promoted"
NAIVE_ARGMAX_VARIANT: str = "sequential:default"
MAX_BITS = 8


def parse_variant(variant: str) -> tuple[str, str]:
    """Split ``"structure[:strategy]"`` and check both parts; a bare structure means ``promoted``."""
    if not isinstance(variant, str):
        raise TypeError(
            f"variant must be a string like 'tree:promoted', got {type(variant).__name__}"
        )
    structure, _, strategy = variant.partition(":")
    strategy = strategy or "promoted"
    if structure not in STRUCTURES:
        raise ValueError(
            f"variant structure must be one of {STRUCTURES}, got {structure!r} (in {variant!r})"
        )
    if strategy not in STRATEGIES:
        raise ValueError(
            f"variant strategy must be one of {STRATEGIES}, got {strategy!r} (in {variant!r})"
        )
    return structure, strategy


def is_exact(variant: str) -> bool:
    """Whether the variant's decrypted argmax always equals the plaintext quantized argmax."""
    return parse_variant(variant)[0] in EXACT_STRUCTURES


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """The client's quantization of score vectors (see :func:`quantize_scores`).

    Attributes:
      bits: bit width of the encrypted SUM over prompts (the circuit's input range is
        ``[0, 2**bits)`` after summation).
      prompts: m, the number of prompts summed.
      classes: k.
      levels: L, the largest per-prompt integer; ``prompts * levels <= 2**bits - 1``.
      offset: per-input minimum subtracted, shape [n].
      scale: per-input quantization step (score units per integer), shape [n].
    """

    bits: int
    prompts: int
    classes: int
    levels: int
    offset: np.ndarray
    scale: np.ndarray

    def dequantize(self, ints: np.ndarray) -> np.ndarray:
        """Approximate scores from per-prompt integers [n, m, k]."""
        return ints * self.scale[:, None, None] + self.offset[:, None, None]


def levels_for(bits: int, prompts: int) -> int:
    """Largest per-prompt integer L with ``prompts * L <= 2**bits - 1``."""
    levels = (2**bits - 1) // prompts
    if levels < 1:
        raise ValueError(
            f"bits={bits} cannot hold the sum of {prompts} prompts (need 2**bits - 1 >= prompts)"
        )
    return levels


def _check_bits(bits: int) -> None:
    if (
        isinstance(bits, bool)
        or not isinstance(bits, (int, np.integer))
        or not 2 <= bits <= MAX_BITS
    ):
        raise ValueError(f"bits must be an integer in [2, {MAX_BITS}], got {bits!r}")


def _check_scores(scores: Any) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 3 or scores.shape[0] < 1 or scores.shape[1] < 1 or scores.shape[2] < 2:
        raise ValueError(
            f"scores must have shape [n, m, k] with n, m >= 1 and k >= 2, got {scores.shape}"
        )
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(
        scores.dtype, np.complexfloating
    ):
        raise TypeError(f"scores must be real numbers, got dtype {scores.dtype}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    return scores.astype(np.float64)


def quantize_scores(
    scores: Float[np.ndarray, "n m k"], bits: int
) -> tuple[Int[np.ndarray, "n m k"], QuantSpec]:
    """Quantize per-prompt score vectors so that their encrypted sum fits ``bits`` bits.

    Rule (per input i, one affine map shared by all its m prompts and k classes, so the sum over
    prompts stays a soft vote on a common scale)::

        L      = floor((2**bits - 1) / m)                  # per-prompt integer range [0, L]
        lo_i   = min_{j,c} scores[i, j, c]
        step_i = (max_{j,c} scores[i, j, c] - lo_i) / L     (1 when all scores are equal)
        q[i, j, c] = round((scores[i, j, c] - lo_i) / step_i)        in [0, L]

    so ``sum_j q[i, j, c] <= m L <= 2**bits - 1``. The plaintext argmax of that quantized sum is
    the reference the encrypted result must equal; its disagreement with the float argmax is the
    quantization error, reported separately.

    Args:
      scores: float array [n, m, k] (n inputs, m prompts, k >= 2 classes).
      bits: bit width of the encrypted sum, 2..8.

    Returns:
      ``(q, spec)``: int64 array [n, m, k] in ``[0, L]`` and the :class:`QuantSpec`.

    Example:
      >>> q, spec = quantize_scores(np.array([[[0.1, 0.9], [0.4, 0.2]]]), bits=4)
      >>> int(spec.levels), q.tolist()
      (7, [[[0, 7], [3, 1]]])
    """
    _check_bits(bits)
    scores = _check_scores(scores)
    n, m, k = scores.shape
    levels = levels_for(bits, m)
    lo = scores.min(axis=(1, 2))
    span = scores.max(axis=(1, 2)) - lo
    step = np.where(span > 0, span / levels, 1.0)
    q = np.rint((scores - lo[:, None, None]) / step[:, None, None]).astype(np.int64)
    q = np.clip(q, 0, levels)
    return q, QuantSpec(bits=int(bits), prompts=m, classes=k, levels=levels, offset=lo, scale=step)


def check_quantized(q: Any, *, prompts: int, classes: int, bits: int) -> np.ndarray:
    """Validate client integers [n, m, k] (or [m, k]) against a circuit's shape and range."""
    q = np.asarray(q)
    if not np.issubdtype(q.dtype, np.integer):
        raise TypeError(f"quantized scores must be integers, got dtype {q.dtype}")
    if q.shape[-2:] != (prompts, classes):
        raise ValueError(
            f"quantized scores must end in shape (m={prompts}, k={classes}) to match the circuit, got {q.shape}"
        )
    levels = levels_for(bits, prompts)
    if q.size and (q.min() < 0 or q.max() > levels):
        raise ValueError(
            f"quantized scores must lie in [0, {levels}] (bits={bits}, m={prompts}: the sum must fit {bits} bits), "
            f"got {q.min()}..{q.max()}; use quantize_scores"
        )
    return q.astype(np.int64)


def plaintext_argmax(q: Int[np.ndarray, "n m k"]) -> Int[np.ndarray, " n"]:
    """Argmax of the summed integers, lowest index on ties (numpy's rule)."""
    return np.argmax(np.asarray(q).sum(axis=-2), axis=-1)


def decode_output(out: np.ndarray, structure: str) -> int:
    """Client-side decoding of the decrypted circuit output to a class index."""
    out = np.asarray(out)
    if structure == "packed":
        return int(out)
    hot = np.flatnonzero(out)
    if hot.size == 0:  # impossible for exact circuits; kept loud for approximate ones
        raise RuntimeError(f"decrypted one-hot has no set entry: {out.tolist()}")
    return int(hot[0])


# ---------------------------------------------------------------------------------------------
# Circuits (need Concrete)


def _configuration(
    fhe: Any, strategy: str, key_cache_dir: str | os.PathLike | None = None, **extra: Any
) -> Any:
    kwargs: dict[str, Any] = dict(extra)
    if strategy == "promoted":
        kwargs["comparison_strategy_preference"] = [fhe.ComparisonStrategy.ONE_TLU_PROMOTED]
        kwargs["min_max_strategy_preference"] = [fhe.MinMaxStrategy.ONE_TLU_PROMOTED]
    elif strategy == "casted":
        kwargs["comparison_strategy_preference"] = [fhe.ComparisonStrategy.THREE_TLU_CASTED]
        kwargs["min_max_strategy_preference"] = [fhe.MinMaxStrategy.THREE_TLU_CASTED]
    if key_cache_dir is not None:  # tests only: keys reused across runs (insecure)
        kwargs.update(
            enable_unsafe_features=True,
            use_insecure_key_cache=True,
            insecure_key_cache_location=str(key_cache_dir),
        )
    return fhe.Configuration(**kwargs)


def _argmax_function(fhe: Any, structure: str, k: int):
    """The server-side function of the encrypted [m, k] integers."""
    width = max(1, math.ceil(math.log2(k)))
    pack = 2**width

    def sequential(s):
        best = s[0]
        for c in range(1, k):
            best = np.maximum(best, s[c])
        return s == best

    def tree(s):
        return s == np.max(s)

    def pairs(s):
        geq = {}  # geq[i, j] = [s_i >= s_j] for i < j: the lower index wins ties
        for i in range(k):
            for j in range(i + 1, k):
                geq[i, j] = s[i] >= s[j]
        wins = []
        for i in range(k):
            total = 0
            for j in range(k):
                if j > i:
                    total = total + geq[i, j]
                elif j < i:
                    total = total + (1 - geq[j, i])
            wins.append(total)
        return fhe.array(wins) == (k - 1)

    def packed(s):
        tags = np.arange(pack - 1, pack - 1 - k, -1)  # lower index -> larger tag -> wins ties
        top = np.max(s * pack + tags)
        return (pack - 1) - (top % pack)

    def rounded(lsbs):
        def f(s):
            # Rounding alone keeps the value at full scale (x - y in the max would be as wide as
            # before); the shift TLU after it runs at the rounded width and makes the rest narrow.
            r = fhe.round_bit_pattern(s, lsbs_to_remove=lsbs, exactness=fhe.Exactness.APPROXIMATE)
            r = fhe.univariate(lambda v: v >> lsbs)(r)
            return r == np.max(r)

        return f

    body = {
        "sequential": sequential,
        "tree": tree,
        "pairs": pairs,
        "packed": packed,
        "tree_round1": rounded(1),
        "tree_round2": rounded(2),
    }[structure]

    def circuit(x):
        return body(np.sum(x, axis=0))

    return circuit


def _inputset(prompts: int, classes: int, bits: int, seed: int = 0) -> list[np.ndarray]:
    """Random per-prompt integers plus the corners, so every intermediate's range is covered."""
    levels = levels_for(bits, prompts)
    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, levels + 1, size=(prompts, classes)) for _ in range(48)]
    samples += [
        np.zeros((prompts, classes), np.int64),
        np.full((prompts, classes), levels, np.int64),
    ]
    for c in range(classes):  # one class at full range, the others at zero: largest differences
        corner = np.zeros((prompts, classes), np.int64)
        corner[:, c] = levels
        samples += [corner, levels - corner]
    return samples


def compile_argmax(
    *,
    prompts: int,
    classes: int,
    bits: int,
    variant: str = DEFAULT_ARGMAX_VARIANT,
    key_cache_dir: str | os.PathLike | None = None,
) -> Any:
    """Compile the sum-then-argmax circuit for [m, k] encrypted integers (a ``fhe.Circuit``)."""
    _check_bits(bits)
    if not isinstance(classes, (int, np.integer)) or classes < 2:
        raise ValueError(f"classes (k) must be an integer >= 2, got {classes!r}")
    if not isinstance(prompts, (int, np.integer)) or prompts < 1:
        raise ValueError(f"prompts (m) must be an integer >= 1, got {prompts!r}")
    levels_for(bits, prompts)
    structure, strategy = parse_variant(variant)
    fhe = require_concrete()
    compiler = fhe.Compiler(_argmax_function(fhe, structure, int(classes)), {"x": "encrypted"})
    return compiler.compile(
        _inputset(int(prompts), int(classes), bits), _configuration(fhe, strategy, key_cache_dir)
    )


def circuit_stats(circuit: Any) -> dict[str, float]:
    """PBS count, bit width and key/ciphertext sizes of a compiled circuit."""
    return {
        "pbs": int(circuit.programmable_bootstrap_count),
        "max_bit_width": int(circuit.graph.maximum_integer_bit_width()),
        "bootstrap_key_bytes": int(circuit.size_of_bootstrap_keys),
        "keyswitch_key_bytes": int(circuit.size_of_keyswitch_keys),
        "input_ciphertext_bytes": int(circuit.size_of_inputs),
        "output_ciphertext_bytes": int(circuit.size_of_outputs),
        "global_p_error": float(circuit.global_p_error),
    }


# ---------------------------------------------------------------------------------------------
# Public API


@dataclasses.dataclass
class EncryptedEnsembleResult:
    """Outcome of :func:`encrypted_ensemble_argmax`.

    Attributes:
      argmax: decrypted class index per input, [n].
      plaintext_argmax: argmax of the quantized sum in the clear (numpy tie rule), [n].
      matches: whether the two agree on every input.
      stats: compile_s, keygen_s, encrypt_s/run_s/decrypt_s (mean per input), pbs,
        max_bit_width, evaluation_key_bytes, input/output_ciphertext_bytes, variant, exact, ...
    """

    argmax: np.ndarray
    plaintext_argmax: np.ndarray
    matches: bool
    stats: dict[str, Any]

    def to_payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"argmax": self.argmax, "plaintext_argmax": self.plaintext_argmax}, {
            "matches": self.matches,
            "stats": self.stats,
        }

    @classmethod
    def from_payload(
        cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> EncryptedEnsembleResult:
        return cls(
            np.asarray(arrays["argmax"]),
            np.asarray(arrays["plaintext_argmax"]),
            bool(meta["matches"]),
            dict(meta["stats"]),
        )


def encrypted_ensemble_argmax(
    scores: Float[np.ndarray, "n m k"],
    *,
    bits: int,
    variant: str = DEFAULT_ARGMAX_VARIANT,
    key_cache_dir: str | os.PathLike | None = None,
) -> EncryptedEnsembleResult:
    """Private soft-vote argmax of a prompt ensemble with the real client/server split.

    The client quantizes (:func:`quantize_scores`) and encrypts each input's [m, k] integers; the
    server, holding only the compiled circuit and the evaluation keys, sums over prompts and
    evaluates the argmax ``variant``; the client decrypts (see the module docstring for the
    variants). Keys, circuit and ciphertexts cross the boundary as Concrete-serialized bytes
    (:mod:`jaxtrust.fhe.client`, :mod:`jaxtrust.fhe.server`).

    Runs in-process when Concrete imports, else in the fhe environment through a subprocess
    (``$JAXTRUST_FHE_PYTHON`` or ``<repo>/.venv-fhe/bin/python``), else raises
    :class:`~jaxtrust.fhe.ConcreteUnavailableError` with the install command.

    Args:
      scores: float [n, m, k] per-prompt class scores (e.g. verbalizer log-probabilities).
      bits: bit width of the encrypted sum (2..8); 4 is fast, 8 needs minutes and GBs of keys.
      variant: ``"structure:strategy"`` from :data:`ARGMAX_VARIANTS`.
      key_cache_dir: insecure key cache, for tests only.

    Returns:
      :class:`EncryptedEnsembleResult`.

    Example:
      >>> r = encrypted_ensemble_argmax(np.random.randn(3, 2, 4), bits=4)  # doctest: +SKIP
      >>> r.matches
      True
    """
    parse_variant(variant)
    q, _ = quantize_scores(scores, bits)
    if not concrete_available():
        from jaxtrust.fhe._subprocess import delegate

        arrays, meta = delegate(
            "encrypted_ensemble_argmax",
            {"scores": np.asarray(scores, np.float64)},
            {
                "bits": int(bits),
                "variant": variant,
                "key_cache_dir": None if key_cache_dir is None else str(key_cache_dir),
            },
        )
        return EncryptedEnsembleResult.from_payload(arrays, meta)

    from jaxtrust.fhe.client import ArgmaxClient
    from jaxtrust.fhe.server import ArgmaxServer, build_deployment

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
) -> list[dict[str, Any]]:
    """Cost and exactness of each argmax variant over k classes x bit widths.

    For each (variant, k, bits): compile, generate keys, then run ``inputs`` random and tie-heavy
    [prompts, k] integer inputs ``repeats`` times (median run time per input), compare with
    :func:`plaintext_argmax`. Runs in-process with Concrete, else in the fhe environment.

    Args:
      ks: class counts, each >= 2.
      bits: bit widths of the encrypted sum, each 2..8.
      variants: names from :data:`ARGMAX_VARIANTS` (bare structures mean ``promoted``).
      repeats: timed repetitions per input.
      prompts: m, the prompts summed inside the circuit.
      inputs: number of inputs evaluated per cell (>= 3 includes the tie cases).

    Returns:
      One dict per cell: variant, k, bits, compile_s, keygen_s, encrypt_s, run_s, decrypt_s, pbs,
      max_bit_width, key and ciphertext bytes, exact (all inputs matched), errors, exact_variant.
    """
    ks = [int(k) for k in np.atleast_1d(ks)]
    bits_list = [int(b) for b in np.atleast_1d(bits)]
    variants = [variants] if isinstance(variants, str) else list(variants)
    for v in variants:
        parse_variant(v)
    for b in bits_list:
        _check_bits(b)
    if any(k < 2 for k in ks):
        raise ValueError(f"ks must all be >= 2, got {ks}")
    if repeats < 1 or inputs < 1:
        raise ValueError(f"repeats and inputs must be >= 1, got {repeats}, {inputs}")
    if not concrete_available():
        from jaxtrust.fhe._subprocess import delegate

        _, meta = delegate(
            "argmax_grid",
            {},
            {
                "ks": ks,
                "bits": bits_list,
                "variants": variants,
                "repeats": repeats,
                "prompts": prompts,
                "inputs": inputs,
                "seed": seed,
                "key_cache_dir": None if key_cache_dir is None else str(key_cache_dir),
            },
        )
        return meta["rows"]
    rows = []
    for variant in variants:
        structure, _ = parse_variant(variant)
        for k in ks:
            for b in bits_list:
                rows.append(
                    _grid_cell(
                        variant, structure, k, b, repeats, prompts, inputs, seed, key_cache_dir
                    )
                )
    return rows


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
