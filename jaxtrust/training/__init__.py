"""Training core: losses, jitted train/eval steps, resumable loop, checkpoints, sharding, and
the pieces every method shares (the batch-to-loss adapter, epoch batching, the AdamW recipe,
:func:`finetune`, a scanned inner optimiser, memoised compiled programs).

Works for any Flax NNX module and any loss ``loss_fn(model, batch, rng) -> (loss, aux)``::

    graphdef, state = init_train_state(model, tx)
    step = make_train_step(graphdef, loss_fn, tx, accum_steps=2, compute_dtype=jnp.bfloat16)
    state, history = fit(graphdef, state, step, batches_fn, num_steps=1000,
                         checkpointer=Checkpointer("ckpt"), checkpoint_every=100)
"""

from jaxtrust.training.adapters import (
    BATCH_KEYS,
    check_batch,
    lm_batch_loss,
    lm_loss_fn,
    lm_marginal_loss,
)
from jaxtrust.training.batches import epoch_batches, pool_size
from jaxtrust.training.checkpoint import Checkpointer, abstract_like, load_pytree, save_pytree
from jaxtrust.training.dpo import (
    DPOResult,
    dpo_finetune,
    make_dpo_loss,
    pair_logprobs,
    preference_pool,
    reference_logprobs,
)
from jaxtrust.training.finetune import FinetuneResult, finetune
from jaxtrust.training.inner import scan_optimize
from jaxtrust.training.loop import fit
from jaxtrust.training.losses import (
    dpo_loss,
    lm_loss,
    prompt_loss_mask,
    sequence_logprobs,
    token_logprobs,
)
from jaxtrust.training.memo import clear_memo, memo_size, memoize
from jaxtrust.training.recipes import adamw_cosine, warmup_cosine
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
    "BATCH_KEYS",
    "Checkpointer",
    "DPOResult",
    "FinetuneResult",
    "TrainState",
    "abstract_like",
    "adamw_cosine",
    "check_batch",
    "clear_memo",
    "epoch_batches",
    "finetune",
    "lm_batch_loss",
    "lm_loss_fn",
    "lm_marginal_loss",
    "memo_size",
    "memoize",
    "pool_size",
    "scan_optimize",
    "warmup_cosine",
    "dpo_finetune",
    "dpo_loss",
    "evaluate",
    "find_learning_rate",
    "fit",
    "fsdp_rules",
    "init_train_state",
    "lm_loss",
    "load_pytree",
    "make_dpo_loss",
    "make_eval_step",
    "make_mesh",
    "make_train_step",
    "merge_model",
    "pair_logprobs",
    "preference_pool",
    "prompt_loss_mask",
    "reference_logprobs",
    "save_pytree",
    "sequence_logprobs",
    "shard_batch",
    "shard_params",
    "token_logprobs",
]
