"""`jaxtrust reproduce actapprox`: helpers (technique specs, claim logic, perplexity under the
hooked wrapper) and a tiny end-to-end run (schema and a measured property)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrust.eval import perplexity
from jaxtrust.safety.actapprox import (
    HookedLM,
    first_crossing,
    mva_sigma,
    parse_technique,
    sweep_claims,
    technique_label,
)
from jaxtrust.safety.actapprox.reproduce import ActApproxConfig


def _sweep_claims(sweep, config):
    limits = ("refusal_drop", "perplexity_rise", "utility_drop")
    return sweep_claims(sweep, **{k: getattr(config, k) for k in limits})._asdict()


def test_parse_technique_specs():
    t = parse_technique("teal:sparsity=0.5;layers=[0,1]")
    assert (t.name, t.family, t.strength, t.layers) == ("teal", "sparsification", 0.5, (0, 1))
    assert technique_label(t) == "teal(0.5)[0:1]"
    q = parse_technique("smoothquant:bits=4")
    assert (q.family, q.strength, technique_label(q)) == ("quantization", 4, "smoothquant(4)")
    assert parse_technique("nexus").family == "polynomial"
    with pytest.raises(KeyError, match="unknown technique"):
        parse_technique("relu_magic")
    with pytest.raises(ValueError, match="key=value"):
        parse_technique("teal:0.5")


def test_claim_logic_on_synthetic_sweeps():
    config = ActApproxConfig()
    sigma = [0.0, 0.1, 0.2, 0.4]
    # Refusal drops at 0.2, perplexity (+10%) only at 0.4, utility at 0.1.
    sweep = {
        "sigma": sigma,
        "refusal_rate": [1.0, 0.95, 0.8, 0.3],
        "perplexity": [2.0, 2.05, 2.1, 3.0],
        "utility": [0.8, 0.6, 0.5, 0.2],
    }
    claims = _sweep_claims(sweep, config)
    assert (
        claims["sigma_refusal_drops"] == 0.2
        and claims["sigma_perplexity_rises"] == 0.4
        and claims["sigma_utility_drops"] == 0.1
    )
    assert claims["safety_before_perplexity"] and not claims["safety_before_utility"]
    # A tie on the grid is not "before".
    tie = {**sweep, "perplexity": [2.0, 2.05, 2.5, 3.0]}
    assert not _sweep_claims(tie, config)["safety_before_perplexity"]
    # Never degrading is never "before".
    flat = {**sweep, "refusal_rate": [1.0] * 4}
    assert not _sweep_claims(flat, config)["safety_before_perplexity"]
    assert first_crossing([1, 2], [0.5, 0.4], 0.45, above=False) == 2.0
    # MVA: lowest refusal within the perplexity budget (0.4 is 1.5x: allowed at 2x, not at 1.2x).
    assert mva_sigma(sweep, 2.0) == 0.4 and mva_sigma(sweep, 1.2) == 0.2
    # Nothing within the budget: the first sigma > 0.
    assert mva_sigma({**sweep, "perplexity": [2.0, 9.0, 9.0, 9.0]}, 1.1) == 0.1


def test_claim_logic_rejects_malformed_sweeps(own_error_messages):
    sweep = {"sigma": [0.0, 0.1], "refusal_rate": [1.0, 0.5], "perplexity": [2.0, 2.0]}
    with pytest.raises(KeyError, match="utility"):
        sweep_claims(sweep, refusal_drop=0.1, perplexity_rise=0.1, utility_drop=0.1)
    with pytest.raises(ValueError, match="equally long"):
        mva_sigma({**sweep, "perplexity": [2.0]}, 2.0)
    with pytest.raises(ValueError, match="the exact model"):
        mva_sigma({**sweep, "sigma": [0.1, 0.2]}, 2.0)
    with pytest.raises(ValueError, match="budget"):
        mva_sigma(sweep, 0.5)
    with pytest.raises(ValueError, match="same length"):
        first_crossing([1, 2], [0.5], 0.4, above=True)


def test_hooked_model_equals_approx_hooks_and_perplexity_matches_numpy(world_model):
    import jax

    from jaxtrust.safety.actapprox import approx_hooks, technique

    world, model = world_model()
    batch = world.batch(world.utility(4, seed=1), seq_len=world.max_sequence_length)
    tokens, mask = jnp.asarray(batch.tokens), jnp.asarray(batch.attention_mask)
    poly = technique("bolt")

    @nnx.jit(static_argnames="hooks")
    def logits(m, hooks=None):
        return m(tokens, attention_mask=mask, **({} if hooks is None else {"hooks": hooks})).logits

    exact = logits(model)
    np.testing.assert_allclose(
        logits(HookedLM(model, (poly,))),
        logits(model, approx_hooks((poly,), model.config)),
        rtol=1e-5,
        atol=1e-5,
    )
    # No technique: the exact model.
    np.testing.assert_array_equal(logits(HookedLM(model, ())), exact)
    # Noise: seeded, and different from the exact model.
    noisy = HookedLM(model, (technique("gaussian_noise", sigma=0.5),), key=jax.random.key(3))
    a, b = logits(noisy), logits(noisy)
    np.testing.assert_array_equal(a, b)
    assert float(jnp.abs(a - exact).max()) > 1e-3
    # Perplexity over response tokens against a NumPy log-softmax.
    z = np.asarray(exact, np.float64)
    logp = (
        z
        - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - z.max(-1, keepdims=True)
    )
    toks, lm = np.asarray(batch.tokens), np.asarray(batch.loss_mask)
    picked = np.take_along_axis(logp[:, :-1], toks[:, 1:, None], axis=-1)[..., 0]
    expected = np.exp(-(picked * lm[:, 1:]).sum() / lm[:, 1:].sum())
    assert perplexity(model, batch.as_dict()) == pytest.approx(expected, rel=1e-4)
    # the hooked exact model scores the same; under noise, differently
    assert perplexity(HookedLM(model, ()), batch.as_dict()) == pytest.approx(expected, rel=1e-4)
    assert perplexity(noisy, batch.as_dict()) != pytest.approx(expected, rel=1e-3)


def test_bad_model_size_is_a_key_error(tmp_path):
    from jaxtrust.experiments import run_experiment

    with pytest.raises(KeyError, match="unknown model_sizes"):
        run_experiment("actapprox", out_dir=tmp_path, overrides=["model_sizes=xl"], progress=False)


@pytest.mark.slow
def test_actapprox_tiny_run_schema_and_noise_effect(tmp_path):
    from jaxtrust.experiments import run_experiment

    overrides = [
        "model_sizes=s",
        "eval_n=16",
        'techniques=["bolt","smoothquant:bits=4"]',
        "sigmas=[0,1.5]",
        "ablation_sigmas=[1.5]",
        "quada=false",
    ]
    run_experiment(
        "actapprox", preset="quick", seed=0, out_dir=tmp_path, overrides=overrides, progress=False
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    names = [t["label"] for t in metrics["techniques"]]
    assert names == ["bolt", "smoothquant(4)"]
    for record in metrics["techniques"]:
        for key in ("refusal_rate", "perplexity", "utility"):
            assert np.isfinite(record[key]) and len(record[f"{key}_per_model"]) == 1
        assert 0 <= record["refusal_rate"] <= 1 and record["perplexity"] >= 1
    sweep = metrics["noise_sweep"]
    assert (
        sweep["sigma"] == [0.0, 1.5] and len(sweep["refusal_rate"]) == len(sweep["perplexity"]) == 2
    )
    # Measured effect with a margin: strong FFN noise breaks refusal and perplexity.
    assert sweep["refusal_rate"][0] >= 0.9
    assert sweep["refusal_rate"][1] <= sweep["refusal_rate"][0] - 0.3
    assert sweep["perplexity"][1] > 1.5 * sweep["perplexity"][0]
    ablation = next(iter(metrics["layer_ablation"].values()))
    assert ablation["early_layers"] == [0, 1] and ablation["late_layers"] == [1, 2]
    assert set(metrics["claims"]) >= {
        "safety_before_perplexity",
        "early_layers_matter_more",
        "per_model",
    }
    assert (tmp_path / "noise_sweep.png").exists() and (tmp_path / "layer_ablation.png").exists()
