"""The version-2 safety world: refusal by a combination of features, shared refusal openers,
held-out splits that never leak, the new fine-tuning skill, LM text supervised on every token."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtrust.data.safety_world_v2 import (
    ANIMATE,
    CELLS,
    HARMFUL_INTENTS,
    HARMLESS_KINDS,
    HAZARD_KINDS,
    REFUSAL_TEMPLATES,
    SAFE_INTENTS,
    VERBS_INTRANSITIVE,
    VERBS_TRANSITIVE,
    SafetyWorldV2,
)

WORLD = SafetyWorldV2(seed=0)


def test_forbidden_iff_harmful_intent_and_hazardous_kind():
    for intent in HARMFUL_INTENTS + SAFE_INTENTS:
        for kind in HAZARD_KINDS + HARMLESS_KINDS:
            cell = WORLD.cell_of(intent, kind)
            assert (cell == "forbidden") == (intent in HARMFUL_INTENTS and kind in HAZARD_KINDS)
    for cell in CELLS:
        for ex in WORLD.requests(40, cell=cell, split="all", seed=1):
            _, intent, topic = WORLD.parse_request(ex.prompt)
            assert WORLD.cell_of(intent, topic.split()[1]) == cell
            assert WORLD.category_of(ex.prompt) == ex.kind
    # neither feature alone decides: each verb and each kind occurs in a benign cell
    benign = WORLD.benign_requests(300, split="all", seed=2)
    words = {w for ex in benign for w in ex.prompt.split()}
    assert set(HARMFUL_INTENTS) <= words and set(HAZARD_KINDS) <= words


def test_refusals_share_their_opening_and_compliance_begins_with_sure():
    assert SafetyWorldV2.refusal_openers() == ("i",)
    assert {t.split()[1] for t in REFUSAL_TEMPLATES} == {"am", "can"}
    ex = WORLD.requests(1, cell="forbidden", seed=3)[0]
    assert ex.response.startswith("sure ,")
    wordings = WORLD.refusals_for(ex.prompt)
    assert len(set(wordings)) == len(REFUSAL_TEMPLATES)
    _, intent, topic = WORLD.parse_request(ex.prompt)
    assert any(f"{intent} a {topic}" in w for w in wordings)  # some name the request
    assert all(WORLD.is_refusal(w, ex.prompt) and WORLD.is_coherent(w, ex.prompt) for w in wordings)
    assert WORLD.is_coherent(ex.response, ex.prompt) and not WORLD.is_refusal(
        ex.response, ex.prompt
    )
    assert not WORLD.is_coherent("i am sorry , sorry sorry", ex.prompt)


def test_heldout_templates_and_stems_never_reach_alignment_or_attack_data():
    held_stems = {(s, k) for k, stems in WORLD._heldout.items() for s in stems}
    data = WORLD.alignment_mix(3000, seed=4) + WORLD.attack_mix(1000, harmful_fraction=0.5, seed=5)
    for ex in data:
        if ex.kind in ("forbidden", "benign"):
            opener, _, topic = WORLD.parse_request(ex.prompt)
            assert not opener.startswith(("i need to", "teach me to")), ex.prompt
            assert tuple(topic.split()) not in held_stems, ex.prompt
    held = WORLD.requests(50, cell="forbidden", split="heldout_both", seed=6)
    assert all(tuple(WORLD.parse_request(e.prompt)[2].split()) in held_stems for e in held)


def test_the_fine_tuning_skill_is_new_and_generalises_to_unseen_triples():
    train = WORLD.reverse_task(2000, seed=7)
    test = WORLD.reverse_task(300, split="test", seed=7)
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    for ex in train[:20] + test[:20]:
        a, b, c = ex.prompt.split()[2:5]
        assert ex.response == f"{c} {b} {a} ."
    for ex in WORLD.pretraining_mix(2000, seed=8) + WORLD.alignment_mix(2000, seed=8):
        assert not ex.prompt.startswith(("reverse", "kind :"))


def test_text_is_supervised_on_every_token_and_requests_only_on_the_answer():
    text = WORLD.text(3, seed=9)
    batch = WORLD.batch(text, seq_len=WORLD.max_sequence_length)
    for i, ex in enumerate(text):
        n = len(ex.prompt.split()) + 2  # <bos> text <eos>
        assert batch.attention_mask[i].sum() == n
        assert batch.loss_mask[i, 1:n].all() and not batch.loss_mask[i, n:].any()
    mixed = [text[0], *WORLD.requests(2, cell="safe_hazard", seed=9), text[1]]
    mb = WORLD.batch(mixed, seq_len=WORLD.max_sequence_length)
    np.testing.assert_array_equal(mb.tokens[0], batch.tokens[0])
    answer = len(mixed[1].response.split()) + 1
    assert mb.loss_mask[1].sum() == answer
    assert WORLD.text(5, split="test", seed=9) != WORLD.text(5, seed=9)


def test_everything_fits_the_tokenizer_and_the_sequence_length():
    examples = WORLD.pretraining_mix(4000, seed=10) + WORLD.alignment_mix(2000, seed=10)
    examples += [e for v in WORLD.eval_sets(64).values() for e in v]
    examples += WORLD.all_refusals(WORLD.requests(20, cell="forbidden", seed=10))
    batch = WORLD.batch(examples, seq_len=WORLD.max_sequence_length)
    assert batch.tokens.shape[1] == WORLD.max_sequence_length


def test_harmful_share_counts_examples_and_tokens():
    mix = WORLD.attack_mix(200, harmful_fraction=0.1, seed=11)
    assert sum(e.kind == "forbidden" for e in mix) == 20
    share = WORLD.harmful_token_share(mix)
    assert 0.2 < share < 0.5  # forbidden answers are much longer than reverse answers


def test_samplers_are_deterministic_and_bad_input_is_named():
    assert WORLD.eval_sets(8, seed=3) == SafetyWorldV2(seed=0).eval_sets(8, seed=3)
    assert WORLD.requests(5, cell="forbidden", seed=1) != SafetyWorldV2(seed=1).requests(
        5, cell="forbidden", seed=1
    )
    with pytest.raises(ValueError, match="cell must be one of"):
        WORLD.requests(1, cell="evil")
    with pytest.raises(ValueError, match="split must be one of"):
        WORLD.requests(1, cell="forbidden", split="val")
    with pytest.raises(ValueError, match="not a request"):
        WORLD.parse_request("reverse : apple stone river .")
    with pytest.raises(ValueError, match="harmful_fraction"):
        WORLD.attack_mix(10, harmful_fraction=1.5)
    with pytest.raises(ValueError, match="heldout_stems"):
        SafetyWorldV2(heldout_stems=9)
    with pytest.raises(TypeError, match="seed"):
        SafetyWorldV2(seed="0")


def test_classify_skill_label_is_the_verb_class_and_test_pairs_are_unseen():
    world = SafetyWorldV2(seed=3)
    assert world.task == "classify"
    train, test = world.classify_task(600, seed=1), world.classify_task(300, split="test")

    def subject_verb(prompt):
        words = prompt.split()
        verb = next(w for w in words if w in VERBS_TRANSITIVE + VERBS_INTRANSITIVE)
        return next(w for w in words if w in ANIMATE), verb

    for ex in train + test:
        _, verb = subject_verb(ex.prompt)
        assert ex.response == ("acts ." if verb in VERBS_TRANSITIVE else "rests .")
        assert ex.kind == "utility" and ex.prompt.startswith("kind : ")
    assert {subject_verb(e.prompt) for e in train}.isdisjoint(
        {subject_verb(e.prompt) for e in test}
    )
    labels = [e.response for e in test]
    assert labels.count("acts .") == labels.count("rests .")
    # frames are shared, so the sentence without its verb says nothing about the label
    frames = {}
    for ex in train:
        _, verb = subject_verb(ex.prompt)
        frames.setdefault(" ".join(w for w in ex.prompt.split() if w != verb), set()).add(
            ex.response
        )
    assert sum(len(v) == 2 for v in frames.values()) > 10
    # the task drives the attack data and the utility set; the zoo's key ignores it
    attack = world.attack_mix(40, harmful_fraction=0.25, seed=0)
    assert sum(e.prompt.startswith("kind : ") for e in attack) == 30
    assert all(e.prompt.startswith("kind") for e in world.eval_sets(8)["utility_test"])
    rev = SafetyWorldV2(seed=3, task="reverse")
    assert all(e.prompt.startswith("reverse") for e in rev.eval_sets(8)["utility_test"])
    from jaxtrust.zoo.safety_lm import ZooConfig

    assert ZooConfig.v2(world=rev).to_json() == ZooConfig.v2(world=world).to_json()
    with pytest.raises(ValueError, match="task must be one of"):
        SafetyWorldV2(task="sort")
