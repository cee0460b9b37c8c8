"""KV-cache generation against a naive reference loop (full forward re-run on the growing
sequence) on a tiny random llama built through the HF-tensor contract."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrust.models import ModelHooks, generation
from jaxtrust.models.generation import bucket_length, generate

VOCAB = 97
PROMPTS = [[5, 17, 33], [9, 8, 7, 6, 5, 4, 3], [42]]


def tiny_hf(seed: int = 0, tied: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
    hidden, heads, kv, head_dim, ffn, layers = 32, 4, 2, 8, 64, 2
    config = dict(
        model_type="llama",
        architectures=["LlamaForCausalLM"],
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        hidden_act="silu",
    )
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.3):
        return (scale * rng.normal(size=shape)).astype(np.float32)

    tensors = {
        "model.embed_tokens.weight": w(VOCAB, hidden, scale=1.0),
        "model.norm.weight": 1 + w(hidden, scale=0.1),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": w(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": w(kv * head_dim, hidden),
            p + "self_attn.v_proj.weight": w(kv * head_dim, hidden),
            p + "self_attn.o_proj.weight": w(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": w(ffn, hidden),
            p + "mlp.up_proj.weight": w(ffn, hidden),
            p + "mlp.down_proj.weight": w(hidden, ffn),
            p + "input_layernorm.weight": 1 + w(hidden, scale=0.1),
            p + "post_attention_layernorm.weight": 1 + w(hidden, scale=0.1),
        }
    if not tied:
        tensors["lm_head.weight"] = w(VOCAB, hidden, scale=1.0)
    return config, tensors


@pytest.fixture(scope="module")
def model():
    from jaxtrust.models.config import LMConfig
    from jaxtrust.models.convert import model_from_hf_tensors

    config, tensors = tiny_hf()
    return model_from_hf_tensors(LMConfig.from_hf(config), tensors, dtype=jnp.float32)


_REFERENCE_FORWARD = {}
REFERENCE_WIDTH = 32


def naive_greedy(model, prompt, max_new_tokens, stop_tokens=()):
    """Reference: re-run the full forward (no cache) on the growing sequence, argmax of the
    logits at its last token. The sequence is right-padded to a fixed width so that one compiled
    forward serves every step; with causal attention the padding after the last real token
    cannot influence its logits."""
    if id(model) not in _REFERENCE_FORWARD:
        _REFERENCE_FORWARD[id(model)] = jax.jit(lambda tokens: model(tokens).logits)
    forward = _REFERENCE_FORWARD[id(model)]
    seq, new = list(prompt), []
    for _ in range(max_new_tokens):
        padded = np.zeros((1, REFERENCE_WIDTH), np.int32)
        padded[0, : len(seq)] = seq
        token = int(jnp.argmax(forward(jnp.asarray(padded))[0, len(seq) - 1]))
        new.append(token)
        seq.append(token)
        if token in stop_tokens:
            break
    return new


@pytest.mark.smoke
def test_greedy_matches_naive_loop_with_ragged_prompts(model):
    out = generate(model, PROMPTS, max_new_tokens=6)
    assert out.tokens.shape == (3, 6)
    np.testing.assert_array_equal(out.prompt_lengths, [3, 7, 1])
    for row, prompt in enumerate(PROMPTS):
        assert out.tokens[row].tolist() == naive_greedy(model, prompt, 6), row
    np.testing.assert_array_equal(out.lengths, [6, 6, 6])
    assert not bool(jnp.any(out.stopped))


@dataclasses.dataclass(frozen=True)
class QuadraticActivation(ModelHooks):
    def activation(self, x, layer):
        return 0.5 * x + 0.2 * x * x


def test_hooks_apply_in_prefill_and_every_decode_step(model):
    hooks = QuadraticActivation()
    out = generate(model, PROMPTS, max_new_tokens=6, hooks=hooks)
    plain = generate(model, PROMPTS, max_new_tokens=6)
    assert not np.array_equal(np.asarray(out.tokens), np.asarray(plain.tokens))  # the hook matters
    forward = jax.jit(lambda tokens: model(tokens, hooks=hooks).logits)
    for row, prompt in enumerate(PROMPTS):
        seq = list(prompt)
        for step in range(6):
            padded = np.zeros((1, REFERENCE_WIDTH), np.int32)
            padded[0, : len(seq)] = seq
            token = int(jnp.argmax(forward(jnp.asarray(padded))[0, len(seq) - 1]))
            assert int(out.tokens[row, step]) == token, (row, step)
            seq.append(token)


@pytest.mark.usefixtures("own_error_messages")
def test_unhashable_hooks_are_refused(model):
    @dataclasses.dataclass(frozen=True)
    class WithArray(ModelHooks):
        scale: jax.Array = dataclasses.field(default_factory=lambda: jnp.ones(()))

    with pytest.raises(TypeError, match="hashable"):
        generate(model, PROMPTS, max_new_tokens=2, hooks=WithArray())
    with pytest.raises(TypeError, match="ModelHooks"):
        generate(model, PROMPTS, max_new_tokens=2, hooks=lambda x: x)


def test_array_input_with_right_padding_mask_equals_list_input(model):
    width = 8
    tokens = np.zeros((3, width), np.int32)
    mask = np.zeros((3, width), bool)
    for row, prompt in enumerate(PROMPTS):
        tokens[row, : len(prompt)] = prompt
        mask[row, : len(prompt)] = True
    from_array = generate(
        model, jnp.asarray(tokens), prompt_mask=jnp.asarray(mask), max_new_tokens=4
    )
    from_list = generate(model, PROMPTS, max_new_tokens=4)
    np.testing.assert_array_equal(from_array.tokens, from_list.tokens)
    # a wider bucket (more left padding) must not change the result
    padded = generate(model, PROMPTS, max_new_tokens=4, prompt_bucket=16)
    np.testing.assert_array_equal(padded.tokens, from_list.tokens)


def test_stop_tokens_stop_rows_independently_and_loop_exits_early(model):
    max_new = 10
    free = np.asarray(generate(model, PROMPTS, max_new_tokens=max_new).tokens)
    # stop row 0 at its 2nd token and row 1 at its 4th; row 2 keeps going unless it hits one
    stops = (int(free[0, 1]), int(free[1, 3]))
    out = generate(model, PROMPTS, max_new_tokens=max_new, stop_tokens=stops, pad_id=0)
    tokens = np.asarray(out.tokens)
    for row, prompt in enumerate(PROMPTS):
        expected = naive_greedy(model, prompt, max_new, stop_tokens=stops)
        assert int(out.lengths[row]) == len(expected), row
        assert tokens[row, : len(expected)].tolist() == expected, row
        assert np.all(tokens[row, len(expected) :] == 0), row
        assert bool(out.stopped[row]) == (expected[-1] in stops)
    assert int(out.lengths[0]) <= 2 and int(out.lengths[1]) <= 4

    # every row stops -> the while loop ends before max_new_tokens
    all_stops = tuple(int(free[r, 1]) for r in range(3))
    early = generate(model, PROMPTS, max_new_tokens=max_new, stop_tokens=all_stops)
    assert bool(jnp.all(early.stopped))
    assert int(early.num_steps) == int(jnp.max(early.lengths)) <= 2 < max_new


def test_no_retrace_on_second_call_with_same_shapes(model):
    generate(model, PROMPTS, max_new_tokens=5)
    before = dict(generation._TRACE_COUNTS)
    generate(model, PROMPTS, max_new_tokens=5)
    generate(model, [[1, 2], [3], [4, 5, 6, 7, 8]], max_new_tokens=5)  # same bucket (8), batch 3
    assert dict(generation._TRACE_COUNTS) == before
    generate(model, PROMPTS, max_new_tokens=13)  # a new static length does trace again
    assert generation._TRACE_COUNTS["decode"] == before["decode"] + 1


def test_sampling_limits_equal_greedy(model):
    greedy = generate(model, PROMPTS, max_new_tokens=6).tokens
    cold = generate(
        model, PROMPTS, max_new_tokens=6, temperature=1e-6, key=jax.random.key(3)
    ).tokens
    np.testing.assert_array_equal(cold, greedy)
    top1 = generate(
        model, PROMPTS, max_new_tokens=6, temperature=1.5, top_k=1, key=jax.random.key(4)
    ).tokens
    np.testing.assert_array_equal(top1, greedy)
    tiny_p = generate(
        model, PROMPTS, max_new_tokens=6, temperature=1.5, top_p=1e-6, key=jax.random.key(5)
    ).tokens
    np.testing.assert_array_equal(tiny_p, greedy)


def test_same_rng_same_sample_different_rng_differs(model):
    kwargs = dict(max_new_tokens=8, temperature=1.5)
    a = generate(model, PROMPTS, key=jax.random.key(7), **kwargs).tokens
    b = generate(model, PROMPTS, key=jax.random.key(7), **kwargs).tokens
    np.testing.assert_array_equal(a, b)
    others = [generate(model, PROMPTS, key=jax.random.key(k), **kwargs).tokens for k in (8, 9)]
    assert any(not np.array_equal(a, o) for o in others)


def test_sampler_distribution_top_k_top_p():
    """Frequencies of the sampler on known logits match the truncated, renormalised softmax."""
    probs = np.array([0.5, 0.3, 0.15, 0.05], np.float32)
    logits = jnp.asarray(np.log(np.tile(probs, (4000, 1))))
    key = jax.random.key(0)

    def freq(**kw):
        draws = generation._sample(
            logits, key, jnp.float32(1.0), jnp.float32(kw.pop("top_p", 1.0)), greedy=False, **kw
        )
        return np.bincount(np.asarray(draws), minlength=4) / draws.shape[0]

    np.testing.assert_allclose(freq(top_k=None, use_top_p=False), probs, atol=0.03)
    np.testing.assert_allclose(freq(top_k=2, use_top_p=False), [0.625, 0.375, 0, 0], atol=0.03)
    # top_p=0.7: mass before token 1 is 0.5 < 0.7, before token 2 it is 0.8 -> keep {0, 1}
    np.testing.assert_allclose(
        freq(top_k=None, top_p=0.7, use_top_p=True), [0.625, 0.375, 0, 0], atol=0.03
    )
    np.testing.assert_allclose(
        freq(top_k=None, top_p=0.85, use_top_p=True),
        [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0],
        atol=0.03,
    )


@pytest.mark.usefixtures("own_error_messages")
def test_bad_inputs(model):
    with pytest.raises(ValueError, match="key"):
        generate(model, PROMPTS, max_new_tokens=2, temperature=0.7)
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[1, 2], []], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"\[0, 97\)"):
        generate(model, [[1, 200]], max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, PROMPTS, max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        generate(
            model, PROMPTS, max_new_tokens=2, temperature=1.0, top_p=1.5, key=jax.random.key(0)
        )
    with pytest.raises(TypeError, match="tokenize"):
        generate(model, ["hello"], max_new_tokens=2)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        generate(model, PROMPTS, max_new_tokens=200)


def test_bucket_length():
    assert [bucket_length(n) for n in (1, 8, 9, 100, 512, 513)] == [8, 8, 16, 128, 512, 1024]
    with pytest.raises(ValueError):
        bucket_length(0)
