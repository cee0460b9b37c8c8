"""Parity with the Hugging Face PyTorch implementations on tiny random checkpoints.

Each family's tiny model is made with ``transformers`` + torch (all weights random, norms and
biases included), written with ``save_pretrained`` (safetensors) and loaded with
``load_pretrained``. fp32 logits must agree within 1e-4 (max abs) on a padded batch, and greedy
continuations must be identical.
"""

import numpy as np
import pytest

from tests.conftest import HAS_TORCH

pytestmark = [pytest.mark.torch, pytest.mark.skipif(not HAS_TORCH, reason="needs torch + transformers")]

COMMON = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128)

FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=2, rope_theta=10000.0, tie_word_embeddings=False)),
    "llama3_rope": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=1, rope_theta=500000.0, rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16), tie_word_embeddings=True)),
    "smollm2": ("LlamaConfig", "LlamaForCausalLM", dict(num_attention_heads=6, num_key_value_heads=2, hidden_size=96, rope_theta=100000.0, tie_word_embeddings=True)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(num_key_value_heads=2, sliding_window=4, tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(num_key_value_heads=2, head_dim=24, tie_word_embeddings=False)),
    "neox_parallel": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(rotary_pct=0.25, use_parallel_residual=True, hidden_act="gelu")),
    "neox_sequential": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(rotary_pct=0.5, use_parallel_residual=False, hidden_act="gelu")),
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


def _batch(rng, batch=3, seq=10, vocab=96):
    tokens = rng.integers(3, vocab, size=(batch, seq)).astype(np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[1, :3] = 0  # left padding
    mask[2, :1] = 0
    return tokens, mask


@pytest.fixture(scope="module", params=list(FAMILIES))
def pair(request, tmp_path_factory):
    from jaxtrust.models import load_pretrained

    path = tmp_path_factory.mktemp(request.param)
    hf = _make_hf_model(request.param, path)
    return request.param, hf, load_pretrained(path)


def test_logits_match_torch_on_padded_batch(pair):
    import torch

    family, hf, model = pair
    tokens, mask = _batch(np.random.default_rng(0))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
    ours = np.asarray(model(tokens.astype(np.int32), attention_mask=mask.astype(bool)).logits)
    real = mask.astype(bool)
    err = np.abs(ours - ref)[real].max()
    assert err < 1e-4, f"{family}: max abs logit difference {err}"


def test_greedy_continuation_matches_torch(pair):
    import torch

    from jaxtrust.models import generate

    family, hf, model = pair
    rng = np.random.default_rng(1)
    prompts = [list(rng.integers(3, 96, size=n)) for n in (5, 8)]
    ours = generate(model, prompts, max_new_tokens=8, temperature=0.0)
    ours_tokens = np.asarray(ours.tokens)
    for i, prompt in enumerate(prompts):
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long), max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
        ref = out[0, len(prompt):].numpy()
        np.testing.assert_array_equal(ours_tokens[i, : len(ref)], ref, err_msg=family)
