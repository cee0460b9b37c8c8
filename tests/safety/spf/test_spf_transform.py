"""The SPF optax transform: numerics vs NumPy, schedule, jit, orbax, NNX, placement, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.safety.spf import SPFState, path_name, project_conflict, selected_matrices, spf
from jaxtrust.safety.spf import subspace as sub
from tests.safety.spf.test_subspace import np_basis, np_project


def rand_tree(seed: int, scale: float = 1.0) -> dict:
    """Tiny params-shaped tree: a matrix, a stacked [L, m, n] weight, a 3-D kernel, a bias."""
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(scale * rng.normal(size=s), jnp.float32)
    return {"attn": {"q": f(4, 6), "o": f(6, 4)}, "layers": f(3, 4, 5), "norm": f(4)}


def np_reference(updates: dict, safety: dict, rank: int, mode: str) -> dict:
    """Per matrix, per stacked layer, NumPy SVD + NumPy projection."""
    out = {"attn": {}, "norm": np.asarray(updates["norm"])}
    for name in ("q", "o"):
        g_s = np.asarray(safety["attn"][name])
        out["attn"][name] = np_project(np.asarray(updates["attn"][name]), np_basis(g_s, rank), mode)
    out["layers"] = np.stack(
        [
            np_project(np.asarray(u), np_basis(np.asarray(s), rank), mode)
            for u, s in zip(updates["layers"], safety["layers"], strict=True)
        ]
    )
    return out


def conflicting_pair(seed: int) -> tuple[dict, dict]:
    """Updates partly opposed to the safety gradient, so every mode has work to do."""
    safety = rand_tree(seed)
    noise = rand_tree(seed + 1)
    updates = jax.tree.map(lambda n, s: n - 0.7 * s, noise, safety)
    return updates, safety


@pytest.mark.smoke
def test_conflict_removed_on_dict_params():
    updates, safety = conflicting_pair(0)
    tx = spf(rank=2)
    out, state = tx.update(updates, tx.init(updates), safety_grads=safety)
    assert bool(state.basis_ready) and int(state.count) == 1
    for path, (u, s) in {"attn/q": ("q", "q"), "attn/o": ("o", "o")}.items():
        del path
        basis = sub.basis_svd(safety["attn"][u], 2)
        c_before = np.asarray(sub.subspace_coefficients(updates["attn"][s], basis))
        c_after = np.asarray(sub.subspace_coefficients(out["attn"][s], basis))
        assert c_before.min() < 0  # the case conflicts, so the check below can fail
        assert c_after.min() >= -1e-5
    np.testing.assert_array_equal(np.asarray(out["norm"]), np.asarray(updates["norm"]))


@pytest.mark.parametrize("mode", ["conflict", "pcgrad", "null", "block"])
def test_transform_matches_numpy_reference(mode):
    updates, safety = conflicting_pair(3)
    tx = spf(rank=2, mode=mode)
    out, _ = jax.jit(tx.update)(updates, tx.init(updates), None, safety_grads=safety)
    want = np_reference(updates, safety, 2, mode)
    for got, ref in zip(jax.tree.leaves(out), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(got), ref, atol=3e-5)


def test_stacked_equals_unstacked_leaves():
    updates, safety = conflicting_pair(5)
    split = lambda t: {f"layer{i}": t["layers"][i] for i in range(3)}
    tx = spf(rank=3, mode="conflict")
    out_stacked, _ = tx.update(
        updates["layers"], tx.init(updates["layers"]), safety_grads=safety["layers"]
    )
    out_split, _ = tx.update(split(updates), tx.init(split(updates)), safety_grads=split(safety))
    for i in range(3):
        np.testing.assert_allclose(
            np.asarray(out_stacked[i]), np.asarray(out_split[f"layer{i}"]), atol=1e-6
        )
    assert not np.allclose(np.asarray(out_stacked), np.asarray(updates["layers"]))


def test_higher_rank_kernel_reshaped_over_all_but_last_axis():
    rng = np.random.default_rng(0)
    kernel = jnp.asarray(rng.normal(size=(4, 2, 3)), jnp.float32)  # DenseGeneral [d, h, hd]
    safety = jnp.asarray(rng.normal(size=(4, 2, 3)), jnp.float32)
    tx = spf(rank=2, stacked=False)
    out, state = tx.update({"k": kernel}, tx.init({"k": kernel}), safety_grads={"k": safety})
    assert state.bases[0].u.shape == (8, 2)
    want = np_project(
        np.asarray(kernel).reshape(8, 3), np_basis(np.asarray(safety).reshape(8, 3), 2), "conflict"
    )
    np.testing.assert_allclose(np.asarray(out["k"]).reshape(8, 3), want, atol=2e-5)
    # A regex picks which 3-D leaves are stacked.
    sel = selected_matrices({"blocks": {"w": kernel}, "dg": kernel}, stacked=r"^blocks/")
    assert sel["blocks/w"][1:] == (True, (2, 3)) and sel["dg"][1:] == (False, (8, 3))


def test_include_exclude_select_by_path():
    updates, safety = conflicting_pair(1)
    tx = spf(rank=1, mode="null", include=r"^attn/", exclude=r"/o$")
    state = tx.init(updates)
    assert len(state.bases) == 1
    out, _ = tx.update(updates, state, safety_grads=safety)
    for untouched in (out["attn"]["o"], out["layers"], out["norm"]):
        assert any(
            np.array_equal(np.asarray(untouched), np.asarray(x)) for x in jax.tree.leaves(updates)
        )
    assert not np.allclose(np.asarray(out["attn"]["q"]), np.asarray(updates["attn"]["q"]))
    assert path_name(jax.tree_util.tree_flatten_with_path(updates)[0][0][0]) == "attn/o"


# One transform and one compiled update per mode, shared by the hypothesis examples.
_TXS = {mode: spf(rank=2, mode=mode) for mode in ("conflict", "null")}
_JIT_UPDATES = {mode: jax.jit(tx.update) for mode, tx in _TXS.items()}


def test_inside_optax_masked_with_masked_extra_args():
    updates, safety = conflicting_pair(8)
    mask = {"attn": {"o": False, "q": True}, "layers": False, "norm": False}
    tx = optax.masked(spf(rank=2, mode="null"), mask, mask_compatible_extra_args=True)
    out, _ = tx.update(updates, tx.init(updates), safety_grads=safety)
    direct = spf(rank=2, mode="null", include="^attn/q$")
    want, _ = direct.update(updates, direct.init(updates), safety_grads=safety)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert not np.allclose(np.asarray(out["attn"]["q"]), np.asarray(updates["attn"]["q"]))


@settings(max_examples=6, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), mode=st.sampled_from(["conflict", "null"]))
def test_descent_direction_kept_and_idempotent(seed, mode):
    updates, safety = conflicting_pair(seed)
    update = _JIT_UPDATES[mode]
    out, state = update(updates, _TXS[mode].init(updates), None, safety_grads=safety)
    inner = sum(
        float(jnp.vdot(a, b))
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(updates), strict=True)
    )
    assert inner > 0
    again, _ = update(out, state, None)  # basis kept: projecting twice changes nothing
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(out), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)


def test_non_conflicting_updates_pass_bit_identical():
    _, safety = conflicting_pair(2)
    updates = jax.tree.map(lambda s: 0.5 * s, safety)  # aligned with safety: nothing conflicts
    for mode in ("conflict", "pcgrad"):
        tx = spf(rank=2, mode=mode)
        out, _ = jax.jit(tx.update)(updates, tx.init(updates), None, safety_grads=safety)
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(updates), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    ("refresh_every", "refresh_steps"), [(None, [0]), (1, list(range(7))), (3, [0, 3, 6])]
)
def test_refresh_schedule(refresh_every, refresh_steps):
    params = rand_tree(0)
    tx = spf(rank=2, refresh_every=refresh_every)
    update = jax.jit(tx.update)
    state = tx.init(params)
    changed = []
    for step in range(7):
        old = state.bases
        _, state = update(params, state, None, safety_grads=rand_tree(100 + step))
        diff = any(
            not np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(state.bases), strict=True)
        )
        changed.append(diff)
        assert int(state.last_refresh) == max(s for s in refresh_steps if s <= step)
    assert [i for i, c in enumerate(changed) if c] == refresh_steps


def test_refresh_every_n_uses_kept_basis_between_refreshes_without_safety_grads():
    params = rand_tree(0)
    tx = spf(rank=2, refresh_every=2)
    update = jax.jit(tx.update)
    _, state = update(params, tx.init(params), None, safety_grads=rand_tree(1))
    out, state = update(params, state, None)  # step 1: not due, basis kept
    want = project_conflict(params["attn"]["q"], state.bases[1])  # leaves: attn/o, attn/q, layers
    np.testing.assert_allclose(np.asarray(out["attn"]["q"]), np.asarray(want), atol=1e-6)
    with pytest.raises(Exception, match="refresh is due"):  # step 2: due, no safety_grads
        jax.block_until_ready(update(params, state, None))


def test_jit_does_not_retrace_on_second_update():
    params = rand_tree(0)
    tx = optax.chain(spf(rank=2, refresh_every=2), optax.sgd(0.1))
    traces = []

    def step(grads, state, safety):
        traces.append(1)
        return tx.update(grads, state, None, safety_grads=safety)

    step = jax.jit(step)
    state = tx.init(params)
    for i in range(3):
        _, state = step(rand_tree(10 + i), state, rand_tree(20 + i))
    assert len(traces) == 1


def test_state_roundtrips_through_orbax(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    updates, safety = conflicting_pair(4)
    tx = spf(rank=2, refresh_every=3)
    _, state = tx.update(updates, tx.init(updates), safety_grads=safety)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp_path / "spf", state)
    ckptr.wait_until_finished()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    restored = ckptr.restore(tmp_path / "spf", abstract)
    assert isinstance(restored, SPFState)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    out_a, _ = tx.update(updates, restored)
    out_b, _ = tx.update(updates, state)
    for a, b in zip(jax.tree.leaves(out_a), jax.tree.leaves(out_b), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_placement_before_adam_equals_adam_on_projected_grads():
    params = rand_tree(0)
    grads, safety = conflicting_pair(6)
    tx = optax.chain(spf(rank=2), optax.adamw(1e-2))
    out, _ = tx.update(grads, tx.init(params), params, safety_grads=safety)
    projected, _ = spf(rank=2).update(grads, spf(rank=2).init(params), safety_grads=safety)
    adam = optax.adamw(1e-2)
    want, _ = adam.update(projected, adam.init(params), params)
    plain, _ = adam.update(grads, adam.init(params), params)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-7)
    assert not np.allclose(np.asarray(out["attn"]["q"]), np.asarray(plain["attn"]["q"]))


def test_placement_after_adam_makes_the_applied_step_conflict_free():
    params = rand_tree(0)
    grads, safety = conflicting_pair(6)
    lr = 0.05
    tx = optax.chain(optax.scale_by_adam(), spf(rank=2), optax.scale_by_learning_rate(lr))
    state = tx.init(params)
    for _ in range(3):
        step, state = tx.update(grads, state, params, safety_grads=safety)
    direction = -step["attn"]["q"] / lr  # the descent direction actually applied
    basis = sub.basis_svd(safety["attn"]["q"], 2)
    assert np.asarray(sub.subspace_coefficients(direction, basis)).min() >= -1e-5
    adam_only = optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(lr))
    raw, _ = adam_only.update(grads, adam_only.init(params), params)
    assert np.asarray(sub.subspace_coefficients(-raw["attn"]["q"] / lr, basis)).min() < 0


def test_safety_factors_give_the_same_update_as_the_gradient():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)  # T=3 tokens, in=6
    gy = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)  # out=5
    xs = jnp.asarray(rng.normal(size=(2, 3, 6)), jnp.float32)  # stacked: [L, T, in]
    gys = jnp.asarray(rng.normal(size=(2, 3, 5)), jnp.float32)
    safety = {"w": x.T @ gy, "stack": jnp.einsum("ltm,ltn->lmn", xs, gys)}
    updates = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32) - s, safety)
    tx = spf(rank=2, mode="null")
    via_grads, _ = tx.update(updates, tx.init(updates), safety_grads=safety)
    via_factors, _ = tx.update(
        updates, tx.init(updates), safety_factors={"w": (x, gy), "stack": (xs, gys)}
    )
    for a, b in zip(jax.tree.leaves(via_grads), jax.tree.leaves(via_factors), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=3e-5)
    with pytest.raises(ValueError, match=r"safety_factors\['w'\] must be x \[T, 6\]"):
        tx.update(updates, tx.init(updates), safety_factors={"w": (gy, x), "stack": (xs, gys)})
    with pytest.raises(ValueError, match="missing 'stack'"):
        tx.update(updates, tx.init(updates), safety_factors={"w": (x, gy)})


def test_explained_ratio_selects_rank_per_matrix():
    rng = np.random.default_rng(0)
    # Singular values 8, 4, 2, 1, ...: CER(1) = 0.75, CER(2) = 0.94.
    qa, _ = np.linalg.qr(rng.normal(size=(6, 5)))
    qb, _ = np.linalg.qr(rng.normal(size=(7, 5)))
    g_s = jnp.asarray((qa * 2.0 ** (3 - np.arange(5))) @ qb.T, jnp.float32)
    tx = spf(rank=None, explained_ratio=0.9, max_rank=4)
    state = tx.init({"w": g_s})
    assert state.bases[0].u.shape == (6, 4)
    _, state = tx.update({"w": g_s}, state, safety_grads={"w": g_s})
    assert int(np.sum(np.asarray(state.bases[0].s) > 0)) == 2


@pytest.mark.smoke
def test_nnx_optimizer_path_matches_dict_path():
    from flax import nnx

    class Tiny(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.proj = nnx.Linear(4, 3, rngs=rngs)
            self.stack = nnx.Param(jax.random.normal(rngs.params(), (2, 3, 4)))

        def __call__(self, x):
            h = self.proj(x)
            return jnp.einsum("bi,lij->blj", h, self.stack[...])

    model = Tiny(nnx.Rngs(0))
    x = jnp.linspace(-1.0, 1.0, 8).reshape(2, 4)
    util_loss = lambda m: jnp.mean(m(x) ** 2)
    safety_loss = lambda m: -jnp.mean(m(x)[:, 0])
    grads = nnx.grad(util_loss)(model)
    safety = nnx.grad(safety_loss)(model)

    def plain(tree) -> dict[str, np.ndarray]:
        flat = jax.tree_util.tree_flatten_with_path(
            tree, is_leaf=lambda z: isinstance(z, nnx.Variable)
        )[0]
        return {
            path_name(k): np.asarray(
                v.get_value() if hasattr(v, "get_value") else getattr(v, "value", v)
            )
            for k, v in flat
        }

    params0 = plain(nnx.state(model, nnx.Param))

    tx = optax.chain(spf(rank=2, mode="null"), optax.sgd(0.1))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    optimizer.update(model, grads, safety_grads=safety)
    params1 = plain(nnx.state(model, nnx.Param))

    g, s = plain(grads), plain(safety)
    dict_tx = optax.chain(spf(rank=2, mode="null"), optax.sgd(0.1))
    want, _ = dict_tx.update(g, dict_tx.init(params0), params0, safety_grads=s)
    assert set(params1) == {"proj/bias", "proj/kernel", "stack"}
    for path in params1:
        np.testing.assert_allclose(params1[path] - params0[path], np.asarray(want[path]), atol=1e-6)
    assert not np.allclose(params1["stack"] - params0["stack"], -0.1 * g["stack"], atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    updates, safety = conflicting_pair(0)
    with pytest.raises(ValueError, match=r"rank=5 exceeds min\(m, n\)=4 of matrix 'attn/o'"):
        spf(rank=5).init(updates)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="rank"):
            spf(rank=bad)
    with pytest.raises(ValueError, match="exactly one of rank"):
        spf(rank=2, explained_ratio=0.9)
    with pytest.raises(ValueError, match="explained_ratio"):
        spf(rank=None, explained_ratio=1.5)
    with pytest.raises(ValueError, match="mode"):
        spf(mode="orthogonal")
    with pytest.raises(ValueError, match="refresh_every"):
        spf(refresh_every=0)
    with pytest.raises(ValueError, match="include"):
        spf(include="(")

    tx = spf(rank=2)
    state = tx.init(updates)
    with pytest.raises(ValueError, match="no safety basis has been estimated yet"):
        tx.update(updates, state)
    with pytest.raises(ValueError, match="safety_grads=<params-shaped"):
        spf(rank=2, refresh_every=1).update(updates, state)
    wrong_key = {**safety, "attn": {"q": safety["attn"]["q"], "p": safety["attn"]["o"]}}
    with pytest.raises(
        ValueError, match="first differing path: updates 'attn/o' vs safety_grads 'attn/p'"
    ):
        tx.update(updates, state, safety_grads=wrong_key)
    wrong_shape = {**safety, "layers": safety["layers"][:2]}
    with pytest.raises(ValueError, match=r"safety_grads\['layers'\] has shape \(2, 4, 5\)"):
        tx.update(updates, state, safety_grads=wrong_shape)
    missing = {k: v for k, v in safety.items() if k != "norm"}
    with pytest.raises(ValueError, match="'norm'"):
        tx.update(updates, state, safety_grads=missing)
    for bad_value in (jnp.nan, jnp.inf):
        poisoned = {**safety, "layers": safety["layers"].at[1, 2, 3].set(bad_value)}
        with pytest.raises(ValueError, match=r"safety_grads\['layers'\] contains NaN or Inf"):
            tx.update(updates, state, safety_grads=poisoned)
        # Under jit the same check fails the step (no silent update).
        with pytest.raises(Exception, match=r"safety_grads\['layers'\] contains NaN or Inf"):
            jax.block_until_ready(jax.jit(tx.update)(updates, state, None, safety_grads=poisoned))
    with pytest.raises(Exception, match="no safety basis has been estimated yet"):
        jax.block_until_ready(jax.jit(tx.update)(updates, state, None))
    with pytest.raises(ValueError, match="spf state does not match"):
        tx.update({"w": jnp.ones((3, 3))}, state, safety_grads={"w": jnp.ones((3, 3))})
