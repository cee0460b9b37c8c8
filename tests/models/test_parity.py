"""Parity with the Hugging Face PyTorch implementations on tiny random checkpoints.

Each family's tiny model is made with ``transformers`` + torch (all weights random, norms and
biases included), written with ``save_pretrained`` (safetensors) and loaded with
``load_pretrained``. Per family, three checks share two compiled programs (one ``[3, 16]``
forward, one token-by-token cached greedy loop):

* fp32 logits agree with torch within 1e-4 (max abs) on the real tokens of a left-padded batch;
* the cached greedy continuation of a left-padded batch equals ``model.generate(do_sample=False)``;
* logits from one-token steps with the KV cache equal the full forward (< 1e-5).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrust.models import KVCache
from tests.conftest import HAS_TORCH

pytestmark = [
    pytest.mark.torch,
    pytest.mark.skipif(not HAS_TORCH, reason="needs torch + transformers"),
]

VOCAB, PROMPT, NEW = 96, 8, 8
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=128,
)

FAMILIES = {
    "llama": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(num_key_value_heads=2, rope_theta=10000.0, tie_word_embeddings=False),
    ),
    "llama3_rope": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            num_key_value_heads=1,
            rope_theta=500000.0,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=16,
            ),
            tie_word_embeddings=True,
        ),
    ),
    "smollm2": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            num_attention_heads=6,
            num_key_value_heads=2,
            hidden_size=96,
            rope_theta=100000.0,
            tie_word_embeddings=True,
        ),
    ),
    "mistral": (
        "MistralConfig",
        "MistralForCausalLM",
        dict(num_key_value_heads=2, sliding_window=5, tie_word_embeddings=False),
    ),
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        dict(num_key_value_heads=2, tie_word_embeddings=True),
    ),
    "qwen3": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        dict(num_key_value_heads=2, head_dim=24, tie_word_embeddings=False),
    ),
    "neox_parallel": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(rotary_pct=0.25, use_parallel_residual=True, hidden_act="gelu"),
    ),
    "neox_sequential": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(rotary_pct=0.5, use_parallel_residual=False, hidden_act="gelu"),
    ),
}


def _make_hf_model(family, tmp_path):
    import torch
    import transformers

    config_name, model_name, extra = FAMILIES[family]
    config = getattr(transformers, config_name)(**{**COMMON, **extra})
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(config).eval()
    with torch.no_grad():  # random norms and biases too, so that a wrong mapping cannot hide
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model


@functools.partial(jax.jit, static_argnames="graphdef")
def _forward(graphdef, state, tokens, mask):
    return nnx.merge(graphdef, state)(tokens, attention_mask=mask).logits


@functools.partial(jax.jit, static_argnames="graphdef")
def _greedy(graphdef, state, prompt, mask):
    """Cached greedy decoding, one token per step: the left-padded prompt is fed through the
    cache (padding slots marked invalid), then NEW tokens are chosen by argmax. One model body
    in one scan keeps this to a single small compile per family (the multi-token prefill path
    is checked against the full forward in test_transformer.py).

    Returns the generated tokens [b, NEW] and the logits they were chosen from [b, NEW, vocab].
    """
    model = nnx.merge(graphdef, state)
    b = prompt.shape[0]
    cache = KVCache.init(model.config, b, PROMPT + NEW)
    prompt_positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)

    def step(carry, t):
        cache, logits, position = carry
        in_prompt = t < PROMPT
        col = jnp.minimum(t, PROMPT - 1)
        token = jnp.where(
            in_prompt, prompt[:, col], jnp.argmax(logits, axis=-1).astype(prompt.dtype)
        )
        real = jnp.where(in_prompt, mask[:, col], True)
        position = jnp.where(in_prompt, prompt_positions[:, col], position)
        out = model(
            token[:, None], positions=position[:, None], attention_mask=real[:, None], cache=cache
        )
        return (out.cache, out.logits[:, 0], position + 1), (token, logits)

    init = (cache, jnp.zeros((b, model.config.vocab_size), jnp.float32), jnp.zeros((b,), jnp.int32))
    _, (tokens, logits) = jax.lax.scan(step, init, jnp.arange(PROMPT + NEW))
    # Step PROMPT + j emits generated token j, chosen from the logits carried into that step.
    return tokens[PROMPT:].T, jnp.swapaxes(logits[PROMPT:], 0, 1)


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, VOCAB, size=(3, PROMPT))
    mask = np.ones((3, PROMPT), bool)
    mask[1, :3] = False  # left padding
    mask[2, :1] = False
    return np.where(mask, tokens, 0), mask


@pytest.fixture(scope="module", params=list(FAMILIES))
def run(request, tmp_path_factory, prompts):
    """Torch model, and the JAX results of the greedy loop and of the full forward over its
    output."""
    from jaxtrust.models import load_pretrained

    path = tmp_path_factory.mktemp(request.param)
    hf = _make_hf_model(request.param, path)
    graphdef, state = nnx.split(load_pretrained(path))
    prompt, mask = prompts
    tokens, step_logits = (
        np.asarray(a)
        for a in _greedy(graphdef, state, jnp.asarray(prompt, jnp.int32), jnp.asarray(mask))
    )
    full_tokens = np.concatenate([prompt, tokens], axis=1)
    full_mask = np.concatenate([mask, np.ones_like(tokens, bool)], axis=1)
    full_logits = np.asarray(
        _forward(graphdef, state, jnp.asarray(full_tokens, jnp.int32), jnp.asarray(full_mask))
    )
    return request.param, hf, tokens, step_logits, full_tokens, full_mask, full_logits


def test_logits_match_torch_on_padded_batch(run):
    import torch

    family, hf, _, _, tokens, mask, ours = run
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        ref = hf(
            input_ids=torch.tensor(tokens),
            attention_mask=torch.tensor(mask.astype(np.int64)),
            position_ids=torch.tensor(positions),
        ).logits.numpy()
    err = np.abs(ours - ref)[mask].max()
    assert err < 1e-4, f"{family}: max abs logit difference {err}"


def test_greedy_continuation_matches_torch(run, prompts):
    import torch

    family, hf, ours, *_ = run
    prompt, mask = prompts
    with torch.no_grad():
        out = hf.generate(
            torch.tensor(prompt),
            attention_mask=torch.tensor(mask.astype(np.int64)),
            max_new_tokens=NEW,
            min_new_tokens=NEW,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
    np.testing.assert_array_equal(ours, out[:, PROMPT:].numpy(), err_msg=family)


def test_cached_steps_match_full_forward(run):
    family, _, _, step_logits, _, mask, full_logits = run
    # The logits that chose generated token j come from position PROMPT - 1 + j of the full pass.
    err = np.abs(step_logits - full_logits[:, PROMPT - 1 : PROMPT - 1 + NEW]).max()
    assert err < 1e-5, f"{family}: cached vs full-forward logits differ by {err}"
