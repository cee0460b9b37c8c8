"""MemHunter with models: GCG never increases the reference loss, the prompter loop on a tiny
target that memorised its training texts, tokenizer mismatches, and the reproduction's smoke
preset (metrics schema)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx

from jaxtrust.data import WordTokenizer
from jaxtrust.data.stdlib_text import ByteTokenizer
from jaxtrust.models import CausalLM
from jaxtrust.privacy.memhunter import (
    PrompterConfig,
    check_tokenizers,
    gcg_search,
    memhunter_scores,
    reference_loss,
    seed_pairs,
    sft_pool,
    train_prompter,
)
from jaxtrust.privacy.memhunter.world import TargetSpec, WorldConfig, training_pool
from jaxtrust.training import adamw_cosine, finetune

TOK = ByteTokenizer()


def _tiny(arch="llama", seed=0):
    return CausalLM(TargetSpec(arch, 32, 1).lm_config(), rngs=nnx.Rngs(seed))


@pytest.mark.slow
def test_tokenizer_mismatch_and_empty_dataset_errors(own_error_messages):
    model = _tiny()
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        check_tokenizers(model, model, WordTokenizer(["a"]), TOK)
    with pytest.raises(ValueError, match="empty dataset"):
        memhunter_scores(model, model, TOK, TOK, [], [], num_prompts=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        memhunter_scores(
            model,
            model,
            TOK,
            WordTokenizer(["a"]),
            [[5]],
            [[6]],
            num_prompts=1,
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match="keep_threshold"):
        PrompterConfig(keep_threshold=1.5)


@pytest.mark.slow
def test_gcg_never_increases_the_reference_loss():
    model = _tiny("gpt_neox")
    rng = np.random.default_rng(0)
    init = rng.integers(5, TOK.vocab_size, (3, 6))
    refs = rng.integers(5, TOK.vocab_size, (3, 5))
    before = reference_loss(model, init, refs, bos_id=TOK.bos_id)
    trace = gcg_search(model, init, refs, steps=3, key=jax.random.key(0), top_k=8, num_candidates=8)
    after = reference_loss(model, trace.prompts, refs, bos_id=TOK.bos_id)
    np.testing.assert_allclose(after, trace.losses, rtol=1e-4, atol=1e-4)
    assert np.all(after <= before + 1e-4) and after.sum() < before.sum()
    assert trace.prompts.min() >= 5  # no special tokens proposed


@pytest.mark.slow
def test_prompter_loop_on_a_target_that_memorised_its_texts():
    # The known answer: the target reproduces a text only after its true opening, so the best
    # prompt for a hint is the whole hint; round 0 samples windows of it (seed_pairs), and
    # rejection sampling must move the prompter's greedy prompt towards the full hint.
    texts = [
        f"{w} = lambda x: x + {i} # the {w} adds {i} to its argument."
        for i, w in enumerate(["alpha", "bravo", "delta", "gamma", "kappa", "omega"])
    ]
    cfg = WorldConfig(passage_bytes=48, hint_bytes=16)
    target = finetune(
        _tiny(seed=1),
        training_pool(texts, cfg),
        adamw_cosine(1e-2, 150),
        steps=150,
        batch_size=6,
        seed=0,
    ).model
    hints = [TOK.encode(t)[:16] for t in texts]
    refs = [TOK.encode(t)[16:48] for t in texts]
    hs, ps = seed_pairs(hints, seed=0, per_hint=4, min_len=4)
    prompter = finetune(
        _tiny(seed=2),
        sft_pool(TOK, hs, ps, seq_len=40),
        adamw_cosine(1e-2, 80),
        steps=80,
        batch_size=24,
        seed=0,
    ).model
    config = PrompterConfig(
        prompt_len=16,
        continuation_len=24,
        num_candidates=6,
        rounds=2,
        steps_per_round=60,
        batch_size=16,
        learning_rate=5e-3,
        keep_threshold=0.5,
    )
    trace = train_prompter(prompter, target, TOK, TOK, hints, refs, config, seed=0)
    first, last = trace.rounds[0], trace.rounds[-1]
    assert last["mean_best"] > 0.8  # the target did memorise, and the prompter finds it
    assert last["mean_greedy"] >= first["mean_greedy"] + 0.1 or first["mean_greedy"] > 0.9


@pytest.mark.slow
def test_reproduce_smoke_writes_the_issue_schema(tmp_path, monkeypatch):
    from jaxtrust.experiments.registry import run_experiment

    monkeypatch.setenv("JAXTRUST_CACHE", str(tmp_path / "cache"))
    run_experiment("memhunter", preset="smoke", seed=0, out_dir=tmp_path / "out", progress=False)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    n = metrics["n_samples"]
    for name in ("memhunter", "prefix", "loss", "zlib", "min_k", "min_k_pp", "dataset_inference"):
        entry = metrics["methods"][name]
        assert len(entry["power"]) == len(n)
        assert all(0.0 <= p <= 1.0 for p in entry["power"])
        assert 0.0 <= entry["fpr"] <= 1.0 and entry["fpr_trials"] > 0
        assert "extraction_rate" in entry and "seconds" in entry
    assert "gcg" in metrics["methods"]
    assert "search_seconds_saved_frac" in metrics["plugin"]
    assert (tmp_path / "out" / "power.png").exists()
