"""``python -m jaxtrust.zoo``: build (or load) the zoo's aligned model and evaluate it."""

from __future__ import annotations

import argparse
import time

from jaxtrust.zoo.safety_eval import evaluate_v2, summary_v2
from jaxtrust.zoo.safety_lm import ZooConfig, aligned_model, evaluate_model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m jaxtrust.zoo",
        description="build (or load) the zoo's aligned model and evaluate it",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--n", type=int, default=200, help="examples per evaluation set")
    parser.add_argument(
        "--v2", action="store_true", help="the version-2 world's model (ZooConfig.v2())"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    config = ZooConfig.v2() if args.v2 else ZooConfig()
    aligned = aligned_model(config, seed=args.seed, cache_dir=args.cache_dir)
    elapsed = time.perf_counter() - start
    how = "loaded" if aligned.from_cache else "built"
    print(f"aligned model seed={args.seed}: {how} in {elapsed:.1f} s ({aligned.path})")
    base_s, total_s = aligned.info.get("base_build_seconds", 0), aligned.info["build_seconds"]
    print(f"  build seconds: base {base_s:.1f}, base+aligned {total_s:.1f}")
    if args.v2:
        summary = summary_v2(evaluate_v2(aligned.model, aligned.world, n=args.n))
        print("  " + "  ".join(f"{k}={v:.3f}" for k, v in summary.items()))
        return
    report = evaluate_model(aligned.model, aligned.world, n=args.n)
    for name, metrics in report.items():
        print(f"  {name:28s} " + "  ".join(f"{k}={v:.3f}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
