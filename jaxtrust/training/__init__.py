"""Training core: losses, jitted train/eval steps, resumable loop, checkpoints, sharding.

Works for any Flax NNX module and any loss ``loss_fn(model, batch, rng) -> (loss, aux)``::

    graphdef, state = init_train_state(model, tx)
    step = make_train_step(graphdef, loss_fn, tx, accum_steps=2, compute_dtype=jnp.bfloat16)
    state, history = fit(graphdef, state, step, batches_fn, num_steps=1000,
                         checkpointer=Checkpointer("ckpt"), checkpoint_every=100)
"""

from jaxtrust.training.checkpoint import Checkpointer, abstract_like, load_pytree, save_pytree
from jaxtrust.training.loop import fit
from jaxtrust.training.losses import (
    dpo_loss,
    lm_loss,
    prompt_loss_mask,
    sequence_logprobs,
    token_logprobs,
)
from jaxtrust.training.sharding import fsdp_rules, make_mesh, shard_batch, shard_params
from jaxtrust.training.step import (
    TrainState,
    evaluate,
    find_learning_rate,
    init_train_state,
    make_eval_step,
    make_train_step,
    merge_model,
)

__all__ = [
    "Checkpointer",
    "TrainState",
    "abstract_like",
    "dpo_loss",
    "evaluate",
    "find_learning_rate",
    "fit",
    "fsdp_rules",
    "init_train_state",
    "lm_loss",
    "load_pytree",
    "make_eval_step",
    "make_mesh",
    "make_train_step",
    "merge_model",
    "prompt_loss_mask",
    "save_pytree",
    "sequence_logprobs",
    "shard_batch",
    "shard_params",
    "token_logprobs",
]
