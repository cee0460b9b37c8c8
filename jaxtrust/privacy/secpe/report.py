"""Tables, plot and summary of ``jaxtrust reproduce secpe`` from its metrics (see reproduce.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxtrust.eval import claim_count, mean_se
from jaxtrust.experiments.registry import RunContext, Table

__all__ = ["build_report", "summarize"]


def _ms(x: dict[str, float]) -> str:
    return f"{x['mean']:.3f} ± {x['se']:.3f}"


def build_report(ctx: RunContext, metrics: dict[str, Any]) -> tuple[list[Table], str]:
    """Report tables (accuracy over seeds, per prompt, encrypted cost, TFHE and CKKS grids), the
    accuracy plot, and a one-paragraph summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = metrics["per_seed"]
    n, m = metrics["task"]["n"], metrics["task"]["prompts"]
    budgets = list(metrics["robust_accuracy_by_budget"])
    rows = []
    for key, label in (
        ("mean_single", "mean single prompt"),
        ("best_single", "best single prompt (chosen on validation)"),
        ("ensemble", "soft vote (ensemble)"),
    ):
        rows.append(
            [
                label,
                _ms(metrics["accuracy"]["over_seeds"][key]),
                *[_ms(metrics["robust_accuracy_by_budget"][b]["over_seeds"][key]) for b in budgets],
            ]
        )
    tables = [
        Table(
            f"accuracy over {len(seeds)} seeds (mean ± se over seeds; n = {n} test inputs each, "
            f"binomial se per seed <= {0.5 / np.sqrt(n):.3f})",
            ["classifier", "clean", *[f"robust, budget {b}" for b in budgets]],
            rows,
        ),
        Table(
            "per prompt, first seed",
            ["prompt", "clean", *[f"robust {b}" for b in budgets]],
            [
                [
                    f"p{j}: {metrics['setup']['templates'][j]!r}",
                    seeds[0]["clean"]["single"][j],
                    *[seeds[0]["by_budget"][b]["robust"]["single"][j] for b in budgets],
                ]
                for j in range(m)
            ],
        ),
        Table(
            "claims (holds on N of M seeds)",
            ["claim", "holds", "seeds"],
            [[k, v["holds"], v["seeds"]] for k, v in metrics["claims"].items()],
        ),
    ]
    enc = metrics["encrypted"]
    if enc:
        tables.append(
            Table(
                f"encrypted soft vote (TFHE, {enc['variant']}, {enc['bits']}-bit sum, "
                f"{enc['inputs']} inputs)",
                ["what", "accuracy", "matches plaintext", "run_s", "pbs", "keygen_s"],
                [
                    [
                        f"ensemble of {m}",
                        enc["accuracy"],
                        enc["matches"],
                        enc["stats"]["run_s"],
                        enc["stats"]["pbs"],
                        enc["stats"]["keygen_s"],
                    ],
                    [
                        "one prompt",
                        "-",
                        enc["one_prompt_matches"],
                        enc["one_prompt_stats"]["run_s"],
                        enc["one_prompt_stats"]["pbs"],
                        enc["one_prompt_stats"]["keygen_s"],
                    ],
                ],
            )
        )
    cols = ["variant", "k", "bits", "compile_s", "keygen_s", "run_s", "pbs", "exact"]
    if metrics["argmax_grid"]:
        tables.append(
            Table(
                "TFHE argmax grid",
                cols,
                [[r.get(c, "-") for c in cols] for r in metrics["argmax_grid"]],
            )
        )
    ckks_cols = ["variant", "k", "security", "ring_dim", "depth", "signs", "client_refreshes"]
    ckks_cols += ["keygen_s", "run_s", "inputs_per_ciphertext", "exact", "error_rate"]
    if metrics["ckks"].get("grid"):
        tables.append(
            Table(
                "CKKS argmax (OpenFHE): tournament vs sequential vs scheme switching",
                ckks_cols,
                [[r.get(c, "-") for c in ckks_cols] for r in metrics["ckks"]["grid"]],
            )
        )
    if metrics["adversarial_examples"]:
        tables.append(
            Table(
                "adversarial inputs that fool the ensemble",
                ["clean", "adversarial"],
                metrics["adversarial_examples"],
            )
        )
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [f"p{j}" for j in range(m)] + ["ensemble"]
    x = np.arange(len(names))
    width = 0.8 / (1 + len(budgets))
    clean = [np.mean([s["clean"]["single"][j] for s in seeds]) for j in range(m)]
    ax.bar(x, [*clean, metrics["accuracy"]["over_seeds"]["ensemble"]["mean"]], width, label="clean")
    for i, b in enumerate(budgets):
        rob = [np.mean([s["by_budget"][b]["robust"]["single"][j] for s in seeds]) for j in range(m)]
        ens = metrics["robust_accuracy_by_budget"][b]["over_seeds"]["ensemble"]["mean"]
        ax.bar(x + (i + 1) * width, [*rob, ens], width, label=f"robust, budget {b}")
    ax.set_xticks(x + width * len(budgets) / 2, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"accuracy (mean of {len(seeds)} seeds)")
    ax.set_title("secpe: single prompts vs the soft vote")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ctx.save_figure(fig, "accuracy")
    c, top = metrics["accuracy"]["over_seeds"], metrics["robust_accuracy"]
    summary = (
        f"{metrics['setup']['description']}; {metrics['task']['classes']} classes, {m} prompts, "
        f"{n} test inputs x {len(seeds)} seeds. Clean: mean single {_ms(c['mean_single'])}, "
        f"best single {_ms(c['best_single'])}, soft vote {_ms(c['ensemble'])}."
    )
    if top["budget"]:
        r = top["over_seeds"]
        summary += (
            f" Under the {top['budget']}-token attack: mean single {_ms(r['mean_single'])}, best "
            f"single {_ms(r['best_single'])}, soft vote {_ms(r['ensemble'])}."
        )
    if enc:
        summary += (
            f" The encrypted vote equals the quantized plaintext vote on every input: "
            f"{enc['matches']}."
        )
    return tables, summary


def summarize(
    config: Any, seeds: list[dict[str, Any]], enc: dict[str, Any], ckks: dict[str, Any]
) -> dict[str, Any]:
    """The metrics.json schema: means over seeds with standard errors, claims, per-seed rows."""

    def over(get) -> dict[str, float]:
        stat = mean_se([get(s) for s in seeds])
        return {"mean": stat.mean, "se": stat.se}

    top = str(max(config.attack_budgets)) if config.attack_budgets else None
    m = len(seeds[0]["clean"]["single"])
    keys = ("mean_single", "best_single", "ensemble")
    clean = {key: over(lambda s, key=key: s["clean"][key]) for key in keys}
    robust = {
        b: {key: over(lambda s, b=b, key=key: s["by_budget"][b]["robust"][key]) for key in keys}
        for b in seeds[0]["by_budget"]
    }
    claims = {
        "ensemble_above_mean_single_clean": claim_count(
            [s["clean"]["ensemble"] > s["clean"]["mean_single"] for s in seeds]
        ),
        "ensemble_at_least_best_single_clean": claim_count(
            [s["clean"]["ensemble"] >= s["clean"]["best_single"] for s in seeds]
        ),
    }
    if top:
        rob = [s["by_budget"][top]["robust"] for s in seeds]
        claims["ensemble_above_mean_single_robust"] = claim_count(
            [r["ensemble"] > r["mean_single"] for r in rob]
        )
        claims["ensemble_at_least_best_single_robust"] = claim_count(
            [r["ensemble"] >= r["best_single"] for r in rob]
        )
    encrypted = enc.get("encrypted", {})
    per_seed = [{k: v for k, v in s.items() if not k.startswith("_")} for s in seeds]
    first = per_seed[0]
    return {
        "task": {"classes": 8, "n": config.num_examples, "prompts": m},
        "accuracy": {
            "single": first["clean"]["single"],
            "ensemble": first["clean"]["ensemble"],
            "encrypted": encrypted.get("accuracy"),
            "over_seeds": clean,
        },
        "encrypted_matches_plaintext": encrypted.get("matches"),
        "robust_accuracy": {
            "single": first["by_budget"][top]["robust"]["single"] if top else [],
            "ensemble": first["by_budget"][top]["robust"]["ensemble"] if top else None,
            "budget": top,
            "over_seeds": robust.get(top, {}),
        },
        "robust_accuracy_by_budget": {
            b: {"first_seed": first["by_budget"][b], "over_seeds": robust[b]} for b in robust
        },
        "claims": claims,
        "per_seed": per_seed,
        "argmax_grid": enc.get("grid", []),
        "encrypted": encrypted,
        "encrypted_verbalizer": enc.get("verbalizer", {}),
        "ckks": ckks,
        "setup": {
            "model": config.model,
            "description": first["description"],
            "seeds": [s["seed"] for s in seeds],
            "prompts": m,
            "classes": 8,
            "templates": list(seeds[0]["_bed"].ensemble.templates),
            "score": config.score,
        },
        "adversarial_examples": [e for s in per_seed for e in s["examples"]][:6],
        "times": {
            "per_seed": [s["times"] for s in per_seed],
            "encrypted_s": encrypted.get("seconds"),
            "grid_s": enc.get("grid_s"),
            "ckks_s": sum(r.get("wall_s", 0.0) for r in ckks.get("grid", [])),
        },
    }
