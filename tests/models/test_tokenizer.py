"""Tokenizers: a byte-level BPE trained here, written into a tiny GGUF (as llama.cpp stores it),
must rebuild to a tokenizer that encodes exactly like the original; chat templates render."""

from __future__ import annotations

import json

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
tokenizers = pytest.importorskip("tokenizers")

from jaxtrust.models.tokenizer import format_chat, load_tokenizer  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France.",
    "def add(a, b):\n    return a + b  # adds 12 and 345\n",
    "Unicode: café, naïve, Grüße, 東京, emoji 🙂 and tabs\tand  double  spaces.",
    "It's what they'll say: we've done it, I'm sure, they'd agree.",
] * 20
TEXTS = [
    "The capital of France is Paris.",
    "  leading spaces and trailing  ",
    "numbers 2024 and 3.14159, code: x = f(y) ** 2",
    "Grüße aus 東京 🙂 — unseen wörds zqxj",
    "<|im_start|>user\nHello<|im_end|>\n",
]


@pytest.fixture(scope="module")
def trained():
    """A small byte-level BPE (GPT-2 style), trained on CORPUS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def write_tokenizer_gguf(path, tok, *, pre="gpt2", add_bos=False, template=CHAT_TEMPLATE):
    model = json.loads(tok.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    assert [i for _, i in vocab] == list(range(len(tokens)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [3 if t in SPECIALS else 1 for t in tokens]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types(types)
    writer.add_bos_token_id(tokens.index("<|im_start|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_add_bos_token(add_bos)
    if template:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tokens


def test_gguf_tokenizer_encodes_like_original_and_round_trips(tmp_path, trained):
    path = tmp_path / "tok.gguf"
    tokens = write_tokenizer_gguf(path, trained)
    tok = load_tokenizer(path)
    assert len(tok) == len(tokens)
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == trained.encode(text).ids, text
        assert tok.decode(ids) == text
    # merges were really used: common words are single tokens, not bytes
    assert len(tok.encode(" the capital of France", add_special_tokens=False)) <= 6
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == tokens.index("<|im_end|>")
    assert tok.pad_token_id == tokens.index("<|endoftext|>")


def test_control_tokens_are_atomic_special_tokens(tmp_path, trained):
    path = tmp_path / "tok.gguf"
    tokens = write_tokenizer_gguf(path, trained)
    tok = load_tokenizer(path)
    ids = tok.encode("<|im_start|>user\nHi<|im_end|>", add_special_tokens=False)
    assert ids[0] == tokens.index("<|im_start|>") and ids[-1] == tokens.index("<|im_end|>")
    assert "<|im_start|>" in tok.all_special_tokens
    assert tok.decode(ids, skip_special_tokens=True) == "user\nHi"


def test_add_bos_token_from_metadata(tmp_path, trained):
    path = tmp_path / "tok_bos.gguf"
    tokens = write_tokenizer_gguf(path, trained, add_bos=True)
    tok = load_tokenizer(path)
    ids = tok.encode("Paris")
    assert ids[0] == tokens.index("<|im_start|>")
    assert ids[1:] == trained.encode("Paris").ids


def test_chat_template_renders(tmp_path, trained):
    path = tmp_path / "tok.gguf"
    write_tokenizer_gguf(path, trained)
    tok = load_tokenizer(path)
    text = format_chat(tok, "What is the capital of France?")
    assert (
        text
        == "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    convo = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert format_chat(tok, convo, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    )
    with pytest.raises(TypeError, match="messages"):
        format_chat(tok, [{"content": "no role"}])


def test_smollm_pre_tokenizer_splits_digits(tmp_path, trained):
    path = tmp_path / "tok_smollm.gguf"
    write_tokenizer_gguf(path, trained, pre="smollm")
    tok = load_tokenizer(path)
    pieces = tok.convert_ids_to_tokens(tok.encode("year 2024", add_special_tokens=False))
    assert pieces[-4:] == ["2", "0", "2", "4"]
    assert tok.decode(tok.encode("year 2024", add_special_tokens=False)) == "year 2024"


def test_no_template_and_bad_paths(tmp_path, trained):
    path = tmp_path / "tok_notemplate.gguf"
    write_tokenizer_gguf(path, trained, template=None)
    tok = load_tokenizer(path)
    with pytest.raises(ValueError, match="chat_template"):
        format_chat(tok, "hi")
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing.gguf")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.gguf"):
        load_tokenizer(other)
    empty = tmp_path / "no_tokenizer"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="looked for any of tokenizer.json"):
        load_tokenizer(empty)


def test_hf_directory_loads_locally(tmp_path, trained):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=trained, eos_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(tmp_path / "hf_tok")
    tok = load_tokenizer(tmp_path / "hf_tok")
    for text in TEXTS[:3]:
        assert tok.encode(text, add_special_tokens=False) == trained.encode(text).ids
    assert format_chat(tok, "Hi").endswith("<|im_start|>assistant\n")
