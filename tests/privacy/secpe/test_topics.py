"""The generated 8-topic task: labels follow the cue words, splits are disjoint, fillers are
label-neutral, and the vocabulary covers every sentence and template."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtrust.data import WordTokenizer
from jaxtrust.privacy.secpe import topics as T

OWNER = {w: c for c, name in enumerate(T.TOPICS) for w in T.TOPIC_WORDS[name]}


def _cues(text: str) -> list[str]:
    return [w for w in text.split() if w in OWNER]


@pytest.mark.smoke
def test_labels_are_the_majority_topic_of_the_cue_words_most_of_the_time():
    task = T.TopicTask(seed=0, confusion=0.2)
    texts, labels = task.sample(800, split="train", seed=3)
    assert np.bincount(labels, minlength=8).tolist() == [100] * 8
    agree = 0
    for text, y in zip(texts, labels, strict=True):
        cues = _cues(text)
        assert len(cues) == T.CUES_PER_SENTENCE, text
        counts = np.bincount([OWNER[c] for c in cues], minlength=8)
        agree += int(np.argmax(counts) == y and counts[y] >= 2)
        # No filler carries a topic.
        assert not set(text.split()) & (set(T.FILLERS) & set(OWNER))
    # P(at least 2 of 3 cues from the true topic) = 0.8^3 + 3 * 0.8^2 * 0.2 = 0.896.
    assert abs(agree / 800 - 0.896) < 0.04


@pytest.mark.smoke
def test_splits_hold_disjoint_cue_combinations_and_are_deterministic():
    task = T.TopicTask(seed=1)
    combos = {}
    for split in T.SPLITS:
        texts, _ = task.sample(300, split=split, seed=0)
        combos[split] = {tuple(sorted(_cues(t))) for t in texts}
        again, _ = task.sample(300, split=split, seed=0)
        assert again == texts
    assert not combos["train"] & combos["test"]
    assert not combos["val"] & combos["test"] and not combos["train"] & combos["val"]


@pytest.mark.smoke
def test_vocabulary_covers_sentences_templates_and_labels():
    task = T.TopicTask()
    tok = WordTokenizer(task.words)
    texts, _ = task.sample(50, split="test")
    for template in T.TEMPLATES:
        for text in texts[:5]:
            assert tok.unk_id not in tok.encode(template.format(text=text))
    assert all(len(tok.encode(w)) == 1 for w in task.label_words)


@pytest.mark.smoke
def test_bad_arguments_raise(own_error_messages):
    with pytest.raises(ValueError, match="confusion"):
        T.TopicTask(confusion=1.0)
    with pytest.raises(TypeError, match="seed"):
        T.TopicTask(seed="0")
    with pytest.raises(ValueError, match="split"):
        T.TopicTask().sample(3, split="dev")
    with pytest.raises(ValueError, match="n must"):
        T.TopicTask().sample(-1)
