"""``jaxtrust reproduce lm``: the foundation end to end on the arithmetic world.

A causal LM is trained from scratch with the training core (optax AdamW, prompt-masked LM loss,
orbax checkpoints with resume), then evaluated by exact match of greedy KV-cache decoding on
test operand pairs (never seen in training) and on held-out templates. It is the smallest
experiment that exercises models, data, training, checkpointing, generation and reporting
together, and the template later methods' experiments follow.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx

from jaxtrust.data import ArithmeticWorld, collate
from jaxtrust.eval import generate_responses
from jaxtrust.experiments.registry import ExperimentResult, RunContext, Table, pyplot, register
from jaxtrust.models import CausalLM, LMConfig
from jaxtrust.training import (
    Checkpointer,
    adamw_cosine,
    fit,
    init_train_state,
    lm_loss_fn,
    make_train_step,
    merge_model,
)


@dataclasses.dataclass(frozen=True)
class LMExperimentConfig:
    max_operand: int = 12
    num_layers: int = 2
    hidden_size: int = 64
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    checkpoint_every: int = 200
    eval_examples: int = 128
    seq_len: int = 24


PRESETS = {
    "quick": LMExperimentConfig(),
    "full": LMExperimentConfig(
        max_operand=30,
        num_layers=4,
        hidden_size=128,
        num_heads=8,
        num_kv_heads=4,
        intermediate_size=384,
        steps=6000,
        batch_size=64,
        eval_examples=512,
    ),
}


def _exact_match(model, tokenizer, world, examples) -> float:
    prompts = [
        [tokenizer.bos_id] + tokenizer.encode(ex.prompt) + [tokenizer.sep_id] for ex in examples
    ]
    predictions = generate_responses(model, tokenizer, prompts, max_new_tokens=3)
    return world.exact_match(predictions, examples)


@register("lm", LMExperimentConfig, PRESETS)
def run(config: LMExperimentConfig, ctx: RunContext) -> ExperimentResult:
    """Train a causal LM on the arithmetic world; exact match on unseen pairs and templates."""
    plt = pyplot()
    world = ArithmeticWorld(max_operand=config.max_operand, seed=ctx.seed)
    tok = world.tokenizer
    model_config = LMConfig.for_tokenizer(
        tok,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        num_kv_heads=config.num_kv_heads,
        max_position_embeddings=64,
    )
    model = CausalLM(model_config, rngs=nnx.Rngs(ctx.seed))
    tx = adamw_cosine(
        config.learning_rate,
        config.steps,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
    )
    graphdef, state = init_train_state(model, tx, seed=ctx.seed)

    def batches_fn(step: int):
        examples = world.sample(config.batch_size, split="train", seed=int(step))
        prompts = [[tok.bos_id] + tok.encode(ex.prompt) + [tok.sep_id] for ex in examples]
        responses = [tok.encode(ex.response) + [tok.eos_id] for ex in examples]
        return collate(prompts, responses, pad_id=tok.pad_id, seq_len=config.seq_len).as_dict()

    train_step = make_train_step(graphdef, lm_loss_fn, tx)
    checkpointer = Checkpointer(ctx.out_dir / "checkpoints", max_to_keep=2)
    ctx.log(
        f"training {sum(x.size for x in jax.tree.leaves(state.params)):,} parameters for "
        f"{config.steps} steps"
    )
    state, history = fit(
        graphdef,
        state,
        train_step,
        batches_fn,
        num_steps=config.steps,
        checkpointer=checkpointer,
        checkpoint_every=config.checkpoint_every,
        progress=ctx.progress,
    )
    checkpointer.close()
    trained = merge_model(graphdef, state)
    tok.save(ctx.out_dir / "tokenizer.json")

    ctx.log("evaluating exact match with greedy KV-cache decoding")
    results = {}
    for split in ("train", "test", "heldout"):
        examples = world.sample(config.eval_examples, split=split, seed=10_000 + ctx.seed)
        results[split] = _exact_match(trained, tok, world, examples)
    losses = np.array([float(h["loss"]) for h in history])

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(len(losses)), losses, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("LM loss (response tokens)")
    ax.set_yscale("log")
    ax.set_title("arithmetic world: training loss")
    ax.grid(alpha=0.3)
    ctx.save_figure(fig, "loss")

    final_loss = float(np.mean(losses[-20:]))
    table = Table(
        "exact match of greedy answers",
        ["split", "what it measures", "exact match"],
        [
            ["train", "seen operand pairs and templates", results["train"]],
            ["test", "unseen operand pairs", results["test"]],
            ["heldout", "unseen pairs and unseen templates", results["heldout"]],
        ],
    )
    metrics = {
        "headline": {
            "test_exact_match": results["test"],
            "heldout_exact_match": results["heldout"],
            "final_loss": final_loss,
        },
        "exact_match": results,
        "final_loss": final_loss,
        "loss_curve": losses[:: max(1, len(losses) // 200)].tolist(),
        "num_parameters": int(sum(x.size for x in jax.tree.leaves(state.params))),
    }
    summary = (
        f"A {config.num_layers}-layer causal LM trained for {config.steps} steps reaches exact "
        "match "
        f"{results['test']:.3f} on unseen operand pairs and {results['heldout']:.3f} with held-out "
        "templates."
    )
    return ExperimentResult(metrics=metrics, tables=[table], summary=summary)
