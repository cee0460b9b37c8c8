"""Techniques inside a tiny CausalLM: identity at zero strength, layer restriction, jit, KV cache,
calibration targets and bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.models import CausalLM, KVCache, LMConfig
from jaxtrust.safety.actapprox import (
    FAMILIES,
    KNOWN_TECHNIQUES,
    LINEAR_INPUT_SITES,
    TECHNIQUES,
    ApproxHooks,
    approx_hooks,
    calibrate,
    record_activations,
    technique,
)

CONFIG = LMConfig.tiny(num_layers=3)


@pytest.fixture(scope="module")
def model():
    return CausalLM(CONFIG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def batch():
    tokens = jax.random.randint(jax.random.key(1), (4, 12), 1, CONFIG.vocab_size)
    mask = jnp.ones((4, 12), bool).at[1, :4].set(False)  # one left-padded row
    return tokens, mask


@pytest.fixture(scope="module")
def forward(model):
    """One compiled forward; hooks are a static argument (hashable when there is no noise)."""
    graphdef, state = nnx.split(model)

    def run(state, tokens, mask, hooks=None):
        out = nnx.merge(graphdef, state)(
            tokens, attention_mask=mask, hooks=hooks, output_hidden_states=True
        )
        return out.logits, out.hidden_states

    run = jax.jit(run, static_argnames=("hooks",))
    return lambda tokens, mask, hooks=None: run(state, tokens, mask, hooks=hooks)


@pytest.fixture(scope="module")
def calibrated(model, batch):
    techniques = [technique(n) for n in ("iron", "bolt", "bumblebee", "nexus")]
    techniques += [
        technique("teal", sparsity=0.25),
        technique("teal", sparsity=0.5),
        technique("cats", sparsity=0.5),
    ]
    techniques += [
        technique("smoothquant", bits=8),
        technique("smoothquant", bits=4),
        technique("omniquant", bits=4, steps=30),
    ]
    return calibrate(techniques, model, *batch)


@pytest.fixture(scope="module")
def record(model, batch):
    return record_activations(
        model, *batch, sites=(*LINEAR_INPUT_SITES, "activation"), max_rows=10_000
    )


def test_registry_contract():
    assert TECHNIQUES == ("iron", "bolt", "bumblebee", "nexus", "teal", "smoothquant", "omniquant")
    assert set(TECHNIQUES) | {"cats", "gaussian_noise", "laplace_noise"} == set(KNOWN_TECHNIQUES)
    for name in KNOWN_TECHNIQUES:
        t = technique(name)
        assert t.name == name and t.family in FAMILIES and t.layers is None
        hash(t)
    assert technique("gaussian_noise", strength=0.1).sigma == 0.1
    assert technique("teal", strength=0.3, layers=[0, 2]) == technique(
        "teal", sparsity=0.3, layers=(0, 2)
    )
    with pytest.raises(KeyError, match="known: iron, bolt"):
        technique("relufication")


@pytest.mark.smoke
def test_zero_strength_is_bit_exact_identity(model, batch, forward):
    tokens, mask = batch
    exact, _ = forward(tokens, mask)
    zero = [
        technique("teal", sparsity=0.0),
        technique("cats", sparsity=0.0),
        technique("smoothquant", bits=16),
        technique("omniquant", bits=16),
        technique("gaussian_noise", sigma=0.0),
        technique("laplace_noise", scale=0.0),
        technique("nexus", activation=False, softmax=False),
    ]
    hooks = approx_hooks(zero, CONFIG, rng=jax.random.key(0))
    assert hooks.techniques == () and hooks.rng is None
    logits, _ = forward(tokens, mask, hooks)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(exact))


@pytest.mark.slow
def test_every_technique_changes_the_output_and_is_hashable(batch, forward, calibrated):
    tokens, mask = batch
    exact, _ = forward(tokens, mask)
    diffs = {}
    for t in calibrated:
        hooks = approx_hooks(t, CONFIG)
        assert hash(hooks) == hash(approx_hooks(t, CONFIG))
        logits, _ = forward(tokens, mask, hooks)
        assert np.all(np.isfinite(np.asarray(logits)))
        diffs[(t.name, t.strength)] = float(jnp.abs(logits - exact).max())
    assert all(d > 1e-6 for d in diffs.values()), diffs
    # stronger settings err more
    assert diffs[("smoothquant", 4.0)] > diffs[("smoothquant", 8.0)]
    assert diffs[("teal", 0.5)] > diffs[("teal", 0.25)]


@pytest.mark.parametrize("name", ["teal", "smoothquant", "nexus", "gaussian_noise"])
def test_layer_restriction_leaves_other_layers_untouched(model, batch, forward, calibrated, name):
    tokens, mask = batch
    base = {t.name: t for t in calibrated if t.name in ("teal", "smoothquant")}
    t = {
        "teal": base.get("teal"),
        "smoothquant": base.get("smoothquant"),
        "nexus": technique("nexus"),
        "gaussian_noise": technique("gaussian_noise", sigma=0.5),
    }[name]
    t = dataclasses.replace(t, layers=(1, 2))
    _, exact_h = forward(tokens, mask)
    if t.needs_rng:
        hooks = approx_hooks(t, CONFIG, rng=jax.random.key(3))
        hidden = model(
            tokens, attention_mask=mask, hooks=hooks, output_hidden_states=True
        ).hidden_states
    else:
        _, hidden = forward(tokens, mask, approx_hooks(t, CONFIG))
    # hidden_states[0] = embeddings, [l + 1] = output of layer l: layers 0 unchanged, 1 changed
    np.testing.assert_array_equal(np.asarray(hidden[:2]), np.asarray(exact_h[:2]))
    assert float(jnp.abs(hidden[2] - exact_h[2]).max()) > 1e-6


def test_layers_beyond_the_model_are_rejected(own_error_messages):
    with pytest.raises(ValueError, match="beyond the model's 3 layers"):
        approx_hooks(technique("nexus", layers=(2, 4)), CONFIG)
    with pytest.raises(ValueError, match="0 <= start < stop"):
        technique("nexus", layers=(2, 1))
    with pytest.raises(TypeError, match="tuple of ints"):
        technique("gaussian_noise", sigma=0.1, layers=(0.0, 1.0))


def test_bad_strengths_and_missing_inputs():
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
            technique("teal", sparsity=bad)
        with pytest.raises(ValueError, match="sparsity"):
            technique("cats", sparsity=bad)
    with pytest.raises(ValueError, match="sigma"):
        technique("gaussian_noise", sigma=-0.1)
    with pytest.raises(ValueError, match="site"):
        technique("laplace_noise", scale=0.1, site="lm_head")
    with pytest.raises(ValueError, match="calibrate"):
        approx_hooks(technique("teal", sparsity=0.5), CONFIG)
    with pytest.raises(ValueError, match="rng"):
        approx_hooks(technique("gaussian_noise", sigma=0.1), CONFIG)
    with pytest.raises(TypeError, match="Technique"):
        approx_hooks(["teal"], CONFIG)
    with pytest.raises(ValueError, match="relu"):
        approx_hooks(technique("bolt"), LMConfig.tiny(activation="relu"))


def test_calibration_of_another_model_is_rejected(calibrated):
    teal = next(t for t in calibrated if t.name == "teal")
    with pytest.raises(ValueError, match="calibrate on this model"):
        approx_hooks(teal, LMConfig.tiny(num_layers=4))
    sq = next(t for t in calibrated if t.name == "smoothquant")
    with pytest.raises(ValueError, match="calibrate on this model"):
        approx_hooks(sq, LMConfig.tiny(num_layers=3, hidden_size=32, num_heads=2, head_dim=16))


def test_teal_and_cats_thresholds_hit_the_target_sparsity(batch, calibrated, record):
    n_real = int(np.asarray(batch[1]).sum())
    for t in calibrated:
        if t.name not in ("teal", "cats"):
            continue
        for j, site in enumerate(t.sites):
            rows = record.rows[site]
            assert rows.shape[1] == n_real  # every real token, padding excluded
            for layer in range(CONFIG.num_layers):
                frac = np.mean(np.abs(rows[layer]) <= t.thresholds.array[layer, j])
                assert abs(frac - t.sparsity) < 0.01, (t.name, site, layer, frac)


def test_teal_sparsifies_the_first_layer_input_in_the_model(calibrated, record):
    # On layer 0 nothing upstream is approximated, so the zeroed fraction is the target.
    teal = next(t for t in calibrated if t.name == "teal" and t.sparsity == 0.5)
    hooks = approx_hooks(teal, CONFIG)
    x = jnp.asarray(record.rows["attn_input"][0])
    sparse = hooks._site("attn_input", x, 0)
    assert abs(float(jnp.mean(sparse == 0)) - 0.5) < 0.01


def test_smoothquant_scales_follow_the_formula(model, calibrated, record):
    sq = next(t for t in calibrated if t.name == "smoothquant" and t.bits == 4)
    attn = model.layers.attn
    w = np.concatenate(
        [
            np.asarray(attn.q_proj.kernel[...]),
            np.asarray(attn.k_proj.kernel[...]),
            np.asarray(attn.v_proj.kernel[...]),
        ],
        axis=-1,
    )
    expected = np.sqrt(record.absmax["attn_input"]) / np.sqrt(np.abs(w).max(-1))
    np.testing.assert_allclose(sq.scales[0].array, expected, rtol=1e-4)
    assert sq.scales[1] is None and sq.scales[3] is None  # o_proj / down_proj inputs: unsmoothed


def test_omniquant_reconstruction_beats_its_init(model, calibrated, record):
    """The learned LET + clipping reconstructs each linear layer's output better than the
    SmoothQuant-style initialisation it starts from (on the calibration activations)."""
    from jaxtrust.safety.actapprox._calibration import _fit_let, _weights
    from jaxtrust.safety.actapprox.quantization import let_quantize

    x, w = record.rows["mlp_input"], _weights(model)["mlp_input"]
    init = _fit_let(x, w, 4, 0, 5e-3)
    fitted = next(t for t in calibrated if t.name == "omniquant").params[
        LINEAR_INPUT_SITES.index("mlp_input")
    ]

    def err(params):
        s, d, c = (p.array for p in params)
        total = 0.0
        for layer in range(x.shape[0]):
            xq = np.asarray(
                let_quantize(
                    jnp.asarray(x[layer]),
                    4,
                    jnp.asarray(s[layer]),
                    jnp.asarray(d[layer]),
                    c[layer, 0],
                    c[layer, 1],
                )
            )
            total += np.mean((xq @ w[layer] - x[layer] @ w[layer]) ** 2)
        return total

    assert err(fitted) < 0.95 * err(init)


def test_noise_inside_jit_with_a_traced_key(model, batch):
    tokens, mask = batch
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, key):
        hooks = approx_hooks(
            [technique("gaussian_noise", sigma=0.2), technique("laplace_noise", scale=0.1)],
            CONFIG,
            rng=key,
        )
        return nnx.merge(graphdef, state)(tokens, attention_mask=mask, hooks=hooks).logits

    a, b, c = (
        run(state, jax.random.key(0)),
        run(state, jax.random.key(0)),
        run(state, jax.random.key(1)),
    )
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.abs(a - c).max()) > 1e-4


def test_noise_sweep_with_a_traced_sigma_compiles_once(model, batch):
    tokens, mask = batch
    graphdef, state = nnx.split(model)
    traces = []

    @jax.jit
    def run(state, sigma, key):
        traces.append(1)
        hooks = approx_hooks(
            technique("gaussian_noise", sigma=sigma, layers=(0, 1)), CONFIG, rng=key
        )
        return nnx.merge(graphdef, state)(tokens, attention_mask=mask, hooks=hooks).logits

    exact = model(tokens, attention_mask=mask).logits
    errors = [
        float(jnp.abs(run(state, jnp.float32(s), jax.random.key(0)) - exact).mean())
        for s in (0.0, 0.05, 0.5)
    ]
    assert len(traces) == 1
    assert errors[0] == 0.0 and 0 < errors[1] < errors[2]


def test_noise_statistics_and_per_layer_independence():
    x = jnp.zeros((64, 128, 32))
    g = approx_hooks(technique("gaussian_noise", sigma=0.3), CONFIG, rng=jax.random.key(0))
    lap = approx_hooks(technique("laplace_noise", scale=0.2), CONFIG, rng=jax.random.key(0))
    e0 = np.asarray(g._site("activation", x, 0))
    e1 = np.asarray(g._site("activation", x, jnp.int32(1)))
    assert abs(e0.std() - 0.3) < 0.01 and abs(e0.mean()) < 0.005
    assert abs(np.corrcoef(e0.ravel(), e1.ravel())[0, 1]) < 0.02  # layers draw independent noise
    d = np.asarray(lap._site("mlp_hidden", x, 2))
    assert abs(d.std() - 0.2 * np.sqrt(2)) < 0.01 and abs(np.mean(np.abs(d)) - 0.2) < 0.005
    assert np.all(np.asarray(lap._site("activation", x, 2)) == 0)  # laplace acts on mlp_hidden only


def test_hooks_with_kv_cache_decoding_match_the_full_forward(model, batch, calibrated):
    """Prefill + one-token decoding steps with a KV cache give the full forward's logits under
    the composed techniques (all are token-wise, and the polynomial softmax ignores empty slots)."""
    tokens = batch[0][:, :8]
    names = ("bumblebee", "teal", "smoothquant", "omniquant", "cats")
    hooks = approx_hooks([next(t for t in calibrated if t.name == n) for n in names], CONFIG)
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, tokens, cache):
        out = nnx.merge(graphdef, state)(tokens, cache=cache, hooks=hooks)
        return out.logits, out.cache

    full, _ = run(state, tokens, None)
    logits, cache = run(state, tokens[:, :5], KVCache.init(CONFIG, tokens.shape[0], 16))
    steps = [logits]
    for i in range(5, 8):
        logits, cache = run(state, tokens[:, i : i + 1], cache)
        steps.append(logits)
    exact, _ = jax.jit(lambda state, tokens: (nnx.merge(graphdef, state)(tokens).logits, None))(
        state, tokens
    )
    assert float(jnp.abs(full - exact).max()) > 1e-4  # the techniques are active
    np.testing.assert_allclose(
        np.asarray(jnp.concatenate(steps, axis=1)), np.asarray(full), atol=2e-4, rtol=2e-4
    )


@pytest.mark.slow
def test_gpt_neox_gelu_model(batch):
    config = LMConfig.tiny("gpt_neox", num_layers=2)
    model = CausalLM(config, rngs=nnx.Rngs(1))
    tokens, mask = batch
    techs = calibrate([technique("nexus"), technique("cats", sparsity=0.3)], model, tokens, mask)
    exact = model(tokens, attention_mask=mask).logits
    for t in techs:
        logits = model(tokens, attention_mask=mask, hooks=approx_hooks(t, config)).logits
        err = float(jnp.abs(logits - exact).max())
        assert 1e-6 < err < 1.0, (t.name, err)
    with pytest.raises(ValueError, match="mlp_gate"):
        record_activations(model, tokens, mask, sites=("mlp_gate",))


def test_approx_hooks_type():
    hooks = approx_hooks([technique("nexus"), technique("iron", layers=(0, 1))], CONFIG)
    assert isinstance(hooks, ApproxHooks) and hooks.activation_name == "silu"
    assert [t.name for t in hooks.techniques] == ["nexus", "iron"]


# The bibliography, written down independently of the code: first author, venue, year.
BIBLIOGRAPHY = {
    "iron": ("Hao", "NeurIPS", 2022),
    "bolt": ("Pang", "IEEE S&P", 2024),
    "bumblebee": ("Lu", "NDSS", 2025),
    "nexus": ("Zhang", "NDSS", 2025),
    "teal": ("Liu", "ICLR", 2025),
    "cats": ("Lee", "COLM", 2024),
    "smoothquant": ("Xiao", "ICML", 2023),
    "omniquant": ("Shao", "ICLR", 2024),
    "gaussian_noise": ("Zhang", "USENIX Sec.", 2025),
    "laplace_noise": ("Zhang", "USENIX Sec.", 2025),
}


def test_references_cover_every_technique():
    import re

    from jaxtrust.safety.actapprox import REFERENCES

    assert set(REFERENCES) == set(KNOWN_TECHNIQUES) == set(BIBLIOGRAPHY)
    # "Author et al., Title, Venue Year": each part present and the right one for the name
    form = re.compile(
        r"^(?P<author>[A-Z][a-z]+) et al\., (?P<title>.+), (?P<venue>.+) (?P<year>\d{4})$"
    )
    for name, (family, reference, fidelity) in REFERENCES.items():
        match = form.match(reference)
        assert match, f"{name}: {reference!r} is not 'Author et al., Title, Venue Year'"
        author, venue, year = BIBLIOGRAPHY[name]
        assert (match["author"], match["venue"], int(match["year"])) == (author, venue, year)
        assert len(match["title"]) >= 4 and fidelity
        assert technique(name).family == family


def test_quantile_subsample_for_large_calibration_sets(model, batch, record):
    # thresholds from a subsample stay close to those from every entry
    small = record_activations(
        model, *batch, sites=("mlp_hidden",), levels=(0.5,), max_quantile_entries=2000
    )
    full = record_activations(model, *batch, sites=("mlp_hidden",), levels=(0.5,))
    for layer in range(CONFIG.num_layers):
        frac = np.mean(
            np.abs(record.rows["mlp_hidden"][layer]) <= small.quantiles["mlp_hidden"][layer, 0]
        )
        assert abs(frac - 0.5) < 0.05
    assert not np.array_equal(small.quantiles["mlp_hidden"], full.quantiles["mlp_hidden"])


@settings(max_examples=40, deadline=None)
@given(
    start=st.integers(0, 7), length=st.integers(1, 8), layer=st.integers(0, 9), traced=st.booleans()
)
def test_layer_range_property(start, length, layer, traced):
    """A technique changes a value exactly at the layers of its half-open range."""
    t = technique("smoothquant", bits=4, layers=(start, start + length), scales=(None,) * 4)
    x = jax.random.normal(jax.random.key(layer), (2, 3, 16))
    y = t.transform("attn_context", x, jnp.int32(layer) if traced else layer)
    inside = start <= layer < start + length
    assert bool(jnp.any(y != x)) == inside
