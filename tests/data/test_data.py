import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.data import ArithmeticWorld, WordTokenizer, collate


@pytest.mark.smoke
def test_word_tokenizer_round_trip_and_errors(tmp_path):
    tok = WordTokenizer(["a", "b", "c", "a"])
    assert tok.vocab_size == 5 + 3
    assert tok.decode(tok.encode("c a b")) == "c a b"
    assert tok.encode("a zzz", allow_unknown=True) == [5, tok.unk_id]
    with pytest.raises(KeyError, match="zzz"):
        tok.encode("a zzz")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([99])
    tok.save(tmp_path / "tok.json")
    assert WordTokenizer.load(tmp_path / "tok.json") == tok


@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=5),
    side=st.sampled_from(["left", "right"]),
)
def test_collate_masks_match_lengths(lengths, side):
    prompts = [list(range(10, 10 + p)) for p, _ in lengths]
    responses = [list(range(50, 50 + r)) for _, r in lengths]
    if max(p + r for p, r in lengths) == 0:
        return
    batch = collate(prompts, responses, pad_id=0, padding_side=side, pad_to_multiple=4)
    assert batch.tokens.shape[1] % 4 == 0
    for i, (p, r) in enumerate(lengths):
        assert batch.attention_mask[i].sum() == p + r
        assert batch.loss_mask[i].sum() == r
        real = batch.tokens[i][batch.attention_mask[i]]
        np.testing.assert_array_equal(real, prompts[i] + responses[i])
        # the supervised tokens are exactly the response, at the end of the real tokens
        np.testing.assert_array_equal(batch.tokens[i][batch.loss_mask[i] > 0], responses[i])


def test_collate_rejects_bad_input():
    with pytest.raises(ValueError, match="seq_len"):
        collate([[1, 2, 3]], [[4]], seq_len=2)
    with pytest.raises(ValueError, match="padding_side"):
        collate([[1]], padding_side="middle")
    with pytest.raises(ValueError, match="responses"):
        collate([[1]], [[1], [2]])


@pytest.mark.smoke
def test_arithmetic_world_answers_and_splits():
    world = ArithmeticWorld(max_operand=12, seed=3)
    tok = world.tokenizer
    for split in ("train", "test", "heldout"):
        for ex in world.sample(50, split=split, seed=1):
            assert world.answer(ex.prompt) == int(ex.response) >= 0
            tok.encode(ex.prompt + " " + ex.response)  # closed vocabulary
    train = {
        tuple(sorted(map(int, [w for w in e.prompt.split() if w.isdigit()])))
        for e in world.sample(400, split="train")
    }
    test = {
        tuple(sorted(map(int, [w for w in e.prompt.split() if w.isdigit()])))
        for e in world.sample(100, split="test")
    }
    # Test operand pairs never occur in training (up to the order swap of subtraction).
    assert not (train & test)
    examples = world.sample(2, seed=0)
    # the first word is the answer; whatever follows it is ignored
    right = [examples[0].response + " ok", examples[1].response]
    wrong = [examples[0].response, str(int(examples[1].response) + 1)]
    assert ArithmeticWorld.exact_match(right, examples) == 1.0
    assert ArithmeticWorld.exact_match(wrong, examples) == 0.5
    assert ArithmeticWorld.exact_match(["", ""], examples) == 0.0
    with pytest.raises(ValueError, match="split"):
        world.sample(1, split="val")
