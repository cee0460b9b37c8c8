"""Aggregation, plots and tables of ``jaxtrust reproduce actapprox`` (see ``reproduce``)."""

from __future__ import annotations

from typing import Any

from jaxtrust.eval.stats import claim_count, mean_se
from jaxtrust.experiments.registry import RunContext, Table

_METRICS = (
    "refusal_rate",
    "refusal_rate_exact",
    "harmful_compliance",
    "perplexity",
    "utility",
    "over_refusal",
)
_CLAIMS = ("safety_before_perplexity", "safety_before_utility", "early_layers_matter_more")


def _mean(values) -> float:
    return mean_se(values).mean


def aggregate(per_model: list[dict]) -> dict[str, Any]:
    """The metrics.json body: per-technique and per-sweep-point means over the models, the
    claims counted over the models, and every model's own record."""
    techniques = []
    for i, rec in enumerate(per_model[0]["techniques"]):
        row = {k: rec[k] for k in ("name", "label", "family", "strength")}
        for key in _METRICS:
            values = [m["techniques"][i][key] for m in per_model]
            row[key] = _mean(values)
            row[f"{key}_per_model"] = values
        techniques.append(row)
    sigma = per_model[0]["noise_sweep"]["sigma"]
    noise_sweep = {"sigma": sigma}
    for key in _METRICS[:-1]:
        points = zip(*(m["noise_sweep"][key] for m in per_model), strict=True)
        noise_sweep[key] = [_mean(p) for p in points]
    claims = {"per_model": {m["label"]: m["claims"] for m in per_model}}
    claims |= {c: claim_count([m["claims"][c] for m in per_model])["holds"] for c in _CLAIMS}
    claims["num_models"] = len(per_model)
    return {
        "techniques": techniques,
        "exact": {k: _mean([m["exact"][k] for m in per_model]) for k in per_model[0]["exact"]},
        "noise_sweep": noise_sweep,
        "layer_ablation": {m["label"]: m["layer_ablation"] for m in per_model},
        "claims": claims,
        "models": per_model,
    }


def _panels(plt, n: int):
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    return fig, axes[0]


def _finish(ax, title: str, xlabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("refusal rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot(per_model: list[dict], ctx: RunContext) -> None:
    """noise_sweep.png, layer_ablation.png and (with QuadA) quada_noise.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for m in per_model:
        sw = m["noise_sweep"]
        axes[0].plot(sw["sigma"], sw["refusal_rate"], marker="o", label=m["label"])
        axes[1].plot(sw["sigma"], sw["perplexity"], marker="o", label=m["label"])
    for ax in axes:
        _finish(ax, "", "Gaussian noise std on the FFN activation (all layers)")
    axes[0].set_ylabel("refusal rate (forbidden requests)")
    axes[1].set_ylabel("perplexity (held-out answers)")
    axes[1].set_yscale("log")
    fig.suptitle("noise sweep: safety vs utility")
    ctx.save_figure(fig, "noise_sweep")

    fig, axes = _panels(plt, len(per_model))
    for ax, m in zip(axes, per_model, strict=True):
        ab = m["layer_ablation"]
        ax.plot(ab["sigma"], ab["refusal_early"], marker="o", label=f"layers {ab['early_layers']}")
        ax.plot(ab["sigma"], ab["refusal_late"], marker="s", label=f"layers {ab['late_layers']}")
        _finish(ax, m["label"], "noise std")
    ctx.save_figure(fig, "layer_ablation")

    with_quada = [m for m in per_model if "quada" in m]
    if not with_quada:
        return
    fig, axes = _panels(plt, len(with_quada))
    for ax, m in zip(axes, with_quada, strict=True):
        q = m["quada"]
        noise = [s for s in q["settings"] if s.startswith("gaussian_noise")]
        sigma = [0.0] + [float(s[len("gaussian_noise(") : -1]) for s in noise]
        for name, rows in q["models"].items():
            refusal = [rows[s]["refusal_rate"] for s in ["exact", *noise]]
            ax.plot(sigma, refusal, marker="o", label=name)
        title = f"{m['label']} (MVA sigma {q['mva_sigma']:g}, tau {q['tau']})"
        _finish(ax, title, "noise std (all layers)")
    ctx.save_figure(fig, "quada_noise")


def _technique_row(label: str, family: str, r: dict) -> list:
    keys = ("refusal_rate", "refusal_rate_exact", "harmful_compliance", "perplexity", "utility")
    return [label, family, *(r[k] for k in keys)]


def tables(metrics: dict, per_model: list[dict], config, timings: dict[str, float]) -> list[Table]:
    """The report's tables: per technique, noise sweep, claims, QuadA, SmolLM2, stage times."""
    sweep = metrics["noise_sweep"]
    keys = ("sigma", "refusal_rate", "harmful_compliance", "perplexity", "utility")
    out = [
        Table(
            "per technique (mean over zoo models)",
            ["technique", "family", "refusal", "refusal exact", "harmful compliance"]
            + ["perplexity", "utility"],
            [_technique_row("exact", "-", metrics["exact"])]
            + [_technique_row(r["label"], r["family"], r) for r in metrics["techniques"]],
        ),
        Table(
            "noise sweep (Gaussian on the FFN activation, all layers; mean over models)",
            ["sigma", "refusal", "harmful compliance", "perplexity", "utility"],
            [list(row) for row in zip(*(sweep[k] for k in keys), strict=True)],
        ),
        Table(
            f"claims per model (first sigma where each metric degrades; refusal "
            f"-{config.refusal_drop:.2f}, perplexity +{round(100 * config.perplexity_rise)}%, "
            f"utility -{config.utility_drop:.2f})",
            ["model", "sigma refusal", "sigma ppl", "sigma utility", "safety first (ppl)"]
            + ["safety first (utility)", "refusal drop early", "refusal drop late"],
            [
                [m["label"]]
                + [str(m["claims"][k]) for k in ("sigma_refusal_drops", "sigma_perplexity_rises")]
                + [str(m["claims"][k]) for k in ("sigma_utility_drops", *_CLAIMS[:2])]
                + [m["claims"]["mean_refusal_drop_early"], m["claims"]["mean_refusal_drop_late"]]
                for m in per_model
            ],
        ),
    ]
    if "quada" in metrics:
        out += _quada_tables(per_model)
    smollm2 = metrics.get("smollm2") or {}
    if "settings" in smollm2:
        out.append(
            Table(
                "SmolLM2-135M-Instruct on HarmBench prompts (keyword ASR)",
                ["setting", "keyword ASR", "perplexity"],
                [[k, v["keyword_asr"], v["perplexity"]] for k, v in smollm2["settings"].items()],
            )
        )
    out.append(Table("wall time per stage", ["stage", "seconds"], list(map(list, timings.items()))))
    return out


def _quada_tables(per_model: list[dict]) -> list[Table]:
    rows, cost = [], []
    for m in per_model:
        q = m["quada"]
        for setting in q["settings"]:
            aligned = q["models"]["aligned"][setting]
            if aligned is None:  # measured in the audit
                aligned = next(r for r in m["techniques"] if r["label"] == setting)
            by = [aligned, q["models"]["dpo"][setting], q["models"]["quada"][setting]]
            rows.append([m["label"], setting, *(r["refusal_rate"] for r in by)])
            rows[-1] += [r["utility"] for r in by]
        for name, settings in q["models"].items():
            e = settings["exact"]
            keys = ("refusal_rate", "over_refusal", "benign_accuracy", "utility", "perplexity")
            cost.append([m["label"], name, *(e[k] for k in keys)])
    variants = ("aligned", "DPO", "QuadA")
    return [
        Table(
            "QuadA: refusal and utility under each technique",
            ["model", "setting"]
            + [f"refusal {v}" for v in variants]
            + [f"utility {v}" for v in variants],
            rows,
        ),
        Table(
            "QuadA utility cost (exact model, no approximation)",
            ["model", "variant", "refusal", "over-refusal", "benign answers", "utility", "ppl"],
            cost,
        ),
    ]


def summary(metrics: dict) -> str:
    claims = metrics["claims"]
    n = claims["num_models"]
    return (
        f"{n} in-house aligned models. Safety degraded before perplexity in "
        f"{claims['safety_before_perplexity']}/{n} and before utility in "
        f"{claims['safety_before_utility']}/{n}; noise on the early half of the layers lowered "
        f"refusal more than on the late half in {claims['early_layers_matter_more']}/{n}."
    )
