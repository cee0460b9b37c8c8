"""The encrypted argmax circuits under TFHE (Concrete): variant names and compilation.

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

Example:
  >>> parse_variant("tree")
  ('tree', 'promoted')
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from jaxtrust.fhe._backend import insecure_key_cache_options, require_concrete
from jaxtrust.fhe.quantize import check_bits, levels_for

__all__ = [
    "ARGMAX_VARIANTS",
    "DEFAULT_ARGMAX_VARIANT",
    "EXACT_STRUCTURES",
    "NAIVE_ARGMAX_VARIANT",
    "STRATEGIES",
    "STRUCTURES",
    "circuit_stats",
    "compile_argmax",
    "decode_output",
    "is_exact",
    "parse_variant",
]

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
# The fastest exact variant on the measured grid (the project's argmax benchmark):
# tree and sequential tie on PBS count with 1-TLU comparisons; tree's log depth makes it the
# one that benefits from more cores, so it is the default.
DEFAULT_ARGMAX_VARIANT: str = "tree:promoted"
NAIVE_ARGMAX_VARIANT: str = "sequential:default"


def parse_variant(variant: str) -> tuple[str, str]:
    """Split ``"structure[:strategy]"`` and check both parts; a bare structure means
    ``promoted``."""
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


def decode_output(out: Any, structure: str) -> int:
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
    kwargs.update(insecure_key_cache_options(key_cache_dir))
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
    check_bits(bits)
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


def circuit_stats(circuit: Any) -> dict[str, Any]:
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
