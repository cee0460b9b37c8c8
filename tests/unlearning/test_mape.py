"""MAPE: mask Fisher vs a NumPy finite-difference reference, the search vs brute force and on
planted problems, the parameter mask, the optax transform, bad inputs."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scipy.special import erf

from jaxtrust.models import EncoderConfig, TextClassifier, ViT, ViTConfig
from jaxtrust.unlearning.mape import (
    MAPEConfig,
    MaskGradients,
    ModuleSelection,
    ModuleShape,
    block_objective,
    fisher_from_gradients,
    mask_fisher,
    mask_gradients,
    module_mask_transform,
    module_shape,
    parameter_mask,
    random_selection,
    select_modules,
    select_modules_from_scores,
)
from jaxtrust.unlearning.transforms import mask_fraction, masked_updates

CFG = ViTConfig(
    input_shape=(8,),
    patch=4,
    num_classes=3,
    encoder=EncoderConfig(dim=8, num_layers=2, num_heads=2, mlp_dim=3),
)


def _ln(x, scale, bias, eps):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * scale + bias


def _np_vit_logits(p, x, hm, fm, c=CFG):
    e = c.encoder
    b = x.shape[0]
    h = x.reshape(b, 2, 4) @ p["patch_embed"]["kernel"] + p["patch_embed"]["bias"]
    h = np.concatenate([np.broadcast_to(p["cls"], (b, 1, e.dim)), h], 1) + p["pos"]
    L = p["encoder"]["layers"]
    s = h.shape[1]
    for i in range(e.num_layers):

        def lin(sub, name, z, i=i):
            return z @ L[sub][name]["kernel"][i] + L[sub][name]["bias"][i]

        z = _ln(h, L["attn_norm"]["scale"][i], L["attn_norm"]["bias"][i], e.norm_eps)
        q, k, v = (
            lin("attn", n, z).reshape(b, s, e.num_heads, -1) for n in ("q_proj", "k_proj", "v_proj")
        )
        sc = np.einsum("bshd,bthd->bhst", q, k) / math.sqrt(e.head_dim)
        pr = np.exp(sc - sc.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        out = np.einsum("bhst,bthd->bshd", pr, v) * hm[i][None, None, :, None]
        h = h + lin("attn", "o_proj", out.reshape(b, s, e.dim))
        z = _ln(h, L["mlp_norm"]["scale"][i], L["mlp_norm"]["bias"][i], e.norm_eps)
        u = lin("mlp", "up_proj", z)
        g = 0.5 * u * (1 + erf(u / math.sqrt(2))) * fm[i]
        h = h + lin("mlp", "down_proj", g)
    f = _ln(h, p["encoder"]["final_norm"]["scale"], p["encoder"]["final_norm"]["bias"], e.norm_eps)
    return f[:, 0] @ p["head"]["kernel"] + p["head"]["bias"]


def _np_loss(p, x, y, hm, fm):
    z = _np_vit_logits(p, x, hm, fm)
    z = z - z.max(-1, keepdims=True)
    return -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(-1)))


@pytest.fixture(scope="module")
def vit():
    model = ViT(CFG, rngs=nnx.Rngs(0))
    # larger weights than the init so that every mask matters
    state = nnx.state(model, nnx.Param)
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape) * 0.5, a.dtype), state)
    nnx.update(model, state)
    return model


def test_mask_fisher_matches_numpy_finite_differences(vit):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 8)).astype(np.float32)
    y = rng.integers(0, 3, 5).astype(np.int32)
    p = jax.tree.map(
        lambda a: np.asarray(a, np.float64), nnx.to_pure_dict(nnx.state(vit, nnx.Param))
    )
    L, H, F = 2, 2, 3
    eps = 1e-5
    gh = np.zeros((5, L, H))
    gf = np.zeros((5, L, F))
    for idx in itertools.product(range(L), range(H)):
        up, dn = np.ones((L, H)), np.ones((L, H))
        up[idx] += eps
        dn[idx] -= eps
        gh[(slice(None), *idx)] = (
            _np_loss(p, x.astype(np.float64), y, up, np.ones((L, F)))
            - _np_loss(p, x.astype(np.float64), y, dn, np.ones((L, F)))
        ) / (2 * eps)
    for idx in itertools.product(range(L), range(F)):
        up, dn = np.ones((L, F)), np.ones((L, F))
        up[idx] += eps
        dn[idx] -= eps
        gf[(slice(None), *idx)] = (
            _np_loss(p, x.astype(np.float64), y, np.ones((L, H)), up)
            - _np_loss(p, x.astype(np.float64), y, np.ones((L, H)), dn)
        ) / (2 * eps)
    got = mask_gradients(vit, {"x": x, "y": y}, batch_size=2)  # padded last chunk
    np.testing.assert_allclose(got.head, gh, rtol=2e-3, atol=2e-5)
    np.testing.assert_allclose(got.ffn, gf, rtol=2e-3, atol=2e-5)
    fisher = mask_fisher(vit, {"x": x, "y": y})
    np.testing.assert_allclose(fisher.head, (gh**2).mean(0), rtol=5e-3, atol=1e-7)
    np.testing.assert_allclose(fisher.ffn, (gf**2).mean(0), rtol=5e-3, atol=1e-7)
    for layer in range(L):
        np.testing.assert_allclose(
            fisher.ffn_block[layer], gf[:, layer].T @ gf[:, layer] / 5, rtol=5e-3, atol=1e-7
        )
        np.testing.assert_allclose(np.diag(fisher.head_block[layer]), fisher.head[layer], rtol=1e-9)


def _brute_force(scores_h, block_h, counts):
    """Best J per layer over every subset of the given size."""
    best = []
    for layer, k in enumerate(counts):
        cands = []
        for sub in itertools.combinations(range(scores_h.shape[1]), k):
            s = np.zeros(scores_h.shape[1], bool)
            s[list(sub)] = True
            cands.append((float(s @ block_h[layer] @ s), s))
        best.append(max(cands, key=lambda t: t[0]))
    return best


def test_search_finds_planted_modules_and_matches_brute_force():
    rng = np.random.default_rng(2)
    n, L, H, F = 200, 2, 6, 8
    # Planted problem: heads (0, 4) and (1, 1), filters (0, 7), (1, 2) drive the forget loss and
    # barely the retain loss; a decoy head (0, 2) matters for both.
    gf_h = rng.normal(size=(n, L, H)) * 0.05
    gf_f = rng.normal(size=(n, L, F)) * 0.05
    gr_h = rng.normal(size=(n, L, H)) * 0.05
    gr_f = rng.normal(size=(n, L, F)) * 0.05
    for l, h in ((0, 4), (1, 1)):
        gf_h[:, l, h] += rng.normal(size=n) * 2.0
    for l, f in ((0, 7), (1, 2)):
        gf_f[:, l, f] += rng.normal(size=n) * 2.0
    gf_h[:, 0, 2] += rng.normal(size=n) * 2.5
    gr_h[:, 0, 2] += rng.normal(size=n) * 2.5
    forget = fisher_from_gradients(MaskGradients(gf_h, gf_f))
    retain = fisher_from_gradients(MaskGradients(gr_h, gr_f))
    shape = ModuleShape(num_layers=2, num_heads=6, num_kv_heads=6, head_dim=2, mlp_dim=8, dim=12)
    total = L * H * shape.head_cost + L * F * shape.filter_cost
    budget = (2 * shape.head_cost + 2 * shape.filter_cost + 0.5) / total
    sel = select_modules(forget, retain, shape, budget=budget, lam=1.0)
    assert set(zip(*np.nonzero(sel.heads), strict=True)) == {(0, 4), (1, 1)}
    assert set(zip(*np.nonzero(sel.filters), strict=True)) == {(0, 7), (1, 2)}
    assert sel.fraction <= budget + 1e-12
    # lam = 0 ignores the retain side: the decoy head becomes attractive
    sel0 = select_modules(forget, retain, shape, budget=budget, lam=0.0)
    assert sel0.heads[0, 2]

    # Block structure: two modules with large diagonals whose gradients cancel (negative
    # covariance) are worth less together than a pair of smaller, aligned ones. The ranking
    # warm start picks the cancelling pair; the greedy swaps must reach the brute-force optimum.
    common = rng.normal(size=n)
    g = rng.normal(size=(n, 1, H)) * 0.1
    g[:, 0, 0] += 1.5 * common
    g[:, 0, 1] -= 1.5 * common
    shared = rng.normal(size=n)
    g[:, 0, 3] += 1.2 * shared
    g[:, 0, 5] += 1.2 * shared
    block = np.einsum("nlh,nlk->lhk", g, g) / n
    diag = np.einsum("lhh->lh", block)
    warm = select_modules_from_scores(
        head=diag,
        ffn=np.full((1, 2), -1.0),
        head_block=block,
        ffn_block=None,
        budget=2 / (H + 2),
        head_cost=1,
        filter_cost=1,
        greedy=False,
    )
    assert set(np.flatnonzero(warm.heads[0])) == {0, 1}
    refined = select_modules_from_scores(
        head=diag,
        ffn=np.full((1, 2), -1.0),
        head_block=block,
        ffn_block=None,
        budget=2 / (H + 2),
        head_cost=1,
        filter_cost=1,
        greedy=True,
    )
    ((best_value, best_set),) = _brute_force(diag, block, [2])
    assert set(np.flatnonzero(refined.heads[0])) == set(np.flatnonzero(best_set)) == {3, 5}
    assert refined.objective == pytest.approx(best_value)
    assert refined.objective > warm.objective and refined.swaps >= 1
    # greedy never lowers the objective (random symmetric blocks)
    for trial in range(20):
        r = np.random.default_rng(trial)
        a = r.normal(size=(3, 30, 7))
        blk = np.einsum("nlh,nlk->lhk", a.transpose(1, 0, 2), a.transpose(1, 0, 2)) / 30
        blk = blk - 0.5 * np.einsum("nlh,nlk->lhk", *(2 * [r.normal(size=(30, 3, 7))])) / 30
        d = np.einsum("lhh->lh", blk)
        kw = dict(
            head=d,
            ffn=np.zeros((3, 1)),
            head_block=blk,
            ffn_block=None,
            budget=0.4,
            head_cost=1,
            filter_cost=1,
        )
        w, g2 = select_modules_from_scores(greedy=False, **kw), select_modules_from_scores(**kw)
        assert g2.objective >= w.objective - 1e-12
        assert (g2.heads.sum(1) == w.heads.sum(1)).all()  # per-layer counts kept
        assert block_objective(g2.heads, blk) == pytest.approx(g2.objective - 0.0)


def test_parameter_mask_selects_exactly_the_module_weights(vit):
    s = module_shape(vit)
    heads = np.array([[True, False], [False, False]])
    filters = np.array([[False, False, False], [False, True, False]])
    sel = ModuleSelection(heads, filters, 0.0, 0.0, 0, 0.0)
    m = parameter_mask(vit, sel)
    layers = m["encoder"]["layers"]
    q = np.asarray(layers["attn"]["q_proj"]["kernel"][...])
    assert q.shape == (2, 8, 8)
    assert q[0, :, : s.head_dim].all() and not q[0, :, s.head_dim :].any() and not q[1].any()
    o = np.asarray(layers["attn"]["o_proj"]["kernel"][...])
    assert o[0, : s.head_dim].all() and not o[0, s.head_dim :].any()
    up = np.asarray(layers["mlp"]["up_proj"]["kernel"][...])
    down = np.asarray(layers["mlp"]["down_proj"]["kernel"][...])
    assert up[1, :, 1].all() and up.sum() == 8 and down[1, 1].all() and down.sum() == 8
    assert not np.asarray(m["head"]["kernel"][...]).any()
    assert not np.asarray(layers["attn"]["o_proj"]["bias"][...]).any()
    count = sum(float(np.asarray(x).sum()) for x in jax.tree.leaves(m))
    assert count == s.head_cost + s.filter_cost
    # the transform freezes everything else inside an ordinary optax chain
    params = nnx.state(vit, nnx.Param)
    tx = optax.chain(optax.adam(0.1), module_mask_transform(vit, sel))
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    for u, mk in zip(jax.tree.leaves(updates), jax.tree.leaves(m), strict=True):
        np.testing.assert_array_equal(np.asarray(u) != 0, np.asarray(mk) != 0)
    assert 0 < mask_fraction(m) < 0.2


def test_parameter_mask_on_text_classifier_and_masked_updates_callable():
    clf = TextClassifier(
        vocab_size=11,
        num_classes=2,
        max_len=4,
        config=EncoderConfig(dim=8, num_layers=1, num_heads=2, mlp_dim=4),
        rngs=nnx.Rngs(0),
    )
    sel = random_selection(module_shape(clf), budget=0.5, seed=0)
    m = parameter_mask(clf, sel)
    assert 0 < mask_fraction(m) < 1
    params = {"w": jnp.ones((2, 3))}
    tx = optax.chain(optax.sgd(1.0), masked_updates(lambda p: jax.tree.map(lambda a: a[0] > 0, p)))
    u, _ = tx.update(params, tx.init(params), params)
    assert float(jnp.abs(u["w"]).sum()) == 6.0
    data = {"x": np.ones((3, 4), np.int32), "y": np.zeros(3, np.int32)}
    fisher = mask_fisher(clf, data)
    assert fisher.head.shape == (1, 2) and np.all(fisher.ffn >= 0)


@pytest.mark.usefixtures("own_error_messages")
def test_bad_inputs(vit):
    s = module_shape(vit)
    for bad in (0.0, -0.1, 1.5, True):
        with pytest.raises(ValueError, match=r"budget must be a fraction in \(0, 1\]"):
            MAPEConfig(budget=bad)
        with pytest.raises(ValueError, match="budget must be a fraction"):
            random_selection(s, budget=bad, seed=0)
    with pytest.raises(ValueError, match="base must be one of"):
        MAPEConfig(base="nope")
    with pytest.raises(TypeError, match="model must be a ViT"):
        module_shape(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="selection has heads"):
        parameter_mask(
            vit, ModuleSelection(np.ones((1, 1), bool), np.ones((2, 3), bool), 0, 0, 0, 0)
        )
    with pytest.raises(ValueError, match="data must hold matching"):
        mask_gradients(vit, {"x": np.zeros((0, 8), np.float32), "y": np.zeros(0, np.int32)})
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="not broadcastable"):
        masked_updates({"w": jnp.ones(4)}).init(params)
    with pytest.raises(ValueError, match="leaves but the parameters"):
        masked_updates({"w": jnp.ones(3), "v": jnp.ones(3)}).init(params)
