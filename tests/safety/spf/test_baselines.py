"""SPF's comparison methods: full-gradient PCGrad and the random-subspace control against NumPy
and their defining properties; Safe LoRA's projection against a NumPy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.safety.spf import spf
from jaxtrust.safety.spf.baselines import pcgrad_full, random_subspace, safe_lora_project


def _tree(seed, shapes=(("a", (6, 4)), ("b", (5,)), ("skip", (3, 3)))):
    rng = np.random.default_rng(seed)
    return {name: jnp.asarray(rng.normal(size=shape), jnp.float32) for name, shape in shapes}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_pcgrad_full_matches_numpy_and_removes_the_conflict(seed):
    g, s = _tree(seed), _tree(seed + 1)
    tx = pcgrad_full(exclude="skip")
    out, state = tx.update(g, tx.init(g), safety_grads=s)
    flat_g = np.concatenate([np.ravel(g[k]) for k in ("a", "b")])
    flat_s = np.concatenate([np.ravel(s[k]) for k in ("a", "b")])
    dot = flat_g @ flat_s
    coef = min(dot, 0.0) / (flat_s @ flat_s)
    for k in ("a", "b"):
        np.testing.assert_allclose(
            out[k], np.asarray(g[k]) - coef * np.asarray(s[k]), rtol=1e-5, atol=1e-5
        )
    np.testing.assert_array_equal(out["skip"], g["skip"])  # excluded leaves pass through
    after = np.concatenate([np.ravel(out[k]) for k in ("a", "b")]) @ flat_s
    assert after >= -1e-4 * np.abs(flat_s).sum()
    assert int(state.conflicts) == int(dot < 0)


def test_pcgrad_full_errors():
    g = _tree(0)
    tx = pcgrad_full()
    with pytest.raises(ValueError, match="safety_grads"):
        tx.update(g, tx.init(g))
    with pytest.raises(ValueError, match="structure"):
        tx.update(g, tx.init(g), safety_grads={"a": g["a"]})


def test_random_subspace_ignores_the_safety_gradient_and_is_idempotent():
    g = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(8, 6)), jnp.float32)}
    tx = random_subspace(3, seed=1)
    state = tx.init(g)
    out1, state1 = tx.update(g, state, safety_grads=_tree(5, (("w", (8, 6)),)))
    out2, _ = tx.update(g, state, safety_grads=_tree(6, (("w", (8, 6)),)))
    np.testing.assert_allclose(
        out1["w"], out2["w"], atol=1e-6
    )  # the given safety grads do not matter
    assert np.abs(np.asarray(out1["w"]) - np.asarray(g["w"])).max() > 1e-3  # something conflicted
    again, _ = tx.update(out1, state1, safety_grads=g)
    np.testing.assert_allclose(again["w"], out1["w"], atol=1e-5)  # conflict removal is idempotent
    # and it is not the safety subspace: SPF with the real safety gradient differs
    real = spf(3)
    s = _tree(5, (("w", (8, 6)),))
    spf_out, _ = real.update(g, real.init(g), safety_grads=s)
    assert np.abs(np.asarray(spf_out["w"]) - np.asarray(out1["w"])).max() > 1e-3


def test_transforms_keep_nnx_param_wrappers():
    # A jitted NNX train step hands transforms an nnx.State of Param leaves; the update must have
    # the same structure or optax.apply_updates fails.
    from jaxtrust.models import CausalLM, LMConfig

    model = CausalLM(LMConfig.tiny(), rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    grads = jax.tree.map(lambda x: 0.01 * jnp.ones_like(x), params)
    safety = jax.tree.map(lambda x: -0.01 * jnp.ones_like(x), params)
    for tx in (spf(2, check_inputs=False), pcgrad_full(), random_subspace(2)):
        out, _ = tx.update(grads, tx.init(params), params, safety_grads=safety)
        assert jax.tree.structure(out) == jax.tree.structure(params)
        optax.apply_updates(params, out)


def test_safe_lora_projection_matches_numpy():
    rng = np.random.default_rng(3)
    base = {"layers": {"q_proj": {"kernel": rng.normal(size=(2, 6, 4)).astype(np.float32)}}}
    aligned = {
        "layers": {
            "q_proj": {
                "kernel": base["layers"]["q_proj"]["kernel"]
                + rng.normal(size=(2, 6, 4)).astype(np.float32)
            }
        }
    }
    finetuned = {
        "layers": {
            "q_proj": {
                "kernel": aligned["layers"]["q_proj"]["kernel"]
                + rng.normal(size=(2, 6, 4)).astype(np.float32)
            }
        }
    }
    out, info = safe_lora_project(finetuned, aligned, base, threshold=1.0)
    w_f, w_a, w_b = (t["layers"]["q_proj"]["kernel"] for t in (finetuned, aligned, base))
    for layer in range(2):
        # the paper's code in torch's [out, in] layout: C = V V^T / ||V||_F, W <- W_a + C dW
        v = (w_a[layer] - w_b[layer]).T
        c = v @ v.T / np.linalg.norm(v)
        expected = (w_a[layer].T + c @ (w_f[layer] - w_a[layer]).T).T
        np.testing.assert_allclose(
            out["layers"]["q_proj"]["kernel"][layer], expected, rtol=1e-4, atol=1e-4
        )
    assert len(info["projected"]) == 2
    # C is positive semi-definite, so cos(C dW, dW) >= 0: threshold 0 projects nothing
    untouched, info0 = safe_lora_project(finetuned, aligned, base, threshold=0.0)
    np.testing.assert_allclose(untouched["layers"]["q_proj"]["kernel"], w_f, rtol=1e-6)
    assert info0["projected"] == [] and all(
        c >= -1e-6 for c in info0["cosine"]["layers/q_proj/kernel"]
    )
    with pytest.raises(ValueError, match="threshold"):
        safe_lora_project(finetuned, aligned, base, threshold=1.5)


def test_safe_lora_projects_the_output_space_of_a_flax_kernel():
    # V = u e1^T ([in, out]): the alignment moved only output unit 0. A fine-tuning delta that
    # also writes only output unit 0 (dW = w e1^T) lies in the alignment subspace and must be
    # kept; a projector over the *input* space would rotate it onto u and project it away.
    rng = np.random.default_rng(0)
    d_in, d_out = 8, 5
    u, w = rng.normal(size=d_in), rng.normal(size=d_in)
    e1 = np.eye(d_out)[0]
    base = {"q_proj": {"kernel": rng.normal(size=(d_in, d_out)).astype(np.float32)}}
    aligned = {"q_proj": {"kernel": base["q_proj"]["kernel"] + np.outer(u, e1).astype(np.float32)}}
    delta = np.outer(w, e1).astype(np.float32)
    finetuned = {"q_proj": {"kernel": aligned["q_proj"]["kernel"] + delta}}
    out, info = safe_lora_project(
        finetuned, aligned, base, threshold=0.5, include="q_proj", stacked=False
    )
    assert info["cosine"]["q_proj/kernel"][0] == pytest.approx(1.0, abs=1e-5)
    assert info["projected"] == []
    np.testing.assert_allclose(out["q_proj"]["kernel"], finetuned["q_proj"]["kernel"], rtol=1e-6)
    # a delta on another output unit leaves the subspace: cosine 0, projected to nothing
    other = np.outer(w, np.eye(d_out)[1]).astype(np.float32)
    out2, info2 = safe_lora_project(
        {"q_proj": {"kernel": aligned["q_proj"]["kernel"] + other}},
        aligned,
        base,
        threshold=0.5,
        include="q_proj",
        stacked=False,
    )
    assert info2["projected"] == [("q_proj/kernel", 0)]
    np.testing.assert_allclose(out2["q_proj"]["kernel"], aligned["q_proj"]["kernel"], atol=1e-6)
