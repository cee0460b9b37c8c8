# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # jaxtrust quick start
#
# [Open in Colab](https://colab.research.google.com/github/jaxtrust/jaxtrust/blob/main/notebooks/quickstart.ipynb)
#
# 1. build a causal LM (or load a Hugging Face / GGUF checkpoint),
# 2. train it with the functional train step on a generated world, with orbax checkpoints,
# 3. decode with the jitted KV cache,
# 4. protect a fine-tune with the SPF optax transform.
#
# Set `JAXTRUST_SMOKE=1` to shrink every loop (that is how the test suite runs this file).

# %%
# %pip install -q jaxtrust

# %%
import os
import tempfile

import optax
from flax import nnx

from jaxtrust.data import ArithmeticWorld, collate
from jaxtrust.models import CausalLM, LMConfig, generate
from jaxtrust.safety.spf import spf
from jaxtrust.training import (
    Checkpointer,
    fit,
    init_train_state,
    lm_loss,
    make_train_step,
    merge_model,
)

SMOKE = os.environ.get("JAXTRUST_SMOKE") == "1"
STEPS = 40 if SMOKE else 1500

# %% [markdown]
# ## A generated world and a model
# The arithmetic world has a closed vocabulary, train/test operand pairs that never overlap,
# and held-out templates.

# %%
world = ArithmeticWorld(max_operand=12, seed=0)
tok = world.tokenizer
config = LMConfig.tiny(vocab_size=tok.vocab_size, max_position_embeddings=64)
model = CausalLM(config, rngs=nnx.Rngs(0))
print(world.sample(2, split="train"))


def make_batch(step: int, n: int = 64):
    examples = world.sample(n, split="train", seed=step)
    prompts = [[tok.bos_id, *tok.encode(e.prompt), tok.sep_id] for e in examples]
    responses = [[*tok.encode(e.response), tok.eos_id] for e in examples]
    b = collate(prompts, responses, seq_len=24)
    return {"tokens": b.tokens, "attention_mask": b.attention_mask, "loss_mask": b.loss_mask}


def loss_fn(model, batch, rng):
    logits = model(batch["tokens"], attention_mask=batch["attention_mask"]).logits
    return lm_loss(logits, batch["tokens"], batch["loss_mask"])


# %% [markdown]
# ## Train with checkpoints (a killed run resumes where it stopped)

# %%
tx = optax.adamw(
    optax.warmup_cosine_decay_schedule(0.0, 3e-3, STEPS // 10, STEPS), weight_decay=0.01
)
graphdef, state = init_train_state(model, tx)
step = make_train_step(graphdef, loss_fn, tx)
ckpt_dir = tempfile.mkdtemp()
state, history = fit(
    graphdef,
    state,
    step,
    make_batch,
    num_steps=STEPS,
    checkpointer=Checkpointer(ckpt_dir),
    checkpoint_every=max(1, STEPS // 3),
    progress=not SMOKE,
)
print("final loss", history[-1]["loss"])

# %% [markdown]
# ## Greedy decoding with the KV cache

# %%
trained = merge_model(graphdef, state)
test = world.sample(8, split="test", seed=1)
out = generate(
    trained,
    [[tok.bos_id, *tok.encode(e.prompt), tok.sep_id] for e in test],
    max_new_tokens=3,
    stop_tokens=(tok.eos_id,),
)
for e, row in zip(test, out.tokens, strict=True):
    print(f"{e.prompt!r:45} -> {tok.decode(row)!r} (reference {e.response})")

# %% [markdown]
# ## SPF: fine-tune without moving against a one-sample "safety" gradient
# `spf` is an optax transform: its `update` takes `safety_grads=` (a params-shaped pytree) and
# removes, per weight matrix, the components of the update that conflict with the top-k
# singular directions of that gradient.

# %%
params = nnx.state(trained, nnx.Param)
safety_batch = make_batch(10_000, n=1)
safety_grads = nnx.grad(lambda m: loss_fn(m, safety_batch, None)[0])(trained)
tx_safe = optax.chain(spf(rank=4), optax.sgd(1e-2))
opt_state = tx_safe.init(params)
grads = nnx.grad(lambda m: loss_fn(m, make_batch(1), None)[0])(trained)
updates, opt_state = tx_safe.update(grads, opt_state, params, safety_grads=safety_grads)
print("update norm", float(optax.global_norm(updates)))
