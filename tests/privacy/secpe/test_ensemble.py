"""Prompt ensembling in JAX (`jaxtrust.privacy.secpe`): scores against a NumPy computation from the
model's own logits, soft vote and tie rule, the answer hidden state, the substitution attack, and
bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxtrust.privacy.secpe as E
from jaxtrust.data.vocab import WordTokenizer
from jaxtrust.models import CausalLM, LMConfig
from jaxtrust.privacy.secpe import ensemble as scoring

WORDS = (
    "review : sentiment ? is this good or bad it was so very quite the movie food fun dull great "
    "awful yes no meh zap"
).split()
TEMPLATES = (
    "review : {text} . sentiment ?",
    "is this good or bad : {text} ?",
    "{text} . it was",
)
LABELS = (("good", "great", "yes"), ("bad", "awful"))  # several words per class, unequal counts
TEXTS = ["the movie was so fun", "the food was dull", "the movie was very awful", "food"]


@pytest.fixture(scope="module")
def tok():
    return WordTokenizer(WORDS + ["."])


def _model(tok, arch="llama", seed=0, embedding_std=None):
    if arch == "llama":
        config = LMConfig.for_tokenizer(
            tok, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
        )
    else:  # untied LM head, LayerNorm, parallel residual
        config = LMConfig.tiny(
            "gpt_neox", vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, head_dim=8
        )
    model = CausalLM(config, rngs=nnx.Rngs(seed))
    if embedding_std is not None:
        # A random model whose answers depend on its input (the default init barely does).
        table = jax.random.normal(jax.random.key(seed), model.embed.embedding[...].shape)
        model.embed.embedding[...] = embedding_std * table
    return model


def _ensemble(tok, score="logprob", templates=TEMPLATES, labels=LABELS):
    verbalizer = E.Verbalizer.from_words(labels, tok.encode)
    return E.PromptEnsemble(
        templates,
        verbalizer,
        tok.encode,
        prefix_ids=(tok.bos_id,),
        suffix_ids=(tok.sep_id,),
        pad_id=tok.pad_id,
        score=score,
    )


def _reference_scores(model, tok, score):
    """Every prompt row RIGHT-padded (the library left-pads), one forward, the logits read at
    each row's last real token (a causal model ignores what follows), class scores in NumPy."""
    rows = [
        [tok.bos_id, *tok.encode(t.format(text=x)), tok.sep_id] for x in TEXTS for t in TEMPLATES
    ]
    length = max(map(len, rows))
    tokens = np.array([r + [tok.pad_id] * (length - len(r)) for r in rows], np.int32)
    logits = np.asarray(model(jnp.asarray(tokens)).logits, np.float64)
    last = logits[np.arange(len(rows)), [len(r) - 1 for r in rows]]
    logp = last - last.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    out = np.zeros((len(rows), len(LABELS)))
    for c, words in enumerate(LABELS):
        ids = [tok.encode(w)[0] for w in words]
        out[:, c] = (
            np.log(np.exp(logp[:, ids]).sum(-1)) if score == "logprob" else last[:, ids].mean(-1)
        )
    return out.reshape(len(TEXTS), len(TEMPLATES), len(LABELS))


@pytest.mark.smoke
@pytest.mark.parametrize("score", E.SCORE_MODES)
@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_scores_match_numpy_from_model_logits(tok, score, arch):
    model = _model(tok, arch)
    ens = _ensemble(tok, score)
    # batch_size 5 < 12 rows: several chunks, left padding of rows of different lengths.
    got = E.prompt_scores(model, ens, TEXTS, batch_size=5)
    assert got.shape == (len(TEXTS), len(TEMPLATES), len(LABELS))
    np.testing.assert_allclose(got, _reference_scores(model, tok, score), atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_answer_hidden_state_times_verbalizer_weights_is_the_logit_score(tok, arch):
    model = _model(tok, arch, seed=3)
    ens = _ensemble(tok, "logit")
    scores, hidden = E.prompt_scores(model, ens, TEXTS, return_hidden=True)
    weights = E.verbalizer_weights(model, ens)
    assert hidden.shape == (len(TEXTS), len(TEMPLATES), model.config.hidden_size)
    assert weights.shape == (len(LABELS), model.config.hidden_size)
    np.testing.assert_allclose(hidden @ weights.T, scores, atol=2e-4, rtol=1e-4)


def test_soft_vote_is_the_sum_and_ensemble_argmax_of_a_known_case():
    scores = np.array([[[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]], [[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]])
    np.testing.assert_array_equal(E.soft_vote(scores), [[4.0, 2.0, 0.0], [0.0, 1.0, 1.0]])
    # Row 1 ties classes 1 and 2: the lowest index wins.
    np.testing.assert_array_equal(E.ensemble_argmax(scores), [0, 1])
    np.testing.assert_array_equal(E.prompt_predictions(scores), [[1, 0], [1, 0]])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(2, 5), st.integers(0, 2**31 - 1))
def test_ensemble_argmax_takes_the_lowest_index_among_tied_sums(m, k, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(-2, 3, size=(7, m, k)).astype(np.float32)  # small ints: many ties
    got = E.ensemble_argmax(scores)
    for i in range(7):
        total = [sum(float(scores[i, j, c]) for j in range(m)) for c in range(k)]
        assert got[i] == min(c for c in range(k) if total[c] == max(total))


@pytest.mark.smoke  # the embedding swap inside jit is the flax-version-sensitive part
def test_embedding_gradient_matches_finite_differences(tok):
    model = _model(tok, seed=1)
    ens = _ensemble(tok)
    encoded = ens.encode_texts(TEXTS[:2])
    tokens, mask, _ = ens.assemble(encoded.ids, encoded.lengths, [0])
    tokens, mask = tokens[0], mask[0]
    graphdef, state = nnx.split(model)
    ids, cmask = (jnp.asarray(a) for a in ens.verbalizer.id_matrix())
    true, rival, weight = jnp.array([0, 1]), jnp.array([1, 0]), jnp.array([1.0, 1.0])
    grad = np.asarray(
        scoring._margin_embedding_grad(
            graphdef,
            state,
            jnp.asarray(tokens),
            jnp.asarray(mask),
            ids,
            cmask,
            true,
            rival,
            weight,
            score="logprob",
        )
    )

    @jax.jit
    def margin_sum(delta):
        s, _ = scoring._forward(
            graphdef,
            state,
            jnp.asarray(tokens),
            jnp.asarray(mask),
            ids,
            cmask,
            delta,
            "logprob",
            False,
        )
        return jnp.sum(weight * (s[jnp.arange(2), true] - s[jnp.arange(2), rival]))

    def objective(delta):
        return float(margin_sum(delta))

    zero = np.zeros((*tokens.shape, model.config.hidden_size), np.float32)
    rng = np.random.default_rng(0)
    for _ in range(4):
        row = 0
        col = int(rng.choice(np.flatnonzero(mask[row])))
        dim = int(rng.integers(model.config.hidden_size))
        eps = 1e-2
        plus, minus = zero.copy(), zero.copy()
        plus[row, col, dim], minus[row, col, dim] = eps, -eps
        numeric = (objective(jnp.asarray(plus)) - objective(jnp.asarray(minus))) / (2 * eps)
        assert abs(numeric - grad[row, col, dim]) < 2e-3 + 2e-2 * abs(numeric), (
            numeric,
            grad[row, col, dim],
        )
    # Padding columns get no gradient (the attention mask cuts them off).
    assert np.all(grad[~mask] == 0)


POSITIVE, NEGATIVE, FILLERS = (
    ("fun", "nice"),
    ("dull", "poor"),
    ("movie", "food", "so", "very", "quite", "the", "it", "meh", "zap"),
)


def _toy_texts(rng, n):
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        adjective = rng.choice((POSITIVE, NEGATIVE)[label])
        texts.append(
            f"the {rng.choice(('movie', 'food'))} was {rng.choice(('so', 'very', 'quite'))} "
            f"{adjective}"
        )
        labels.append(label)
    return texts, np.array(labels)


@pytest.fixture(scope="module")
def attack_setup():
    """A tiny LM trained for a few seconds to answer good/bad after each template."""
    import optax

    from jaxtrust.data import collate
    from jaxtrust.training import init_train_state, lm_loss, make_train_step, merge_model

    tok = WordTokenizer(WORDS + list(POSITIVE + NEGATIVE) + ["."])
    model = _model(tok, seed=2)
    ens = _ensemble(tok, labels=("good", "bad"))
    rng = np.random.default_rng(0)
    tx = optax.adam(1e-2)
    graphdef, state = init_train_state(model, tx)

    def loss_fn(model, batch, rng):
        logits = model(batch["tokens"], attention_mask=batch["attention_mask"]).logits
        return lm_loss(logits, batch["tokens"], batch["loss_mask"])

    step = make_train_step(graphdef, loss_fn, tx)
    for _ in range(150):
        texts, labels = _toy_texts(rng, 32)
        prompts = [
            [tok.bos_id, *tok.encode(TEMPLATES[j % 3].format(text=x)), tok.sep_id]
            for j, x in enumerate(texts)
        ]
        answers = [[tok.encode(("good", "bad")[y])[0]] for y in labels]
        b = collate(prompts, answers, pad_id=tok.pad_id, seq_len=16)
        state, _ = step(
            state,
            {"tokens": b.tokens, "attention_mask": b.attention_mask, "loss_mask": b.loss_mask},
        )
    model = merge_model(graphdef, state)
    texts, labels = _toy_texts(np.random.default_rng(1), 12)
    return tok, model, ens, texts, labels


def _rescored_margin(tok, model, ens, result, labels, prompt=0):
    """Re-score the adversarial texts from their words (independent of the attack's bookkeeping)."""
    adversarial = [
        tok.decode(row[:n].tolist()) for row, n in zip(result.text_ids, result.lengths, strict=True)
    ]
    rescored = E.prompt_scores(model, ens, adversarial)[:, prompt]
    rows = np.arange(len(labels))
    return rescored[rows, labels] - rescored[rows, 1 - labels]


def test_attack_finds_the_label_flip_by_gradient_ranking(attack_setup):
    # With the sentiment words themselves substitutable, one substitution flips every input: the
    # first-order ranking must put such a swap among its 2 verified candidates per position.
    tok, model, ens, texts, labels = attack_setup
    allowed = [tok.encode(w)[0] for w in FILLERS + POSITIVE + NEGATIVE]
    result = E.attack(
        model,
        ens,
        texts,
        labels,
        target=0,
        budget=1,
        allowed_tokens=allowed,
        candidates_per_position=2,
    )
    assert result.clean_accuracy >= 0.9, result.clean_margin  # the trained model knows the task
    assert result.robust_accuracy <= 0.1, result.robust_margin
    margin = _rescored_margin(tok, model, ens, result, labels)
    assert np.all(margin[~result.robust_correct] < 0)
    np.testing.assert_allclose(margin, result.robust_margin, atol=1e-4)


def test_attack_respects_protected_and_allowed_tokens(attack_setup):
    tok, model, ens, texts, labels = attack_setup
    protected = [tok.encode(w)[0] for w in POSITIVE + NEGATIVE]
    allowed = [tok.encode(w)[0] for w in FILLERS]
    result = E.attack(
        model,
        ens,
        texts,
        labels,
        target=0,
        budget=2,
        allowed_tokens=allowed,
        protected_tokens=protected,
        candidates_per_position=3,
    )
    clean = ens.encode_texts(texts).ids
    changed = result.text_ids != clean
    assert changed.any()  # substitutions that lower the margin are kept even without a flip
    assert np.all(changed.sum(axis=1) == result.substitutions) and result.substitutions.max() <= 2
    assert np.all(np.isin(result.text_ids[changed], allowed))
    assert not np.any(changed & np.isin(clean, protected))
    assert np.all(result.robust_margin <= result.clean_margin + 1e-6)
    assert np.any(result.robust_margin < result.clean_margin - 1e-3)
    np.testing.assert_allclose(
        _rescored_margin(tok, model, ens, result, labels), result.robust_margin, atol=1e-4
    )


def test_exhaustive_search_is_at_least_as_strong_as_hotflip_for_one_substitution(attack_setup):
    tok, model, ens, texts, labels = attack_setup
    protected = [tok.encode(w)[0] for w in POSITIVE + NEGATIVE]
    kwargs = dict(target="ensemble", budget=1, protected_tokens=protected)
    hotflip = E.attack(model, ens, texts, labels, candidates_per_position=2, **kwargs)
    exhaustive = E.attack(model, ens, texts, labels, candidates_per_position=None, **kwargs)
    np.testing.assert_array_equal(hotflip.clean_correct, exhaustive.clean_correct)
    attacked = hotflip.clean_correct
    assert np.all(exhaustive.robust_margin[attacked] <= hotflip.robust_margin[attacked] + 1e-5)
    assert exhaustive.robust_accuracy <= hotflip.robust_accuracy
    report = E.robust_accuracy(
        model,
        ens,
        texts,
        labels,
        budget=1,
        protected_tokens=protected,
        candidates_per_position=None,
    )
    assert len(report["robust"]["single"]) == len(TEMPLATES)
    assert report["robust"]["ensemble"] == exhaustive.robust_accuracy


@pytest.mark.parametrize(
    "templates, labels, message",
    [
        (("no placeholder here",), LABELS, "placeholder"),
        (("{text} and {text}",), LABELS, "placeholder"),
        ((), LABELS, "templates"),
        (TEMPLATES, ("good",), "at least 2"),
        (TEMPLATES, (("good", "bad"), ("bad",)), "same token"),
        (TEMPLATES, (("good",), ()), r"label_words\[1\]"),
        (TEMPLATES, ("good", "not-a-word"), "vocabulary"),
    ],
)
def test_bad_templates_and_label_words_raise_clearly(
    tok, templates, labels, message, own_error_messages
):
    with pytest.raises(ValueError, match=message):
        _ensemble(tok, templates=templates, labels=labels)


def test_multi_token_label_word_is_rejected(own_error_messages):
    def tokenize(text):  # a tokenizer that splits a word into characters
        return [ord(c) for c in text]

    with pytest.raises(ValueError, match="single token"):
        E.Verbalizer.from_words(["a", "bc"], tokenize)


def test_bad_scores_labels_and_attack_arguments_raise_clearly(
    tok, attack_setup, own_error_messages
):
    _, model, ens, texts, labels = attack_setup
    with pytest.raises(ValueError, match="shape"):
        E.soft_vote(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="k >= 2"):
        E.ensemble_argmax(np.zeros((3, 2, 1)))
    with pytest.raises(ValueError, match="score"):
        _ensemble(tok, score="prob")
    with pytest.raises(ValueError, match="texts"):
        E.prompt_scores(model, ens, [])
    with pytest.raises(ValueError, match="texts"):
        E.prompt_scores(model, ens, "a single string")
    with pytest.raises(ValueError, match="labels"):
        E.attack(model, ens, texts, labels[:-1])
    with pytest.raises(ValueError, match="labels"):
        E.attack(model, ens, texts, labels + 5)
    with pytest.raises(ValueError, match="target"):
        E.attack(model, ens, texts, labels, target=len(TEMPLATES))
    with pytest.raises(ValueError, match="budget"):
        E.attack(model, ens, texts, labels, budget=-1)
    with pytest.raises(ValueError, match="allowed_tokens"):
        E.attack(model, ens, texts, labels, allowed_tokens=[10_000])
    with pytest.raises(TypeError, match="CausalLM"):
        E.prompt_scores(object(), ens, texts)
    small = CausalLM(LMConfig.tiny(vocab_size=8), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="vocabulary"):
        E.prompt_scores(small, ens, texts)


def test_world_ensemble_prompt_rows_are_the_world_encoding():
    from jaxtrust.data import SafetyWorld
    from jaxtrust.data.safety_world import (
        CLASSIFICATION_HELDOUT_TEMPLATES,
        CLASSIFICATION_TEMPLATES,
    )

    world = SafetyWorld(seed=0)
    ens = E.PromptEnsemble.for_word_tokenizer(
        world.tokenizer,
        CLASSIFICATION_TEMPLATES + CLASSIFICATION_HELDOUT_TEMPLATES,
        world.label_words,
    )
    text = "the movie was very good"
    encoded = ens.encode_texts([text])
    tokens, mask, text_pos = ens.assemble(encoded.ids, encoded.lengths)
    for j, template in enumerate(ens.templates):
        row = tokens[j, 0][mask[j, 0]].tolist()
        assert row == world.encode_prompt(template.format(text=text))
        assert tokens[j, 0, text_pos[j, 0]].tolist() == world.tokenizer.encode(text)
    assert jax.tree.leaves(ens.verbalizer.token_ids) == [
        world.tokenizer.encode(w)[0] for w in world.label_words
    ]
