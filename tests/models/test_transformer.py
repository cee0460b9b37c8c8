"""CausalLM forward: KV cache, masks, hooks, hidden states, dtypes, parameter paths, bad input.

Models are tiny (``LMConfig.tiny``) with random O(1) weights (so that logits are not near
uniform and a wrong mask or hook shows). Every forward goes through one jitted split/merge
function with a single token shape, so the compiles are shared between tests.
"""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrust.models import CausalLM, KVCache, LMConfig, ModelHooks
from jaxtrust.models import transformer as transformer_module

BATCH, SEQ = 2, 8
PAD = 3  # row 0 is left-padded by PAD tokens


def _randomize(model: CausalLM, seed: int) -> CausalLM:
    """Fill every parameter with random values of a realistic scale (norms ~1, biases ~0.1).

    ``model`` may be abstract (``nnx.eval_shape``), which skips the eager initialisation.
    """
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(seed)

    def draw(path, x):
        name = str(path[-1].key)
        shape = tuple(x.shape)
        if name == "kernel":
            value = rng.normal(size=shape) / np.sqrt(shape[-2])
        elif name == "embedding":
            value = 0.5 * rng.normal(size=shape)
        elif name == "scale":
            value = 1.0 + 0.1 * rng.normal(size=shape)
        else:  # bias
            value = 0.1 * rng.normal(size=shape)
        return jnp.asarray(value, x.dtype)

    pure = jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(state))
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def _model(config: LMConfig, seed: int = 0, dtype=jnp.float32) -> CausalLM:
    return _randomize(
        nnx.eval_shape(
            lambda: CausalLM(config, rngs=nnx.Rngs(seed), dtype=dtype, param_dtype=dtype)
        ),
        seed,
    )


def _with_params(model: CausalLM, edit) -> CausalLM:
    """A copy of ``model`` whose pure-dict parameters were changed in place by ``edit(params)``."""
    graphdef, state = nnx.split(model)
    pure = jax.tree.map(np.array, nnx.to_pure_dict(state))
    edit(pure)
    state = jax.tree.map(lambda x: x, state)  # a copy, so the original model is untouched
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, pure))
    return nnx.merge(graphdef, state)


@functools.partial(jax.jit, static_argnames=("graphdef", "hooks"))
def _forward(graphdef, state, tokens, mask, head_mask, ffn_mask, hooks=None):
    out = nnx.merge(graphdef, state)(
        tokens,
        attention_mask=mask,
        head_mask=head_mask,
        ffn_mask=ffn_mask,
        hooks=hooks,
        output_hidden_states=True,
    )
    return out.logits, out.hidden_states


def forward(model, tokens, mask, head_mask=None, ffn_mask=None, hooks=None):
    """Logits and hidden states. Masks default to all-ones (not None), so that plain, head-masked
    and FFN-masked calls share one compiled program; test_split_merge_forward_compiles_once checks
    that all-ones masks equal no masks."""
    c = model.config
    head_mask = jnp.ones((c.num_layers, c.num_heads)) if head_mask is None else head_mask
    ffn_mask = jnp.ones((c.num_layers, c.intermediate_size)) if ffn_mask is None else ffn_mask
    graphdef, state = nnx.split(model)
    return _forward(graphdef, state, tokens, mask, head_mask, ffn_mask, hooks=hooks)


@functools.partial(jax.jit, static_argnames="graphdef")
def _cached_step(graphdef, state, tokens, mask, cache):
    out = nnx.merge(graphdef, state)(tokens, attention_mask=mask, cache=cache)
    return out.logits, out.cache


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(42)
    tokens = jnp.asarray(rng.integers(0, 256, size=(BATCH, SEQ)), jnp.int32)
    mask = jnp.ones((BATCH, SEQ), bool).at[0, :PAD].set(False)
    return tokens, mask


CONFIGS = {
    "llama": LMConfig.tiny(tie_word_embeddings=False),
    "gpt_neox": LMConfig.tiny("gpt_neox"),
    "llama_window": LMConfig.tiny(sliding_window=3),  # Mistral-style, GQA 4:2, tied
}


@pytest.fixture(scope="module")
def models():
    return {name: _model(config, seed=i) for i, (name, config) in enumerate(CONFIGS.items())}


# ---------------------------------------------------------------------------- NumPy reference
def _np_reference(config: LMConfig, model: CausalLM, tokens, mask, activation=None):
    """Llama-family forward in float64 NumPy, written from the equations (no jaxtrust code).

    Returns (logits, hidden states [L+1, b, s, d]). ``activation(x, layer)`` replaces SiLU.
    """
    p = jax.tree.map(
        lambda a: np.asarray(a, np.float64), nnx.to_pure_dict(nnx.state(model, nnx.Param))
    )
    act = activation or (lambda x, layer: x / (1.0 + np.exp(-x)))
    tokens, mask = np.asarray(tokens), np.asarray(mask)
    b, s = tokens.shape
    nh, kv, hd, eps = config.num_heads, config.num_kv_heads, config.head_dim, config.norm_eps
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    half = config.rotary_dim // 2
    inv_freq = 1.0 / config.rope_theta ** (np.arange(half) * 2.0 / config.rotary_dim)
    angle = positions[:, :, None, None] * inv_freq  # [b, s, 1, half]

    def rms(x, w):
        return w * x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)

    def rope(x):
        x1, x2 = x[..., :half], x[..., half : 2 * half]
        return np.concatenate(
            [
                x1 * np.cos(angle) - x2 * np.sin(angle),
                x2 * np.cos(angle) + x1 * np.sin(angle),
                x[..., 2 * half :],
            ],
            axis=-1,
        )

    i = np.arange(s)
    allowed = i[None, :] <= i[:, None]
    if config.sliding_window is not None:
        allowed &= (i[:, None] - i[None, :]) < config.sliding_window
    visible = mask[:, None, :] & allowed[None]  # [b, q, k]
    layers = p["layers"]
    x = p["embed"]["embedding"][tokens]
    hidden = [x]
    for layer in range(config.num_layers):
        W = {
            name: layers["attn"][name]["kernel"][layer]
            for name in ("q_proj", "k_proj", "v_proj", "o_proj")
        }
        h = rms(x, layers["attn_norm"]["scale"][layer])
        q = rope((h @ W["q_proj"]).reshape(b, s, nh, hd))
        k = rope((h @ W["k_proj"]).reshape(b, s, kv, hd))
        v = (h @ W["v_proj"]).reshape(b, s, kv, hd)
        k, v = (
            np.repeat(k, nh // kv, axis=2),
            np.repeat(v, nh // kv, axis=2),
        )  # query head j uses kv head j // group
        scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd)
        scores = np.where(visible[:, None], scores, -1e30)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, s, nh * hd) @ W["o_proj"]
        h2 = rms(x, layers["mlp_norm"]["scale"][layer])
        mlp = layers["mlp"]
        gated = act(h2 @ mlp["gate_proj"]["kernel"][layer], layer) * (
            h2 @ mlp["up_proj"]["kernel"][layer]
        )
        x = x + gated @ mlp["down_proj"]["kernel"][layer]
        hidden.append(x)
    y = rms(x, p["final_norm"]["scale"])
    head = p["embed"]["embedding"].T if config.tie_word_embeddings else p["lm_head"]["kernel"]
    return y @ head, np.stack(hidden)


def _real(x, mask):
    """The entries of ``x`` [b, s, ...] at real-token positions."""
    return np.asarray(x)[np.asarray(mask)]


@pytest.mark.parametrize("name", ["llama", "llama_window"])
def test_forward_matches_numpy_reference(models, batch, name):
    """Full forward (GQA, left padding, and the sliding window for llama_window) vs float64
    NumPy."""
    tokens, mask = batch
    logits, _ = forward(models[name], tokens, mask)
    ref, _ = _np_reference(CONFIGS[name], models[name], tokens, mask)
    np.testing.assert_allclose(_real(logits, mask), _real(ref, mask), atol=2e-4, rtol=1e-4)


def test_sliding_window_changes_only_positions_beyond_the_window(models, batch):
    tokens, _ = batch
    full_mask = jnp.ones_like(tokens, bool)
    windowed = models["llama_window"]
    unwindowed = _model(
        dataclasses.replace(CONFIGS["llama_window"], sliding_window=None),
        seed=list(CONFIGS).index("llama_window"),
    )
    np.testing.assert_array_equal(
        unwindowed.embed.embedding[...], windowed.embed.embedding[...]
    )  # same weights
    a, _ = forward(windowed, tokens, full_mask)
    b, _ = forward(unwindowed, tokens, full_mask)
    w = CONFIGS["llama_window"].sliding_window
    np.testing.assert_allclose(a[:, :w], b[:, :w], atol=1e-5)  # nothing to cut off yet
    assert np.abs(np.asarray(a[:, w:]) - np.asarray(b[:, w:])).min(axis=-1).max() > 1e-3


# ---------------------------------------------------------------------------- KV cache
@pytest.mark.parametrize("name", ["llama", "gpt_neox", "llama_window"])
def test_prefill_then_single_tokens_match_full_forward(models, batch, name):
    """Left-padded prefill of 4 tokens, then 4 one-token steps, default positions; vs one
    forward."""
    model, (tokens, mask) = models[name], batch
    full, _ = forward(model, tokens, mask)
    graphdef, state = nnx.split(model)
    compiled_before = _cached_step._cache_size()
    cache = KVCache.init(model.config, BATCH, SEQ)
    prefill = 4
    logits, cache = _cached_step(graphdef, state, tokens[:, :prefill], mask[:, :prefill], cache)
    steps = [logits]
    for t in range(prefill, SEQ):
        logits, cache = _cached_step(
            graphdef, state, tokens[:, t : t + 1], mask[:, t : t + 1], cache
        )
        steps.append(logits)
    cached = jnp.concatenate(steps, axis=1)
    np.testing.assert_allclose(_real(cached, mask), _real(full, mask), atol=1e-5, rtol=0)
    assert int(cache.index) == SEQ
    np.testing.assert_array_equal(cache.valid, mask)  # padding slots stay invalid
    assert (
        _cached_step._cache_size() - compiled_before == 2
    )  # one prefill program, one decode program


def test_right_padding_equals_left_padding(models, batch):
    """The real tokens' logits do not depend on where the padding is (positions count real
    tokens)."""
    model, (tokens, mask) = models["llama"], batch
    right_tokens = tokens.at[0].set(jnp.roll(tokens[0], -PAD))
    right_mask = jnp.roll(mask, -PAD, axis=1).at[1].set(True)
    left, _ = forward(model, tokens, mask)
    right, _ = forward(model, right_tokens, right_mask)
    np.testing.assert_allclose(_real(right, right_mask), _real(left, mask), atol=1e-5)
    # a row that is all padding gives finite (ignored) logits and leaves the other row alone
    empty_mask = mask.at[0].set(False)
    empty, _ = forward(model, tokens, empty_mask)
    assert np.isfinite(np.asarray(empty)).all()
    np.testing.assert_allclose(empty[1], left[1], atol=1e-6)


# ---------------------------------------------------------------------------- masks
def test_head_mask_equals_scaling_o_proj_input_rows(models, batch):
    model, (tokens, mask) = models["llama"], batch
    hd = model.config.head_dim
    head_mask = jnp.ones((2, 4)).at[1, 2].set(0.0).at[0, 1].set(0.5)

    def edit(p):
        p["layers"]["attn"]["o_proj"]["kernel"][1, 2 * hd : 3 * hd] = 0.0
        p["layers"]["attn"]["o_proj"]["kernel"][0, hd : 2 * hd] *= 0.5

    masked, _ = forward(model, tokens, mask, head_mask=head_mask)
    edited, _ = forward(_with_params(model, edit), tokens, mask)
    plain, _ = forward(model, tokens, mask)
    np.testing.assert_allclose(_real(masked, mask), _real(edited, mask), atol=1e-5)
    assert np.abs(_real(masked, mask) - _real(plain, mask)).max() > 1e-2  # the mask did something


@pytest.mark.parametrize("name", ["llama", "gpt_neox"])
def test_ffn_mask_equals_zeroing_down_proj_rows(models, batch, name):
    model, (tokens, mask) = models[name], batch
    units = [3, 17, 100]
    ffn_mask = jnp.ones((2, model.config.intermediate_size)).at[0, jnp.array(units)].set(0.0)

    def edit(p):
        p["layers"]["mlp"]["down_proj"]["kernel"][0, units] = 0.0

    masked, _ = forward(model, tokens, mask, ffn_mask=ffn_mask)
    edited, _ = forward(_with_params(model, edit), tokens, mask)
    plain, _ = forward(model, tokens, mask)
    np.testing.assert_allclose(_real(masked, mask), _real(edited, mask), atol=1e-5)
    assert np.abs(_real(masked, mask) - _real(plain, mask)).max() > 1e-3


# ------------------------------------------------------------------ hidden states and hooks
@pytest.mark.smoke
def test_hidden_states_shape_embeddings_and_final_head(models, batch):
    model, (tokens, mask) = models["llama"], batch
    config = model.config
    logits, hidden = forward(model, tokens, mask)
    assert hidden.shape == (config.num_layers + 1, BATCH, SEQ, config.hidden_size)
    embedding = np.asarray(model.embed.embedding[...])
    np.testing.assert_array_equal(hidden[0], embedding[np.asarray(tokens)])
    # the last hidden state is what the final norm and head read
    h = np.asarray(hidden[-1], np.float64)
    y = (
        np.asarray(model.final_norm.scale[...])
        * h
        / np.sqrt(np.mean(h * h, -1, keepdims=True) + config.norm_eps)
    )
    np.testing.assert_allclose(logits, y @ np.asarray(model.lm_head.kernel[...]), atol=1e-4)
    ref_logits, ref_hidden = _np_reference(config, model, tokens, mask)
    np.testing.assert_allclose(
        _real(np.moveaxis(np.asarray(hidden), 0, 2), mask),
        _real(np.moveaxis(ref_hidden, 0, 2), mask),
        atol=1e-4,
    )
    graphdef, state = nnx.split(model)
    no_hidden = jax.jit(lambda s: nnx.merge(graphdef, s)(tokens, attention_mask=mask))(state)
    assert no_hidden.hidden_states is None
    np.testing.assert_allclose(no_hidden.logits, logits, atol=1e-6)


@pytest.mark.parametrize("name", ["llama", "gpt_neox"])
def test_default_hooks_are_bit_identical(models, batch, name):
    model, (tokens, mask) = models[name], batch
    a, _ = forward(model, tokens, mask)
    b, _ = forward(
        model, tokens, mask, hooks=ModelHooks()
    )  # activation name is taken from the config
    np.testing.assert_array_equal(a, b)


def _poly(x):
    return 0.5 * x + 0.2 * x * x  # a quadratic stand-in for SiLU (same slope at 0)


@dataclasses.dataclass(frozen=True)
class PolyActivation(ModelHooks):
    def activation(self, x, layer):
        return _poly(x)


@dataclasses.dataclass(frozen=True)
class PolyFromLayer(ModelHooks):
    first: int = 1

    def activation(self, x, layer):
        return jnp.where(layer >= self.first, _poly(x), super().activation(x, layer))


def test_polynomial_activation_hook(models, batch):
    model, (tokens, mask) = models["llama"], batch
    logits, _ = forward(model, tokens, mask, hooks=PolyActivation())
    plain, _ = forward(model, tokens, mask)
    assert np.abs(_real(logits, mask) - _real(plain, mask)).max() > 1e-2
    ref, _ = _np_reference(model.config, model, tokens, mask, activation=lambda x, layer: _poly(x))
    np.testing.assert_allclose(_real(logits, mask), _real(ref, mask), atol=2e-4, rtol=1e-4)


def test_layer_dependent_hook_changes_only_later_layers(models, batch):
    model, (tokens, mask) = models["llama"], batch
    hooks = PolyFromLayer(first=1)
    assert hash(hooks) == hash(PolyFromLayer(first=1))  # usable as a static jit argument
    logits, hidden = forward(model, tokens, mask, hooks=hooks)
    _, plain_hidden = forward(model, tokens, mask)
    np.testing.assert_array_equal(hidden[:2], plain_hidden[:2])  # embeddings and layer 0 untouched
    assert np.abs(_real(hidden[2], mask) - _real(plain_hidden[2], mask)).max() > 1e-2
    silu = lambda x: x / (1.0 + np.exp(-x))  # noqa: E731
    ref, _ = _np_reference(
        model.config,
        model,
        tokens,
        mask,
        activation=lambda x, layer: _poly(x) if layer >= 1 else silu(x),
    )
    np.testing.assert_allclose(_real(logits, mask), _real(ref, mask), atol=2e-4, rtol=1e-4)


@dataclasses.dataclass(frozen=True)
class HalveContext(ModelHooks):
    def attn_context(self, x, layer):
        return 0.5 * x


def test_attn_context_hook_acts_on_the_o_proj_input(models, batch):
    # o_proj is linear and bias-free, so halving its input equals a head mask of 0.5 everywhere.
    model, (tokens, mask) = models["llama"], batch
    c = model.config
    logits, _ = forward(model, tokens, mask, hooks=HalveContext())
    masked = model(
        tokens, attention_mask=mask, head_mask=jnp.full((c.num_layers, c.num_heads), 0.5)
    ).logits
    plain, _ = forward(model, tokens, mask)
    assert np.abs(_real(logits, mask) - _real(plain, mask)).max() > 1e-3
    np.testing.assert_allclose(
        _real(logits, mask), _real(np.asarray(masked), mask), atol=1e-5, rtol=1e-5
    )


# ---------------------------------------------------------------------------- dtypes
def test_bfloat16_forward_is_close_to_float32(models, batch):
    model, (tokens, mask) = models["llama"], batch
    graphdef, state = nnx.split(
        nnx.eval_shape(
            lambda: CausalLM(
                model.config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16
            )
        )
    )
    nnx.replace_by_pure_dict(
        state,
        jax.tree.map(
            lambda x: x.astype(jnp.bfloat16), nnx.to_pure_dict(nnx.state(model, nnx.Param))
        ),
    )
    bf16 = nnx.merge(graphdef, state)
    logits, hidden = forward(bf16, tokens, mask)
    ref, _ = forward(model, tokens, mask)
    assert logits.dtype == jnp.float32 and hidden.dtype == jnp.bfloat16
    assert bf16.layers.attn.q_proj.kernel[...].dtype == jnp.bfloat16
    diff = np.abs(_real(logits, mask) - _real(ref, mask))
    scale = np.abs(_real(ref, mask)).max()
    assert diff.max() < 0.05 * scale, (diff.max(), scale)
    assert diff.max() > 0  # it really ran in lower precision
    agree = np.mean(np.argmax(_real(logits, mask), -1) == np.argmax(_real(ref, mask), -1))
    assert agree >= 0.9


# ---------------------------------------------------------------------------- parameter paths
def _documented_paths() -> set[str]:
    """Expand the ``a/{x,y}/b`` lines of transformer.py's module docstring into concrete paths."""
    paths = set()
    for line in transformer_module.__doc__.splitlines():
        match = re.match(r"\s+([a-z_]+/[a-z_/{},]+)\s+\[", line)
        if not match:
            continue
        expanded = [""]
        for part in re.split(r"(\{[^}]*\})", match.group(1)):
            options = part[1:-1].split(",") if part.startswith("{") else [part]
            expanded = [e + o for e in expanded for o in options]
        paths.update(expanded)
    for p in list(paths):  # "(+ bias [layers, out])" on the projection lines
        if p.endswith("_proj/kernel"):
            paths.add(p.replace("kernel", "bias"))
    return paths


@pytest.mark.parametrize(
    "config, expected",
    [
        (
            LMConfig.tiny(
                model_type="qwen3", qk_norm=True, qkv_bias=True, tie_word_embeddings=False
            ),
            {
                "embed/embedding": (256, 64),
                "layers/attn_norm/scale": (2, 64),
                "layers/attn/q_proj/kernel": (2, 64, 64),
                "layers/attn/q_proj/bias": (2, 64),
                "layers/attn/k_proj/kernel": (2, 64, 32),
                "layers/attn/k_proj/bias": (2, 32),
                "layers/attn/v_proj/kernel": (2, 64, 32),
                "layers/attn/v_proj/bias": (2, 32),
                "layers/attn/o_proj/kernel": (2, 64, 64),
                "layers/attn/q_norm/scale": (2, 16),
                "layers/attn/k_norm/scale": (2, 16),
                "layers/mlp_norm/scale": (2, 64),
                "layers/mlp/gate_proj/kernel": (2, 64, 128),
                "layers/mlp/up_proj/kernel": (2, 64, 128),
                "layers/mlp/down_proj/kernel": (2, 128, 64),
                "final_norm/scale": (64,),
                "lm_head/kernel": (64, 256),
            },
        ),
        (
            LMConfig.tiny("gpt_neox"),
            {
                "embed/embedding": (256, 64),
                **{
                    f"layers/{n}/{k}": (2, 64)
                    for n in ("attn_norm", "mlp_norm")
                    for k in ("scale", "bias")
                },
                **{f"layers/attn/{p}_proj/kernel": (2, 64, 64) for p in "qkvo"},
                **{f"layers/attn/{p}_proj/bias": (2, 64) for p in "qkvo"},
                "layers/mlp/up_proj/kernel": (2, 64, 128),
                "layers/mlp/up_proj/bias": (2, 128),
                "layers/mlp/down_proj/kernel": (2, 128, 64),
                "layers/mlp/down_proj/bias": (2, 64),
                "final_norm/scale": (64,),
                "final_norm/bias": (64,),
                "lm_head/kernel": (64, 256),
            },
        ),
    ],
    ids=["qwen3_untied", "gpt_neox"],
)
def test_stacked_parameter_paths_are_as_documented(config, expected):
    model = nnx.eval_shape(lambda: CausalLM(config, rngs=nnx.Rngs(0)))
    flat, _ = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    actual = {"/".join(str(k.key) for k in path): tuple(leaf.shape) for path, leaf in flat}
    assert actual == expected
    assert set(actual) <= _documented_paths()
    down = [p for p in actual if re.fullmatch(r"layers/mlp/down_proj/kernel", p)]
    assert down == ["layers/mlp/down_proj/kernel"]


def test_tied_model_has_no_lm_head():
    model = nnx.eval_shape(lambda: CausalLM(LMConfig.tiny(), rngs=nnx.Rngs(0)))
    assert model.lm_head is None
    flat, _ = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    paths = {"/".join(str(k.key) for k in path) for path, _ in flat}
    assert not any(p.startswith("lm_head") for p in paths)


# ---------------------------------------------------------------------------- compilation
def test_split_merge_forward_compiles_once(models, batch):
    traces = []

    @functools.partial(jax.jit, static_argnames="graphdef")
    def logits_of(graphdef, state, tokens):
        traces.append(1)
        return nnx.merge(graphdef, state)(tokens).logits

    tokens, _ = batch
    graphdef, state = nnx.split(models["llama"])
    first = logits_of(graphdef, state, tokens)
    other_graphdef, other_state = nnx.split(
        _model(CONFIGS["llama"], seed=7)
    )  # new weights, same shapes
    second = logits_of(other_graphdef, other_state, (tokens + 1) % 256)
    assert len(traces) == 1 and logits_of._cache_size() == 1
    assert np.abs(np.asarray(first) - np.asarray(second)).max() > 1e-3
    # no masks (None) == all-ones head and FFN masks (what the shared `forward` passes)
    with_ones, _ = forward(models["llama"], tokens, jnp.ones_like(tokens, bool))
    np.testing.assert_allclose(first, with_ones, atol=1e-6)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.smoke
@pytest.mark.usefixtures("own_error_messages")
def test_bad_inputs_name_the_argument():
    config = LMConfig.tiny()
    model = nnx.eval_shape(
        lambda: CausalLM(config, rngs=nnx.Rngs(0))
    )  # inputs are checked before any compute
    tokens = jnp.zeros((2, 5), jnp.int32)
    with pytest.raises(TypeError, match="tokens.*integer"):
        model(tokens.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"tokens must be a \[batch, seq\]"):
        model(jnp.zeros((5,), jnp.int32))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(2, 5\)"):
        model(tokens, attention_mask=jnp.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"positions must have shape \(2, 5\)"):
        model(tokens, positions=jnp.zeros((1, 5), jnp.int32))
    with pytest.raises(ValueError, match=r"head_mask must have shape \(2, 4\)"):
        model(tokens, head_mask=jnp.ones((4,)))
    with pytest.raises(ValueError, match=r"ffn_mask must have shape \(2, 128\)"):
        model(tokens, ffn_mask=jnp.ones((2, 64)))
    with pytest.raises(ValueError, match="cache"):
        model(tokens, cache=KVCache.init(config, 3, 16))  # batch 3 != 2
    with pytest.raises(ValueError, match="cache"):
        model(tokens, cache=KVCache.init(LMConfig.tiny(num_kv_heads=4), 2, 16))
    with pytest.raises(ValueError, match="5 tokens do not fit .* 4 slots"):
        model(tokens, cache=KVCache.init(config, 2, 4))
    with pytest.raises(ValueError, match="batch and max_len must be positive"):
        KVCache.init(config, 0, 4)


def test_cache_overflow_after_prefill_is_refused():
    """Writing past the last slot would silently overwrite earlier keys (dynamic_update_slice
    clamps)."""
    config = LMConfig.tiny()
    model = nnx.eval_shape(lambda: CausalLM(config, rngs=nnx.Rngs(0)))
    after_prefill = KVCache.init(config, 1, 8)._replace(index=jnp.asarray(6, jnp.int32))
    with pytest.raises(ValueError, match=r"cache: 3 new tokens at slot 6 .* 8 slots"):
        model(jnp.zeros((1, 3), jnp.int32), cache=after_prefill)
    with pytest.raises(ValueError, match=r"cache: 2 new tokens at slot 7"):
        model(
            jnp.zeros((1, 2), jnp.int32),
            cache=after_prefill._replace(index=jnp.asarray(7, jnp.int32)),
        )


def test_last_logits_only_equals_the_last_row_of_the_full_logits():
    model = CausalLM(LMConfig.tiny(), rngs=nnx.Rngs(3))
    tokens = jnp.arange(14, dtype=jnp.int32).reshape(2, 7)
    mask = jnp.ones((2, 7), bool).at[1, :2].set(False)
    full = model(tokens, attention_mask=mask).logits
    last = model(tokens, attention_mask=mask, last_logits_only=True).logits
    assert last.shape == (2, 1, 256)
    np.testing.assert_allclose(np.asarray(last[:, 0]), np.asarray(full[:, -1]), atol=1e-6)
