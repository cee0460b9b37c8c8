"""The ``jaxtrust`` command line.

jaxtrust reproduce NAME|all [--preset quick|full] [--seed S] [--out DIR] [--set key=value ...]
jaxtrust list
jaxtrust info
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def info() -> dict:
    """Versions, devices and which optional backends are available."""
    import jax

    from jaxtrust import __version__
    from jaxtrust.fhe import concrete_available, concrete_versions, environment_status

    # A backend that is not importable here may still run by delegation to its own environment.
    fhe_env, ckks_env = environment_status("fhe"), environment_status("ckks")
    backends = {
        "fhe (concrete)": concrete_available(),
        "fhe delegation": fhe_env["python"] if fhe_env["delegation"] else False,
        "ckks (openfhe)": ckks_env["in_process"],
        "ckks delegation": ckks_env["python"] if ckks_env["delegation"] else False,
        "torch": importlib.util.find_spec("torch") is not None,
        "transformers": importlib.util.find_spec("transformers") is not None,
        "tfds": importlib.util.find_spec("tensorflow_datasets") is not None,
        "datasets": importlib.util.find_spec("datasets") is not None,
    }
    versions = {"jaxtrust": __version__}
    for dist in (
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "orbax-checkpoint",
        "numpy",
        "transformers",
        "torch",
        "safetensors",
        "gguf",
    ):
        v = _version(dist)
        if v:
            versions[dist] = v
    versions.update(concrete_versions())
    return {
        "versions": versions,
        "devices": [f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices()],
        "backends": backends,
    }


def _print_info(as_json: bool) -> None:
    data = info()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    print("jaxtrust environment")
    for k, v in data["versions"].items():
        print(f"  {k:18s} {v}")
    print("devices")
    for d in data["devices"]:
        print(f"  {d}")
    print("optional backends")
    for k, v in data["backends"].items():
        shown = (
            f"available via {v}" if isinstance(v, str) else "available" if v else "not installed"
        )
        print(f"  {k:18s} {shown}")


def _reproduce(args: argparse.Namespace) -> int:
    from jaxtrust.experiments import list_experiments, run_experiment
    from jaxtrust.experiments.registry import Table

    names = [e.name for e in list_experiments()] if args.name == "all" else [args.name]
    out_root = Path(args.out or f"runs/{args.name}-{args.preset}-seed{args.seed}")
    rows = []
    for name in names:
        out = out_root / name if args.name == "all" else out_root
        result = run_experiment(
            name,
            preset=args.preset,
            seed=args.seed,
            out_dir=out,
            overrides=args.set or [],
            progress=not args.quiet,
        )
        headline = result.metrics.get("headline", {})
        rows.append(
            [
                name,
                str(out),
                ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in headline.items()
                ),
            ]
        )
    if args.name == "all":
        print(
            "\n"
            + Table("jaxtrust reproduce all", ["experiment", "output", "headline"], rows).to_text()
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    from jaxtrust import __version__

    parser = argparse.ArgumentParser(
        prog="jaxtrust", description="JAX-native trustworthy-ML methods."
    )
    parser.add_argument("--version", action="version", version=f"jaxtrust {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser(
        "reproduce",
        help="run a registered experiment (or 'all') and write metrics.json, report.md, plots",
    )
    rep.add_argument("name", help="experiment name, or 'all' (see `jaxtrust list`)")
    rep.add_argument(
        "--preset", default="quick", help="quick | full (| demo where an experiment has one)"
    )
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument(
        "--out", default=None, help="output directory (default runs/NAME-PRESET-seedS)"
    )
    rep.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)"
    )
    rep.add_argument("--quiet", action="store_true", help="no progress output")
    sub.add_parser("list", help="list the registered experiments")
    inf = sub.add_parser("info", help="versions, devices and optional backends")
    inf.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            _print_info(args.json)
            return 0
        if args.command == "list":
            from jaxtrust.experiments import list_experiments

            for e in list_experiments():
                print(f"{e.name:12s} {e.description}")
            return 0
        if args.seed < 0:
            parser.error(f"--seed must be >= 0, got {args.seed}")
        return _reproduce(args)
    except (KeyError, ValueError) as err:
        print(f"jaxtrust: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
