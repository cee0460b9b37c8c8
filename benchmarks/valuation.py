"""Valuation wall times: LTSV, CG and LiSSA influence, TracIn and LOO as the number of windows
and the forecaster grow, with each valuer's Spearman correlation with LOO (on a LOO subset).

Goal (issue 19): LTSV at least 10x cheaper than CG influence at matched Spearman with LOO at the
largest size; where influence is cheaper, the table says so. Models are randomly initialised
TSFMs (the costs do not depend on pretraining) on generated seasonal windows; every program runs
once to compile and is then timed (best of ``--repeats``).

    python benchmarks/valuation.py [--sizes 16,32,64] [--windows 64,128,256] [--no-append]
"""

# ruff: noqa: B023  (every closure runs inside its own loop iteration)
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import append_results, markdown_table, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="16,32,64", help="model widths d (layers 2, 4 heads)")
    parser.add_argument("--windows", default="64,128,256")
    parser.add_argument("--loo-subset", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--plot", default="benchmarks/valuation.png")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx
    from scipy.stats import spearmanr

    from jaxtrust.data.timeseries import sliding_windows, synthetic_series
    from jaxtrust.experiments import pyplot
    from jaxtrust.models.tsfm import TSFM, TSFMConfig
    from jaxtrust.valuation import influence_scores, loo_scores, tracin_scores, tsfm_objective
    from jaxtrust.valuation.ltsv import ltsv_scores

    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(s) for s in args.windows.split(",")]
    rows, series_by_size = [], {}
    for d in sizes:
        config = TSFMConfig.tiny(model_dim=d, ffn_dim=2 * d, mlp_dim=2 * d, num_heads=4)
        model = TSFM(config, rngs=nnx.Rngs(0))
        objective = tsfm_objective(model)
        params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(objective.params))
        length = config.context_len + config.output_patch_len
        x = synthetic_series("seasonal", 20_000, seed=1)
        pool = sliding_windows(x, length, stride=4).astype(np.float32)
        context = jnp.asarray(pool[-32:])
        for n in counts:
            train = jnp.asarray(pool[:n])
            fns = {
                "ltsv": lambda t=train: ltsv_scores(
                    objective, t, context, tx=optax.sgd(1e-2), shard=False
                ),
                "tracin": lambda t=train: tracin_scores(objective, t, context),
                "influence_cg": lambda t=train: influence_scores(
                    objective, t, context, damping=0.1, iterations=30, hessian_windows=t[:64]
                ),
                "influence_lissa": lambda t=train: influence_scores(
                    objective,
                    t,
                    context,
                    method="lissa",
                    damping=0.1,
                    iterations=30,
                    hessian_windows=t[:64],
                ),
            }
            sub = np.arange(min(args.loo_subset, n))
            loo_fn = lambda t=train: loo_scores(  # noqa: E731
                objective, t, context, sub, tx=optax.sgd(1e-2), steps=5
            )
            loo_fn()
            loo_t, loo_v = timed(loo_fn, args.repeats)
            loo_v = np.asarray(loo_v)
            for name, fn in fns.items():
                fn()  # compile
                seconds, values = timed(fn, args.repeats)
                rho = float(spearmanr(np.asarray(values)[sub], loo_v).statistic)
                rows.append([d, params, n, name, seconds, rho])
            rows.append([d, params, n, f"loo ({len(sub)} windows)", loo_t, 1.0])
            series_by_size.setdefault(d, []).append((n, {r[3]: r[4] for r in rows[-5:]}))
            print(rows[-5:], flush=True)

    plt = pyplot()
    fig, axes = plt.subplots(1, len(sizes), figsize=(4 * len(sizes), 3.2), sharey=True)
    for ax, d in zip(np.atleast_1d(axes), sizes, strict=True):
        for name in ("ltsv", "tracin", "influence_cg", "influence_lissa"):
            pts = series_by_size[d]
            ax.plot([p[0] for p in pts], [p[1][name] for p in pts], marker="o", label=name)
        ax.set_title(f"d = {d}")
        ax.set_xlabel("windows")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("seconds")
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    fig.savefig(args.plot, dpi=110, bbox_inches="tight")
    table = markdown_table(["d", "params", "windows", "valuer", "seconds", "Spearman vs LOO"], rows)
    print(table)
    if not args.no_append:
        append_results(
            "Valuation: LTSV vs influence vs LOO (issue 19)",
            "python benchmarks/valuation.py " + " ".join(sys.argv[1:]),
            table,
            "Random-init TSFMs on generated seasonal windows; compiled runs, best of repeats.",
        )


if __name__ == "__main__":
    main()
