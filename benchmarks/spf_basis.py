"""Cost of the SPF safety basis per weight matrix: full SVD vs Gram vs randomized vs factored.

The input is a one-sample gradient of a linear layer, ``G = X^T Gy`` with ``T`` supervised
tokens (so ``rank(G) <= T``); token weights decay geometrically so the spectrum decays as a
real safety gradient's does. Each estimator is ``jax.jit``-compiled (compile time excluded),
then timed as the best of at least ``--repeats`` calls (up to 50 within 2 s: the CPU is
shared, so the minimum is the robust statistic) (``block_until_ready``). The error column is the
largest entry of ``|sum_i u_i v_i^T - reference|`` over the top-k atoms against the float64
NumPy SVD, so a fast-but-wrong estimator shows up. ``auto`` is what ``spf(basis="auto")``
resolves to for that shape.

    python benchmarks/spf_basis.py            # sizes up to 2048 x 8192
    python benchmarks/spf_basis.py --quick    # small sizes only (a few seconds)
    python benchmarks/spf_basis.py --no-append
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import append_results, markdown_table, timed  # noqa: E402

from jaxtrust.safety.spf import subspace as sub  # noqa: E402

SIZES = [(256, 1024), (576, 1536), (1024, 4096), (2048, 8192)]
QUICK_SIZES = [(128, 512), (256, 1024)]


def one_sample_factors(m: int, n: int, tokens: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = 0.85 ** np.arange(tokens)
    x = (rng.standard_normal((tokens, m)) * weights[:, None]).astype(np.float32)
    gy = rng.standard_normal((tokens, n)).astype(np.float32) / np.sqrt(n)
    return x, gy


def best_time(fn, inputs, repeats: int, budget_s: float = 2.0):
    """Best of at least ``repeats`` calls, more while under ``budget_s`` (shared-CPU noise)."""
    best, result, spent, calls = float("inf"), None, 0.0, 0
    while calls < repeats or (spent < budget_s and calls < 50):
        seconds, result = timed(lambda: jax.block_until_ready(fn(*inputs)))
        best, spent, calls = min(best, seconds), spent + seconds, calls + 1
    return best, result


def atoms(u, v, k):
    u, v = np.asarray(u, np.float64)[:, :k], np.asarray(v, np.float64)[:, :k]
    return np.einsum("mk,nk->kmn", u, v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    k, tokens = args.rank, args.tokens

    rows = []
    for m, n in QUICK_SIZES if args.quick else SIZES:
        x, gy = one_sample_factors(m, n, tokens)
        g64 = x.astype(np.float64).T @ gy.astype(np.float64)
        u_ref, _, vt_ref = np.linalg.svd(g64, full_matrices=False)
        reference = atoms(u_ref, vt_ref.T, k)
        g = jnp.asarray(g64, jnp.float32)
        xj, gyj = jnp.asarray(x), jnp.asarray(gy)
        methods = {
            "svd": (jax.jit(functools.partial(sub.basis_svd, k=k)), (g,)),
            "gram": (jax.jit(functools.partial(sub.basis_gram, k=k)), (g,)),
            "randomized": (jax.jit(functools.partial(sub.basis_randomized, k=k)), (g,)),
            "factors (QR + TxT SVD)": (
                jax.jit(functools.partial(sub.basis_from_factors, k=k)),
                (xj, gyj),
            ),
        }
        auto = sub.choose_basis_method((m, n), k)
        for name, (fn, inputs) in methods.items():
            jax.block_until_ready(fn(*inputs))  # compile + warm-up
            seconds, basis = best_time(fn, inputs, args.repeats)
            err = float(np.abs(atoms(basis.u, basis.v, k) - reference).max())
            label = f"{name} (auto)" if name == auto else name
            rows.append([f"{m} x {n}", k, tokens, label, seconds * 1e3, err])
            ms = seconds * 1e3
            print(f"{m:5d} x {n:5d}  k={k} T={tokens}  {label:28s} {ms:9.2f} ms  err {err:.1e}")

    table = markdown_table(["matrix", "rank k", "tokens T", "method", "ms", "max atom err"], rows)
    print()
    print(table)
    if not args.no_append:
        command = "python benchmarks/spf_basis.py" + (" --quick" if args.quick else "")
        append_results(
            "SPF safety basis per matrix (jaxtrust.safety.spf.subspace)",
            command,
            table,
            notes=(
                "One-sample gradient G = X^T Gy of a linear layer (T tokens, geometrically "
                "decaying token weights), float32, jit, compile excluded, best of "
                f">= {args.repeats} calls. 'max atom err' = max |u_i v_i^T - reference| over the "
                "top-k atoms vs the float64 NumPy SVD. The factored path needs the layer "
                "inputs and output gradients (spf(...).update(..., safety_factors=...))."
            ),
        )


if __name__ == "__main__":
    main()
