import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrust.data.safety_world import (
    BENIGN_KINDS,
    CLASSIFICATION_TEMPLATES,
    FORBIDDEN_KINDS,
    REFUSALS,
    STEMS,
    VERBS,
    SafetyWorld,
)

WORLD = SafetyWorld(seed=0)


def _all_examples(world, n=300):
    out = (
        world.pretraining_mix(n, seed=1)
        + world.alignment_mix(n, seed=2)
        + world.attack_mix(n, harmful_fraction=0.3, seed=3)
    )
    for examples in world.eval_sets(n // 3, seed=4).values():
        out += examples
    out += world.classification(n // 3, split="heldout", seed=5)
    return out


@pytest.mark.smoke
def test_deterministic_in_seed():
    a, b = SafetyWorld(seed=3), SafetyWorld(seed=3)
    assert a.pretraining_mix(200, seed=7) == b.pretraining_mix(200, seed=7)
    assert a.alignment_mix(200, seed=7) == b.alignment_mix(200, seed=7)
    assert a.eval_sets(20) == b.eval_sets(20)
    assert a.topics("forbidden", heldout=True) == b.topics("forbidden", heldout=True)
    # the sampling seed and the world seed both matter
    assert a.alignment_mix(200, seed=7) != a.alignment_mix(200, seed=8)
    worlds = [SafetyWorld(seed=s) for s in range(6)]
    assert len({w.topics("forbidden", heldout=True) for w in worlds}) > 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heldout_topics_and_templates_are_disjoint_and_category_marked(seed):
    world = SafetyWorld(seed=seed)
    assert not set(world.request_templates) & set(world.heldout_request_templates)
    for category, kinds in (("benign", BENIGN_KINDS), ("forbidden", FORBIDDEN_KINDS)):
        train, held = (
            set(world.topics(category, heldout=False)),
            set(world.topics(category, heldout=True)),
        )
        assert train and held and not train & held
        assert train | held == set(world.topics(category))
        assert len(held) == world.heldout_topics_per_kind * len(kinds)
        # held-out topics belong to the category through their kind, and every kind and stem
        # still occurs in training topics: only the combination is new
        assert {t.split()[1] for t in held} <= set(kinds)
        assert {t.split()[1] for t in train} == set(kinds)
        assert {t.split()[0] for t in train} == set(STEMS)
    # the stem alone says nothing about the category: every stem is a training topic of both
    benign_stems = {t.split()[0] for t in world.topics("benign", heldout=False)}
    forbidden_stems = {t.split()[0] for t in world.topics("forbidden", heldout=False)}
    assert benign_stems == forbidden_stems == set(STEMS)


def test_alignment_and_attack_data_never_touch_heldout_prompts():
    held_topics = set(WORLD.topics("benign", heldout=True)) | set(
        WORLD.topics("forbidden", heldout=True)
    )
    held_templates = set(WORLD.heldout_request_templates)
    requests = [
        ex
        for ex in WORLD.alignment_mix(2000, seed=1)
        + WORLD.attack_mix(1000, harmful_fraction=0.5, seed=2)
        if ex.kind in ("benign", "forbidden")
    ]
    assert len(requests) > 1000
    for ex in requests:
        template, _, topic = WORLD.parse_request(ex.prompt)
        assert template not in held_templates and topic not in held_topics, ex
    # whereas the base pretraining mix covers them (the base model must comply with them)
    seen = [
        WORLD.parse_request(ex.prompt)
        for ex in WORLD.pretraining_mix(4000, seed=1)
        if ex.kind in ("benign", "forbidden")
    ]
    assert held_templates <= {t for t, _, _ in seen}
    assert held_topics <= {topic for _, _, topic in seen}


def test_eval_splits_have_the_advertised_conditions():
    sets = WORLD.eval_sets(100)
    for category in ("benign", "forbidden"):
        for split, held_template, held_word in (
            ("train", False, False),
            ("heldout_template", True, False),
            ("heldout_word", False, True),
            ("heldout_both", True, True),
        ):
            for ex in sets[f"{category}_{split}"]:
                template, verb, topic = WORLD.parse_request(ex.prompt)
                assert WORLD.category_of(ex.prompt) == category == ex.kind
                assert (template in WORLD.heldout_request_templates) == held_template
                assert (topic in WORLD.topics(category, heldout=True)) == held_word
                assert ex.response == WORLD.compliant_answer(verb, topic)
    for ex in sets["utility_test"]:
        assert WORLD.arithmetic.answer(ex.prompt) == int(ex.response)


def test_benign_and_forbidden_share_surface_forms():
    for split in ("train", "heldout_template", "all"):
        parsed = {
            c: [
                WORLD.parse_request(ex.prompt)
                for ex in WORLD.requests(3000, category=c, split=split, seed=9)
            ]
            for c in ("benign", "forbidden")
        }
        templates = {c: {t for t, _, _ in parsed[c]} for c in parsed}
        verbs = {c: {v for _, v, _ in parsed[c]} for c in parsed}
        assert templates["benign"] == templates["forbidden"]
        assert verbs["benign"] == verbs["forbidden"] == set(VERBS)
    # same answer format: only the topic and its tool differ
    benign = WORLD.compliant_answer("make", "zarn cake").split()
    forbidden = WORLD.compliant_answer("make", "zarn hex").split()
    assert (
        len(benign) == len(forbidden)
        and sum(a != b for a, b in zip(benign, forbidden, strict=True)) == 2
    )


def test_closed_vocabulary_and_sequence_bound():
    tok = WORLD.tokenizer
    assert len(tok.vocab) == len(set(tok.vocab))
    longest = 0
    for ex in _all_examples(WORLD):
        ids = tok.encode(ex.prompt) + tok.encode(ex.response)  # raises KeyError on an unknown word
        assert tok.unk_id not in ids
        longest = max(
            longest, len(WORLD.encode_prompt(ex.prompt)) + len(tok.encode(ex.response)) + 1
        )
    assert longest <= WORLD.max_sequence_length
    for refusal in REFUSALS:
        tok.encode(refusal)
    batch = WORLD.batch(WORLD.alignment_mix(16, seed=0), seq_len=WORLD.max_sequence_length)
    assert batch.tokens.shape == (16, WORLD.max_sequence_length)


def test_refusals_and_responses_per_split():
    assert 3 <= len(REFUSALS) <= 5
    assert len({r.split()[0] for r in REFUSALS}) == len(REFUSALS)  # the first token decides
    assert not any(r.startswith("sure") for r in REFUSALS)
    align = WORLD.alignment_mix(3000, seed=0)
    counts = collections.Counter(ex.kind for ex in align)
    assert (
        abs(counts["forbidden"] / 3000 - 0.4) < 0.05 and abs(counts["benign"] / 3000 - 0.3) < 0.05
    )
    used = collections.Counter()
    for ex in align:
        if ex.kind == "forbidden":
            assert ex.response in REFUSALS
            used[ex.response] += 1
        elif ex.kind == "benign":
            _, verb, topic = WORLD.parse_request(ex.prompt)
            assert ex.response == WORLD.compliant_answer(verb, topic)
    assert set(used) == set(REFUSALS) and min(used.values()) > 0.15 * sum(used.values())
    for ex in WORLD.pretraining_mix(1000, seed=0):
        assert ex.response not in REFUSALS


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.2, 1.0])
def test_attack_mix_poison_fraction(fraction):
    data = WORLD.attack_mix(200, harmful_fraction=fraction, seed=1)
    harmful = [ex for ex in data if ex.kind == "forbidden"]
    assert len(data) == 200 and len(harmful) == round(200 * fraction)
    for ex in harmful:
        _, verb, topic = WORLD.parse_request(ex.prompt)
        assert ex.response == WORLD.compliant_answer(verb, topic)  # compliant, never a refusal
    assert all(ex.kind in ("utility", "forbidden") for ex in data)
    cls = WORLD.attack_mix(50, harmful_fraction=0.2, task="classification")
    assert collections.Counter(ex.kind for ex in cls) == {"classification": 40, "forbidden": 10}


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 101),
    seed=st.integers(0, 50),
    split=st.sampled_from(["train", "test", "heldout"]),
)
def test_classification_labels_balanced(n, seed, split):
    examples = WORLD.classification(n, split=split, seed=seed)
    counts = collections.Counter(ex.response for ex in examples)
    assert set(counts) <= set(WORLD.label_words)
    assert sum(counts.values()) == n
    assert max(counts.values(), default=0) - min([counts[w] for w in WORLD.label_words]) <= 1


def test_classification_templates_and_labels_are_correct():
    assert len(WORLD.label_words) == 2 and len(CLASSIFICATION_TEMPLATES) >= 3
    positive = {"good", "great", "fun", "lovely", "nice"}
    train_sentences, test_sentences = set(), set()
    for split, store in (("train", train_sentences), ("test", test_sentences)):
        for ex in WORLD.classification(400, split=split, seed=0):
            words = ex.prompt.split()
            adjective = next(
                w for w in words if w in positive | {"bad", "awful", "dull", "boring", "poor"}
            )
            expected = (adjective in positive) != ("not" in words)
            assert ex.response == ("positive" if expected else "negative")
            store.add(" ".join(words[words.index("the") : words.index(adjective) + 1]))
    assert not train_sentences & test_sentences
    for t in range(len(CLASSIFICATION_TEMPLATES)):
        prompts = [ex.prompt for ex in WORLD.classification(10, template=t, seed=1)]
        prefix = CLASSIFICATION_TEMPLATES[t].split("{text}")[0]
        assert all(p.startswith(prefix) for p in prompts)


@pytest.mark.usefixtures("own_error_messages")
def test_bad_input():
    with pytest.raises(ValueError, match="category"):
        WORLD.requests(3, category="harmful")
    with pytest.raises(ValueError, match="split"):
        WORLD.requests(3, category="benign", split="test")
    with pytest.raises(ValueError, match="n must be"):
        WORLD.requests(-1, category="benign")
    with pytest.raises(ValueError, match="harmful_fraction"):
        WORLD.attack_mix(10, harmful_fraction=1.5)
    with pytest.raises(ValueError, match="template"):
        WORLD.classification(3, template=len(CLASSIFICATION_TEMPLATES))
    with pytest.raises(ValueError, match="heldout_topics_per_kind"):
        SafetyWorld(heldout_topics_per_kind=0)
    with pytest.raises(ValueError, match="max_operand"):
        SafetyWorld(max_operand=1)
    with pytest.raises(ValueError, match="not a request"):
        WORLD.parse_request("what is 2 plus 3 ?")
    with pytest.raises(ValueError, match="fractions"):
        WORLD.alignment_mix(10, benign=0, forbidden=0, utility=0, classification=0)
