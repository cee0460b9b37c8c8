"""Unlearning wall times: every method relative to Retrain in one run, MAPE's mask search, and
LiRA's shadow training (vmapped) on MNIST-1D.

Goals (issue 12): MAPE end to end under 10 % of Retrain's time; LiRA with 16 shadow models on
MNIST-1D in under 5 minutes on 2 cores through vmapped training.

Every method is run twice on the same trial and the second (compiled) run is timed; Retrain and
the shadows are trained fresh here (a temporary cache), their time includes compilation. The
hyper-parameters are the tuned ones of ``results/mape/quick/metrics.json`` when present, else
the search spaces' defaults.

    python benchmarks/unlearning.py [--shadows 16] [--skip-lira]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import append_results, markdown_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shadows", type=int, default=16)
    parser.add_argument("--skip-lira", action="store_true")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    from jaxtrust.unlearning.mape import mask_fisher, module_shape, select_modules
    from jaxtrust.unlearning.protocol import (
        SPACES,
        Setting,
        baseline_spec,
        draw_configs,
        make_trial,
        mape_config,
        mape_spec,
        train_shadows,
    )

    setting = Setting()
    tuned_path = Path(__file__).resolve().parents[1] / "results/mape/quick/metrics.json"
    tuned = json.loads(tuned_path.read_text())["tuning"]["chosen"] if tuned_path.exists() else {}
    cache = tempfile.mkdtemp(prefix="jaxtrust-bench-")
    start = time.perf_counter()
    trial = make_trial(setting, 0, cache_dir=cache)
    build = time.perf_counter() - start
    rows = [["retrain (from scratch)", trial.retrain_seconds, 1.0]]
    specs = {n: baseline_spec(n) for n in SPACES if n not in ("mape", "npo")}
    specs["npo"] = baseline_spec("npo")
    specs["mape"] = mape_spec()
    for name, spec in specs.items():
        params = tuned.get(name) or draw_configs(spec.space, 1, seed=0)[0]
        spec.run(trial.original, trial.forget, trial.retain, params, 0)  # compile
        _, seconds, _ = spec.run(trial.original, trial.forget, trial.retain, params, 0)
        rows.append([f"{name} {params}", seconds, seconds / trial.retrain_seconds])
    # mask search alone (Fisher on D_f and 1000 retain rows + selection), compiled
    p = mape_config(tuned.get("mape") or draw_configs(SPACES["mape"], 1, seed=0)[0])
    retain = {k: v[:1000] for k, v in trial.retain.items()}
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        ff = mask_fisher(trial.original, trial.forget)
        fr = mask_fisher(trial.original, retain)
        select_modules(ff, fr, module_shape(trial.original), budget=p.budget, lam=p.lam)
        times.append(time.perf_counter() - t0)
    rows.append(
        ["mape mask search (Fisher + selection)", times[-1], times[-1] / trial.retrain_seconds]
    )
    body = markdown_table(["method", "seconds", "x Retrain"], rows)
    mape_frac = [r for r in rows if r[0].startswith("mape ")][0][2]
    notes = [
        f"Trial build (original + Retrain, with compilation): {build:.0f} s. MAPE end to end = "
        f"{100 * mape_frac:.1f} % of Retrain (goal < 10 %).",
    ]
    if not args.skip_lira:
        t0 = time.perf_counter()
        shadows, seconds = train_shadows(setting, args.shadows, seed=0, cache_dir=cache)
        wall = time.perf_counter() - t0
        body += "\n" + markdown_table(
            ["LiRA shadows", "steps each", "wall s (incl. compile)", "goal"],
            [[args.shadows, int(shadows.losses.shape[0]), wall, "< 300 s"]],
        )
        notes.append(
            f"{args.shadows} shadow ViTs on 2000-row halves of MNIST-1D, one vmapped batch "
            f"({os.cpu_count()} CPUs): {wall:.0f} s."
        )
    load = os.getloadavg()[0]
    if load > 1.5:
        notes.append(f"Load average {load:.1f} > 1.5: the figures are provisional.")
    print(body)
    print("\n".join(notes))
    if not args.no_append:
        append_results(
            "unlearning: method times vs Retrain, mask search, LiRA shadows",
            "python benchmarks/unlearning.py",
            body,
            "\n".join(notes),
        )


if __name__ == "__main__":
    main()
