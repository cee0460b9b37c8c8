"""Combine single-seed runs of one reproduction into one table: ``python -m
jaxtrust.experiments.combine OUT RUN_DIR [RUN_DIR ...]``.

On 2 shared cores, seeds of a reproduction are run as separate processes (each finished seed is
saved even if a later one is not); this reads their ``metrics.json`` files and writes
``OUT/metrics.json`` and ``OUT/report.md`` with, for every numeric leaf that all runs share,
the mean, the standard error over seeds and the per-seed values, and every ``claims`` entry
summed into "holds on N of M seeds".

Example:
  >>> import json, pathlib, tempfile
  >>> root = pathlib.Path(tempfile.mkdtemp())
  >>> for seed, r in enumerate((0.2, 0.4)):
  ...     (root / f"s{seed}").mkdir()
  ...     m = {"seeds": [seed], "runs": {"sft": {"refusal_rate": r}},
  ...          "claims": {"c": {"holds": seed, "seeds": 1}}}
  ...     _ = (root / f"s{seed}" / "metrics.json").write_text(json.dumps(m))
  >>> out = combine(root / "all", [root / "s0", root / "s1"])
  >>> out["runs"]["sft"]["refusal_rate"]["mean"], out["claims"]["c"]
  (0.30000000000000004, {'holds': 1, 'seeds': 2})
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxtrust.eval.stats import mean_se

__all__ = ["combine"]


def _numeric_leaves(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], float]:
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k in ("per_seed", "claims"):
                continue
            out |= _numeric_leaves(v, (*prefix, str(k)))
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        out[prefix] = float(tree)
    return out


def _nest(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path, value in flat.items():
        node = root
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value
    return root


def combine(out_dir: str | Path, run_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """Mean and standard error over the runs in ``run_dirs`` (see the module docstring).

    Args:
      out_dir: where ``metrics.json`` and ``report.md`` are written (created).
      run_dirs: directories holding one run's ``metrics.json`` each.

    Returns:
      The combined metrics: numeric leaves as ``{"mean", "se", "values"}``, ``claims`` as
      ``{"holds", "seeds"}`` sums, ``seeds`` the concatenated seed lists, ``runs_from`` the
      directories read.
    """
    if not run_dirs:
        raise ValueError("run_dirs is empty: give at least one run directory")
    metrics = []
    for d in run_dirs:
        path = Path(d) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (run_dirs must hold finished runs)")
        metrics.append(json.loads(path.read_text()))
    leaves = [_numeric_leaves(m) for m in metrics]
    shared = set(leaves[0]).intersection(*leaves[1:])
    flat = {}
    for key in sorted(shared):
        values = [lv[key] for lv in leaves]
        est = mean_se(values)
        flat[key] = {"mean": est.mean, "se": est.se, "values": values}
    claims: dict[str, dict[str, int]] = {}
    for m in metrics:
        for name, c in m.get("claims", {}).items():
            entry = claims.setdefault(name, {"holds": 0, "seeds": 0})
            entry["holds"] += int(c["holds"])
            entry["seeds"] += int(c["seeds"])
    combined = {
        **_nest(flat),
        "claims": claims,
        "seeds": [s for m in metrics for s in m.get("seeds", [])],
        "runs_from": [str(d) for d in run_dirs],
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(combined, indent=1))
    tmp.replace(out / "metrics.json")
    lines = [f"# combined over seeds {combined['seeds']}", "", "## claims", ""]
    lines += [f"- {k}: holds on {v['holds']} of {v['seeds']} seeds" for k, v in claims.items()]
    lines += ["", "## every shared number (mean ± standard error over seeds)", ""]
    lines += ["| metric | mean | se | per seed |", "|---|---|---|---|"]
    for key, v in flat.items():
        per = ", ".join(f"{x:.3g}" for x in v["values"])
        lines.append(f"| {'.'.join(key)} | {v['mean']:.4g} | {v['se']:.2g} | {per} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return combined


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        raise SystemExit("usage: python -m jaxtrust.experiments.combine OUT RUN_DIR [RUN_DIR ...]")
    combined = combine(args[0], args[1:])
    print(f"combined {len(args) - 1} runs (seeds {combined['seeds']}) into {args[0]}")


if __name__ == "__main__":
    main()
