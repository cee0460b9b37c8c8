"""Tiny models for the training tests, and the training job the kill/resume test runs.

Run as a script: ``python _resume_worker.py CKPT_DIR NUM_STEPS CHECKPOINT_EVERY [KILL_AT]``
trains :class:`TinyLM` with checkpoints and, when ``KILL_AT`` is given, SIGKILLs itself at
step KILL_AT, once a committed checkpoint exists (no clean shutdown, pending saves are
abandoned), like a preempted job.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxtrust.training import Checkpointer, fit, init_train_state, lm_loss, make_train_step

VOCAB = 16
SEQ = 8


class MLP(nnx.Module):
    """2-layer MLP regression model (dims divisible by 8 for sharding tests)."""

    def __init__(self, din: int = 8, hidden: int = 16, dout: int = 4, *, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(din, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, dout, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


def mse_loss(model, batch, rng):
    del rng
    err = model(batch["x"]) - batch["y"]
    return jnp.mean(err**2), {"abs_err": jnp.mean(jnp.abs(err))}


def regression_batch(seed: int, batch: int = 16, din: int = 8, dout: int = 4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, din)).astype(np.float32)
    w = np.linspace(-1.0, 1.0, din * dout, dtype=np.float32).reshape(din, dout)
    return {"x": jnp.asarray(x), "y": jnp.asarray(np.sin(x @ w))}


class TinyLM(nnx.Module):
    """Embedding + causal mean-pool mixing + dropout + output head: a minimal causal "LM"."""

    def __init__(self, vocab: int = VOCAB, dim: int = 16, *, rngs: nnx.Rngs, dropout: float = 0.1):
        self.embed = nnx.Embed(vocab, dim, rngs=rngs)
        self.mix = nnx.Linear(dim, dim, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(dim, vocab, rngs=rngs)

    def __call__(self, tokens):
        h = self.embed(tokens)
        counts = jnp.arange(1, tokens.shape[1] + 1, dtype=h.dtype)[None, :, None]
        causal_mean = jnp.cumsum(h, axis=1) / counts
        h = h + jax.nn.gelu(self.mix(causal_mean))
        return self.head(self.drop(h))


def lm_loss_fn(model, batch, rng):
    del rng  # dropout draws from the model's own nnx.Rngs stream (part of TrainState.rest)
    logits = model(batch["tokens"])
    loss, metrics = lm_loss(logits, batch["tokens"], batch["loss_mask"])
    return loss, {"accuracy": metrics["accuracy"], "num_tokens": metrics["num_tokens"]}


def lm_batch(step: int, batch: int = 8, seq: int = SEQ, vocab: int = VOCAB):
    """Deterministic in ``step``: cyclic sequences ``t, t+1, ...`` (learnable)."""
    rng = np.random.default_rng(step)
    starts = rng.integers(0, vocab, size=(batch, 1))
    tokens = (starts + np.arange(seq)[None, :]) % vocab
    mask = np.ones((batch, seq), np.float32)
    return {"tokens": jnp.asarray(tokens, jnp.int32), "loss_mask": jnp.asarray(mask)}


_LM_TX = optax.adamw(3e-2, weight_decay=1e-2)
_LM_STEPS: dict = {}


def build_lm_job(seed: int = 0):
    """Fresh model state; the jitted step is built once per process (saves recompiles)."""
    graphdef, state = init_train_state(TinyLM(rngs=nnx.Rngs(seed)), _LM_TX, seed=seed)
    if graphdef not in _LM_STEPS:
        _LM_STEPS[graphdef] = make_train_step(graphdef, lm_loss_fn, _LM_TX)
    return graphdef, state, _LM_STEPS[graphdef]


def run_lm_job(
    ckpt_dir,
    num_steps: int,
    checkpoint_every: int,
    kill_at: int | None = None,
    logged: list | None = None,
):
    """Run the job; ``logged`` (if given) collects the steps this call itself ran."""
    graphdef, state, step = build_lm_job()
    checkpointer = Checkpointer(ckpt_dir, max_to_keep=2) if ckpt_dir else None

    def log_fn(done, record):
        if logged is not None:
            logged.append(done)
        print(f"step {done} loss {record['loss']:.6f}", flush=True)
        if kill_at is not None and done >= kill_at:
            # Steps take milliseconds; give the asynchronous save of an earlier step time to
            # commit (without waiting on the manager) so that there is something to resume.
            deadline = time.monotonic() + 60.0
            while checkpointer.latest_step() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            print(
                f"killing at step {done}, latest checkpoint {checkpointer.latest_step()}",
                flush=True,
            )
            os.kill(os.getpid(), signal.SIGKILL)

    try:
        return fit(
            graphdef,
            state,
            step,
            lm_batch,
            num_steps=num_steps,
            checkpointer=checkpointer,
            checkpoint_every=checkpoint_every,
            progress=False,
            log_fn=log_fn,
        )
    finally:
        if checkpointer is not None:
            checkpointer.close()


if __name__ == "__main__":
    directory, total, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    kill = int(sys.argv[4]) if len(sys.argv) > 4 else None
    run_lm_job(directory, total, every, kill)
